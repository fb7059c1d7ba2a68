"""Tests of recsys_helpers.datasets: registry, locate, loading, cache, file checks."""

from __future__ import annotations

import gzip
import json
import os
import threading
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys_helpers import datasets, readers
from recsys_helpers.datasets import (
    REGISTRY,
    REVIEW_FIELDS,
    DataFormatError,
    check_file,
    get_dataset,
    load,
    load_ratings_tsv,
    load_reviews,
    locate,
    sample_dir,
)

# --------------------------------------------------------------------------- helpers


def _record(k: int) -> dict:
    """A review record with every field, in the real files' order."""
    return {
        "user_id": f"u{k % 4}",
        "book_id": f"b{k % 3}",
        "review_id": f"r{k}",
        "rating": k % 6,
        "review_text": f"text of review {k}, with 'quotes' and \"double quotes\"",
        "date_added": "Tue Nov 17 11:37:35 -0800 2015",
        "date_updated": "Tue Nov 17 11:38:05 -0800 2015",
        "read_at": "" if k % 2 else "Sat Oct 03 00:00:00 -0700 2015",
        "started_at": "",
        "n_votes": k % 7,
        "n_comments": k % 2,
    }


RECORDS = [_record(k) for k in range(12)]
COMICS = REGISTRY["comics_reviews"].filename


def _write(path: Path, lines, gz: bool | None = None) -> Path:
    """Write text lines (gzip when the name ends in .gz)."""
    gz = path.suffix == ".gz" if gz is None else gz
    payload = "".join(line + "\n" for line in lines).encode()
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def _expected(records, fields) -> dict[str, list]:
    return {f: [r[f] for r in records] for f in fields}


def _as_lists(df: pd.DataFrame) -> dict[str, list]:
    return {c: [v.item() if hasattr(v, "item") else v for v in df[c].tolist()] for c in df}


@pytest.fixture
def env(monkeypatch, tmp_path):
    """No data-selection variables from the caller's environment."""
    monkeypatch.delenv("RECSYS_DATA", raising=False)
    monkeypatch.delenv("RECSYS_DATA_DIR", raising=False)
    monkeypatch.delenv("RECSYS_DATA_URL", raising=False)
    return monkeypatch


# --------------------------------------------------------------------------- registry


def test_get_dataset_by_short_name_and_file_name():
    for short, ds in REGISTRY.items():
        assert get_dataset(short) is ds
        assert get_dataset(ds.filename) is ds
        assert get_dataset(ds) is ds
        assert ds.name == short
    assert get_dataset("comics_reviews").filename == "goodreads_reviews_comics_graphic.json.gz"
    assert get_dataset("goodreads_fantasy.tsv").name == "fantasy_tsv"


def test_get_dataset_unknown_lists_known_names():
    with pytest.raises(KeyError) as info:
        get_dataset("goodreads_movies")
    message = str(info.value)
    assert "goodreads_movies" in message
    for ds in REGISTRY.values():
        assert ds.name in message
        assert ds.filename in message


# --------------------------------------------------------------------------- locate


def test_locate_sample(env, tmp_path, capsys):
    env.setenv("RECSYS_DATA", "sample")
    env.setenv("RECSYS_DATA_DIR", str(tmp_path))
    (tmp_path / "goodreads_fantasy.tsv").write_text("u\ti\t5\n")  # ignored in sample mode
    path = locate("fantasy_tsv")
    assert path == sample_dir() / "goodreads_fantasy.tsv"
    assert path.is_file()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    assert "sample" in lines[0] and "goodreads_fantasy.tsv" in lines[0]


def test_locate_full_uses_data_dir(env, tmp_path, capsys):
    env.setenv("RECSYS_DATA", "full")
    env.setenv("RECSYS_DATA_DIR", str(tmp_path))
    full = tmp_path / "goodreads_reviews_comics_graphic.json.gz"
    _write(full, [json.dumps(r) for r in RECORDS])
    assert locate("comics_reviews") == full
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and "full" in lines[0] and "sample" not in lines[0]


def test_locate_full_missing_mentions_fetch(env, tmp_path):
    env.setenv("RECSYS_DATA", "full")
    env.setenv("RECSYS_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        locate("fantasy_reviews")
    message = str(info.value)
    assert "fetch" in message
    assert "goodreads_reviews_fantasy_paranormal.json.gz" in message


@pytest.mark.parametrize("mode", ["auto", None])  # None: RECSYS_DATA unset means auto
def test_locate_auto(env, tmp_path, capsys, mode):
    if mode is not None:
        env.setenv("RECSYS_DATA", mode)
    env.setenv("RECSYS_DATA_DIR", str(tmp_path))
    # Not fetched: the bundled sample, with one line saying so.
    path = locate("fantasy_tsv")
    assert path == sample_dir() / "goodreads_fantasy.tsv"
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and "sample" in lines[0]
    # Present in RECSYS_DATA_DIR: the full file.
    full = tmp_path / "goodreads_fantasy.tsv"
    full.write_text("u1\ti1\t4\n")
    assert locate("fantasy_tsv") == full
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and "full" in lines[0] and "sample" not in lines[0]


def test_locate_arguments_override_environment(env, tmp_path, capsys):
    env.setenv("RECSYS_DATA", "full")
    env.setenv("RECSYS_DATA_DIR", str(tmp_path / "nowhere"))
    other = tmp_path / "other"
    other.mkdir()
    (other / "goodreads_fantasy.tsv").write_text("u1\ti1\t4\n")
    assert locate("fantasy_tsv", data_dir=other) == other / "goodreads_fantasy.tsv"
    assert locate("fantasy_tsv", data="sample") == sample_dir() / "goodreads_fantasy.tsv"
    capsys.readouterr()
    locate("fantasy_tsv", data="sample", verbose=False)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("value", ["bundled", "ful", "1"])
def test_locate_invalid_mode(env, tmp_path, value):
    env.setenv("RECSYS_DATA", value)
    env.setenv("RECSYS_DATA_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="RECSYS_DATA"):
        locate("fantasy_tsv")


# --------------------------------------------------------------------------- load_reviews


def test_load_reviews_json_lines(tmp_path):
    path = _write(tmp_path / "reviews.json.gz", [json.dumps(r) for r in RECORDS])
    df = load_reviews(path, cache=False)
    assert list(df.columns) == ["user_id", "book_id", "rating"]
    assert "review_text" not in df.columns
    assert _as_lists(df) == _expected(RECORDS, ["user_id", "book_id", "rating"])
    assert isinstance(df["user_id"].dtype, pd.CategoricalDtype)
    assert isinstance(df["book_id"].dtype, pd.CategoricalDtype)
    assert df["rating"].dtype == np.int32
    assert df.attrs["skipped_lines"] == 0


def test_load_reviews_all_fields_and_dtypes(tmp_path):
    path = _write(tmp_path / "reviews.json.gz", [json.dumps(r) for r in RECORDS])
    df = load_reviews(path, REVIEW_FIELDS, cache=False)
    assert list(df.columns) == list(REVIEW_FIELDS)
    assert _as_lists(df) == _expected(RECORDS, REVIEW_FIELDS)
    for f in REVIEW_FIELDS:
        if f in ("rating", "n_votes", "n_comments"):
            assert df[f].dtype == np.int32, f
        else:
            assert isinstance(df[f].dtype, pd.CategoricalDtype), f


def test_load_reviews_requested_fields_only(tmp_path):
    path = _write(tmp_path / "reviews.json.gz", [json.dumps(r) for r in RECORDS])
    df = load_reviews(path, ("book_id", "review_text"), cache=False)
    assert list(df.columns) == ["book_id", "review_text"]
    assert df["review_text"].tolist() == [r["review_text"] for r in RECORDS]
    with pytest.raises(ValueError, match="stars"):
        load_reviews(path, ("user_id", "stars"), cache=False)


def test_load_reviews_python_literals_and_mixed(tmp_path):
    json_path = _write(tmp_path / "a.json.gz", [json.dumps(r) for r in RECORDS])
    lit_lines = [repr(r) for r in RECORDS]
    assert lit_lines[0].startswith("{'user_id': 'u0'")
    lit_path = _write(tmp_path / "b.json.gz", lit_lines)
    mixed = [repr(r) if k % 2 else json.dumps(r) for k, r in enumerate(RECORDS)]
    mixed_path = _write(tmp_path / "c.json.gz", mixed)
    ref = load_reviews(json_path, REVIEW_FIELDS, cache=False)
    for path in (lit_path, mixed_path):
        df = load_reviews(path, REVIEW_FIELDS, cache=False)
        pd.testing.assert_frame_equal(df, ref)


def test_load_reviews_plain_file_and_blank_lines(tmp_path):
    lines = [json.dumps(r) for r in RECORDS]
    path = _write(tmp_path / "reviews.json", lines[:5] + [""] + lines[5:] + ["   "])
    df = load_reviews(path, cache=False)
    assert _as_lists(df) == _expected(RECORDS, ["user_id", "book_id", "rating"])


def _assert_names(exc: pytest.ExceptionInfo, path: Path, line: int | None = None):
    message = str(exc.value)
    assert str(path) in message
    if line is not None:
        assert f"line {line}" in message


def test_load_reviews_malformed_json(tmp_path):
    lines = [json.dumps(r) for r in RECORDS[:4]]
    lines[2] = lines[2][:25]  # cut in the middle of the record
    path = _write(tmp_path / "bad.json.gz", lines)
    with pytest.raises(DataFormatError) as info:
        load_reviews(path, cache=False)
    _assert_names(info, path, 3)


def test_load_reviews_never_runs_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lines = [json.dumps(r) for r in RECORDS[:3]]
    lines.insert(1, "__import__('os').system('touch pwned')")
    path = _write(tmp_path / "evil.json.gz", lines)
    with pytest.raises(DataFormatError) as info:
        load_reviews(path, cache=False)
    _assert_names(info, path, 2)
    assert not (tmp_path / "pwned").exists()
    assert not Path("pwned").exists()
    # Skipping it does not run it either.
    df = load_reviews(path, skip_bad_lines=True, cache=False)
    assert len(df) == 3
    assert not (tmp_path / "pwned").exists()


def test_load_reviews_truncated_gzip(tmp_path):
    rng = np.random.default_rng(0)
    records = [dict(_record(k), review_text=rng.bytes(200).hex()) for k in range(300)]
    path = tmp_path / "cut.json.gz"
    _write(path, [json.dumps(r) for r in records])
    full = path.read_bytes()
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(DataFormatError) as info:
        load_reviews(path, cache=False)
    _assert_names(info, path)
    # Truncation is not a malformed line: skip_bad_lines does not hide it.
    with pytest.raises(DataFormatError):
        load_reviews(path, skip_bad_lines=True, cache=False)


@pytest.fixture(params=["isal threaded", "isal", "gzip and json"])
def reader(request, monkeypatch):
    """Each way of reading: isal with its decompression thread, isal in this thread, and
    the fallbacks when orjson and python-isal are not installed (gzip, json)."""
    if request.param == "isal threaded":
        pytest.importorskip("isal")
        monkeypatch.setattr(readers, "_n_cpus", lambda: 2)
        monkeypatch.setattr(readers, "_THREAD_BLOCK_SIZE", 4096)  # many small blocks
    elif request.param == "isal":
        pytest.importorskip("isal")
        monkeypatch.setattr(readers, "_n_cpus", lambda: 1)
    else:
        monkeypatch.setattr(readers, "_gzip", gzip)
        monkeypatch.setattr(readers, "_gzip_threaded", None)
        monkeypatch.setattr(readers, "_IsalError", zlib.error)
        monkeypatch.setattr(readers, "_fast_loads", json.loads)
    return request.param


def _odd_lines() -> list[str]:
    """Records with everything the line-by-line path handles, among plain JSON lines."""
    rng = np.random.default_rng(4)
    records = [dict(_record(k), review_text="é" * int(rng.integers(0, 400))) for k in range(40)]
    lines = [json.dumps(r) for r in records]
    lines[3] = repr(records[3])  # a Python literal
    lines[7] = json.dumps(records[7]) + "\r"  # a Windows line end
    lines[11] = json.dumps(dict(records[11], rating=4.0))  # an integral float
    lines[12] = json.dumps(dict(records[12], n_votes="3"))  # a numeral string
    lines[20] = json.dumps(dict(records[20], review_text="x" * 5_000))  # spans blocks
    lines.insert(30, "")  # blank lines
    lines.insert(15, "  ")
    return lines


@pytest.mark.parametrize("block_size", [1, 7, 100, 1 << 20])
def test_load_reviews_any_block_size(tmp_path, monkeypatch, reader, block_size):
    lines = _odd_lines()
    reference = load_reviews(_write(tmp_path / "ref.json.gz", lines), REVIEW_FIELDS,
                             cache=False)
    assert len(reference) == 40
    assert reference["rating"].tolist()[11] == 4 and reference["n_votes"].tolist()[12] == 3
    monkeypatch.setattr(readers, "_BLOCK_SIZE", block_size)
    for name, text in [("a.json.gz", "\n".join(lines) + "\n"),
                       ("b.json.gz", "\n".join(lines)),  # no newline at the end
                       ("c.json", "\n".join(lines) + "\n\n")]:  # plain, blank last line
        path = tmp_path / name
        payload = text.encode()
        path.write_bytes(gzip.compress(payload) if name.endswith(".gz") else payload)
        df = load_reviews(path, REVIEW_FIELDS, cache=False)
        pd.testing.assert_frame_equal(df, reference)
        check_file(path, "jsonl.gz")


@pytest.mark.parametrize("block_size", [1, 100, 1 << 20])
def test_load_reviews_bad_line_numbers_any_block_size(tmp_path, monkeypatch, reader, block_size):
    monkeypatch.setattr(readers, "_BLOCK_SIZE", block_size)
    lines = _odd_lines()  # 42 lines, 2 blank
    for index, bad, word in [(35, json.dumps(dict(RECORDS[1], rating="five")), "rating"),
                             (0, "{not json", "JSON"),
                             (41, json.dumps({"user_id": "u", "rating": 3}), "book_id")]:
        broken = list(lines)
        broken[index] = bad
        path = _write(tmp_path / "bad.json.gz", broken)
        with pytest.raises(DataFormatError) as info:
            load_reviews(path, cache=False)
        _assert_names(info, path, index + 1)
        assert word in str(info.value)
        df = load_reviews(path, skip_bad_lines=True, cache=False)
        assert len(df) == 39 and df.attrs["skipped_lines"] == 1


def test_load_reviews_first_bad_line_is_reported(tmp_path):
    # Two bad lines in one block: the earlier one is named, whatever is wrong with it.
    lines = [json.dumps(r) for r in RECORDS]
    lines[4] = json.dumps(dict(RECORDS[4], rating=4.5))
    lines[9] = "{broken"
    path = _write(tmp_path / "two.json.gz", lines)
    with pytest.raises(DataFormatError) as info:
        load_reviews(path, cache=False)
    _assert_names(info, path, 5)


@pytest.mark.parametrize("value, word", [("NaN", "rating"), (str(2**70), "outside the scale")])
def test_load_reviews_values_json_accepts(tmp_path, value, word):
    # Lines orjson refuses and json reads: the record is read, its rating is refused.
    lines = [json.dumps(r) for r in RECORDS[:3]]
    lines[1] = lines[1].replace('"rating": 1', f'"rating": {value}')
    assert value in lines[1]
    path = _write(tmp_path / "odd.json.gz", lines)
    with pytest.raises(DataFormatError) as info:
        load_reviews(path, cache=False)
    assert str(path) in str(info.value) and word in str(info.value)


def test_load_reviews_non_string_ids(tmp_path):
    # Numbers (and nulls) in a string field load as their text, as before.
    records = [dict(r) for r in RECORDS[:4]]
    records[1]["book_id"] = 12
    records[2]["book_id"] = "12"
    path = _write(tmp_path / "ids.json.gz", [json.dumps(r) for r in records])
    df = load_reviews(path, cache=False)
    assert df["book_id"].tolist() == ["b0", "12", "12", "b0"]
    assert list(df["book_id"].cat.categories) == ["12", "b0"]


def test_load_reviews_corrupt_gzip(tmp_path, reader):
    # An invalid deflate block: zlib.error from gzip, IsalError (not a zlib.error) from isal.
    path = tmp_path / "corrupt.json.gz"
    path.write_bytes(gzip.compress(b"{}\n")[:10] + b"\x07" + bytes(30))
    with pytest.raises(DataFormatError) as info:
        load_reviews(path, cache=False)
    _assert_names(info, path)
    with pytest.raises(DataFormatError):
        check_file(path, "jsonl.gz")
    not_gzip = tmp_path / "page.json.gz"
    not_gzip.write_bytes(b"<html>Not found</html>")
    with pytest.raises(DataFormatError) as info:
        load_reviews(not_gzip, cache=False)
    _assert_names(info, not_gzip)


def test_load_reviews_truncated_gzip_any_reader(tmp_path, reader):
    rng = np.random.default_rng(0)
    records = [dict(_record(k), review_text=rng.bytes(200).hex()) for k in range(300)]
    path = _write(tmp_path / "cut.json.gz", [json.dumps(r) for r in records])
    full = path.read_bytes()
    for cut in (len(full) // 2, len(full) - 4):
        path.write_bytes(full[:cut])
        for skip in (False, True):
            with pytest.raises(DataFormatError) as info:
                load_reviews(path, skip_bad_lines=skip, cache=False)
            _assert_names(info, path)


def test_load_reviews_stops_its_thread_on_error(tmp_path, reader):
    records = [dict(_record(k), review_text="y" * 1_000) for k in range(2_000)]
    lines = [json.dumps(r) for r in records]
    lines[1] = "{broken"
    path = _write(tmp_path / "early.json.gz", lines)
    before = threading.active_count()
    with pytest.raises(DataFormatError) as info:
        load_reviews(path, cache=False)
    _assert_names(info, path, 2)
    assert threading.active_count() == before  # the decompression thread has ended


def test_load_reviews_empty_files(tmp_path):
    empty = tmp_path / "empty.json.gz"
    empty.write_bytes(b"")
    with pytest.raises(DataFormatError) as info:
        load_reviews(empty, cache=False)
    _assert_names(info, empty)
    no_records = tmp_path / "blank.json.gz"
    no_records.write_bytes(gzip.compress(b"\n\n"))
    with pytest.raises(DataFormatError) as info:
        load_reviews(no_records, cache=False)
    _assert_names(info, no_records)


def test_load_reviews_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_reviews(tmp_path / "nothing.json.gz", cache=False)


def test_load_reviews_missing_field(tmp_path):
    records = [dict(r) for r in RECORDS[:5]]
    del records[3]["rating"]
    path = _write(tmp_path / "missing.json.gz", [json.dumps(r) for r in records])
    with pytest.raises(DataFormatError) as info:
        load_reviews(path, cache=False)
    _assert_names(info, path, 4)
    assert "rating" in str(info.value)
    # A field that was not asked for may be missing.
    df = load_reviews(path, ("user_id", "book_id"), cache=False)
    assert len(df) == 5


@pytest.mark.parametrize("bad", ["five", 4.5, None, True, [4]])
def test_load_reviews_non_integer_rating(tmp_path, bad):
    records = [dict(r) for r in RECORDS[:5]]
    records[1]["rating"] = bad
    path = _write(tmp_path / "rating.json.gz", [json.dumps(r) for r in records])
    with pytest.raises(DataFormatError) as info:
        load_reviews(path, cache=False)
    _assert_names(info, path, 2)
    assert "rating" in str(info.value)


def test_load_reviews_integral_values_accepted(tmp_path):
    # 4.0 and "3" are integers written differently; they load as such.
    records = [dict(r) for r in RECORDS[:3]]
    records[0]["rating"] = 4.0
    records[1]["rating"] = "3"
    path = _write(tmp_path / "ok.json.gz", [json.dumps(r) for r in records])
    df = load_reviews(path, cache=False)
    assert df["rating"].tolist() == [4, 3, records[2]["rating"]]


def test_load_reviews_skip_bad_lines(tmp_path, capsys):
    good = [json.dumps(r) for r in RECORDS[:6]]
    no_rating = json.dumps({k: v for k, v in RECORDS[6].items() if k != "rating"})
    text_rating = json.dumps(dict(RECORDS[7], rating="five"))
    lines = (good[:2] + ["{not json"] + good[2:4] + [no_rating, "__import__('os')"]
             + good[4:] + [text_rating])
    path = _write(tmp_path / "mixed.json.gz", lines)
    df = load_reviews(path, skip_bad_lines=True, cache=False)
    assert _as_lists(df) == _expected(RECORDS[:6], ["user_id", "book_id", "rating"])
    assert df.attrs["skipped_lines"] == 4
    out = capsys.readouterr().out
    assert "skipped 4 " in out and path.name in out


# --------------------------------------------------------------------------- cache


def _cache_files(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f".{path.name}.*.cache.npz"))


def test_load_reviews_cache_hit(tmp_path, monkeypatch):
    path = _write(tmp_path / "reviews.json.gz", [json.dumps(r) for r in RECORDS])
    first = load_reviews(path)
    assert len(_cache_files(path)) == 1

    def no_reading(*args, **kwargs):
        raise AssertionError("the source was read again instead of the cache")

    monkeypatch.setattr(readers, "iter_blocks", no_reading)
    second = load_reviews(path)
    pd.testing.assert_frame_equal(second, first)
    assert second.attrs["skipped_lines"] == 0
    # Another set of fields is another cache entry, not the first one.
    with pytest.raises(AssertionError, match="read again"):
        load_reviews(path, ("user_id", "n_votes"))


def test_load_reviews_cache_per_field_set(tmp_path, monkeypatch):
    path = _write(tmp_path / "reviews.json.gz", [json.dumps(r) for r in RECORDS])
    slim = load_reviews(path)
    votes = load_reviews(path, ("user_id", "n_votes"))
    # Writing the second cache keeps the first: one cache per field set.
    files = _cache_files(path)
    assert len(files) == 2
    assert any("user_id+book_id+rating" in f.name for f in files)
    assert any("user_id+n_votes" in f.name for f in files)

    def no_reading(*args, **kwargs):
        raise AssertionError("the source was read again instead of the cache")

    with monkeypatch.context() as m:
        m.setattr(readers, "iter_blocks", no_reading)
        pd.testing.assert_frame_equal(load_reviews(path), slim)
        pd.testing.assert_frame_equal(load_reviews(path, ("user_id", "n_votes")), votes)
    # A changed source: the stale cache of the same fields is replaced, the other kept.
    before = path.stat()
    _write(path, [json.dumps(r) for r in RECORDS[:5]])
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 2_000_000_000))
    assert len(load_reviews(path)) == 5
    names = [f.name for f in _cache_files(path)]
    assert len(names) == 2
    assert sum("user_id+book_id+rating" in n for n in names) == 1
    assert sum("user_id+n_votes" in n for n in names) == 1


def test_load_reviews_cache_old_names_removed(tmp_path):
    # Caches written before the fields were part of the name are stale; other files stay.
    path = _write(tmp_path / "reviews.json.gz", [json.dumps(r) for r in RECORDS])
    old = tmp_path / f".{path.name}.0123456789abcdef.cache.npz"
    old.write_bytes(b"an old cache")
    other = tmp_path / f".{path.name}.notes.cache.npz"
    other.write_bytes(b"not a cache of ours")
    load_reviews(path)
    assert not old.exists()
    assert other.exists()
    assert len([f for f in _cache_files(path) if f != other]) == 1


def test_load_reviews_cache_all_fields_round_trip(tmp_path):
    path = _write(tmp_path / "reviews.json.gz", [json.dumps(r) for r in RECORDS])
    first = load_reviews(path, REVIEW_FIELDS)
    second = load_reviews(path, REVIEW_FIELDS)
    pd.testing.assert_frame_equal(second, first)
    assert _as_lists(second) == _expected(RECORDS, REVIEW_FIELDS)


def test_load_reviews_no_cache_written_when_disabled(tmp_path):
    path = _write(tmp_path / "reviews.json.gz", [json.dumps(r) for r in RECORDS])
    load_reviews(path, cache=False)
    assert _cache_files(path) == []


def test_load_reviews_changed_source_is_reread(tmp_path):
    path = _write(tmp_path / "reviews.json.gz", [json.dumps(r) for r in RECORDS])
    first = load_reviews(path)
    before = path.stat()
    changed = [dict(r, user_id="new" + r["user_id"], rating=5 - r["rating"]) for r in RECORDS]
    _write(path, [json.dumps(r) for r in changed + changed[:2]])
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 2_000_000_000))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns)
    second = load_reviews(path)
    assert len(second) == len(first) + 2
    assert _as_lists(second) == _expected(changed + changed[:2], ["user_id", "book_id", "rating"])
    assert len(_cache_files(path)) == 1  # the stale cache is gone


def test_load_reviews_damaged_cache_is_rebuilt(tmp_path):
    path = _write(tmp_path / "reviews.json.gz", [json.dumps(r) for r in RECORDS])
    first = load_reviews(path)
    (cache_file,) = _cache_files(path)
    cache_file.write_bytes(b"not an npz file")
    second = load_reviews(path)
    pd.testing.assert_frame_equal(second, first)


def test_load_reviews_cache_keeps_skip_semantics(tmp_path, capsys):
    lines = [json.dumps(r) for r in RECORDS[:5]]
    lines.insert(2, "{broken")
    path = _write(tmp_path / "reviews.json.gz", lines)
    lenient = load_reviews(path, skip_bad_lines=True)
    assert lenient.attrs["skipped_lines"] == 1
    capsys.readouterr()
    again = load_reviews(path, skip_bad_lines=True)
    pd.testing.assert_frame_equal(again, lenient)
    assert again.attrs["skipped_lines"] == 1
    assert "skipped 1 " in capsys.readouterr().out
    # A strict load still reports the bad line, cache or not.
    with pytest.raises(DataFormatError) as info:
        load_reviews(path)
    _assert_names(info, path, 3)


# --------------------------------------------------------------------------- TSV


def test_load_ratings_tsv_good(tmp_path):
    rows = [("u1", "b10", 4), ("u2", "b10", 5), ("u1", "b7", 1), ("u3", "007", 3)]
    path = tmp_path / "r.tsv"
    path.write_text("".join(f"{u}\t{i}\t{r}\n" for u, i, r in rows))
    df = load_ratings_tsv(path)
    assert list(df.columns) == ["user", "item", "rating"]
    assert df["user"].tolist() == [u for u, _, _ in rows]
    assert df["item"].tolist() == [i for _, i, _ in rows]  # "007" stays a string
    assert df["rating"].tolist() == [float(r) for _, _, r in rows]
    assert df["rating"].dtype == np.float32
    assert isinstance(df["user"].dtype, pd.CategoricalDtype)
    assert isinstance(df["item"].dtype, pd.CategoricalDtype)
    assert df.attrs["skipped_lines"] == 0


@pytest.mark.parametrize("text, line", [
    ("u1\ti1\t4\nu2\ti2\nu3\ti3\t5\n", 2),            # a missing column
    ("u1\ti1\t4\nu2\ti2\t5\nu3\ti3\t5\t7\n", 3),      # an extra column
    ("u1\ti1\t4\t1\nu2\ti2\t5\t1\n", 1),              # a fourth column everywhere
    ("u1 i1 4\n", 1),                                 # not tab-separated
])
def test_load_ratings_tsv_wrong_columns(tmp_path, text, line):
    path = tmp_path / "r.tsv"
    path.write_text(text)
    with pytest.raises(DataFormatError) as info:
        load_ratings_tsv(path)
    _assert_names(info, path, line)
    assert "column" in str(info.value)


@pytest.mark.parametrize("bad", ["five", "", "nan", "inf"])
def test_load_ratings_tsv_non_numeric_rating(tmp_path, bad):
    path = tmp_path / "r.tsv"
    path.write_text(f"u1\ti1\t4\nu2\ti2\t{bad}\nu3\ti3\t5\n")
    with pytest.raises(DataFormatError) as info:
        load_ratings_tsv(path)
    _assert_names(info, path, 2)


def test_load_ratings_tsv_empty(tmp_path):
    for text in ("", "\n\n"):
        path = tmp_path / "r.tsv"
        path.write_text(text)
        with pytest.raises(DataFormatError) as info:
            load_ratings_tsv(path)
        _assert_names(info, path)


def test_load_ratings_tsv_skip_bad_lines(tmp_path, capsys):
    path = tmp_path / "r.tsv"
    path.write_text("u1\ti1\t4\nu2\ti2\nu3\ti3\tfive\nu4\ti4\t2\n\nu5\ti5\t3\t1\n")
    df = load_ratings_tsv(path, skip_bad_lines=True)
    assert df["user"].tolist() == ["u1", "u4"]
    assert df["rating"].tolist() == [4.0, 2.0]
    assert df.attrs["skipped_lines"] == 3
    out = capsys.readouterr().out
    assert "skipped 3 " in out and path.name in out


# --------------------------------------------------------------------------- check_file


def test_check_file_tsv(tmp_path):
    good = tmp_path / "good.tsv"
    good.write_text("u1\ti1\t4\nu2\ti2\t5\n\n")
    check_file(good, "tsv")
    assert len(load_ratings_tsv(good)) == 2  # check_file and the loader agree
    for name, text, line in [("cols.tsv", "u1\ti1\t4\nu2\ti2\n", 2),
                             ("rating.tsv", "u1\ti1\tx\n", 1),
                             ("nan.tsv", "u1\ti1\t4\nu1\ti1\tnan\n", 2)]:
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(DataFormatError) as info:
            check_file(path, "tsv")
        _assert_names(info, path, line)
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    with pytest.raises(DataFormatError) as info:
        check_file(empty, "tsv")
    _assert_names(info, empty)


def test_check_file_tsv_reads_only_the_head(tmp_path):
    path = tmp_path / "late.tsv"
    path.write_text("u\ti\t4\n" * 5 + "broken line\n")
    check_file(path, "tsv", n_records=5)
    with pytest.raises(DataFormatError):
        check_file(path, "tsv", n_records=6)


def test_check_file_gz(tmp_path):
    lines = [json.dumps(r) for r in RECORDS]
    good = _write(tmp_path / "good.json.gz", lines)
    check_file(good, "jsonl.gz")
    literal = _write(tmp_path / "literal.json.gz", [repr(r) for r in RECORDS])
    check_file(literal, "jsonl.gz")

    cut = tmp_path / "cut.json.gz"
    rng = np.random.default_rng(1)
    _write(cut, [json.dumps(dict(r, review_text=rng.bytes(300).hex())) for r in RECORDS * 20])
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) - 50])
    # The bad part is beyond the records parsed: the gzip is still read to its end.
    with pytest.raises(DataFormatError) as info:
        check_file(cut, "jsonl.gz", n_records=2)
    _assert_names(info, cut)

    missing = _write(tmp_path / "missing.json.gz",
                     lines[:2] + [json.dumps({"user_id": "u", "rating": 3})])
    with pytest.raises(DataFormatError) as info:
        check_file(missing, "jsonl.gz")
    _assert_names(info, missing, 3)
    assert "book_id" in str(info.value)

    bad = _write(tmp_path / "bad.json.gz", ["<html>Not found</html>"])
    with pytest.raises(DataFormatError) as info:
        check_file(bad, "jsonl.gz")
    _assert_names(info, bad, 1)

    blank = tmp_path / "blank.json.gz"
    blank.write_bytes(gzip.compress(b""))
    with pytest.raises(DataFormatError):
        check_file(blank, "jsonl.gz")


# --------------------------------------------------------------------------- load


def test_load_bundled_sample(env, tmp_path, capsys):
    env.setenv("RECSYS_DATA", "sample")
    env.setenv("RECSYS_DATA_DIR", str(tmp_path))
    (tmp_path / COMICS).write_bytes(b"ignored in sample mode")
    df = load("comics_reviews")
    assert "sample" in capsys.readouterr().out
    assert list(df.columns) == ["user_id", "book_id", "rating"]
    assert len(df) > 1000
    pd.testing.assert_frame_equal(df, load_reviews(sample_dir() / COMICS))

    tsv = load("fantasy_tsv")
    assert list(tsv.columns) == ["user", "item", "rating"]
    pd.testing.assert_frame_equal(tsv, load_ratings_tsv(sample_dir() / "goodreads_fantasy.tsv"))


def test_load_full_from_data_dir(env, tmp_path, capsys):
    env.setenv("RECSYS_DATA", "auto")
    env.setenv("RECSYS_DATA_DIR", str(tmp_path))
    _write(tmp_path / "goodreads_reviews_comics_graphic.json.gz", [repr(r) for r in RECORDS])
    df = load("comics_reviews", REVIEW_FIELDS, cache=False)
    assert "full" in capsys.readouterr().out
    assert _as_lists(df) == _expected(RECORDS, REVIEW_FIELDS)


# --------------------------------------------------------------------------- hostile input


def _bad_record_lines(bad_line: str) -> list[str]:
    lines = [json.dumps(r) for r in RECORDS[:4]]
    lines[2] = bad_line
    return lines


@pytest.mark.parametrize("kind", ["json", "literal"])
def test_deep_nesting_is_a_format_error(tmp_path, reader, kind):
    depth = 5_000
    nested = "[" * depth + "]" * depth
    bad = (f'{{"user_id": "u", "book_id": "b", "rating": 1, "x": {nested}}}' if kind == "json"
           else f"{{'user_id': 'u', 'book_id': 'b', 'rating': 1, 'x': {'(' * depth}{')' * depth}}}")
    path = _write(tmp_path / "deep.json.gz", _bad_record_lines(bad))
    with pytest.raises(DataFormatError) as info:
        load_reviews(path, cache=False)
    _assert_names(info, path, 3)
    df = load_reviews(path, skip_bad_lines=True, cache=False)
    assert len(df) == 3 and df.attrs["skipped_lines"] == 1


@pytest.mark.parametrize("suffix", [".json.gz", ".tsv"])
def test_overlong_line_is_refused(tmp_path, monkeypatch, suffix):
    monkeypatch.setattr(readers, "MAX_LINE_BYTES", 10_000)
    monkeypatch.setattr(readers, "_BLOCK_SIZE", 1_000)
    if suffix == ".tsv":
        lines = ["u1\tb1\t4", "u2\tb2\t" + "x" * 20_000]
    else:
        lines = [json.dumps(RECORDS[0]), " " * 20_000 + json.dumps(RECORDS[1])]
    path = _write(tmp_path / f"long{suffix}", lines)
    load = load_ratings_tsv if suffix == ".tsv" else load_reviews
    for skip in (False, True):  # damage, not a bad record: skipping does not hide it
        with pytest.raises(DataFormatError, match="longer than 10,000 bytes") as info:
            load(path, skip_bad_lines=skip, **({} if suffix == ".tsv" else {"cache": False}))
        _assert_names(info, path, 2)


@pytest.mark.parametrize("field, value", [("user_id", None), ("book_id", ""),
                                          ("user_id", ""), ("book_id", None)])
def test_null_or_empty_ids_are_refused(tmp_path, reader, field, value):
    path = _write(tmp_path / "ids.json.gz",
                  _bad_record_lines(json.dumps(dict(RECORDS[2], **{field: value}))))
    with pytest.raises(DataFormatError, match=field) as info:
        load_reviews(path, cache=False)
    _assert_names(info, path, 3)
    assert len(load_reviews(path, skip_bad_lines=True, cache=False)) == 3


@pytest.mark.parametrize("rating", [-1, 6, 1e300])
def test_review_rating_outside_the_scale(tmp_path, reader, rating):
    path = _write(tmp_path / "r.json.gz",
                  _bad_record_lines(json.dumps(dict(RECORDS[2], rating=rating))))
    with pytest.raises(DataFormatError, match="rating") as info:
        load_reviews(path, cache=False)
    _assert_names(info, path, 3)


def test_int32_overflow_in_a_count(tmp_path):
    path = _write(tmp_path / "votes.json.gz",
                  _bad_record_lines(json.dumps(dict(RECORDS[2], n_votes=2**40))))
    with pytest.raises(DataFormatError, match="int32") as info:
        load_reviews(path, ("user_id", "n_votes"), cache=False)
    _assert_names(info, path)


@pytest.mark.parametrize("rating", ["1e300", "-1", "5.5", "nan", "inf"])
def test_tsv_rating_must_be_finite_and_on_the_scale(tmp_path, rating):
    path = _write(tmp_path / "r.tsv", ["u1\tb1\t4", f"u2\tb2\t{rating}", "u3\tb3\t0"])
    with pytest.raises(DataFormatError, match="rating") as info:
        load_ratings_tsv(path)
    _assert_names(info, path, 2)
    with pytest.raises(DataFormatError):
        check_file(path, "tsv")
    assert load_ratings_tsv(path, skip_bad_lines=True)["rating"].tolist() == [4.0, 0.0]


@pytest.mark.parametrize("line", ["\tb2\t3", "u2\t\t3"])
def test_tsv_empty_ids_are_refused(tmp_path, line):
    path = _write(tmp_path / "r.tsv", ["u1\tb1\t4", line])
    with pytest.raises(DataFormatError, match="empty") as info:
        load_ratings_tsv(path)
    _assert_names(info, path, 2)


@pytest.mark.parametrize("suffix", [".json.gz", ".tsv"])
def test_undecodable_bytes_name_file_and_line(tmp_path, suffix):
    if suffix == ".tsv":
        payload = b"u1\tb1\t4\nu\xff2\tb2\t3\n"
    else:
        good = [json.dumps(r).encode() for r in RECORDS[:3]]
        payload = b"\n".join([good[0], good[1].replace(b'"u1"', b'"u\xff1"'), good[2]]) + b"\n"
        payload = gzip.compress(payload)
    path = tmp_path / f"bytes{suffix}"
    path.write_bytes(payload)
    load = load_ratings_tsv if suffix == ".tsv" else (lambda p: load_reviews(p, cache=False))
    with pytest.raises(DataFormatError, match="not UTF-8") as info:
        load(path)
    _assert_names(info, path, 2)


def test_load_tsv_fields_select_columns(env):
    df = load("fantasy_tsv", ["user", "rating"], data="sample", verbose=False)
    assert list(df.columns) == ["user", "rating"]
    with pytest.raises(ValueError, match="book_id"):
        load("fantasy_tsv", ["book_id"], data="sample", verbose=False)


def test_get_dataset_accepts_a_dataset():
    ds = REGISTRY["comics_reviews"]
    assert get_dataset(ds) is ds


def test_all_names_exist():
    for name in datasets.__all__:
        assert hasattr(datasets, name), name


def test_docstring_examples(env, capsys):
    import doctest

    result = doctest.testmod(datasets, verbose=False)
    assert result.attempted >= 3 and result.failed == 0, capsys.readouterr().out


# --------------------------------------------------------------------------- cache keys


def test_same_size_and_mtime_replacement_is_reread(tmp_path):
    path = _write(tmp_path / "reviews.json", [json.dumps(r) for r in RECORDS])
    load_reviews(path)
    before = path.stat()
    swapped = [dict(r, rating=5 - r["rating"]) for r in RECORDS]
    # A new file renamed over it (another inode), with the same size and mtime.
    other = _write(tmp_path / "new.json", [json.dumps(r) for r in swapped])
    assert other.stat().st_size == before.st_size
    os.replace(other, path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert load_reviews(path)["rating"].tolist() == [r["rating"] for r in swapped]
    # Rewritten in place (same inode, size and mtime): the bytes tell them apart.
    _write(path, [json.dumps(r) for r in RECORDS])
    assert path.stat().st_size == before.st_size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert load_reviews(path)["rating"].tolist() == [r["rating"] for r in RECORDS]


def test_file_changed_during_load_is_not_cached(tmp_path, monkeypatch):
    path = _write(tmp_path / "reviews.json.gz", [json.dumps(r) for r in RECORDS])
    original = datasets.read_reviews

    def read_then_replace(*args, **kwargs):
        df = original(*args, **kwargs)
        _write(path, [json.dumps(r) for r in RECORDS[:3]])  # rewritten meanwhile
        return df

    monkeypatch.setattr(datasets, "read_reviews", read_then_replace)
    assert len(load_reviews(path)) == len(RECORDS)
    assert _cache_files(path) == []
    monkeypatch.undo()
    assert len(load_reviews(path)) == 3


def test_copies_in_other_folders_have_their_own_key(tmp_path):
    from recsys_helpers import cache

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = _write(tmp_path / "a" / "reviews.json.gz", [json.dumps(r) for r in RECORDS])
    b = tmp_path / "b" / "reviews.json.gz"
    b.write_bytes(a.read_bytes())
    st = a.stat()
    os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cache.signature(a) != cache.signature(b)
    assert cache.cache_folders(a)[-1] != cache.cache_folders(b)[-1]


def test_orphaned_tmp_files_removed_and_clear(tmp_path):
    from recsys_helpers import cache

    path = _write(tmp_path / "reviews.json.gz", [json.dumps(r) for r in RECORDS])
    dead = subprocess_pid_that_ended()
    orphan = tmp_path / f".{path.name}.user_id+book_id+rating.0123456789abcdef.cache.npz.{dead}.tmp"
    orphan.write_bytes(b"half")
    alive = tmp_path / f".{path.name}.user_id.0123456789abcdef.cache.npz.{os.getpid()}.tmp"
    alive.write_bytes(b"being written")
    load_reviews(path)
    load_reviews(path, ("user_id", "n_votes"))
    assert not orphan.exists() and alive.exists()
    assert len(_cache_files(path)) == 2
    assert cache.clear(path) == 2
    assert _cache_files(path) == [] and path.exists()


def subprocess_pid_that_ended() -> int:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(proc.stdout)

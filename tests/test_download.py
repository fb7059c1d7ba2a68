"""Tests of recsys_helpers.download against a local HTTP server (no network)."""

from __future__ import annotations

import dataclasses
import gzip
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from recsys_helpers import datasets, download
from recsys_helpers.datasets import check_file

REVIEWS = datasets.get_dataset("comics_reviews")
TSV = datasets.get_dataset("fantasy_tsv")
TIMEOUT = 2


def _reviews_bytes() -> bytes:
    lines = [
        json.dumps({"user_id": f"u{i}", "book_id": f"b{i % 3}", "review_id": f"r{i}",
                    "rating": i % 6, "review_text": "fine", "n_votes": 0, "n_comments": 0})
        for i in range(20)
    ]
    return gzip.compress(("\n".join(lines) + "\n").encode())


TSV_BYTES = b"".join(f"u{i}\ti{i % 4}\t{i % 5 + 1}\n".encode() for i in range(20))


class Server:
    """A threaded HTTP server: ``routes`` maps a path to bytes, or to (kind, bytes) with
    kind "cut" (half the body, then hang up), "slow" (a byte every 0.2 s) or "no length"
    (no Content-Length header)."""

    def __init__(self):
        self.routes: dict[str, object] = {}
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                body = server.routes.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                kind, data = body if isinstance(body, tuple) else ("whole", body)
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                if kind != "no length":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if kind == "cut":  # promise the whole body, send half, hang up
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                elif kind == "slow":  # one byte every 0.2 s, while the client listens
                    for i in range(len(data)):
                        try:
                            self.wfile.write(data[i:i + 1])
                            self.wfile.flush()
                        except OSError:
                            return
                        time.sleep(0.2)
                else:
                    self.wfile.write(data)
                    self.close_connection = kind == "no length"

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture
def dest(tmp_path, monkeypatch):
    folder = tmp_path / "data"
    monkeypatch.setenv("RECSYS_DATA_DIR", str(folder))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    return folder


@pytest.fixture
def server(monkeypatch, dest):
    srv = Server()
    monkeypatch.setenv("RECSYS_DATA_URL", srv.url)
    yield srv
    srv.close()


def _fetch(*names, **kw):
    return download.fetch(list(names), timeout=TIMEOUT, **kw)


def _assert_clean(dest: Path, filename: str):
    assert not (dest / filename).exists()
    leftovers = [p.name for p in dest.iterdir()] if dest.exists() else []
    assert leftovers == [], f"left behind: {leftovers}"


def test_success_lands_validates_and_reports(server, dest, capfd):
    server.routes["/" + REVIEWS.filename] = _reviews_bytes()
    server.routes["/" + TSV.filename] = TSV_BYTES
    paths = _fetch(REVIEWS.name, TSV.filename)
    assert paths == [dest / REVIEWS.filename, dest / TSV.filename]
    check_file(paths[0], "jsonl.gz")
    check_file(paths[1], "tsv")
    assert paths[1].read_bytes() == TSV_BYTES
    assert sorted(p.name for p in dest.iterdir()) == sorted([REVIEWS.filename, TSV.filename])
    out, err = capfd.readouterr()
    assert f"saved to {dest / REVIEWS.filename}" in out
    assert "B/s" in err or "100%" in err  # the tqdm progress bar


def test_404_everywhere(server, dest):
    with pytest.raises(download.FetchError) as info:
        _fetch(REVIEWS.name, progress=False)
    msg = str(info.value)
    assert server.url + REVIEWS.filename in msg and "404" in msg
    _assert_clean(dest, REVIEWS.filename)


def test_wrong_sha256_rejected(server, dest, monkeypatch):
    bogus = dataclasses.replace(REVIEWS, sha256="0" * 64)
    monkeypatch.setitem(datasets.REGISTRY, REVIEWS.name, bogus)
    server.routes["/" + REVIEWS.filename] = _reviews_bytes()
    with pytest.raises(download.FetchError, match="hash"):
        _fetch(REVIEWS.name, progress=False)
    _assert_clean(dest, REVIEWS.filename)


def test_right_sha256_accepted(server, dest, monkeypatch):
    import hashlib

    body = _reviews_bytes()
    good = dataclasses.replace(REVIEWS, sha256=hashlib.sha256(body).hexdigest())
    monkeypatch.setitem(datasets.REGISTRY, REVIEWS.name, good)
    server.routes["/" + REVIEWS.filename] = body
    assert _fetch(REVIEWS.name, progress=False) == [dest / REVIEWS.filename]


def test_connection_cut_mid_file(server, dest):
    server.routes["/" + REVIEWS.filename] = ("cut", _reviews_bytes() * 50)
    with pytest.raises(download.FetchError) as info:
        _fetch(REVIEWS.name, progress=False)
    assert server.url + REVIEWS.filename in str(info.value)
    _assert_clean(dest, REVIEWS.filename)


@pytest.mark.parametrize("first", ["404", "closed"])
def test_mirror_fallback(server, dest, monkeypatch, first):
    first_url = server.url + "missing/" if first == "404" else _closed_port_url()
    monkeypatch.setenv("RECSYS_DATA_URL", f"{first_url},{server.url}")
    server.routes["/" + TSV.filename] = TSV_BYTES
    assert _fetch(TSV.name, progress=False) == [dest / TSV.filename]
    assert (dest / TSV.filename).read_bytes() == TSV_BYTES


def test_corrupt_gzip_rejected(server, dest):
    body = _reviews_bytes()
    server.routes["/" + REVIEWS.filename] = body[: len(body) - 12]  # truncated gzip, served whole
    with pytest.raises(download.FetchError, match="DataFormatError"):
        _fetch(REVIEWS.name, progress=False)
    _assert_clean(dest, REVIEWS.filename)


def test_no_server(dest, monkeypatch):
    url = _closed_port_url()
    monkeypatch.setenv("RECSYS_DATA_URL", url)
    with pytest.raises(download.FetchError) as info:
        _fetch(TSV.name, progress=False)
    msg = str(info.value)
    assert url + TSV.filename in msg
    assert "RECSYS_DATA=sample" in msg and "bundled synthetic sample" in msg
    _assert_clean(dest, TSV.filename)


def test_fetch_command_exit_codes(server, dest, capsys):
    assert download.fetch_command([TSV.name]) == 1
    assert server.url + TSV.filename in capsys.readouterr().err
    assert download.fetch_command(["no_such_dataset"]) == 2
    assert "unknown dataset" in capsys.readouterr().err
    server.routes["/" + TSV.filename] = TSV_BYTES
    assert download.fetch_command([TSV.name]) == 0


def test_present_file_not_downloaded_again(server, dest, capsys):
    dest.mkdir()
    (dest / TSV.filename).write_bytes(TSV_BYTES)
    assert _fetch(TSV.name) == [dest / TSV.filename]
    assert server.requests == []
    assert "already present" in capsys.readouterr().out


def test_invalid_present_file_replaced(server, dest):
    dest.mkdir()
    (dest / TSV.filename).write_bytes(b"not\ta valid line\n")
    server.routes["/" + TSV.filename] = TSV_BYTES
    _fetch(TSV.name, progress=False)
    assert (dest / TSV.filename).read_bytes() == TSV_BYTES
    assert server.requests == ["/" + TSV.filename]


def test_unknown_name_raises_keyerror(dest):
    with pytest.raises(KeyError, match="unknown dataset"):
        download.fetch(["nope"])


# --------------------------------------------------------------------------- limits


def test_deadline_stops_a_trickling_server(server, dest):
    server.routes["/" + TSV.filename] = ("slow", TSV_BYTES)
    start = time.monotonic()
    with pytest.raises(download.FetchError, match="deadline"):
        _fetch(TSV.name, progress=False, deadline=1.0)
    assert time.monotonic() - start < 1.0 + TIMEOUT + 1.5
    _assert_clean(dest, TSV.filename)


def test_deadline_from_the_environment(server, dest, monkeypatch):
    monkeypatch.setenv("RECSYS_FETCH_DEADLINE", "0.5")
    server.routes["/" + TSV.filename] = ("slow", TSV_BYTES)
    with pytest.raises(download.FetchError, match="deadline of 0.5 s"):
        _fetch(TSV.name, progress=False)
    _assert_clean(dest, TSV.filename)


@pytest.mark.parametrize("kind", ["whole", "no length"])
def test_size_cap_from_the_registry(server, dest, monkeypatch, kind):
    small = dataclasses.replace(TSV, size=100)
    monkeypatch.setitem(datasets.REGISTRY, TSV.name, small)
    server.routes["/" + TSV.filename] = (kind, TSV_BYTES * 20)  # over 2 x 100 bytes
    with pytest.raises(download.FetchError, match="larger than 200 bytes"):
        _fetch(TSV.name, progress=False)
    _assert_clean(dest, TSV.filename)
    within = b"".join(TSV_BYTES.splitlines(keepends=True)[:15])
    assert 100 < len(within) <= 200
    server.routes["/" + TSV.filename] = (kind, within)  # within the margin
    assert _fetch(TSV.name, progress=False) == [dest / TSV.filename]


def test_every_dataset_attempted_and_every_failure_reported(server, dest):
    server.routes["/" + REVIEWS.filename] = _reviews_bytes()  # TSV and fantasy: 404
    fantasy = datasets.get_dataset("fantasy_reviews")
    with pytest.raises(download.FetchError) as info:
        _fetch(TSV.name, REVIEWS.name, fantasy.name, progress=False)
    msg = str(info.value)
    assert TSV.filename in msg and fantasy.filename in msg and "2 of 3" in msg
    assert REVIEWS.filename not in msg.replace(fantasy.filename, "")
    assert sorted(p.name for p in dest.iterdir()) == [REVIEWS.filename]


def test_mirrors_of_the_review_files(monkeypatch):
    monkeypatch.delenv("RECSYS_DATA_URL", raising=False)
    for name in ("fantasy_reviews", "comics_reviews"):
        urls = download.base_urls(name)
        assert urls[: len(download.BASE_URLS)] == list(download.BASE_URLS)
        assert urls[-1] == "https://mcauleylab.ucsd.edu/public_datasets/gdrive/goodreads/byGenre/"
    assert download.GENRE_MIRROR not in download.base_urls("fantasy_tsv")
    monkeypatch.setenv("RECSYS_DATA_URL", "http://a/,http://b")
    assert download.base_urls("comics_reviews") == ["http://a/", "http://b/"]


def test_registry_entries_have_size_and_hash_fields():
    for ds in datasets.REGISTRY.values():
        assert ds.size is None or ds.size > 1_000_000
        assert ds.sha256 is None or len(ds.sha256) == 64


def test_staging_of_a_killed_fetch_is_removed(server, dest):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    dest.mkdir()
    stale = dest / f".partial-{dead}-abc"
    stale.mkdir()
    (stale / TSV.filename).write_bytes(b"half a file")
    server.routes["/" + TSV.filename] = TSV_BYTES
    _fetch(TSV.name, progress=False)
    assert sorted(p.name for p in dest.iterdir()) == [TSV.filename]


def test_sigterm_leaves_nothing_partial(server, dest):
    import signal
    import subprocess
    import sys

    server.routes["/" + TSV.filename] = ("slow", TSV_BYTES)
    code = ("import sys; from recsys_helpers.download import fetch_command; "
            "sys.exit(fetch_command(['fantasy_tsv']))")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(400):  # until the download has begun
            if dest.exists() and list(dest.glob(".partial-*/*")):
                time.sleep(0.5)  # a few bytes in
                break
            time.sleep(0.05)
        else:
            pytest.fail("the download did not begin")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "no partial file" in err
    _assert_clean(dest, TSV.filename)


# ---- goodreads_interactions.csv: fetched only when named -----------------------------

INTERACTIONS_CSV = (b"user_id,book_id,is_read,rating,is_reviewed\n"
                    + b"".join(f"{i},{i % 7},1,{i % 6},0\n".encode() for i in range(30)))


def test_the_interactions_file_is_fetched_only_when_named(server, dest):
    ds = datasets.get_dataset("interactions")
    assert ds.filename == "goodreads_interactions.csv"
    assert ds.name not in datasets.REGISTRY  # not one of the course's three files
    assert "mcauleylab.ucsd.edu" in " ".join(download.EXTRA_MIRRORS[ds.name])
    server.routes["/" + ds.filename] = INTERACTIONS_CSV
    assert _fetch("interactions", progress=False) == [dest / ds.filename]
    assert (dest / ds.filename).read_bytes() == INTERACTIONS_CSV
    # `fetch` with no name asks only for the course's files
    server.requests.clear()
    with pytest.raises(download.FetchError):
        _fetch(progress=False)
    assert not any(ds.filename in r for r in server.requests)


@pytest.mark.parametrize("body, line", [
    (b"user,book,rating\n1,2,3\n", 1),                                       # wrong header
    (b"user_id,book_id,is_read,rating,is_reviewed\n1,2,1,4,0\n1,2,x,4,0\n", 3),  # not a number
    (b"user_id,book_id,is_read,rating,is_reviewed\n1,2,1,9,0\n", 2),             # rating 9
])
def test_a_bad_interactions_file_is_refused_naming_the_line(tmp_path, body, line):
    path = tmp_path / "goodreads_interactions.csv"
    path.write_bytes(body)
    with pytest.raises(datasets.DataFormatError, match=f"line {line}"):
        check_file(path, "csv")


def test_the_interactions_file_is_never_loaded_into_pandas(tmp_path):
    (tmp_path / "goodreads_interactions.csv").write_bytes(INTERACTIONS_CSV)
    with pytest.raises(ValueError, match="Spark"):
        datasets.load("interactions", data="full", data_dir=tmp_path)
    # no bundled sample of it: even RECSYS_DATA=sample reads the fetched file, or says
    # how to fetch it
    assert datasets.locate("interactions", data="sample", data_dir=tmp_path,
                           verbose=False) == tmp_path / "goodreads_interactions.csv"
    with pytest.raises(FileNotFoundError, match="fetch interactions"):
        datasets.locate("interactions", data="sample", data_dir=tmp_path / "empty")


def test_book_metadata_is_fetched_on_request_and_checked(server, dest):
    """The real titles and genres come only when named, are checked like the course's
    files (a file that is not metadata is refused, nothing partial stays), and are then
    what the notebooks print beside the real reviews."""
    titles, genres = (datasets.get_dataset(n) for n in ("comics_books", "book_genres"))
    assert titles.filename == "goodreads_books_comics_graphic.json.gz"
    assert genres.filename == "goodreads_book_genres_initial.json.gz"
    assert titles.name not in datasets.REGISTRY and titles.name in datasets.BOOK_METADATA
    server.routes["/" + titles.filename] = gzip.compress(
        b'{"book_id": "b0", "title": "A Real Title"}\n{"book_id": "b1", "title": "Another"}\n')
    server.routes["/" + genres.filename] = b"not gzip, not metadata"
    with pytest.raises(download.FetchError):
        _fetch("comics_books", "book_genres", progress=False)
    assert (dest / titles.filename).is_file()
    _assert_clean_of(dest, genres.filename)
    server.routes["/" + genres.filename] = gzip.compress(
        b'{"book_id": "b0", "genres": {"comics, graphic": 12, "fantasy, paranormal": 3}}\n')
    assert _fetch("book_genres", progress=False) == [dest / genres.filename]
    (dest / REVIEWS.filename).write_bytes(_reviews_bytes())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RECSYS_DATA", "full")
        from recsys_helpers.books import book_table

        table = book_table("comics_reviews", ["b0", "b1"], verbose=False)
    assert table.loc["b0"].tolist() == ["A Real Title", "comics, graphic"]
    assert table.loc["b1"].tolist() == ["Another", ""]


def _assert_clean_of(dest: Path, filename: str):
    assert not (dest / filename).exists()
    assert not [p.name for p in dest.iterdir() if filename in p.name]

"""The course's three Goodreads files: registry, location, loading and caching.

Which copy a notebook reads is decided here and only here, from two environment
variables:

``RECSYS_DATA``
    ``sample`` (the synthetic files bundled in ``data/``), ``full`` (the real files,
    fetched with ``python -m recsys_helpers fetch`` or brought by you) or ``auto``
    (the default: the full file if it is present, else the bundled sample).
``RECSYS_DATA_DIR``
    A folder holding files with the registry's names (bring your own data).  When it
    is not set, the full files live in the download folder (see
    :func:`download_dir`).

Loading never evaluates a data line: JSON lines are parsed with :mod:`orjson` (or
:mod:`json` where orjson is not installed) and Python-literal lines (some course copies
hold those) with :func:`ast.literal_eval`, which accepts literals only.  Gzip files are
decompressed with python-isal's :mod:`isal.igzip` when it is installed (about three
times as fast as :mod:`gzip`), else with :mod:`gzip`.
"""

from __future__ import annotations

import ast
import contextlib
import glob
import gzip
import hashlib
import io
import json
import os
import re
import zlib
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path

import numpy as np
import pandas as pd

try:  # the fast JSON parser; json gives the same records, about three times slower
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - orjson is a dependency
    _fast_loads = json.loads

try:  # ISA-L gzip decompression, about three times as fast as zlib's
    from isal import igzip as _gzip
    from isal import igzip_threaded as _gzip_threaded
    from isal.isal_zlib import error as _IsalError
except ImportError:  # pragma: no cover - python-isal is a dependency
    _gzip = gzip
    _gzip_threaded = None
    _IsalError = zlib.error

#: What reading a damaged gzip file raises: truncated (EOFError), a bad header or CRC
#: (gzip.BadGzipFile, an OSError), an invalid deflate stream (zlib.error, or isal's
#: IsalError, which is not a zlib.error), other read errors (OSError).
_GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error, _IsalError, OSError)

#: Decompressed bytes read at a time; the lines of each block are parsed together.
_BLOCK_SIZE = 1 << 20
#: Decompressed bytes per block of isal's background decompression thread: large
#: enough that the thread does not wait for the GIL after every block.
_THREAD_BLOCK_SIZE = 4 << 20

__all__ = [
    "DataFormatError",
    "Dataset",
    "REGISTRY",
    "BASE_URLS",
    "get_dataset",
    "sample_dir",
    "download_dir",
    "locate",
    "load",
    "load_ratings_tsv",
    "load_reviews",
    "REVIEW_FIELDS",
]


class DataFormatError(ValueError):
    """A data file that cannot be read; the message names the file (and the line)."""


#: Every field of a review record, in the order of the real files.
REVIEW_FIELDS = (
    "user_id",
    "book_id",
    "review_id",
    "rating",
    "review_text",
    "date_added",
    "date_updated",
    "read_at",
    "started_at",
    "n_votes",
    "n_comments",
)
_INT_FIELDS = {"rating", "n_votes", "n_comments"}
_DEFAULT_REVIEW_FIELDS = ("user_id", "book_id", "rating")

#: Where the real files are published, tried in order.  ``RECSYS_DATA_URL`` replaces
#: this list (several URLs may be given, separated by commas).
BASE_URLS = (
    "http://jmcauley.ucsd.edu/pml_data/",
    "http://cseweb.ucsd.edu/~jmcauley/pml/data/",
)


@dataclass(frozen=True)
class Dataset:
    """One file of the course: its seed name, its format and what it holds."""

    name: str
    filename: str
    format: str  # "tsv" or "jsonl.gz"
    description: str
    sha256: str | None = None  # the real file's digest, where it is known


REGISTRY: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset(
            "fantasy_tsv",
            "goodreads_fantasy.tsv",
            "tsv",
            "Goodreads fantasy ratings: user, item, rating (tab-separated, no header)",
        ),
        Dataset(
            "fantasy_reviews",
            "goodreads_reviews_fantasy_paranormal.json.gz",
            "jsonl.gz",
            "Goodreads fantasy/paranormal reviews, one record per line (about 3.4M)",
        ),
        Dataset(
            "comics_reviews",
            "goodreads_reviews_comics_graphic.json.gz",
            "jsonl.gz",
            "Goodreads comics/graphic reviews, one record per line (about 542k)",
        ),
    )
}


def get_dataset(name: str) -> Dataset:
    """Look a dataset up by its short name or its file name."""
    if isinstance(name, Dataset):
        return name
    if name in REGISTRY:
        return REGISTRY[name]
    for d in REGISTRY.values():
        if name == d.filename:
            return d
    known = ", ".join(f"{d.name} ({d.filename})" for d in REGISTRY.values())
    raise KeyError(f"unknown dataset {name!r}; known datasets: {known}")


def base_urls() -> list[str]:
    """The base URLs to try, in order (``RECSYS_DATA_URL`` overrides the defaults)."""
    override = os.environ.get("RECSYS_DATA_URL", "").strip()
    urls = [u.strip() for u in override.split(",") if u.strip()] if override else list(BASE_URLS)
    return [u if u.endswith("/") else u + "/" for u in urls]


def sample_dir() -> Path:
    """The folder of bundled synthetic files (``data/`` at the top of the course)."""
    here = Path(__file__).resolve().parent.parent / "data"
    if not here.is_dir():
        raise FileNotFoundError(
            f"the bundled sample folder {here} is missing; install the course from a "
            "clone of its repository (pip install -e .)"
        )
    return here


def download_dir() -> Path:
    """Where ``fetch`` puts the real files: ``RECSYS_DATA_DIR`` if set, else a cache folder."""
    env = os.environ.get("RECSYS_DATA_DIR", "").strip()
    if env:
        return Path(env).expanduser()
    import pooch

    return Path(pooch.os_cache("recsys-course"))


def locate(name: str, data: str | None = None, data_dir: str | os.PathLike | None = None,
           verbose: bool = True) -> Path:
    """Decide which copy of a dataset to read and return its path.

    Parameters
    ----------
    name : str
        Short name (``fantasy_tsv``, ``fantasy_reviews``, ``comics_reviews``) or file name.
    data : {"sample", "full", "auto"}, optional
        Defaults to ``RECSYS_DATA`` (itself defaulting to ``auto``).
    data_dir : path, optional
        Folder of full files; defaults to ``RECSYS_DATA_DIR`` or the download folder.
    verbose : bool
        Print one line saying which copy is used.
    """
    ds = get_dataset(name)
    mode = (data or os.environ.get("RECSYS_DATA", "") or "auto").strip().lower()
    if mode not in {"sample", "full", "auto"}:
        raise ValueError(f"RECSYS_DATA must be sample, full or auto, not {mode!r}")
    full_dir = Path(data_dir).expanduser() if data_dir else download_dir()
    full = full_dir / ds.filename
    if mode == "full" or (mode == "auto" and full.is_file()):
        if not full.is_file():
            raise FileNotFoundError(
                f"{ds.filename} is not in {full_dir}. Fetch it with "
                f"`python -m recsys_helpers fetch {ds.name}`, point RECSYS_DATA_DIR at a "
                "folder that holds it, or use RECSYS_DATA=sample for the bundled sample."
            )
        path, which = full, "full data"
    else:
        path, which = sample_dir() / ds.filename, "bundled synthetic sample"
    if verbose:
        print(f"Reading {ds.filename} ({which}): {_display_path(path)}")
    return path


def _display_path(path: Path) -> str:
    """A path as shown to the reader: relative to the course or the home folder."""
    path = Path(path)
    for base, label in ((Path(__file__).resolve().parent.parent, ""), (Path.home(), "~/")):
        try:
            return label + str(path.resolve().relative_to(base))
        except ValueError:
            continue
    return str(path)


# --------------------------------------------------------------------------- parsing


def _parse_record(line: bytes | str, path: Path, lineno: int) -> dict:
    """One review record: JSON, else a Python dict literal.  Never evaluates code."""
    try:
        rec = _fast_loads(line)
    except ValueError:
        try:  # what orjson refuses and json accepts: NaN, huge integers, a BOM, UTF-16...
            rec = json.loads(line)
        except ValueError:
            text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
            try:
                rec = ast.literal_eval(text.strip())
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
                raise DataFormatError(
                    f"{path}, line {lineno}: not a JSON object or Python dict literal "
                    f"({type(exc).__name__}): {text.strip()[:80]!r}"
                ) from None
    if not isinstance(rec, dict):
        raise DataFormatError(f"{path}, line {lineno}: expected a record (object), got "
                              f"{type(rec).__name__}")
    return rec


def _as_int(value, field: str, path: Path, lineno: int) -> int:
    """The value of an integer field: an int, an integral float or a numeral string."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    raise DataFormatError(f"{path}, line {lineno}: field {field!r} is not an integer: "
                          f"{str(value)[:40]!r}")


def _n_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def _open_gzip(path: Path):
    """A binary file object decompressing ``path``.

    With python-isal and more than one CPU, the decompression runs in a background
    thread (isal releases the GIL) while this thread parses the previous blocks.
    """
    if _gzip_threaded is not None and _n_cpus() > 1:
        return _gzip_threaded.open(path, "rb", threads=1, block_size=_THREAD_BLOCK_SIZE)
    return _gzip.open(path, "rb")


def _iter_blocks(path: Path, block_size: int | None = None):
    """Yield ``(number of the first line, lines)`` for blocks of a plain or gzip file.

    The file is read (and decompressed) ``block_size`` bytes at a time and each block
    split on ``b"\n"``, as iterating over the binary file would split it, but without
    one Python call per line.  ``lines`` holds whole lines without their ``\n``; the
    last line may lack one.  A damaged gzip file raises :class:`DataFormatError`.
    Close the generator when leaving it early (it may hold a decompression thread).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataFormatError(f"{path}: the file is empty")
    block_size = block_size or _BLOCK_SIZE
    lineno = 0  # lines yielded so far
    pending: list[bytes] = []  # the start of a line that continues in the next block
    try:
        with _open_gzip(path) if path.suffix == ".gz" else open(path, "rb") as fh:
            read = fh.read
            while block := read(block_size):
                lines = block.split(b"\n")
                tail = lines.pop()  # b"" when the block ends with a newline
                if not lines:  # no newline in this block: part of a very long line
                    pending.append(tail)
                    continue
                if pending:
                    pending.append(lines[0])
                    lines[0] = b"".join(pending)
                    pending.clear()
                if tail:
                    pending.append(tail)
                yield lineno + 1, lines
                lineno += len(lines)
        if pending:  # the last line, without a final newline
            yield lineno + 1, [b"".join(pending)]
    except _GZIP_ERRORS as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise DataFormatError(
            f"{path}: corrupt or truncated gzip data after line {lineno} ({exc}); "
            "delete the file and fetch it again"
        ) from None


_INT_TYPES = {int}


def _parse_block_fast(lines: list[bytes], fields: tuple, int_pos: list[int]) -> list | None:
    """The values of ``fields`` in ``lines``, flattened record after record.

    The fast path for a block of well-formed JSON lines whose integer fields hold ints:
    one comprehension, no per-line error handling.  Returns None when any line is not
    like that (blank, a Python literal, malformed, a missing field, a non-int integer
    field...); the caller then reads the block line by line and says what is wrong.
    """
    loads = _fast_loads
    try:
        if len(fields) == 1:
            (f,) = fields
            flat = [loads(line)[f] for line in lines]
        else:
            get = itemgetter(*fields)
            flat = [v for line in lines for v in get(loads(line))]
    except Exception:  # any failure is diagnosed by the line-by-line path
        return None
    nf = len(fields)
    for k in int_pos:
        if not set(map(type, flat[k::nf])) <= _INT_TYPES:
            return None
    return flat


def _parse_block_slow(lines: list[bytes], first: int, fields: tuple, int_pos: list[int],
                      path: Path, skip_bad_lines: bool) -> tuple[list, int]:
    """The line-by-line path: flattened values and the number of lines skipped."""
    flat: list = []
    skipped = 0
    for lineno, line in enumerate(lines, first):
        if not line.strip():
            continue
        try:
            rec = _parse_record(line, path, lineno)
            values = [rec[f] for f in fields]
            for k in int_pos:
                if type(values[k]) is not int:
                    values[k] = _as_int(values[k], fields[k], path, lineno)
        except KeyError as exc:
            if skip_bad_lines:
                skipped += 1
                continue
            raise DataFormatError(f"{path}, line {lineno}: record has no field {exc}") from None
        except DataFormatError:
            if skip_bad_lines:
                skipped += 1
                continue
            raise
        flat.extend(values)
    return flat, skipped


class _Codes(dict):
    """Value -> code, codes given in order of first appearance."""

    def __missing__(self, key):
        code = self[key] = len(self)
        return code


def _categorical(values: list) -> pd.Categorical:
    """A categorical of the string values, categories sorted (as ``pd.Categorical``).

    Codes come from one dict lookup per value and only the distinct values are sorted,
    which is faster than ``pd.Categorical(values)`` on a list of Python strings.
    """
    if not set(map(type, values)) <= {str}:  # rare: numbers or nulls in a string field
        return pd.Categorical(pd.Series(values, dtype=object).astype(str))
    codes = _Codes()
    first_codes = np.fromiter(map(codes.__getitem__, values), np.int64, len(values))
    uniques = list(codes)
    order = sorted(range(len(uniques)), key=uniques.__getitem__)
    rank = np.empty(len(uniques), np.int64)
    rank[order] = np.arange(len(uniques))
    return pd.Categorical.from_codes(rank[first_codes],
                                     categories=pd.Index([uniques[i] for i in order]))


def load_reviews(path: str | os.PathLike, fields=_DEFAULT_REVIEW_FIELDS, *,
                 skip_bad_lines: bool = False, cache: bool = True) -> pd.DataFrame:
    """Load a Goodreads reviews file (gzip, one record per line) as a DataFrame.

    Only the requested ``fields`` are kept (``review_text`` is dropped unless asked
    for).  String columns come back as pandas categoricals, integer fields as int32.
    The slim columns are cached beside the source (keyed by the source's size,
    modification time and the fields), so a second load is near-instant.

    Parameters
    ----------
    skip_bad_lines : bool
        Skip malformed records instead of raising; the number skipped is printed and
        stored in ``df.attrs["skipped_lines"]``.
    """
    path = Path(path)
    fields = tuple(fields)
    unknown = [f for f in fields if f not in REVIEW_FIELDS]
    if unknown:
        raise ValueError(f"unknown review fields {unknown}; known: {REVIEW_FIELDS}")
    if cache:
        df = _read_cache(path, fields)
        # A cache built with skipped lines must not satisfy a strict load: re-read, so
        # that the malformed line is reported.
        if df is not None and (skip_bad_lines or not df.attrs["skipped_lines"]):
            if df.attrs["skipped_lines"]:
                print(f"{path.name}: skipped {df.attrs['skipped_lines']:,} malformed line(s)")
            return df
    # Blocks of lines are parsed by one comprehension each (the fast path); a block
    # with anything unusual in it is read again line by line, which skips blank lines,
    # falls back to json and ast.literal_eval, converts integral floats and numeral
    # strings, and reports (or skips) bad lines in file order with their numbers.
    nf = len(fields)
    int_pos = [k for k, f in enumerate(fields) if f in _INT_FIELDS]
    columns: list[list] = [[] for _ in fields]
    skipped = 0
    with contextlib.closing(_iter_blocks(path)) as blocks:
        for first, lines in blocks:
            flat = _parse_block_fast(lines, fields, int_pos)
            if flat is None:
                flat, bad = _parse_block_slow(lines, first, fields, int_pos, path,
                                              skip_bad_lines)
                skipped += bad
            for k, col in enumerate(columns):
                col.extend(flat[k::nf])
    n = len(columns[0]) if fields else 0
    if n == 0:
        raise DataFormatError(f"{path}: no records found")
    if skipped:
        print(f"{path.name}: skipped {skipped:,} malformed line(s)")
    data = {}
    for f, col in zip(fields, columns):
        if f in _INT_FIELDS:
            try:
                data[f] = np.asarray(col, dtype=np.int32)
            except (TypeError, ValueError, OverflowError):
                raise DataFormatError(f"{path}: field {f!r} holds values out of the int32 "
                                      "range") from None
        else:
            data[f] = _categorical(col)
        col.clear()  # free the Python objects as soon as their column is built
    df = pd.DataFrame(data)
    df.attrs["skipped_lines"] = skipped
    if cache:
        _write_cache(path, fields, df)
    return df


def load_ratings_tsv(path: str | os.PathLike, *, skip_bad_lines: bool = False) -> pd.DataFrame:
    """Load ``goodreads_fantasy.tsv``: three tab-separated columns, user, item, rating.

    Returns a DataFrame with categorical ``user`` and ``item`` and a float32 ``rating``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataFormatError(f"{path}: the file is empty")
    if not skip_bad_lines:
        try:
            # No ``names``: given three names, pandas would silently read a file with a
            # fourth column by taking the first column as the index.
            df = pd.read_csv(path, sep="\t", header=None,
                             dtype={0: str, 1: str, 2: np.float32},
                             keep_default_na=False, na_values={2: [""]}, quoting=3,
                             engine="c")
            if df.shape[1] == 3:
                df.columns = ["user", "item", "rating"]
            if (df.shape[1] == 3 and not df.empty and not df.isna().to_numpy().any()
                    and np.isfinite(df["rating"]).all()):
                df["user"] = df["user"].astype("category")
                df["item"] = df["item"].astype("category")
                df.attrs["skipped_lines"] = 0
                return df
        except (ValueError, pd.errors.ParserError):
            pass  # the loop below finds the offending line and says what is wrong
    users, items, ratings = [], [], []
    skipped = 0
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            parts = line.split("\t")
            problem = None
            if len(parts) != 3:
                problem = f"expected 3 tab-separated columns (user, item, rating), found {len(parts)}"
            else:
                try:
                    r = float(parts[2])
                    if not np.isfinite(r):
                        raise ValueError
                except ValueError:
                    problem = f"rating {parts[2]!r} is not a number"
            if problem:
                if skip_bad_lines:
                    skipped += 1
                    continue
                raise DataFormatError(f"{path}, line {lineno}: {problem}: {line[:80]!r}")
            users.append(parts[0])
            items.append(parts[1])
            ratings.append(r)
    if not users:
        raise DataFormatError(f"{path}: no ratings found")
    if skipped:
        print(f"{path.name}: skipped {skipped:,} malformed line(s)")
    df = pd.DataFrame({
        "user": pd.Categorical(users),
        "item": pd.Categorical(items),
        "rating": np.asarray(ratings, dtype=np.float32),
    })
    df.attrs["skipped_lines"] = skipped
    return df


def load(name: str, fields=None, *, data: str | None = None,
         data_dir: str | os.PathLike | None = None, **kwargs) -> pd.DataFrame:
    """Locate a dataset (see :func:`locate`) and load it."""
    ds = get_dataset(name)
    path = locate(ds.name, data=data, data_dir=data_dir)
    if ds.format == "tsv":
        return load_ratings_tsv(path, **kwargs)
    return load_reviews(path, fields or _DEFAULT_REVIEW_FIELDS, **kwargs)


# --------------------------------------------------------------------------- cache

_CACHE_VERSION = 1


def _cache_key(path: Path, fields: tuple) -> str:
    st = path.stat()
    raw = f"{_CACHE_VERSION}|{path.name}|{st.st_size}|{st.st_mtime_ns}|{','.join(fields)}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _cache_tag(fields: tuple) -> str:
    """The field set as it appears in a cache file's name: ``user_id+book_id+rating``."""
    return "+".join(fields)


def _cache_paths(path: Path, fields: tuple) -> list[Path]:
    """Candidate cache files: beside the source, then a user cache folder.

    A cache file is named ``.<source name>.<fields>.<key>.cache.npz``, the key hashing
    the source's size and modification time with the fields.
    """
    key = _cache_key(path, fields)
    name = f".{path.name}.{_cache_tag(fields)}.{key}.cache.npz"
    out = [path.parent / name]
    try:
        import pooch

        out.append(Path(pooch.os_cache("recsys-course")) / "load-cache" / name)
    except Exception:  # pragma: no cover - pooch is a dependency
        pass
    return out


def _read_cache(path: Path, fields: tuple) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    for cp in _cache_paths(path, fields):
        if not cp.is_file():
            continue
        try:
            with np.load(cp, allow_pickle=False) as z:
                data = {}
                for f in fields:
                    if f in _INT_FIELDS:
                        data[f] = z[f]
                    else:
                        data[f] = pd.Categorical.from_codes(z[f + "__codes"], z[f + "__cats"])
                skipped = int(z["__skipped"])
            df = pd.DataFrame(data)
            df.attrs["skipped_lines"] = skipped
            return df
        except Exception:  # a damaged cache is simply rebuilt
            continue
    return None


def _write_cache(path: Path, fields: tuple, df: pd.DataFrame) -> None:
    arrays = {"__skipped": np.asarray(df.attrs.get("skipped_lines", 0))}
    for f in fields:
        col = df[f]
        if f in _INT_FIELDS:
            arrays[f] = col.to_numpy()
        else:
            arrays[f + "__codes"] = col.cat.codes.to_numpy()
            arrays[f + "__cats"] = col.cat.categories.to_numpy(dtype=str)
    # Stale caches of the same fields (of an older version of the source) are removed,
    # and those named before the fields were part of the name; the caches of other
    # field sets are kept.
    prefix = f".{path.name}."
    stale = re.compile(rf"(?:{re.escape(_cache_tag(fields))}\.)?[0-9a-f]{{16}}\.cache\.npz")
    for cp in _cache_paths(path, fields):
        tmp = cp.with_name(cp.name + f".{os.getpid()}.tmp")
        try:
            cp.parent.mkdir(parents=True, exist_ok=True)
            for old in cp.parent.glob(glob.escape(prefix) + "*.cache.npz"):
                if stale.fullmatch(old.name[len(prefix):]):
                    old.unlink(missing_ok=True)
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
            os.replace(tmp, cp)
            return
        except OSError:
            tmp.unlink(missing_ok=True)
            continue


def check_file(path: str | os.PathLike, fmt: str, n_records: int = 100) -> None:
    """Validate a file before it counts as present.

    A gzip file is read to its end (integrity) and its first ``n_records`` records
    parsed; a TSV has its first ``n_records`` lines checked.  Raises
    :class:`DataFormatError` naming the file.
    """
    path = Path(path)
    if fmt == "tsv":
        with open(path, "rb") as fh:
            head = b"".join(fh.readline() for _ in range(n_records))
        tmp = io.StringIO(head.decode("utf-8", "replace"))
        seen = 0
        for lineno, line in enumerate(tmp, 1):
            line = line.rstrip("\r\n")
            if not line:
                continue  # as load_ratings_tsv does
            parts = line.split("\t")
            if len(parts) != 3:
                raise DataFormatError(f"{path}, line {lineno}: expected 3 tab-separated columns")
            try:
                if not np.isfinite(float(parts[2])):
                    raise ValueError
            except ValueError:
                raise DataFormatError(f"{path}, line {lineno}: rating {parts[2]!r} is not a number") from None
            seen += 1
        if seen == 0:
            raise DataFormatError(f"{path}: the file is empty")
        return
    seen = 0
    with contextlib.closing(_iter_blocks(path)) as blocks:
        for first, lines in blocks:  # read to the end, parse the head only
            for lineno, line in enumerate(lines, first):
                if seen >= n_records:
                    break
                if line.strip():
                    rec = _parse_record(line, path, lineno)
                    missing = [f for f in _DEFAULT_REVIEW_FIELDS if f not in rec]
                    if missing:
                        raise DataFormatError(
                            f"{path}, line {lineno}: record has no field {missing[0]!r}")
                    seen += 1
    if seen == 0:
        raise DataFormatError(f"{path}: no records found")

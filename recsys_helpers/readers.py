"""Parsers of the course's two file formats, hardened against damaged or hostile input.

* Review files: one record per line, JSON (parsed with :mod:`orjson`, or :mod:`json` where
  orjson is not installed) or a Python dict literal (:func:`ast.literal_eval`, which
  accepts literals only).  A data line is never evaluated.  Gzip files are decompressed
  with python-isal's :mod:`isal.igzip` when it is installed (about three times as fast
  as :mod:`gzip`).
* The ratings TSV: user, item, rating, tab-separated, no header.

Every problem raises :class:`DataFormatError` naming the file and, where there is one,
the line: a line that is not a record, deeper than the parsers' nesting limit, longer
than :data:`MAX_LINE_BYTES`, not UTF-8; an empty or null ID; a rating that is not a
finite number within :data:`RATING_SCALE`.  ``skip_bad_lines`` skips bad lines instead
(damage to the file itself, such as a truncated gzip stream or an overlong line, still
raises).
"""

from __future__ import annotations

import ast
import contextlib
import gzip
import json
import math
import os
import warnings
import zlib
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

__all__ = ["DataFormatError", "REVIEW_FIELDS", "DEFAULT_REVIEW_FIELDS", "TSV_COLUMNS",
           "RATING_SCALE", "MAX_LINE_BYTES", "read_reviews", "read_ratings_tsv",
           "check_file", "read_json_lines"]


class DataFormatError(ValueError):
    """A data file that cannot be read; the message names the file (and the line)."""


#: Every field of a review record, in the order of the real files.
REVIEW_FIELDS = ("user_id", "book_id", "review_id", "rating", "review_text", "date_added",
                 "date_updated", "read_at", "started_at", "n_votes", "n_comments")
DEFAULT_REVIEW_FIELDS = ("user_id", "book_id", "rating")
#: The columns of the ratings TSV.
TSV_COLUMNS = ("user", "item", "rating")
_INT_FIELDS = frozenset({"rating", "n_votes", "n_comments"})
_ID_FIELDS = frozenset({"user_id", "book_id", "review_id"})
#: Goodreads ratings: 0 (no rating given) to 5 stars, in both files.
RATING_SCALE = (0, 5)
#: The longest line read (real review lines are below 100 kB): a longer one is damage.
MAX_LINE_BYTES = 8 << 20

#: What reading a damaged gzip file raises: truncated (EOFError), a bad header or CRC
#: (gzip.BadGzipFile, an OSError), an invalid deflate stream (zlib.error, or isal's
#: IsalError, which is not a zlib.error), other read errors (OSError).
_GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error, _IsalError, OSError)
#: Decompressed bytes read at a time; the lines of each block are parsed together.
_BLOCK_SIZE = 1 << 20
#: Decompressed bytes per block of isal's background decompression thread: large
#: enough that the thread does not wait for the GIL after every block.
_THREAD_BLOCK_SIZE = 4 << 20
#: What a parser raises on a hostile line, beyond ValueError: nesting too deep, too big.
_PARSE_ERRORS = (ValueError, SyntaxError, TypeError, MemoryError, RecursionError)


# --------------------------------------------------------------------------- lines


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


def _check_nonempty(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataFormatError(f"{path}: the file is empty")


def _split_blocks(fh, path: Path, block_size: int):
    """Yield ``(number of the first line, lines)``: whole lines, without their ``\\n``."""
    lineno, pending, pending_size = 0, [], 0  # pending: a line continuing in the next block
    while block := fh.read(block_size):
        lines = block.split(b"\n")
        tail = lines.pop()  # b"" when the block ends with a newline
        if pending and lines:
            lines[0] = b"".join([*pending, lines[0]])
            pending, pending_size = [], 0
        if tail:
            pending.append(tail)
            pending_size += len(tail)
            if pending_size > MAX_LINE_BYTES:
                raise _bad_line(path, lineno + len(lines) + 1, f"longer than {MAX_LINE_BYTES:,} "
                                                             "bytes; the file is damaged")
        if lines:
            yield lineno + 1, lines
            lineno += len(lines)
    if pending:  # the last line, without a final newline
        yield lineno + 1, [b"".join(pending)]


def iter_blocks(path: str | os.PathLike, block_size: int | None = None):
    """Yield ``(number of the first line, lines)`` for blocks of a plain or gzip file.

    The file is read (and decompressed) ``block_size`` bytes at a time and each block
    split on ``b"\\n"``, as iterating over the binary file would split it, but without
    one Python call per line; the last line may lack its ``\\n``.  A damaged gzip file
    raises :class:`DataFormatError`.  Close the generator when leaving it early (it may
    hold a decompression thread).
    """
    path = Path(path)
    _check_nonempty(path)
    lineno = 0
    try:
        with _open_gzip(path) if path.suffix == ".gz" else open(path, "rb") as fh:
            for first, lines in _split_blocks(fh, path, block_size or _BLOCK_SIZE):
                lineno = first + len(lines) - 1
                yield first, lines
    except FileNotFoundError:
        raise
    except _GZIP_ERRORS as exc:
        raise DataFormatError(
            f"{path}: corrupt or truncated gzip data after line {lineno} ({exc}); "
            "delete the file and fetch it again") from None


# --------------------------------------------------------------------------- records


def _bad_line(path: Path, lineno: int, problem: str) -> DataFormatError:
    return DataFormatError(f"{path}, line {lineno}: {problem}")


def _literal(line: bytes | str, path: Path, lineno: int):
    """A Python-literal line; bytes must be UTF-8."""
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _bad_line(path, lineno, f"bytes that are not UTF-8 at byte {exc.start} "
                                          "(a damaged or wrongly encoded file)") from None
    try:
        return ast.literal_eval(line.strip())
    except _PARSE_ERRORS as exc:
        raise _bad_line(path, lineno, f"not a JSON object or Python dict literal "
                                      f"({type(exc).__name__}): {line.strip()[:80]!r}") from None


def parse_record(line: bytes | str, path: Path, lineno: int) -> dict:
    """One review record: JSON, else a Python dict literal.  Never evaluates code."""
    try:
        rec = _fast_loads(line)
    except _PARSE_ERRORS:
        try:  # what orjson refuses and json accepts: NaN, huge integers, a BOM, UTF-16...
            rec = json.loads(line)
        except _PARSE_ERRORS:
            rec = _literal(line, path, lineno)
    if not isinstance(rec, dict):
        raise _bad_line(path, lineno, f"expected a record (object), got {type(rec).__name__}")
    return rec


def _as_int(value, field: str, path: Path, lineno: int) -> int:
    """The value of an integer field: an int, an integral float or a numeral string."""
    if type(value) is int:
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return int(value)
    raise _bad_line(path, lineno, f"field {field!r} is not an integer: {str(value)[:40]!r}")


def _check_value(value, field: str, path: Path, lineno: int):
    """A record's value, converted and checked: IDs non-empty, ratings on the scale."""
    if field in _INT_FIELDS:
        value = _as_int(value, field, path, lineno)
        if field == "rating" and not RATING_SCALE[0] <= value <= RATING_SCALE[1]:
            raise _bad_line(path, lineno, f"rating {value} is outside the scale "
                                          f"{RATING_SCALE[0]}-{RATING_SCALE[1]}")
    elif field in _ID_FIELDS and (value is None or value == ""):
        raise _bad_line(path, lineno, f"field {field!r} is empty ({value!r})")
    return value


def _record_values(line: bytes, lineno: int, fields: tuple, path: Path) -> list:
    rec = parse_record(line, path, lineno)
    missing = [f for f in fields if f not in rec]
    if missing:
        raise _bad_line(path, lineno, f"record has no field {missing[0]!r}")
    return [_check_value(rec[f], f, path, lineno) for f in fields]


# --------------------------------------------------------------------------- blocks


def _block_is_clean(flat: list, fields: tuple) -> bool:
    """Whether a fast-parsed block needs no conversion and holds no bad value."""
    nf = len(fields)
    for k, f in enumerate(fields):
        values = flat[k::nf]
        if f in _INT_FIELDS and not set(map(type, values)) <= {int}:
            return False
        if f == "rating" and values and not (RATING_SCALE[0] <= min(values)
                                             and max(values) <= RATING_SCALE[1]):
            return False
        if f in _ID_FIELDS and (None in values or "" in values):
            return False
    return True


def _parse_block_fast(lines: list[bytes], fields: tuple) -> list | None:
    """The values of ``fields`` in ``lines``, flattened record after record.

    The fast path for a block of well-formed JSON lines: one comprehension, no per-line
    error handling.  Returns None when any line is unusual (blank, a Python literal,
    malformed, a missing field, a value to convert or refuse); the caller then reads the
    block line by line and says what is wrong.
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
    return flat if _block_is_clean(flat, fields) else None


def _parse_block_slow(lines: list[bytes], first: int, fields: tuple, path: Path,
                      skip_bad_lines: bool) -> tuple[list, int]:
    """The line-by-line path: flattened values and the number of lines skipped."""
    flat: list = []
    skipped = 0
    for lineno, line in enumerate(lines, first):
        if not line.strip():
            continue
        try:
            flat.extend(_record_values(line, lineno, fields, path))
        except DataFormatError:
            if not skip_bad_lines:
                raise
            skipped += 1
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
    if not set(map(type, values)) <= {str}:  # rare: numbers in a string field
        return pd.Categorical(pd.Series(values, dtype=object).astype(str))
    codes = _Codes()
    first_codes = np.fromiter(map(codes.__getitem__, values), np.int64, len(values))
    uniques = list(codes)
    order = sorted(range(len(uniques)), key=uniques.__getitem__)
    rank = np.empty(len(uniques), np.int64)
    rank[order] = np.arange(len(uniques))
    return pd.Categorical.from_codes(rank[first_codes],
                                     categories=pd.Index([uniques[i] for i in order]))


def _column(field: str, values: list, path: Path):
    if field not in _INT_FIELDS:
        return _categorical(values)
    try:
        return np.asarray(values, dtype=np.int32)
    except (TypeError, ValueError, OverflowError):
        raise DataFormatError(f"{path}: field {field!r} holds values out of the int32 "
                              "range") from None


def read_reviews(path: str | os.PathLike, fields=DEFAULT_REVIEW_FIELDS, *,
                 skip_bad_lines: bool = False) -> pd.DataFrame:
    """Parse a reviews file (plain or gzip, one record per line) into a DataFrame.

    String fields become categoricals, integer fields int32; the number of lines
    skipped is in ``df.attrs["skipped_lines"]``.  No cache: see
    :func:`recsys_helpers.datasets.load_reviews`.
    """
    path, fields = Path(path), tuple(fields)
    columns: list[list] = [[] for _ in fields]
    skipped = 0
    # Blocks of lines are parsed by one comprehension each (the fast path); a block with
    # anything unusual in it is read again line by line, which reports (or skips) bad
    # lines in file order with their numbers.
    with contextlib.closing(iter_blocks(path)) as blocks:
        for first, lines in blocks:
            flat = _parse_block_fast(lines, fields)
            if flat is None:
                flat, bad = _parse_block_slow(lines, first, fields, path, skip_bad_lines)
                skipped += bad
            for k, col in enumerate(columns):
                col.extend(flat[k::len(fields)])
    if not fields or not columns[0]:
        raise DataFormatError(f"{path}: no records found")
    data = {}
    for f, col in zip(fields, columns):
        data[f] = _column(f, col, path)
        col.clear()  # free the Python objects as soon as their column is built
    df = pd.DataFrame(data)
    df.attrs["skipped_lines"] = skipped
    return df


# --------------------------------------------------------------------------- TSV


def _tsv_row(raw: bytes, lineno: int, path: Path) -> tuple[str, str, float] | None:
    """The one check of a TSV line: None for a blank line, else (user, item, rating)."""
    try:
        line = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise _bad_line(path, lineno, f"bytes that are not UTF-8 at byte {exc.start} "
                                      "(a damaged or wrongly encoded file)") from None
    if not line:
        return None
    parts = line.split("\t")
    if len(parts) != 3:
        raise _bad_line(path, lineno, "expected 3 tab-separated columns (user, item, rating), "
                                      f"found {len(parts)}: {line[:80]!r}")
    if not parts[0] or not parts[1]:
        raise _bad_line(path, lineno, f"empty user or item ID: {line[:80]!r}")
    try:
        rating = float(parts[2])
    except ValueError:
        raise _bad_line(path, lineno, f"rating {parts[2]!r} is not a number") from None
    if not (math.isfinite(rating) and RATING_SCALE[0] <= rating <= RATING_SCALE[1]):
        raise _bad_line(path, lineno, f"rating {parts[2]!r} is not a number within the scale "
                                      f"{RATING_SCALE[0]}-{RATING_SCALE[1]}")
    return parts[0], parts[1], rating


#: What :func:`_tsv_rows` yields for a bad line it skips.
_SKIPPED = ()


def _tsv_rows(path: Path, skip_bad_lines: bool, limit: int | None = None):
    """Yield the rows of a TSV (``limit`` of them at most); counts skipped lines."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if len(raw) > MAX_LINE_BYTES:
                raise _bad_line(path, lineno, f"longer than {MAX_LINE_BYTES:,} bytes; the file "
                                              "is damaged")
            try:
                row = _tsv_row(raw, lineno, path)
            except DataFormatError:
                if not skip_bad_lines:
                    raise
                row = _SKIPPED
            if row is not None:
                yield row
                limit = None if limit is None else limit - 1
                if limit == 0:
                    return


def _read_tsv_fast(path: Path) -> pd.DataFrame | None:
    """pandas' C parser, when every line is good; None sends the caller line by line."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # 1e300 overflows: refused below
            # No ``names``: given three names, pandas would silently read a file with a
            # fourth column by taking the first column as the index.
            df = pd.read_csv(path, sep="\t", header=None, quoting=3, engine="c",
                             dtype={0: str, 1: str, 2: np.float32},
                             keep_default_na=False, na_values={2: [""]})
    except (ValueError, pd.errors.ParserError):  # UnicodeDecodeError is a ValueError
        return None
    if df.shape[1] != 3 or df.empty:
        return None
    df.columns = list(TSV_COLUMNS)
    rating = df["rating"].to_numpy()
    if not (np.isfinite(rating).all() and rating.min() >= RATING_SCALE[0]
            and rating.max() <= RATING_SCALE[1]):
        return None
    if (df["user"] == "").any() or (df["item"] == "").any():
        return None
    df["user"] = df["user"].astype("category")
    df["item"] = df["item"].astype("category")
    return df


def read_ratings_tsv(path: str | os.PathLike, *, skip_bad_lines: bool = False) -> pd.DataFrame:
    """Parse the ratings TSV: categorical ``user`` and ``item``, float32 ``rating``."""
    path = Path(path)
    _check_nonempty(path)
    df = None if skip_bad_lines else _read_tsv_fast(path)
    if df is not None:
        df.attrs["skipped_lines"] = 0
        return df
    rows = list(_tsv_rows(path, skip_bad_lines))
    good = [r for r in rows if r is not _SKIPPED]
    if not good:
        raise DataFormatError(f"{path}: no ratings found")
    users, items, ratings = zip(*good)
    df = pd.DataFrame({"user": pd.Categorical(users), "item": pd.Categorical(items),
                       "rating": np.asarray(ratings, dtype=np.float32)})
    df.attrs["skipped_lines"] = len(rows) - len(good)
    return df


# --------------------------------------------------------------------------- metadata


def read_json_lines(path: str | os.PathLike, fields=None, book_ids=None):
    """Yield the records of a gzip JSON-lines file (the book metadata files), safely.

    Each line is parsed as :func:`parse_record` does (JSON or a Python literal, never
    evaluated); a record needs a non-empty ``book_id``.  ``fields`` keeps only those keys;
    ``book_ids`` (a set of strings) keeps only those books.
    """
    path = Path(path)
    with contextlib.closing(iter_blocks(path)) as blocks:
        for first, lines in blocks:
            for lineno, line in enumerate(lines, first):
                if not line.strip():
                    continue
                if len(line) > MAX_LINE_BYTES:
                    raise _bad_line(path, lineno, f"longer than {MAX_LINE_BYTES:,} bytes")
                rec = parse_record(line, path, lineno)
                book = rec.get("book_id")
                if book is None or str(book).strip() == "":
                    raise _bad_line(path, lineno, "a record without a book_id")
                rec["book_id"] = str(book)
                if book_ids is not None and rec["book_id"] not in book_ids:
                    continue
                yield rec if fields is None else {f: rec.get(f) for f in fields}


# --------------------------------------------------------------------------- validation


def check_file(path: str | os.PathLike, fmt: str, n_records: int = 100) -> None:
    """Validate a file before it counts as present.

    A gzip file is read to its end (integrity) and its first ``n_records`` records
    parsed; a TSV has its first ``n_records`` lines checked.  Raises
    :class:`DataFormatError` naming the file.
    """
    path = Path(path)
    if fmt == "csv":
        _check_interactions_csv(path, n_records)
        return
    if fmt == "tsv":
        _check_nonempty(path)
        if not list(_tsv_rows(path, skip_bad_lines=False, limit=n_records)):
            raise DataFormatError(f"{path}: the file is empty")
        return
    if fmt == "metadata":
        with contextlib.closing(read_json_lines(path)) as records:
            seen = sum(1 for _ in records)  # reads to the end: integrity and every record
        if seen == 0:
            raise DataFormatError(f"{path}: no records found")
        return
    seen = 0
    with contextlib.closing(iter_blocks(path)) as blocks:
        for first, lines in blocks:  # read to the end, parse the head only
            for lineno, line in enumerate(lines[:max(n_records - seen, 0)], first):
                if line.strip():
                    _record_values(line, lineno, DEFAULT_REVIEW_FIELDS, path)
                    seen += 1
    if seen == 0:
        raise DataFormatError(f"{path}: no records found")


#: The header of ``goodreads_interactions.csv``.
INTERACTIONS_CSV_HEADER = "user_id,book_id,is_read,rating,is_reviewed"


def _check_interactions_csv(path: Path, n_records: int) -> None:
    """The interactions CSV: its header, then ``n_records`` rows of five integers with a
    rating on the 0-5 scale (the file is too large to read to its end here)."""
    _check_nonempty(path)
    with open(path, "rb") as fh:
        header = fh.readline(MAX_LINE_BYTES).decode("utf-8", "replace").strip()
        if header != INTERACTIONS_CSV_HEADER:
            raise DataFormatError(f"{path}, line 1: expected the header "
                                  f"{INTERACTIONS_CSV_HEADER!r}, found {header[:80]!r}")
        for lineno in range(2, n_records + 2):
            line = fh.readline(MAX_LINE_BYTES)
            if not line:
                break
            parts = line.strip().split(b",")
            if len(parts) != 5 or not all(p.isdigit() for p in parts) or int(parts[3]) > 5:
                raise DataFormatError(f"{path}, line {lineno}: expected five integers "
                                      f"(rating 0-5), found {line[:80]!r}")

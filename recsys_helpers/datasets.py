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

Loading never evaluates a data line: JSON lines are parsed with :mod:`json` and
Python-literal lines (some course copies hold those) with :func:`ast.literal_eval`,
which accepts literals only.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import io
import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

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

    @property
    def short(self) -> str:
        return self.name


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


def _iter_lines(path: Path):
    """Yield (line number, raw line) of a plain or gzip file, with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataFormatError(f"{path}: the file is empty")
    opener = gzip.open if path.suffix == ".gz" else open
    lineno = 0
    try:
        with opener(path, "rb") as fh:
            for lineno, line in enumerate(fh, 1):
                yield lineno, line
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise DataFormatError(
            f"{path}: corrupt or truncated gzip data after line {lineno} ({exc}); "
            "delete the file and fetch it again"
        ) from None


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
    columns: dict[str, list] = {f: [] for f in fields}
    appenders = [(f, columns[f].append) for f in fields]
    int_pos = [k for k, f in enumerate(fields) if f in _INT_FIELDS]
    skipped = 0
    for lineno, line in _iter_lines(path):
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
        for (_, append), v in zip(appenders, values):
            append(v)
    n = len(columns[fields[0]]) if fields else 0
    if n == 0:
        raise DataFormatError(f"{path}: no records found")
    if skipped:
        print(f"{path.name}: skipped {skipped:,} malformed line(s)")
    data = {}
    for f in fields:
        if f in _INT_FIELDS:
            try:
                data[f] = np.asarray(columns[f], dtype=np.int32)
            except (TypeError, ValueError, OverflowError):
                raise DataFormatError(f"{path}: field {f!r} holds values out of the int32 "
                                      "range") from None
        else:
            data[f] = pd.Categorical(pd.Series(columns[f], dtype=object).astype(str))
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


def _cache_paths(path: Path, fields: tuple) -> list[Path]:
    """Candidate cache files: beside the source, then a user cache folder."""
    key = _cache_key(path, fields)
    name = f".{path.name}.{key}.cache.npz"
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
    for cp in _cache_paths(path, fields):
        tmp = cp.with_name(cp.name + f".{os.getpid()}.tmp")
        try:
            cp.parent.mkdir(parents=True, exist_ok=True)
            for old in cp.parent.glob(f".{path.name}.*.cache.npz"):
                old.unlink(missing_ok=True)  # stale caches of an older version of the file
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
    for lineno, line in _iter_lines(path):
        if seen < n_records and line.strip():
            rec = _parse_record(line, path, lineno)
            missing = [f for f in _DEFAULT_REVIEW_FIELDS if f not in rec]
            if missing:
                raise DataFormatError(f"{path}, line {lineno}: record has no field {missing[0]!r}")
            seen += 1
    if seen == 0:
        raise DataFormatError(f"{path}: no records found")

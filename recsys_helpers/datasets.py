"""The course's Goodreads files: registry, which copy to read, and loading.

Which copy a notebook reads is decided here and only here, from two environment
variables:

``RECSYS_DATA``
    ``sample`` (the synthetic files bundled in ``data/``), ``full`` (the real files,
    fetched with ``python -m recsys_helpers fetch`` or brought by you) or ``auto``
    (the default: the full file if it is present, else the bundled sample).
``RECSYS_DATA_DIR``
    A folder holding files with the registry's names (bring your own data).  When it
    is not set, the full files live in the download folder (see :func:`download_dir`).

Parsing is in :mod:`recsys_helpers.readers` (never evaluating a data line), the
slim-column cache in :mod:`recsys_helpers.cache`, downloading and the mirrors in
:mod:`recsys_helpers.download`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pooch

from . import cache as _cache
from .readers import (
    DEFAULT_REVIEW_FIELDS,
    REVIEW_FIELDS,
    TSV_COLUMNS,
    DataFormatError,
    check_file,
    read_ratings_tsv,
    read_reviews,
)

__all__ = [
    "DataFormatError",
    "Dataset",
    "REGISTRY",
    "ON_REQUEST",
    "BOOK_METADATA",
    "LAB",
    "REVIEW_FIELDS",
    "TSV_COLUMNS",
    "get_dataset",
    "bundled_dir",
    "lab_dir",
    "sample_dir",
    "download_dir",
    "locate",
    "load",
    "load_ratings_tsv",
    "load_reviews",
    "check_file",
    "data_mode",
    "display_path",
]

_COURSE_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Dataset:
    """One file of the course: its short name, format, content and expected download.

    ``size`` is the expected size in bytes of the real file (the download is refused
    beyond a margin over it) and ``sha256`` its digest; either is None where not known.
    """

    name: str
    filename: str
    format: str  # "tsv" or "jsonl.gz"
    description: str
    size: int | None = None
    sha256: str | None = None


# The sizes are estimates from the record counts and typical record lengths of the
# published files (the exact byte counts and SHA-256 digests of the real files could
# not be taken where this registry was written: recorded as None).  An estimate only
# bounds a download (``fetch`` refuses more than about twice it); with a known SHA-256
# the file is also checked byte for byte.
REGISTRY: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset("fantasy_tsv", "goodreads_fantasy.tsv", "tsv",
                "Goodreads fantasy ratings: user, item, rating (tab-separated, no header)",
                size=170_000_000, sha256=None),
        Dataset("fantasy_reviews", "goodreads_reviews_fantasy_paranormal.json.gz", "jsonl.gz",
                "Goodreads fantasy/paranormal reviews, one record per line (about 3.4M)",
                size=1_300_000_000, sha256=None),
        Dataset("comics_reviews", "goodreads_reviews_comics_graphic.json.gz", "jsonl.gz",
                "Goodreads comics/graphic reviews, one record per line (about 542k)",
                size=200_000_000, sha256=None),
    )
}


#: Files fetched only when named (``fetch interactions``): no bundled sample, never loaded
#: into pandas.  ``goodreads_interactions.csv`` (user_id, book_id, is_read, rating,
#: is_reviewed; about 229M rows, 4.1 GB) is read by Spark (notebook 05,
#: :func:`recsys_helpers.spark.to_parquet`).  Its size is an estimate, its digest unknown.
ON_REQUEST: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset("interactions", "goodreads_interactions.csv", "csv",
                "Goodreads user-book interactions, all genres (about 229M; 4.1 GB): "
                "read with Spark, never into pandas",
                size=4_400_000_000, sha256=None),
    )
}


#: Book metadata (titles; genres), so that recommendations can be read by title and genre.
#: Bundled as generated files for the sample and the taste laboratory; the real ones are
#: fetched only when named (``fetch comics_books fantasy_books book_genres``).  Sizes are
#: estimates, digests unknown.
BOOK_METADATA: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset("comics_books", "goodreads_books_comics_graphic.json.gz", "metadata",
                "Goodreads comics/graphic books: title and more, one record per book (about 89k)",
                size=100_000_000, sha256=None),
        Dataset("fantasy_books", "goodreads_books_fantasy_paranormal.json.gz", "metadata",
                "Goodreads fantasy/paranormal books: title and more, one record per book "
                "(about 258k)", size=300_000_000, sha256=None),
        Dataset("book_genres", "goodreads_book_genres_initial.json.gz", "metadata",
                "Goodreads fuzzy genres of every book: {genre: readers who shelved it so}",
                size=100_000_000, sha256=None),
    )
}

#: What the taste laboratory (``data/lab/``) holds: the course's three files and the book
#: metadata, synthetic, with planted genres and tastes (see :mod:`recsys_helpers.lab`).
LAB = "taste laboratory (synthetic: planted genres and tastes)"


def get_dataset(name: str | Dataset) -> Dataset:
    """Look a dataset up by its short name or its file name (a Dataset is returned as is).

    The course's files (:data:`REGISTRY`) and the files fetched only on request
    (:data:`ON_REQUEST`) are both found.
    """
    if isinstance(name, Dataset):
        return name
    every = {**REGISTRY, **ON_REQUEST, **BOOK_METADATA}
    if name in every:
        return every[name]
    for d in every.values():
        if name == d.filename:
            return d
    known = ", ".join(f"{d.name} ({d.filename})" for d in every.values())
    raise KeyError(f"unknown dataset {name!r}; known datasets: {known}")


def bundled_dir() -> Path:
    """The folder of the bundled synthetic files (``data/`` at the top of the course)."""
    here = _COURSE_ROOT / "data"
    if not here.is_dir():
        raise FileNotFoundError(
            f"the bundled sample folder {here} is missing; install the course from a "
            "clone of its repository (pip install -e .)"
        )
    return here


def lab_dir() -> Path:
    """The folder of the taste laboratory's files (``data/lab/``)."""
    return bundled_dir() / "lab"


#: The former name of :func:`bundled_dir`, kept for existing code.
sample_dir = bundled_dir


def download_dir() -> Path:
    """Where ``fetch`` puts the real files: ``RECSYS_DATA_DIR`` if set, else a cache folder."""
    env = os.environ.get("RECSYS_DATA_DIR", "").strip()
    if env:
        return Path(env).expanduser()
    return Path(pooch.os_cache("recsys-course"))


def data_mode(data: str | None = None) -> str:
    """``sample``, ``full`` or ``auto``: ``data``, else ``RECSYS_DATA``, else ``auto``."""
    mode = (data or os.environ.get("RECSYS_DATA", "") or "auto").strip().lower()
    if mode not in {"sample", "full", "auto"}:
        raise ValueError(f"RECSYS_DATA must be sample, full or auto, not {mode!r}")
    return mode


def locate(name: str | Dataset, data: str | None = None,
           data_dir: str | os.PathLike | None = None, verbose: bool = True,
           lab: bool = False) -> Path:
    """Decide which copy of a dataset to read and return its path.

    Parameters
    ----------
    name : str or Dataset
        Short name (``fantasy_tsv``, ``fantasy_reviews``, ``comics_reviews``) or file name.
    data : {"sample", "full", "auto"}, optional
        Defaults to ``RECSYS_DATA`` (itself defaulting to ``auto``).
    data_dir : path, optional
        Folder of full files; defaults to ``RECSYS_DATA_DIR`` or the download folder.
    verbose : bool
        Print one line saying which copy is used.
    lab : bool
        The taste laboratory's copy (``data/lab/``), whatever ``RECSYS_DATA`` says.
    """
    ds = get_dataset(name)
    if lab:
        path = lab_dir() / ds.filename
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing; write the laboratory with "
                                    "`python -m recsys_helpers make-sample`")
        if verbose:
            print(f"Reading {ds.filename} ({LAB}): {display_path(path)}")
        return path
    mode = data_mode(data)
    full_dir = Path(data_dir).expanduser() if data_dir else download_dir()
    full = full_dir / ds.filename
    if ds.name in ON_REQUEST:
        mode = "full"  # no bundled sample of it
    if mode == "full" or (mode == "auto" and full.is_file()):
        if not full.is_file():
            raise FileNotFoundError(
                f"{ds.filename} is not in {full_dir}. Fetch it with "
                f"`python -m recsys_helpers fetch {ds.name}`, point RECSYS_DATA_DIR at a "
                "folder that holds it, or use RECSYS_DATA=sample for the bundled sample."
            )
        path, which = full, "full data"
    else:
        path, which = bundled_dir() / ds.filename, "bundled synthetic sample"
    if verbose:
        print(f"Reading {ds.filename} ({which}): {display_path(path)}")
    return path


def display_path(path: Path) -> str:
    """A path as shown to the reader: relative to the course or the home folder."""
    path = Path(path)
    for base, label in ((_COURSE_ROOT, ""), (Path.home(), "~/")):
        try:
            return label + str(path.resolve().relative_to(base))
        except ValueError:
            continue
    return str(path)


def _report_skipped(path: Path, df: pd.DataFrame) -> None:
    if df.attrs.get("skipped_lines"):
        print(f"{path.name}: skipped {df.attrs['skipped_lines']:,} malformed line(s)")


def load_reviews(path: str | os.PathLike, fields=DEFAULT_REVIEW_FIELDS, *,
                 skip_bad_lines: bool = False, cache: bool = True) -> pd.DataFrame:
    """Load a Goodreads reviews file (gzip, one record per line) as a DataFrame.

    Only the requested ``fields`` are kept (``review_text`` is dropped unless asked
    for).  String columns come back as pandas categoricals, integer fields as int32.
    The slim columns are cached (see :mod:`recsys_helpers.cache`), so a second load is
    near-instant.

    Parameters
    ----------
    skip_bad_lines : bool
        Skip malformed records instead of raising; the number skipped is printed and
        stored in ``df.attrs["skipped_lines"]``.
    """
    path, fields = Path(path), tuple(fields)
    unknown = [f for f in fields if f not in REVIEW_FIELDS]
    if unknown:
        raise ValueError(f"unknown review fields {unknown}; known: {REVIEW_FIELDS}")
    key = _cache.signature(path) if cache else None
    df = _cache.read(path, fields, key)
    # A cache built with skipped lines must not satisfy a strict load: re-read, so that
    # the malformed line is reported.
    if df is None or (df.attrs["skipped_lines"] and not skip_bad_lines):
        df = read_reviews(path, fields, skip_bad_lines=skip_bad_lines)
        if cache:
            _cache.write(path, fields, df, key)
    _report_skipped(path, df)
    return df


def load_ratings_tsv(path: str | os.PathLike, *, skip_bad_lines: bool = False) -> pd.DataFrame:
    """Load ``goodreads_fantasy.tsv``: three tab-separated columns, user, item, rating.

    Returns a DataFrame with categorical ``user`` and ``item`` and a float32 ``rating``.
    """
    df = read_ratings_tsv(path, skip_bad_lines=skip_bad_lines)
    _report_skipped(Path(path), df)
    return df


def load(name: str | Dataset, fields=None, *, data: str | None = None,
         data_dir: str | os.PathLike | None = None, lab: bool = False,
         **kwargs) -> pd.DataFrame:
    """Locate a dataset (see :func:`locate`) and load it.

    ``lab=True`` loads the taste laboratory's copy (synthetic, with planted genres).

    ``fields`` selects review fields (default: user, book, rating) or, for the TSV,
    columns among ``user``, ``item``, ``rating``.

    Example
    -------
    >>> df = load("comics_reviews", data="sample", verbose=False)
    >>> list(df.columns)
    ['user_id', 'book_id', 'rating']
    >>> int(df["rating"].min()) >= 0 and int(df["rating"].max()) <= 5
    True
    """
    ds = get_dataset(name)
    if ds.name in BOOK_METADATA:
        raise ValueError(f"{ds.filename} is book metadata: read it with "
                         "recsys_helpers.books.book_table")
    if ds.name in ON_REQUEST:
        raise ValueError(f"{ds.filename} is too large to load into pandas ({ds.description}); "
                         "convert it with recsys_helpers.spark.to_parquet("
                         f"{ds.name!r}, spark=...) and read it with Spark (notebook 05)")
    path = locate(ds.name, data=data, data_dir=data_dir, verbose=kwargs.pop("verbose", True),
                  lab=lab)
    if ds.format != "tsv":
        return load_reviews(path, fields or DEFAULT_REVIEW_FIELDS, **kwargs)
    unknown = [f for f in fields or () if f not in TSV_COLUMNS]
    if unknown:
        raise ValueError(f"{ds.filename} has the columns {TSV_COLUMNS}, not {unknown}")
    df = load_ratings_tsv(path, **kwargs)
    return df[list(fields)] if fields else df

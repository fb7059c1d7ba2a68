"""Download the course's real Goodreads files (``python -m recsys_helpers fetch``).

Each file is fetched by :func:`pooch.retrieve` into a hidden staging folder inside the
destination, checked (SHA-256 when the registry knows it, then
:func:`~recsys_helpers.readers.check_file`) and only then moved into place in one atomic
step, so the loader never sees a half-written or invalid file.  The mirrors are tried
in order.  Every download has an overall deadline (``RECSYS_FETCH_DEADLINE`` seconds,
or ``deadline=``) and a size cap (the registry's expected size times
:data:`SIZE_MARGIN`); on any stop, including SIGTERM, the staging folder is removed.
Staging folders left by a killed ``fetch`` are removed by the next one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path

import pooch

from .cache import process_alive
from .datasets import REGISTRY, Dataset, download_dir, get_dataset
from .readers import check_file

__all__ = ["BASE_URLS", "GENRE_MIRROR", "EXTRA_MIRRORS", "SIZE_MARGIN", "DEFAULT_DEADLINE",
           "FetchError", "base_urls", "fetch", "fetch_command"]

#: Where the real files are published, tried in order.  ``RECSYS_DATA_URL`` replaces
#: every mirror (several URLs may be given, separated by commas).
BASE_URLS = (
    "http://jmcauley.ucsd.edu/pml_data/",
    "http://cseweb.ucsd.edu/~jmcauley/pml/data/",
)
#: Where the UCSD Goodreads review files by genre moved in 2025.
GENRE_MIRROR = "https://mcauleylab.ucsd.edu/public_datasets/gdrive/goodreads/byGenre/"
#: Further mirrors of some files, tried after :data:`BASE_URLS`.
EXTRA_MIRRORS = {"fantasy_reviews": (GENRE_MIRROR,), "comics_reviews": (GENRE_MIRROR,),
                 "comics_books": (GENRE_MIRROR,), "fantasy_books": (GENRE_MIRROR,),
                 "book_genres": ("https://mcauleylab.ucsd.edu/public_datasets/gdrive/goodreads/",),
                 "interactions": ("https://mcauleylab.ucsd.edu/public_datasets/gdrive/goodreads/",)}
#: A download may exceed the registry's expected size by this factor, no more.
SIZE_MARGIN = 2.0
#: Seconds one file's download may take in all (``RECSYS_FETCH_DEADLINE`` overrides).
DEFAULT_DEADLINE = 3 * 3600.0
_STAGING_PREFIX = ".partial-"


class FetchError(RuntimeError):
    """A file could not be downloaded; the message lists each URL and why."""


class FetchTerminated(BaseException):
    """SIGTERM arrived during ``fetch`` (after the partial files were removed)."""


def base_urls(ds: Dataset | str | None = None) -> list[str]:
    """The base URLs to try for ``ds``, in order (``RECSYS_DATA_URL`` overrides them)."""
    override = os.environ.get("RECSYS_DATA_URL", "").strip()
    if override:
        urls = [u.strip() for u in override.split(",") if u.strip()]
    else:
        extra = EXTRA_MIRRORS.get(get_dataset(ds).name, ()) if ds is not None else ()
        urls = [*BASE_URLS, *extra]
    return [u if u.endswith("/") else u + "/" for u in urls]


def _reason(exc: BaseException) -> str:
    """A one-line description of why a download failed."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


class _Downloader:
    """A pooch downloader with a per-read timeout, an overall deadline and a size cap.

    It reads whatever the server has sent (``read1``), so a server trickling bytes is
    stopped at the deadline (at most one ``timeout`` later).
    """

    def __init__(self, timeout: float, deadline: float, max_bytes: int | None,
                 progress: bool):
        self.timeout, self.max_bytes, self.progress = timeout, max_bytes, progress
        self.deadline, self.stop_at = deadline, time.monotonic() + deadline

    def _check(self, size: int, url: str) -> None:
        if time.monotonic() > self.stop_at:
            raise TimeoutError(f"{url}: not complete after the deadline of "
                               f"{self.deadline:g} s (RECSYS_FETCH_DEADLINE)")
        if self.max_bytes is not None and size > self.max_bytes:
            raise ValueError(f"{url}: larger than {self.max_bytes:,} bytes, {SIZE_MARGIN:g} "
                             "times the expected size; not the course's file")

    def __call__(self, url: str, output_file, pooch_obj=None, check_only: bool = False):
        from tqdm.auto import tqdm

        request = urllib.request.Request(url, headers={"User-Agent": "recsys-course"})
        with urllib.request.urlopen(request, timeout=self.timeout) as resp, \
                open(output_file, "wb") as out:
            length = int(resp.headers.get("Content-Length") or 0) or None
            self._check(length or 0, url)
            received = 0
            with tqdm(total=length, unit="B", unit_scale=True, leave=False,
                      disable=not self.progress, desc=Path(url).name) as bar:
                while chunk := resp.read1(1 << 16):
                    received += len(chunk)
                    self._check(received, url)
                    out.write(chunk)
                    bar.update(len(chunk))
                self._check(received, url)
        if length is not None and received != length:
            raise ConnectionError(f"{url}: the connection closed after {received:,} of "
                                  f"{length:,} bytes")


@contextlib.contextmanager
def _sigterm_raises():
    """Turn SIGTERM into :class:`FetchTerminated`, so that ``finally`` blocks run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise FetchTerminated("terminated (SIGTERM)")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _remove_dead_staging(dest: Path) -> None:
    """Remove staging folders of ``fetch`` processes that were killed."""
    for folder in dest.glob(_STAGING_PREFIX + "*"):
        pid = folder.name[len(_STAGING_PREFIX):].split("-")[0]
        if not pid.isdigit() or not process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _from_mirror(ds: Dataset, url: str, dest: Path, downloader: _Downloader) -> Path:
    """Download ``url`` into a staging folder, check it, move it into ``dest``."""
    staging = Path(tempfile.mkdtemp(prefix=f"{_STAGING_PREFIX}{os.getpid()}-", dir=dest))
    try:
        known_hash = f"sha256:{ds.sha256}" if ds.sha256 else None
        staged = pooch.retrieve(url, known_hash, fname=ds.filename, path=staging,
                                downloader=downloader)
        check_file(staged, ds.format)
        os.replace(staged, dest / ds.filename)
        return dest / ds.filename
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _fetch_one(ds: Dataset, dest: Path, progress: bool, timeout: float,
               deadline: float) -> Path:
    """Try every mirror for one dataset; return the final path or raise FetchError."""
    max_bytes = int(ds.size * SIZE_MARGIN) if ds.size else None
    failures = []
    for base in base_urls(ds):
        url = base + ds.filename
        try:
            return _from_mirror(ds, url, dest, _Downloader(timeout, deadline, max_bytes,
                                                           progress))
        except Exception as exc:  # any failure of this mirror: note it, try the next
            failures.append(f"  {url}\n    {_reason(exc)}")
    tried = "\n".join(failures) or "  (no base URL configured; see RECSYS_DATA_URL)"
    raise FetchError(f"could not download {ds.filename}; every mirror failed:\n{tried}\n"
                     f"Nothing was written to {dest / ds.filename}.")


def _present(ds: Dataset, target: Path) -> bool:
    """Whether a valid copy is already there (an invalid one is announced)."""
    if not target.is_file():
        return False
    try:
        check_file(target, ds.format)
    except Exception as exc:
        print(f"{ds.filename}: the copy in {target.parent} is not valid ({_reason(exc)}); "
              "downloading it again")
        return False
    print(f"{ds.filename}: already present in {target}")
    return True


def _deadline(deadline: float | None) -> float:
    if deadline is not None:
        return float(deadline)
    return float(os.environ.get("RECSYS_FETCH_DEADLINE", "") or DEFAULT_DEADLINE)


def fetch(names: Iterable[str] | str | None = None, dest: str | os.PathLike | None = None,
          progress: bool = True, force: bool = False, *, timeout: float = 30,
          deadline: float | None = None) -> list[Path]:
    """Download the real data files into ``dest``.

    Parameters
    ----------
    names : str or iterable of str, optional
        Short names (``fantasy_tsv``, ...) or file names; all datasets when empty.
    dest : path, optional
        Destination folder; defaults to :func:`~recsys_helpers.datasets.download_dir`.
    progress : bool
        Show a (tqdm) progress bar while downloading.
    force : bool
        Download again even when a valid copy is already present.
    timeout : float
        Seconds to wait for the server to connect or send data.
    deadline : float, optional
        Seconds one file's download may take in all (default ``RECSYS_FETCH_DEADLINE``,
        else :data:`DEFAULT_DEADLINE`).

    Returns
    -------
    list of pathlib.Path
        The path of every requested file, in order.

    Raises
    ------
    KeyError
        An unknown dataset name.
    FetchError
        A file could not be downloaded from any mirror; the others were still fetched,
        and the message lists every failed file, each URL and the reason.
    """
    names = [names] if isinstance(names, str) else names
    datasets = [get_dataset(n) for n in names] if names else list(REGISTRY.values())
    dest = Path(dest).expanduser() if dest else download_dir()
    dest.mkdir(parents=True, exist_ok=True)
    _remove_dead_staging(dest)
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)  # pooch's INFO lines would name the staging folder
    try:
        with _sigterm_raises():
            paths, failures = _fetch_all(datasets, dest, progress, force, timeout,
                                         _deadline(deadline))
    finally:
        logger.setLevel(level)
    if failures:
        raise FetchError(
            "\n".join(failures) + f"\n{len(failures)} of {len(datasets)} file(s) failed. Set "
            "RECSYS_DATA_URL to another mirror, or place the files in RECSYS_DATA_DIR "
            "yourself. The bundled synthetic sample still works: run the notebooks with "
            "RECSYS_DATA=sample.")
    return paths


def _fetch_all(datasets: list[Dataset], dest: Path, progress: bool, force: bool,
               timeout: float, deadline: float) -> tuple[list[Path], list[str]]:
    """Every dataset in turn, going on after a failure: (paths, failure messages)."""
    paths, failures = [], []
    for ds in datasets:
        target = dest / ds.filename
        if not force and _present(ds, target):
            paths.append(target)
            continue
        try:
            paths.append(_fetch_one(ds, dest, progress, timeout, deadline))
            print(f"{ds.filename}: saved to {target}")
        except FetchError as exc:
            print(f"{ds.filename}: FAILED", file=sys.stderr)
            failures.append(str(exc))
    return paths, failures


def fetch_command(names: Iterable[str] | None, deadline: float | None = None) -> int:
    """Run :func:`fetch` for the command line and return an exit status.

    Returns
    -------
    int
        0 on success, 1 when a download failed, 2 for an unknown dataset name, 143 when
        terminated by SIGTERM.
    """
    try:
        fetch(names, deadline=deadline)
    except KeyError as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except FetchTerminated:
        print("error: terminated; no partial file was kept", file=sys.stderr)
        return 128 + signal.SIGTERM
    return 0

"""Download the course's real Goodreads files with :mod:`pooch`.

Each file is fetched into a hidden staging folder inside the destination, checked
(SHA-256 when the registry knows it, then :func:`~recsys_helpers.datasets.check_file`)
and only then moved into place in one atomic step, so the loader never sees a
half-written or invalid file.  The mirrors of :func:`~recsys_helpers.datasets.base_urls`
are tried in order.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

import pooch

from .datasets import REGISTRY, Dataset, base_urls, check_file, download_dir, get_dataset

__all__ = ["FetchError", "fetch", "fetch_command"]


class FetchError(RuntimeError):
    """No mirror delivered a valid copy of a file; the message lists each URL and why."""


def _reason(exc: BaseException) -> str:
    """A one-line description of why a download failed."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


def _fetch_one(ds: Dataset, dest: Path, progress: bool, timeout: float) -> Path:
    """Try every mirror for one dataset; return the final path or raise FetchError."""
    target = dest / ds.filename
    known_hash = f"sha256:{ds.sha256}" if ds.sha256 else None
    failures = []
    for base in base_urls():
        url = base + ds.filename
        staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=dest))
        try:
            staged = pooch.retrieve(
                url, known_hash, fname=ds.filename, path=staging,
                downloader=pooch.HTTPDownloader(progressbar=progress, timeout=timeout),
            )
            check_file(staged, ds.format)
            os.replace(staged, target)
            return target
        except Exception as exc:  # any failure of this mirror: note it, try the next
            failures.append(f"  {url}\n    {_reason(exc)}")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    tried = "\n".join(failures) or "  (no base URL configured; see RECSYS_DATA_URL)"
    raise FetchError(
        f"could not download {ds.filename}; every mirror failed:\n{tried}\n"
        f"Nothing was written to {target}. Set RECSYS_DATA_URL to another mirror, or "
        "place the file in RECSYS_DATA_DIR yourself. The bundled synthetic sample still "
        "works: run the notebooks with RECSYS_DATA=sample."
    )


def fetch(names: Iterable[str] | str | None = None, dest: str | os.PathLike | None = None,
          progress: bool = True, force: bool = False, *, timeout: float = 30) -> list[Path]:
    """Download the real data files into ``dest``.

    Parameters
    ----------
    names : str or iterable of str, optional
        Short names (``fantasy_tsv``, ...) or file names; all datasets when empty.
    dest : path, optional
        Destination folder; defaults to :func:`~recsys_helpers.datasets.download_dir`.
    progress : bool
        Show pooch's (tqdm) progress bar while downloading.
    force : bool
        Download again even when a valid copy is already present.
    timeout : float
        Seconds to wait for the server to connect or send data.

    Returns
    -------
    list of pathlib.Path
        The path of every requested file, in order.

    Raises
    ------
    KeyError
        An unknown dataset name.
    FetchError
        Every mirror failed for a file; the message lists each URL and the reason.
    """
    if isinstance(names, str):
        names = [names]
    datasets = [get_dataset(n) for n in names] if names else list(REGISTRY.values())
    dest = Path(dest).expanduser() if dest else download_dir()
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)  # pooch's INFO lines would name the staging folder
    try:
        for ds in datasets:
            target = dest / ds.filename
            if target.is_file() and not force:
                try:
                    check_file(target, ds.format)
                    print(f"{ds.filename}: already present in {target}")
                    paths.append(target)
                    continue
                except Exception as exc:
                    print(f"{ds.filename}: the copy in {dest} is not valid ({_reason(exc)}); "
                          "downloading it again")
            paths.append(_fetch_one(ds, dest, progress, timeout))
            print(f"{ds.filename}: saved to {target}")
    finally:
        logger.setLevel(level)
    return paths


def fetch_command(names: Iterable[str] | None) -> int:
    """Run :func:`fetch` for the command line and return an exit status.

    Returns
    -------
    int
        0 on success, 1 when a download failed, 2 for an unknown dataset name.
    """
    try:
        fetch(names)
    except KeyError as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0

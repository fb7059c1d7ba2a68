"""The slim-column cache of loaded review files (``.npz`` beside the source).

A cache file holds the requested fields of one source file, as arrays (integer fields)
and category codes plus categories (string fields).  It is named
``.<source name>.<fields>.<key>.cache.npz`` and kept beside the source, or, where that
folder is read-only, in a per-folder subfolder of the user cache folder.

The key is a hash of everything that tells two sources apart: the resolved folder, the
file's name, size, ``mtime_ns``, inode and device, and the first and last 64 KiB of its
bytes.  A source replaced by one of the same size and modification time, a copy in
another folder, or a file rewritten while it was being loaded (the key is taken again
after the load, and nothing is saved when it changed) can therefore not be served rows
that are not its own.  Writes go through a ``.tmp`` file and an atomic rename; ``.tmp``
files left by a process that died are removed.

:func:`clear` removes every cache of a file: what to call after editing a data file by
hand or before timing a first, uncached load.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pooch

__all__ = ["signature", "read", "write", "clear", "cache_folders", "process_alive"]

_VERSION = 2
_EDGE_BYTES = 64 << 10
_INT_FIELDS = frozenset({"rating", "n_votes", "n_comments"})


def signature(path: str | os.PathLike) -> str | None:
    """The identity of a source file's current content, or None when it is not a file."""
    path = Path(path).resolve()
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            head = fh.read(_EDGE_BYTES)
            fh.seek(max(st.st_size - _EDGE_BYTES, 0))
            tail = fh.read(_EDGE_BYTES)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    digest = hashlib.sha256(
        f"{_VERSION}|{path}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}|{st.st_dev}|".encode())
    digest.update(head)
    digest.update(tail)
    return digest.hexdigest()[:20]


def cache_folders(path: str | os.PathLike) -> list[Path]:
    """Where a source's caches may live: beside it, then a user cache folder of its own."""
    folder = Path(path).resolve().parent
    tag = hashlib.sha256(str(folder).encode()).hexdigest()[:16]
    return [folder, Path(pooch.os_cache("recsys-course")) / "load-cache" / tag]


def _tag(fields: tuple) -> str:
    """The field set as it appears in a cache file's name: ``user_id+book_id+rating``."""
    return "+".join(fields)


def _name(path: Path, fields: tuple, key: str) -> str:
    return f".{path.name}.{_tag(fields)}.{key}.cache.npz"


def _load_npz(file: Path, fields: tuple) -> pd.DataFrame:
    with np.load(file, allow_pickle=False) as z:
        data = {f: z[f] if f in _INT_FIELDS
                else pd.Categorical.from_codes(z[f + "__codes"], z[f + "__cats"])
                for f in fields}
        skipped = int(z["__skipped"])
    df = pd.DataFrame(data)
    df.attrs["skipped_lines"] = skipped
    return df


def read(path: str | os.PathLike, fields: tuple, key: str | None) -> pd.DataFrame | None:
    """The cached fields of ``path`` under ``key`` (its :func:`signature`), or None."""
    if key is None:
        return None
    path = Path(path)
    for folder in cache_folders(path):
        file = folder / _name(path, tuple(fields), key)
        if file.is_file():
            with contextlib.suppress(Exception):  # a damaged cache is simply rebuilt
                return _load_npz(file, tuple(fields))
    return None


def _arrays(df: pd.DataFrame, fields: tuple) -> dict:
    arrays = {"__skipped": np.asarray(df.attrs.get("skipped_lines", 0))}
    for f in fields:
        if f in _INT_FIELDS:
            arrays[f] = df[f].to_numpy()
        else:
            arrays[f + "__codes"] = df[f].cat.codes.to_numpy()
            arrays[f + "__cats"] = df[f].cat.categories.to_numpy(dtype=str)
    return arrays


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _remove_orphans(folder: Path, source_name: str) -> None:
    """Remove ``.tmp`` files of this source whose writing process has died."""
    for tmp in folder.glob(glob.escape(f".{source_name}.") + "*.cache.npz.*.tmp"):
        pid = tmp.name.rsplit(".", 2)[-2]
        if not pid.isdigit() or not process_alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _remove_stale(folder: Path, path: Path, fields: tuple) -> None:
    """Remove caches of the same fields (older versions of the source), and those named
    before the fields were part of the name; the caches of other field sets stay."""
    prefix = f".{path.name}."
    stale = re.compile(rf"(?:{re.escape(_tag(fields))}\.)?[0-9a-f]{{16,20}}\.cache\.npz")
    for old in folder.glob(glob.escape(prefix) + "*.cache.npz"):
        if stale.fullmatch(old.name[len(prefix):]):
            old.unlink(missing_ok=True)


def write(path: str | os.PathLike, fields: tuple, df: pd.DataFrame, key: str | None) -> bool:
    """Save ``df`` as the cache of ``path`` if the source still has the ``key`` it had
    when the load began; returns whether a cache was written."""
    path, fields = Path(path), tuple(fields)
    if key is None or signature(path) != key:  # changed during the load: do not keep it
        return False
    arrays = _arrays(df, fields)
    for folder in cache_folders(path):
        file = folder / _name(path, fields, key)
        tmp = file.with_name(f"{file.name}.{os.getpid()}.tmp")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _remove_orphans(folder, path.name)
            _remove_stale(folder, path, fields)
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
            os.replace(tmp, file)
            return True
        except OSError:  # a read-only folder (where removing fails too): try the next one
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
    return False


def clear(path: str | os.PathLike) -> int:
    """Remove every cache of ``path`` (any field set, either folder) and orphaned
    ``.tmp`` files; returns the number of cache files removed."""
    path = Path(path)
    removed = 0
    for folder in cache_folders(path):
        if not folder.is_dir():
            continue
        _remove_orphans(folder, path.name)
        for file in folder.glob(glob.escape(f".{path.name}.") + "*.cache.npz"):
            with contextlib.suppress(FileNotFoundError):
                file.unlink()
                removed += 1
    return removed

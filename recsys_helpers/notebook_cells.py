"""Notebook cells generated from the package (``python -m recsys_helpers sync-cells``).

The chapter notebooks show the package's model code verbatim: a code cell tagged
``model-code`` holds the source of the classes and functions it defines, taken from
:mod:`recsys_helpers` with :func:`inspect.getsource`.  Edit the package, then run
``sync-cells`` to regenerate those cells (``--check`` only reports the cells that differ,
and fails when one does).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import sys
from collections.abc import Iterable
from pathlib import Path

__all__ = ["TAG", "SOURCE_MODULES", "cell_source", "sync_cells", "sync_command"]

TAG = "model-code"
#: Where the shown code lives, searched in order.
SOURCE_MODULES = ("models", "interactions", "metrics", "spark")


def _defined_names(source: str) -> list[str]:
    return [n.name for n in ast.parse(source).body
            if isinstance(n, (ast.ClassDef, ast.FunctionDef))]


def _find(name: str):
    for module in SOURCE_MODULES:
        obj = getattr(importlib.import_module(f"recsys_helpers.{module}"), name, None)
        if obj is not None:
            return obj
    raise LookupError(f"{name} is shown in a {TAG} cell but defined in none of "
                      f"recsys_helpers.{{{', '.join(SOURCE_MODULES)}}}")


def cell_source(source: str) -> str:
    """The package's source of every class and function that ``source`` defines."""
    names = _defined_names(source)
    if not names:
        raise LookupError(f"a {TAG} cell must define a class or a function")
    return "\n\n\n".join(inspect.getsource(_find(n)).strip() for n in names)


def sync_cells(paths: Iterable[Path], check: bool = False) -> list[str]:
    """Regenerate the tagged cells of ``paths`` (or, with ``check``, only compare them).

    Returns ``"<notebook>: cell <n> (<names>)"`` for every cell that differed.
    """
    import nbformat

    changed = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        differs = False
        for k, cell in enumerate(nb.cells, 1):
            if cell.cell_type != "code" or TAG not in cell.metadata.get("tags", []):
                continue
            wanted = cell_source(cell.source)
            if cell.source.strip() != wanted:
                changed.append(f"{Path(path).name}: cell {k} "
                               f"({', '.join(_defined_names(cell.source))})")
                cell.source, differs = wanted, True
        if differs and not check:
            nbformat.write(nb, path)
    return changed


def sync_command(check: bool = False, paths: Iterable[Path] | None = None) -> int:
    """The ``sync-cells`` command: 0 when in sync (or synced), 1 when ``--check`` finds a
    cell that differs from the package."""
    from .runner import course_notebooks

    changed = sync_cells(paths or course_notebooks(), check=check)
    if not changed:
        print(f"every {TAG} cell shows the package's code")
        return 0
    verb = "differs from the package" if check else "regenerated from the package"
    for line in changed:
        print(f"{line}: {verb}", file=sys.stderr if check else sys.stdout)
    if check:
        print("run `python -m recsys_helpers sync-cells` to regenerate them", file=sys.stderr)
    return 1 if check else 0

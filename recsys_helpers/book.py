"""The course as a web book: a static site built with Sphinx and myst-nb.

``python -m recsys_helpers book`` builds, from the notebooks as ``run`` executed them, a
site that needs no server and no network: a landing page (what the course teaches, how
to install and run it, the results of the run), the chapter notebooks in order with
their outputs, the syllabus, the glossary, the data page, and the exercises — the student
versions only, unless ``--instructor`` asks for the edition with the solutions (marked as
such on every page). Hidden tests reach neither edition.

Which outputs it shows: the executed notebooks of a fresh ``run`` (``build/run``, or
``--run-dir``) for the data asked for — fresh means that the run read that data and that no
notebook changed since. Without one, the committed notebooks serve for ``--data sample``
(they are executed on the bundled sample whenever they change); for other data ``book``
runs the notebooks first. Every page says which data its outputs come from.

Offline by construction: Sphinx's own search (an index loaded as a script, so it works
from ``file://``), MathJax copied into the site, myst-nb's widget scripts switched off,
and the build refuses a page that would load anything from another host.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .runner import (
    NOTEBOOKS,
    ROOT,
    course_notebooks,
    data_description,
    figure_rows,
    source_digest,
)

__all__ = ["build_book", "book_command"]

EXERCISES = NOTEBOOKS / "exercises"
STUDENT = EXERCISES / "student" / "chapter5"
_HIDDEN = re.compile(r"### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS\n?", re.S)
_LINK = re.compile(r"(?<!!)\[([^\]]+)\]\(([^)\s]+)\)")

#: The README's sections that make the landing page, in order (its introduction first).
_LANDING_SECTIONS = ("Quickstart",)


# --------------------------------------------------------------------------------------
# Which executed notebooks
# --------------------------------------------------------------------------------------

def _fresh_run(run_dir: Path, label: str) -> bool:
    """Whether ``run_dir`` holds every notebook, executed on ``label``'s data since it last
    changed (``run.json``, written by ``run``)."""
    try:
        meta = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return meta.get("data") == label and all(
        (run_dir / p.name).is_file() and meta.get("sources", {}).get(p.stem) == source_digest(p)
        and p.stem not in meta.get("failed", []) for p in course_notebooks())


def _executed(data: str | None, data_dir, run_dir: Path, progress: bool
              ) -> tuple[dict[str, Path], str]:
    """The executed notebook of each stem, and the data they were executed on."""
    label = data_description(data, data_dir)
    if _fresh_run(run_dir, label):
        return {p.stem: run_dir / p.name for p in course_notebooks()}, label
    if label == data_description("sample"):
        # the committed notebooks are executed on the bundled sample whenever they change
        return {p.stem: p for p in course_notebooks()}, label
    from .runner import execute_notebooks

    print(f"No fresh run on {label} in {run_dir}: running the notebooks first.")
    _, failures = execute_notebooks(course_notebooks(), out=run_dir, data=data,
                                    data_dir=data_dir, progress=progress)
    if failures:
        raise RuntimeError("the run failed, so the book is not built: "
                           + "; ".join(str(f) for f in failures))
    return {p.stem: run_dir / p.name for p in course_notebooks()}, label


# --------------------------------------------------------------------------------------
# The Sphinx source tree (the repository's layout, so that relative links resolve)
# --------------------------------------------------------------------------------------

def _strip_for_site(nb) -> None:
    """No hidden test, no widget state, no stored HTML or scripts that fetch from outside."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = _HIDDEN.sub("", cell.source).lstrip("\n")
            for out in cell.get("outputs", []):
                data = out.get("data", {})
                for mime in ("application/vnd.jupyter.widget-view+json",
                             "application/javascript", "text/html"):
                    if mime in data and len(data) > 1:
                        del data[mime]


def _download_cell(nb, href: str, text: str):
    import nbformat

    cell = nbformat.v4.new_markdown_cell(f"{{download}}`{text} <{href}>`")
    cell.metadata["tags"] = ["book-download"]
    nb.cells.insert(1 if nb.cells and nb.cells[0].cell_type == "markdown" else 0, cell)


def _stage_notebook(source: Path, target: Path, src_root: Path, download_text: str) -> None:
    """``source`` (stripped) at ``target``; a pristine copy under downloads/, linked from a
    cell placed after the notebook's title."""
    import nbformat

    nb = nbformat.read(source, as_version=4)
    _strip_for_site(nb)
    target.parent.mkdir(parents=True, exist_ok=True)
    download = src_root / "downloads" / target.name
    download.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, download)
    _download_cell(nb, f"/downloads/{target.name}", download_text)
    nbformat.write(nb, target)


def _section(markdown: str, title: str) -> str:
    """A level-2 section of a Markdown text, heading included ('' if absent)."""
    m = re.search(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", markdown, flags=re.M | re.S)
    return m.group(0).rstrip() + "\n" if m else ""


def _results_table(executed: dict[str, Path]) -> str:
    from .results import read_results

    rows = figure_rows({stem: read_results(path) for stem, path in executed.items()}, names=False)
    return "\n".join(["| notebook | figure | this edition | book (real data) |",
                      "|---|---|---:|---:|", *rows]) + "\n"


def _landing(executed: dict[str, Path], label: str, instructor: bool, pages: list[str]) -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    intro = readme.split("\n## ", 1)[0]
    parts = [intro.rstrip() + "\n"]
    if instructor:
        parts.append("\n```{warning}\nThis is the **instructor edition**: its exercise pages hold "
                     "the solutions. Publish the student edition (`python -m recsys_helpers "
                     "book`) where students can see it.\n```\n")
    parts += ["\n" + _section(readme, title) for title in _LANDING_SECTIONS]
    parts.append(
        "\n## Results\n\nThe figures recorded by the notebooks of this edition, executed on "
        f"{label} (seed 0), beside the book's on the real Goodreads files. On the bundled "
        "sample only the direction of each comparison carries over to the real data; "
        "figures of the *taste laboratory* come from synthetic data with planted genres.\n\n"
        + _results_table(executed))
    parts.append("\n```{toctree}\n:hidden:\n:maxdepth: 1\n\n" + "\n".join(pages) + "\n```\n")
    return "".join(parts)


def _unlink_missing(text: str, here: Path, src_root: Path) -> str:
    """Relative links to files the site does not hold become plain text."""
    def keep(m):
        target = m.group(2)
        if re.match(r"^[a-z]+:|^#|^/", target):
            return m.group(0)
        path = (here.parent / target.split("#", 1)[0]).resolve()
        inside = path.is_relative_to(src_root.resolve())
        return m.group(0) if inside and path.exists() and path.is_file() else m.group(1)
    return _LINK.sub(keep, text)


def _conf(label: str, instructor: bool) -> str:
    edition = "Instructor edition (with the solutions). " if instructor else ""
    announcement = f"{edition}Outputs computed on {label}."
    return f'''# Generated by `python -m recsys_helpers book`: do not edit.
project = "Model-based recommendation"
author = "the course's authors"
extensions = ["myst_nb"]
exclude_patterns = ["_build", "downloads/**", "**/.ipynb_checkpoints"]
html_theme = "sphinx_book_theme"
html_title = "Model-based recommendation"
html_static_path = ["_static"]
html_favicon = "_static/favicon.svg"
html_copy_source = False
html_show_sourcelink = False
html_show_search_summary = False  # (summaries fetch each page: refused under file://)
html_context = {{"default_mode": "light"}}
html_theme_options = {{
    "announcement": {announcement!r},
    "use_download_button": False,
    "use_fullscreen_button": False,
    "use_repository_button": False,
    "show_toc_level": 2,
    # no top navigation bar: the book's sidebar holds the title, the search and the pages
    "navbar_start": [], "navbar_center": [], "navbar_end": [], "navbar_persistent": [],
}}
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
nb_execution_mode = "off"
nb_ipywidgets_js = {{}}
nb_merge_streams = True
suppress_warnings = ["myst.header", "mystnb.unknown_mime_type"]
# MathJax 3 copied into the site (tex-svg-full: every TeX extension in one file, glyphs
# drawn as SVG: nothing fetched afterwards, no web fonts)
mathjax_path = "mathjax/tex-svg-full.js"
mathjax3_config = {{
    "tex": {{"inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]]}},
    "options": {{"ignoreHtmlClass": "tex2jax_ignore|mathjax_ignore|document",
                "processHtmlClass": "tex2jax_process|mathjax_process|math|output_area"}},
    "svg": {{"fontCache": "global"}},
}}
'''


_FAVICON = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
            '<rect width="16" height="16" rx="3" fill="#2a6"/><text x="8" y="12" font-size="10" '
            'text-anchor="middle" fill="#fff" font-family="sans-serif">R</text></svg>')


def _mathjax_file() -> Path:
    """MathJax 3's tex-svg-full component (the django-static-mathjax package holds MathJax;
    nothing of Django is used)."""
    import mathjax

    return Path(mathjax.__file__).parent / "static" / "mathjax" / "es5" / "tex-svg-full.js"


def _stage(src: Path, executed: dict[str, Path], label: str, instructor: bool) -> None:
    pages = []
    for path in course_notebooks():
        if path.parent == NOTEBOOKS:  # a chapter
            target = src / "notebooks" / path.name
            _stage_notebook(executed[path.stem], target, src,
                            "Download this notebook (with its outputs)")
        elif instructor:
            target = src / "notebooks" / "exercises" / "solutions" / "chapter5" / path.name
            _stage_notebook(executed[path.stem], target, src,
                            "Download this solution notebook (with its outputs, without the "
                            "hidden tests)")
        else:
            target = src / "notebooks" / "exercises" / "student" / "chapter5" / path.name
            _stage_notebook(STUDENT / path.name, target, src,
                            "Download this exercise to fill in (the student version)")
        pages.append(target.relative_to(src).with_suffix("").as_posix())
    for doc in ("docs/syllabus.md", "docs/glossary.md", "data/README.md"):
        (src / doc).parent.mkdir(parents=True, exist_ok=True)
        text = (ROOT / doc).read_text(encoding="utf-8")
        (src / doc).write_text(_unlink_missing(text, src / doc, src), encoding="utf-8")
        pages.append(str(Path(doc).with_suffix("").as_posix()))
    index = src / "index.md"
    index.write_text(_unlink_missing(_landing(executed, label, instructor, pages), index, src),
                     encoding="utf-8")
    (src / "_static" / "mathjax").mkdir(parents=True)
    (src / "_static" / "favicon.svg").write_text(_FAVICON, encoding="utf-8")
    shutil.copy(_mathjax_file(), src / "_static" / "mathjax" / "tex-svg-full.js")
    (src / "conf.py").write_text(_conf(label, instructor), encoding="utf-8")


# --------------------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------------------

_EXTERNAL = re.compile(r"""<(?:script|link|img|iframe|source)\b[^>]*?\b(?:src|href)=["'](?:https?:)?//""",
                       re.I)


def _external_loads(out: Path) -> list[str]:
    """Pages that would load something from another host (links to read are fine)."""
    return sorted(str(p.relative_to(out)) for p in out.rglob("*.html")
                  if _EXTERNAL.search(p.read_text(encoding="utf-8", errors="replace")))


def build_book(out: str | os.PathLike = "build/book", data: str | None = "sample",
               data_dir: str | os.PathLike | None = None,
               run_dir: str | os.PathLike = "build/run", instructor: bool = False,
               progress: bool = True) -> Path:
    """Build the site into ``out`` (emptied first); return ``out/index.html``."""
    out, run_dir = Path(out), Path(run_dir)
    executed, label = _executed(data, data_dir, run_dir, progress)
    with tempfile.TemporaryDirectory(prefix="recsys-book-") as tmp:
        src = Path(tmp) / "src"
        _stage(src, executed, label, instructor)
        if out.exists():
            shutil.rmtree(out)
        cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-q", "-j", "auto",
               "-d", str(Path(tmp) / "doctrees"), str(src), str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"sphinx-build failed:\n{proc.stdout}\n{proc.stderr}")
        warnings = [line for line in proc.stderr.splitlines() if "WARNING" in line]
        for line in warnings:
            print(line.replace(str(src) + os.sep, ""), file=sys.stderr)
    external = _external_loads(out)
    if external:
        raise RuntimeError("pages that would load from another host: " + ", ".join(external))
    (out / ".nojekyll").write_text("")  # GitHub Pages: serve _static/ as it is
    (out / "edition.json").write_text(json.dumps(
        {"edition": "instructor" if instructor else "student", "data": label}, indent=2) + "\n")
    return out / "index.html"


def book_command(out="build/book", data=None, data_dir=None, run_dir="build/run",
                 instructor=False) -> int:
    start = time.perf_counter()
    try:
        index = build_book(out, data=data or "sample", data_dir=data_dir, run_dir=run_dir,
                           instructor=instructor)
    except (RuntimeError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    edition = "instructor edition (with the solutions)" if instructor else "student edition"
    print(f"built the {edition} in {time.perf_counter() - start:.0f} s: open {index}")
    return 0

"""The web book: built from the bundled sample, then read in headless Chromium.

The student edition is built once (from the committed notebooks, which are executed on the
bundled sample) and served on 127.0.0.1; every page is opened in the system's Chromium
through Playwright: no console error, no request to another host, every image loaded,
every equation typeset, every internal link resolving to a page and anchor that exist;
search works from ``file://``; no solution and no hidden test anywhere in the site.
"""

from __future__ import annotations

import functools
import html
import http.server
import re
import shutil
import socketserver
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urldefrag, urljoin, urlparse

import nbformat
import pytest

from recsys_helpers.book import build_book
from recsys_helpers.runner import NOTEBOOKS, SOLUTIONS

pytestmark = pytest.mark.e2e

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))
                 if p), None)
SOLUTION_BLOCK = re.compile(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", re.S)
HIDDEN_BLOCK = re.compile(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", re.S)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("book") / "site"
    start = time.monotonic()
    build_book(out, data="sample", run_dir=tmp_path_factory.mktemp("no-run"), progress=False)
    return out, time.monotonic() - start


def _pages(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.html")
                  if "_static" not in p.parts)


def _plain(html_text: str) -> str:
    """A page's text without its tags (code is split into highlighted spans)."""
    return html.unescape(re.sub(r"<[^>]+>", "", html_text))


def _secret_lines() -> set[str]:
    """Lines of the solutions' code and of the hidden tests that neither a student version
    nor a chapter notebook (which shows the package's models verbatim) holds."""
    public = sorted(SOLUTIONS.parent.parent.glob("student/chapter5/*.ipynb")) + sorted(
        NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    student = "\n".join(c.source for p in public for c in nbformat.read(p, as_version=4).cells)
    found = set()
    for path in sorted(SOLUTIONS.glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            for block in SOLUTION_BLOCK.findall(cell.source) + HIDDEN_BLOCK.findall(cell.source):
                found |= {line.strip() for line in block.splitlines() if len(line.strip()) >= 25}
    return {line for line in found if line not in student}


def test_the_book_builds_from_the_sample_in_under_a_minute(site):
    root, seconds = site
    assert seconds < 60, seconds
    pages = _pages(root)
    for page in ["index.html", "search.html", "docs/syllabus.html", "docs/glossary.html",
                 "data/README.html", "notebooks/01_latent_factor_surprise.html",
                 "notebooks/05_latent_factors_at_scale_spark.html",
                 *(f"notebooks/exercises/student/chapter5/exercise_5_{k}.html" for k in range(1, 5))]:
        assert page in pages, (page, pages)
    index = (root / "index.html").read_text(encoding="utf-8")
    assert "pip install -r requirements.txt" in _plain(index) and "Results" in index
    # chapters in order in the navigation
    order = [index.find(f"notebooks/0{k}_") for k in range(1, 6)]
    assert -1 not in order and order == sorted(order), order
    # every page says which data its outputs come from
    for page in pages:
        assert "Outputs computed on the bundled synthetic sample" in (root / page).read_text(
            encoding="utf-8"), page


def test_notebook_pages_offer_their_notebook_to_download(site):
    root, _ = site
    for page, name in [("notebooks/02_bpr_implicit.html", "02_bpr_implicit.ipynb"),
                       ("notebooks/exercises/student/chapter5/exercise_5_3.html",
                        "exercise_5_3.ipynb")]:
        html = (root / page).read_text(encoding="utf-8")
        href = re.search(rf'href="([^"]*_downloads/[^"]*/{re.escape(name)})"', html)
        assert href, page
        target = (root / page).parent / unquote(href.group(1))
        nb = nbformat.read(target, as_version=4)
        if "exercise" in name:  # the student version, to fill in
            assert not any("BEGIN SOLUTION" in c.source for c in nb.cells)
            assert any("YOUR CODE HERE" in c.source for c in nb.cells)
        else:  # with its outputs
            assert any(c.get("outputs") for c in nb.cells if c.cell_type == "code")


def test_the_student_edition_holds_no_solution_and_no_hidden_test(site):
    root, _ = site
    secrets = _secret_lines()
    assert len(secrets) > 40  # the check has something to look for
    for path in root.rglob("*"):
        if path.is_file() and path.suffix in (".html", ".ipynb", ".js", ".txt", ".json"):
            if "_static" in path.parts:
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
            assert "BEGIN HIDDEN TESTS" not in text and "BEGIN SOLUTION" not in text, path
            plain = _plain(text)
            leaked = [line for line in secrets if line in text or line in plain]
            assert leaked == [], (path.relative_to(root), leaked[:3])


def test_the_instructor_edition_holds_the_solutions_marked_as_such(tmp_path):
    out = tmp_path / "instructor"
    build_book(out, data="sample", run_dir=tmp_path / "no-run", instructor=True, progress=False)
    pages = _pages(out)
    solutions = [p for p in pages if "/solutions/" in p]
    assert len(solutions) == 4 and not any("/student/" in p for p in pages)
    text = (out / solutions[0]).read_text(encoding="utf-8")
    assert "def mse(predictions, labels)" in _plain(text) and "BEGIN HIDDEN TESTS" not in text
    for page in pages:
        assert "Instructor edition (with the solutions)" in (out / page).read_text(encoding="utf-8")


# ---- in the browser --------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (sudo apt-get install chromium)")
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def served(site):
    root, _ = site

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0),
                                             functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def _open(browser, url):
    page = browser.new_page()
    errors, requests = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: errors.append(f"failed: {r.url}"))
    page.on("response", lambda r: errors.append(f"{r.status}: {r.url}") if r.status >= 400 else None)
    page.on("request", lambda r: requests.append(r.url))
    page.goto(url, wait_until="load")  # (every image and script of the page loaded)
    return page, errors, requests


def test_every_page_loads_cleanly_typeset_and_offline(browser, served):
    root, base = served
    anchors, links = {}, []
    for rel in _pages(root):
        page, errors, requests = _open(browser, base + rel)
        if page.locator(".math").count():
            page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise")
            page.evaluate("() => MathJax.startup.promise")
            assert page.locator("mjx-container").count() >= page.locator(".math").count(), rel
        # the visible text, code aside, holds no TeX left untypeset
        page.add_style_tag(content="pre, code, .highlight { display: none !important; }")
        text = page.inner_text("body")
        raw = [t for t in ("\\frac", "\\hat", "\\sum", "\\gamma", "\\beta", "$$", "\\(") if t in text]
        assert raw == [], (rel, raw)
        broken = page.eval_on_selector_all(
            "img", "els => els.filter(e => !(e.complete && e.naturalWidth > 0)).map(e => e.src)")
        assert broken == [], (rel, broken)
        assert errors == [], (rel, errors)
        outside = [u for u in requests if not u.startswith((base, "data:", "blob:"))]
        assert outside == [], (rel, outside)
        anchors[rel] = set(page.eval_on_selector_all("[id]", "els => els.map(e => e.id)"))
        links += [(rel, h) for h in page.eval_on_selector_all(
            "a[href]", "els => els.map(e => e.getAttribute('href'))")]
        page.close()
    assert len(anchors) >= 15 and len(links) > 500
    # every internal link: a file of the site, and the anchor on that page
    for rel, href in links:
        if urlparse(href).scheme or href.startswith(("//", "mailto:")):
            continue
        target, fragment = urldefrag(urljoin(rel, href))
        target = unquote(target) or rel
        assert (root / target).is_file(), (rel, href)
        if fragment and target.endswith(".html"):
            assert unquote(fragment) in anchors.get(target, set()), (rel, href)


def test_search_finds_bpr_from_file_urls(browser, site):
    root, _ = site
    page, errors, _ = _open(browser, (root / "search.html").as_uri() + "?q=Bayesian+Personalized+Ranking")
    page.wait_for_selector("#search-results ul.search li", timeout=20_000)
    found = page.eval_on_selector_all("#search-results ul.search li a",
                                      "els => els.map(e => e.getAttribute('href'))")
    assert any("04_bpr_tensorflow" in h for h in found), found
    assert errors == [], errors

"""pytest configuration shared by the unit tests and the notebook runs.

* Kernels started by the tests inherit this process's environment: force them onto the
  bundled sample.
* Student versions of the exercises raise by design (their solutions are stubs): only the
  chapter notebooks and the solution notebooks are executed.
* Tiers: every test gets one marker (``unit``, ``models``, ``notebooks``, ``grading``,
  ``e2e``, ``spark``; see pyproject.toml) from its file or its kind, unless it carries one
  itself, so that ``pytest -m unit`` answers in seconds.
* A test marked ``executes(path, ...)`` runs those notebooks itself: the figure tests
  through ``notebook_figures`` (the course's runner, once per notebook, its figures kept
  for every test), the grading class the solutions in the sandbox.  nbval then does not
  execute them a second time; it executes the other notebooks, cell by cell.
* pytest-xdist runs the tests on three workers (``-n 3 --dist loadfile``, pyproject.toml;
  one more than the machine's two cores, as many tests wait on kernels, Java processes
  and sleeping attackers): each file on one worker, so a notebook's cells run in order in
  one kernel, and the figure tests (one file) execute each notebook once.  The longest files are handed out
  first (``LONGEST_FIRST``), the others in the order of their tiers (grading, spark,
  notebooks, e2e, models, unit; ``--no-loadscope-reorder``), so that the workers finish
  together.
"""

from __future__ import annotations

import os

import pytest

os.environ["RECSYS_DATA"] = "sample"
os.environ.pop("RECSYS_DATA_DIR", None)

collect_ignore_glob = [
    "notebooks/exercises/student/*",
    "notebooks/exercises/submitted/*",
    "notebooks/exercises/autograded/*",
    "notebooks/exercises/feedback/*",
    "build/*",
    ".ci-venv/*",
]

TIERS = ("unit", "models", "notebooks", "grading", "e2e", "spark")
#: The tier of each test file that is not ``unit``.
FILE_TIERS = {
    "test_sample.py": "models",  # generates the sample and trains models on it
    "test_tuning.py": "models",  # trains models
    "test_notebooks.py": "notebooks",
    "test_grading.py": "grading",
    "test_runner.py": "e2e",
    "test_book.py": "e2e",
}


def _tier(item) -> str | None:
    """The tier marker to add to ``item`` (None when it has one already)."""
    if any(m.name in TIERS for m in item.iter_markers()):
        return None
    if item.path.suffix == ".ipynb":
        return "notebooks"
    if "notebook_figures" in getattr(item, "fixturenames", ()):
        return "notebooks"
    return FILE_TIERS.get(item.path.name, "unit")


@pytest.hookimpl(hookwrapper=True)
def pytest_collection_modifyitems(config, items):
    """Before the other hooks (and so before ``-m`` selects): give each test its tier.
    After them: drop nbval's items for the notebooks that selected tests execute
    themselves, and put the files of the longest tiers first."""
    for item in items:
        tier = _tier(item)
        if tier:
            item.add_marker(tier)
    yield
    executed = {str(p) for item in items for m in item.iter_markers("executes") for p in m.args}
    dropped = [i for i in items if i.path.suffix == ".ipynb" and str(i.path) in executed]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [i for i in items if not (i.path.suffix == ".ipynb"
                                             and str(i.path) in executed)]
    # the longest files first, then by tier; stable, so each file's tests keep their order
    rank: dict = {}
    for item in items:
        for m in item.iter_markers():
            if m.name in TIERS:
                rank[item.path] = min(rank.get(item.path, len(TIERS)), _TIER_ORDER.index(m.name))
    root = config.rootpath

    def key(item):
        name = item.path.relative_to(root).as_posix() if item.path.is_relative_to(root) else ""
        heavy = LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)
        return heavy, rank.get(item.path, len(TIERS))

    items.sort(key=key)


#: The files that take longest (in a full run on two cores: the grading class about
#: 150 s, Spark's tests 120, notebook 05 80, the figure tests 75, the grade command 65,
#: the edge cases 50), handed out first so that the workers finish together.
LONGEST_FIRST = ["tests/test_grading.py", "tests/test_spark.py",
                 "tests/test_spark_notebook.py", "tests/test_notebooks.py",
                 "tests/test_grading_command.py", "tests/test_edge_cases.py"]
#: The other files by tier.
_TIER_ORDER = ("grading", "spark", "notebooks", "e2e", "models", "unit")


class Figures(dict):
    """A notebook's recorded figures, and its recorded verdicts as ``.verdicts``."""

    verdicts: list = []


@pytest.fixture(scope="session")
def notebook_figures():
    """``get(stem)``: the figures a notebook records, from executing it once (nbclient);
    its verdicts are the result's ``.verdicts``."""
    from recsys_helpers.results import read_results
    from recsys_helpers.runner import NotebookFailed, run_notebook, select
    from recsys_helpers.verdicts import read_verdicts

    executed: dict = {}

    def get(stem: str) -> dict:
        if stem not in executed:
            try:
                nb = run_notebook(select([stem])[0], timeout=600)
                executed[stem] = Figures(read_results(nb))
                executed[stem].verdicts = read_verdicts(nb)
            except NotebookFailed as exc:
                executed[stem] = exc
        if isinstance(executed[stem], NotebookFailed):
            pytest.fail(f"the notebook failed: {executed[stem]}", pytrace=False)
        return executed[stem]

    return get

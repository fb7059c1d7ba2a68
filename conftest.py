"""pytest configuration shared by the unit tests and the notebook runs (nbval).

* Kernels started by nbval inherit this process's environment: force them onto the
  bundled sample.
* Student versions of the exercises raise by design (their solutions are stubs): nbval
  executes only the chapter notebooks and the solution notebooks.
* nbval runs first, and the figures each notebook records are kept, so that the tests in
  ``tests/test_notebooks.py`` read them without executing the notebooks a second time.
"""

import os
from pathlib import Path

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

#: {notebook stem: {figure: value}} recorded by the notebooks nbval ran completely.
RECORDED: dict = {}
_FAILED: set = set()


def _is_nbval(item) -> bool:
    return type(item).__name__ == "IPyNbCell"


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=lambda item: 0 if _is_nbval(item) else 1)  # stable: keeps cell order


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if not _is_nbval(item) or call.when != "call":
        return
    from recsys_helpers.results import results_from_outputs

    stem = Path(str(item.fspath)).stem
    report = outcome.get_result()
    if report.failed:
        _FAILED.add(stem)
    RECORDED.setdefault(stem, {}).update(results_from_outputs(item.test_outputs or []))


@pytest.fixture(scope="session")
def notebook_figures():
    """``get(stem)``: the figures a notebook records, from nbval's run when there was one,
    else from executing it here (nbclient)."""
    from recsys_helpers.results import read_results
    from recsys_helpers.runner import run_notebook, select

    executed = {}

    def get(stem: str) -> dict:
        if stem in _FAILED:
            pytest.fail(f"{stem}.ipynb failed when nbval executed it (see its cells' reports)")
        if stem in RECORDED:
            return RECORDED[stem]
        if stem not in executed:
            executed[stem] = read_results(run_notebook(select([stem])[0], timeout=600))
        return executed[stem]

    return get

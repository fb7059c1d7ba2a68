"""Static checks of the exercise notebooks: what students see, and what grading relies on.

The notebooks themselves are executed elsewhere (nbval over the solutions, and the grading
tests); these checks read the files only, in well under a second.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest

EXERCISES = Path(__file__).resolve().parent.parent / "notebooks" / "exercises"
SOLUTIONS = sorted((EXERCISES / "solutions" / "chapter5").glob("exercise_*.ipynb"))
STUDENT = sorted((EXERCISES / "student" / "chapter5").glob("exercise_*.ipynb"))
HIDDEN = re.compile(r"### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS", re.S)

# Package functions that call others: using the first needs the second.
CALLS = {("tuning", "validation_mse"): ("metrics", "mse")}


def _read(path):
    return nbformat.read(path, as_version=4)


def _tests(nb):
    return [c for c in nb.cells if c.cell_type == "code"
            and c.metadata.get("nbgrader", {}).get("grade")
            and not c.metadata.get("nbgrader", {}).get("solution")]


def test_there_are_four_exercises_in_both_versions():
    assert [p.name for p in SOLUTIONS] == [f"exercise_5_{k}.ipynb" for k in range(1, 5)]
    assert [p.name for p in STUDENT] == [p.name for p in SOLUTIONS]


@pytest.mark.parametrize("path", STUDENT, ids=lambda p: p.stem)
def test_student_versions_have_no_outputs_and_claim_none(path):
    nb = _read(path)
    with_outputs = [k for k, c in enumerate(nb.cells) if c.cell_type == "code" and c.outputs]
    assert not with_outputs, f"cells with outputs: {with_outputs}"
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "saved outputs" not in text, "the text speaks of saved outputs the notebook lacks"


@pytest.mark.parametrize("path", STUDENT, ids=lambda p: p.stem)
def test_visible_asserts_say_what_was_expected_and_what_came(path):
    """Every assert a student sees carries a message naming the expected and the actual value."""
    for cell in _tests(_read(path)):
        assert "HIDDEN" not in cell.source
        for node in ast.walk(ast.parse(cell.source)):
            if not isinstance(node, ast.Assert):
                continue
            line = ast.get_source_segment(cell.source, node)
            assert isinstance(node.msg, ast.JoinedStr), f"assert without a formatted message: {line}"
            words = "".join(v.value for v in node.msg.values if isinstance(v, ast.Constant))
            values = [v for v in node.msg.values if isinstance(v, ast.FormattedValue)]
            assert "expected" in words and "got" in words and values, (
                f"the message should show the expected and the actual value: {line}")


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_sources_hold_no_run_metadata(path):
    nb = _read(path)
    assert set(nb.metadata) <= {"kernelspec", "language_info"}, sorted(nb.metadata)
    for cell in nb.cells:
        assert set(cell.metadata) <= {"nbgrader", "tags"}, (cell.id, sorted(cell.metadata))
        assert "nbgrader" in cell.metadata, cell.id
        # the one tag kept: the parameters cell, as in the chapter notebooks
        assert set(cell.metadata.get("tags", [])) <= {"parameters"}, (cell.id, cell.metadata.tags)


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_each_test_cell_hands_its_hidden_test_to_the_judges(path):
    """A test cell's hidden block is one call of ``hidden_test`` for that very cell, whose
    judge (``recsys_helpers.judges``) the grader runs again outside the student's kernel;
    every registered hidden test belongs to a test cell."""
    from recsys_helpers.judges import TESTS

    called = []
    for cell in _tests(_read(path)):
        blocks = HIDDEN.findall(cell.source)
        assert len(blocks) == 1, cell.id
        calls = re.findall(r'hidden_test\("(exercise_[\w.]+)", "(\w+)", globals\(\)\)', blocks[0])
        assert calls == [(path.stem, cell.metadata.nbgrader.grade_id)], (cell.id, calls)
        called += calls
    assert sorted(called) == sorted(k for k in TESTS if k[0] == path.stem)


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_no_cell_needs_what_grading_blocks(path):
    """The functions the student must write are blocked while grading: neither the given
    cells nor the hidden tests may use them (directly or through another function)."""
    sandbox = pytest.importorskip("recsys_helpers.sandbox")
    blocked = {(module, name) for module, names in sandbox.BLOCKED.get(path.stem, {}).items()
               for name in names}
    if not blocked:
        pytest.skip(f"nothing is blocked while grading {path.stem}")
    for cell in _read(path).cells:
        if cell.cell_type != "code":
            continue
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("recsys_helpers."):
                module = node.module.split(".", 1)[1]
                for alias in node.names:
                    used = (module, alias.name)
                    assert used not in blocked and CALLS.get(used) not in blocked, (
                        f"cell {cell.id} imports recsys_helpers.{module}.{alias.name}, "
                        f"which is not available while grading {path.stem}")

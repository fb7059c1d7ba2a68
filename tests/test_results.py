"""Tests of recsys_helpers.results (recording figures) and recsys_helpers.reproducibility.

(``seed_everything`` is tested here too: the notebooks' figures are only comparable
between runs because every random thing is seeded.)
"""

from __future__ import annotations

import json
import os
import random
import sys
import types

import IPython
import IPython.display
import nbformat
import numpy as np
import pytest

from recsys_helpers.reproducibility import seed_everything
from recsys_helpers.results import MIME_TYPE, read_results, record, results_from_outputs

# --------------------------------------------------------------------------- record


def _printed(capsys) -> tuple[str, str]:
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    name, _, value = lines[0].partition(" = ")
    return name, value


def test_record_prints_outside_ipython(capsys):
    assert IPython.get_ipython() is None
    record("test_mse", np.float64(1.23456789))
    name, value = _printed(capsys)
    assert name == "test_mse"
    assert float(value) == pytest.approx(1.23456789, abs=5e-5)

    record("n_users", np.int64(2_000))
    assert _printed(capsys) == ("n_users", "2000")
    record("model", "bias-only")
    assert _printed(capsys) == ("model", "bias-only")
    record("auc", np.float32(0.75))
    name, value = _printed(capsys)
    assert name == "auc" and float(value) == 0.75


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -np.inf, np.float32("nan"),
                                 np.array(np.nan)])
def test_record_rejects_non_finite(capsys, bad):
    with pytest.raises(ValueError):
        record("test_mse", bad)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("bad", [[1.0, 2.0], {"a": 1}, object()])
def test_record_rejects_non_scalars(bad):
    with pytest.raises(TypeError):
        record("x", bad)


@pytest.fixture
def fake_ipython(monkeypatch):
    """Pretend to run inside IPython; collect what record() displays."""
    shown = []

    def display(obj, raw=False, **kwargs):
        shown.append((obj, raw))

    monkeypatch.setattr(IPython, "get_ipython", lambda: object())
    monkeypatch.setattr(IPython.display, "display", display)
    return shown


def test_record_inside_ipython_displays_mime_output(fake_ipython, capsys):
    record("test_mse", np.float32(0.5))
    record("n_items", np.int32(7))
    record("note", "ok")
    assert capsys.readouterr().out == ""  # displayed, not printed
    assert len(fake_ipython) == 3
    payloads = []
    for data, raw in fake_ipython:
        assert raw is True
        assert set(data) == {MIME_TYPE, "text/plain"}
        json.dumps(data)  # plain Python values only
        payloads.append(data[MIME_TYPE])
    assert payloads == [{"test_mse": 0.5}, {"n_items": 7}, {"note": "ok"}]
    assert type(payloads[0]["test_mse"]) is float
    assert type(payloads[1]["n_items"]) is int
    assert fake_ipython[0][0]["text/plain"].startswith("test_mse = ")
    # What the notebook stores is read back by results_from_outputs.
    outputs = [nbformat.v4.new_output("display_data", data=d) for d, _ in fake_ipython]
    assert results_from_outputs(outputs) == {"test_mse": 0.5, "n_items": 7, "note": "ok"}


# --------------------------------------------------------------------------- reading back


def _figure(payload: dict, as_string: bool = False):
    data = {MIME_TYPE: json.dumps(payload) if as_string else payload,
            "text/plain": ", ".join(f"{k} = {v}" for k, v in payload.items())}
    return nbformat.v4.new_output("display_data", data=data)


def _notebook():
    nb = nbformat.v4.new_notebook()
    c1 = nbformat.v4.new_code_cell("record('mean_mse', 1.5)")
    c1.outputs = [nbformat.v4.new_output("stream", name="stdout", text="training...\n"),
                  _figure({"mean_mse": 1.5})]
    c2 = nbformat.v4.new_code_cell("...")
    c2.outputs = [
        nbformat.v4.new_output("execute_result", data={"text/plain": "42"}, execution_count=2),
        _figure({"bias_mse": 1.1, "n_users": 2000}, as_string=True),
    ]
    c3 = nbformat.v4.new_code_cell("record('mean_mse', 1.25)")  # recorded again: last wins
    c3.outputs = [_figure({"mean_mse": 1.25})]
    md = nbformat.v4.new_markdown_cell("not code")
    md["outputs"] = [_figure({"ignored": 1})]  # only code cells count
    nb.cells = [md, c1, nbformat.v4.new_code_cell("x = 1"), c2, c3]
    return nb


EXPECTED = {"mean_mse": 1.25, "bias_mse": 1.1, "n_users": 2000}


def test_read_results_from_node():
    assert read_results(_notebook()) == EXPECTED


def test_read_results_from_file(tmp_path):
    path = tmp_path / "executed.ipynb"
    nbformat.write(_notebook(), str(path))
    assert read_results(path) == EXPECTED
    assert read_results(str(path)) == EXPECTED
    empty = tmp_path / "empty.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), str(empty))
    assert read_results(empty) == {}


def test_results_from_outputs():
    outputs = [
        {"output_type": "stream", "name": "stdout", "text": "hello"},
        {"output_type": "display_data", "data": {"text/plain": "no figure"}, "metadata": {}},
        _figure({"auc": 0.8}),
        _figure({"precision": 0.1, "auc": 0.85}, as_string=True),
    ]
    assert results_from_outputs(outputs) == {"auc": 0.85, "precision": 0.1}
    assert results_from_outputs([]) == {}


# --------------------------------------------------------------------------- reproducibility


@pytest.fixture
def restore_random(monkeypatch):
    monkeypatch.setenv("PYTHONHASHSEED", "keep")  # restored after the test
    py_state, np_state = random.getstate(), np.random.get_state()
    yield
    random.setstate(py_state)
    np.random.set_state(np_state)


def _draws(rng):
    return [random.random() for _ in range(3)], np.random.rand(3).tolist(), rng.random(3).tolist()


def test_seed_everything_repeats(restore_random):
    first = _draws(seed_everything(5))
    random.random()
    np.random.rand(10)
    again = _draws(seed_everything(5))
    assert again == first
    other = _draws(seed_everything(6))
    assert all(a != b for a, b in zip(other, first))
    assert first[2] == np.random.default_rng(5).random(3).tolist()
    assert os.environ["PYTHONHASHSEED"] == "6"


def test_seed_everything_seeds_tensorflow_when_imported(restore_random, monkeypatch):
    calls = []
    fake_tf = types.SimpleNamespace(
        random=types.SimpleNamespace(set_seed=lambda s: calls.append(("seed", s))),
        config=types.SimpleNamespace(experimental=types.SimpleNamespace(
            enable_op_determinism=lambda: calls.append(("determinism",)))),
    )
    monkeypatch.setitem(sys.modules, "tensorflow", fake_tf)
    seed_everything(3)
    assert calls == [("seed", 3), ("determinism",)]

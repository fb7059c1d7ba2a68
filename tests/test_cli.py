"""Tests of the command line, ``python -m recsys_helpers``, run as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from recsys_helpers.cli import main
from recsys_helpers.datasets import REGISTRY, load_reviews, sample_dir

COMICS = REGISTRY["comics_reviews"].filename


def _run(args, tmp_path, **env_overrides) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update({
        # Nothing may leave the machine: port 9 (discard) on the loopback interface.
        "RECSYS_DATA_URL": "http://127.0.0.1:9/",
        "RECSYS_DATA_DIR": str(tmp_path / "downloads"),
        "RECSYS_DATA": "sample",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    })
    env.update(env_overrides)
    return subprocess.run([sys.executable, "-m", "recsys_helpers", *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)


def _main(args, capsys) -> tuple[int, str, str]:
    """The command line in this process (argparse exits for --help and errors)."""
    try:
        code = main(args)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_the_commands(capsys):
    code, out, _ = _main(["--help"], capsys)
    assert code == 0
    for command in ("fetch", "make-sample", "run", "grade", "sync-cells"):
        assert command in out
    code, out, _ = _main(["make-sample", "--help"], capsys)
    assert code == 0
    for option in ("--out", "--seed", "--only", "--size", "--python-literals"):
        assert option in out
    code, out, _ = _main(["fetch", "--help"], capsys)
    assert code == 0 and "--deadline" in out


def test_no_command_is_an_error(capsys):
    code, _, err = _main([], capsys)
    assert code == 2
    assert err


def test_the_module_runs_as_a_command(tmp_path):
    result = _run(["--help"], tmp_path)
    assert result.returncode == 0 and "sync-cells" in result.stdout, result.stderr


@pytest.mark.models  # generates a sample file
def test_make_sample_writes_the_file(tmp_path):
    out = tmp_path / "out"
    result = _run(["make-sample", "--out", str(out), "--only", "comics_reviews"], tmp_path)
    assert result.returncode == 0, result.stderr
    # the file and its books' generated metadata (titles; genres), no laboratory
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [COMICS, "goodreads_books_comics_graphic.json.gz", "goodreads_book_genres_initial.json.gz"])
    assert COMICS in result.stdout
    # The default seed is the bundled sample's.
    assert (out / COMICS).read_bytes() == (sample_dir() / COMICS).read_bytes()
    df = load_reviews(out / COMICS, cache=False)
    assert len(df) > 1000


def test_make_sample_rejects_unknown_name(tmp_path):
    out = tmp_path / "out"
    result = _run(["make-sample", "--out", str(out), "--only", "movies"], tmp_path)
    assert result.returncode == 2
    assert "movies" in result.stderr
    assert not out.exists()


def test_fetch_unknown_name(tmp_path):
    name = "unknown_name"
    result = _run(["fetch", name], tmp_path)
    assert result.returncode == 2
    assert name in result.stderr
    for ds in REGISTRY.values():
        assert ds.name in result.stderr  # says which names exist
    assert result.stdout == ""
    assert not (tmp_path / "downloads").exists()

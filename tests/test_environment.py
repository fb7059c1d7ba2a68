"""The two install routes agree: requirements.txt (pip) and environment.yml (conda) name
the same packages with the same version bounds, and the Python range the README gives."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
#: Names conda-forge gives to PyPI packages, where they differ.
CONDA_NAMES = {"python-isal": "isal"}


def _pip_requirements() -> dict:
    out = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            req = Requirement(line)
            out[canonicalize_name(req.name)] = req.specifier
    return out


def _environment() -> tuple[dict, dict]:
    """(conda packages, pip packages) of environment.yml, each {name: specifier}."""
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda, pip = {}, {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for line in dep["pip"]:
                if not line.startswith("-"):
                    req = Requirement(line)
                    pip[canonicalize_name(req.name)] = req.specifier
        else:
            name, spec = re.match(r"([A-Za-z0-9_.-]+)\s*(.*)", dep).groups()
            name = CONDA_NAMES.get(name, name)
            conda[canonicalize_name(name)] = Requirement(f"{name}{spec}").specifier
    return conda, pip


def test_same_packages_and_bounds():
    pip_reqs = _pip_requirements()
    conda, pip = _environment()
    python = conda.pop("python")
    conda.pop("pip")
    assert not set(conda) & set(pip), "a package is in both sections of environment.yml"
    assert {**conda, **pip} == pip_reqs
    for name, spec in pip_reqs.items():  # every range is bounded above
        assert any(s.operator in ("<", "<=", "==", "~=") for s in spec), name
    assert str(python) in (">=3.10,<3.13", "<3.13,>=3.10")


def test_python_range_matches_the_readme():
    readme = (ROOT / "README.md").read_text()
    assert "Python 3.10–3.12" in readme
    assert "(Python 3.10-3.12)" in (ROOT / "requirements.txt").read_text()
    assert 'requires-python = ">=3.10"' in (ROOT / "pyproject.toml").read_text()


def test_tensorflow_comes_from_pip_in_environment_yml():
    # conda-forge's TensorFlow is behind the 2.21 the course needs.
    conda, pip = _environment()
    assert "tensorflow" in pip and "tensorflow" not in conda

"""The two install routes (pip via pyproject.toml, conda via environment.yml) must agree; the pre-commit hooks and
the test names in docs/RELIABILITY.md are checked here too."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CONDA_NAMES = {"pytorch": "torch"}  # conda-forge name -> PyPI name


def _split(req: str) -> tuple[str, str]:
    name, spec = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*?)\s*(#.*)?$", req).group(1, 2)
    return name.lower(), spec.replace(" ", "")


def pip_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    reqs = (project["dependencies"] + extras["notebooks"] + extras["export"] + extras["tensorboard"]
            + [r for r in extras["test"] if "[" not in r])
    return dict(_split(r) for r in reqs)


def conda_requirements() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    reqs = [d for d in env["dependencies"] if isinstance(d, str) and not d.startswith(("python=", "pip"))]
    return {CONDA_NAMES.get(n, n): s for n, s in map(_split, reqs)}


def test_environment_yml_lists_the_same_packages_and_versions_as_pyproject():
    assert conda_requirements() == pip_requirements()


def test_albumentations_is_pinned_to_the_mit_licensed_2_0_line():
    assert pip_requirements()["albumentations"] == ">=2.0,<2.1"


def test_environment_installs_the_package_itself():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert any(line.endswith("-e .") for line in pip_section)


def test_reliability_doc_names_only_tests_that_exist():
    named = re.findall(r"`(test_\w+\.py)::(test_\w+)", (ROOT / "docs" / "RELIABILITY.md").read_text())
    assert len(named) > 40
    missing = [(f, t) for f, t in named
               if not (ROOT / "tests" / f).is_file() or f"def {t}(" not in (ROOT / "tests" / f).read_text()]
    assert not missing, missing


def test_pre_commit_runs_ruff_and_nbstripout_with_the_project_options():
    repos = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())["repos"]
    hooks = {hook["id"]: hook for repo in repos for hook in repo["hooks"]}
    assert {"ruff-check", "nbstripout"} <= set(hooks)
    assert hooks["nbstripout"]["args"] == ["--keep-output", "--keep-count"]  # as scripts/run_notebooks.py runs it
    assert all(re.fullmatch(r"v?\d+\.\d+\.\d+", repo["rev"]) for repo in repos)  # pinned to released tags


def test_package_data_ships_every_file_of_the_samples():
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["seglib"]
    package = ROOT / "seglib"
    shipped = {p for pattern in patterns for p in package.glob(pattern)}
    files = {p for p in (package / "sample_data").rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert files and files <= shipped


def test_ruff_is_the_version_pre_commit_runs_and_the_code_and_notebooks_pass_it():
    repos = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())["repos"]
    rev = next(repo["rev"] for repo in repos if "ruff" in repo["repo"])
    assert pip_requirements()["ruff"] == "==" + rev.lstrip("v")
    pytest.importorskip("ruff", reason="pip install -e '.[test]' installs ruff")
    lint = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT,
                          capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout[-3000:]

"""Every exercise has a worked solution, and nbval runs the solutions after their notebook
(``notebooks/conftest.py`` appends them as ``Solution N`` cells to the notebook's own kernel)."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
_spec = importlib.util.spec_from_file_location("nbval_setup", NOTEBOOKS / "conftest.py")
nbval_setup = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(nbval_setup)
PAIRS = [(nb, NOTEBOOKS / "solutions" / f"{nb.name[:2]}_solutions.md")
         for nb in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))]


def exercise_numbers(notebook: Path) -> list[str]:
    nb = nbformat.read(notebook, as_version=4)
    text = next(c.source for c in nb.cells if c.cell_type == "markdown" and "## Exercises" in c.source)
    return re.findall(r"^(\d+)\. ", text[text.index("## Exercises"):], flags=re.M)


@pytest.mark.parametrize("notebook, solutions", PAIRS, ids=[nb.stem for nb, _ in PAIRS])
def test_every_exercise_has_a_solution(notebook, solutions):
    exercises = exercise_numbers(notebook)
    assert exercises, f"{notebook.name} lists no numbered exercises"
    answered = re.findall(r"^## (\d+)\. ", solutions.read_text(), flags=re.M)
    assert answered == exercises, f"{solutions.name} answers {answered}, {notebook.name} asks {exercises}"
    assert f"solutions/{solutions.name}" in nbformat.read(notebook, as_version=4).cells[-1].source  # linked


def test_datasets_used_finds_what_a_solution_reads():
    code = 'a = load_dataset("tiktok", "all")\nb = configs["camvid unet"]\nc = load_dataset("synthetic")\n' \
           'palette = SPECS["cityscapes_pairs"].palette'
    assert nbval_setup.datasets_used(code) == {"tiktok", "camvid"}


def test_solutions_are_collected_after_their_notebooks_last_cell():
    notebook = PAIRS[2][0]
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", str(notebook)],
                          cwd=NOTEBOOKS.parent, capture_output=True, text=True, timeout=300)
    ids = [line.split("::")[-1] for line in proc.stdout.splitlines() if "::" in line]
    code_cells = sum(c.cell_type == "code" for c in nbformat.read(notebook, as_version=4).cells)
    blocks = nbval_setup.solution_blocks(notebook)
    assert len(blocks) >= 2
    assert ids == [f"Cell {i}" for i in range(code_cells)] + [f"Solution {n}" for n in range(1, len(blocks) + 1)], \
        proc.stdout[-2000:] + proc.stderr[-2000:]

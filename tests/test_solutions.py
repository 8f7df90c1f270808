"""Every worked solution runs: each notebook is executed (smoke configuration) with the Python
blocks of its solutions file appended, so a learner who pastes a solution gets working code."""

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from seglib.data import find_folder
from seglib.errors import DataError

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
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


def datasets_used(code: str) -> set[str]:
    """Datasets a solution reads: ``load_dataset("x", ...)``, ``real("x")``, ``configs["x unet"]``."""
    calls = re.findall(r"""(?:load_dataset|find_folder|real)\(\s*["'](\w+)["']""", code)
    return set(calls + re.findall(r"""configs\[["'](\w+) """, code)) - {"synthetic"}


def test_datasets_used_finds_what_a_solution_reads():
    code = 'a = load_dataset("tiktok", "all")\nb = configs["camvid unet"]\nc = load_dataset("synthetic")\n' \
           'palette = SPECS["cityscapes_pairs"].palette'
    assert datasets_used(code) == {"tiktok", "camvid"}


@pytest.mark.parametrize("notebook, solutions", PAIRS, ids=[nb.stem for nb, _ in PAIRS])
def test_solutions_run_after_their_notebook(notebook, solutions, monkeypatch):
    monkeypatch.setenv("SEGLIB_SMOKE", "1")  # the kernel inherits this environment
    monkeypatch.setenv("NO_ALBUMENTATIONS_UPDATE", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)
    nb = nbformat.read(notebook, as_version=4)
    blocks = re.findall(r"```python\n(.*?)```", solutions.read_text(), flags=re.S)
    missing = []
    for name in sorted(datasets_used("".join(blocks))):
        try:
            find_folder(name)
        except DataError:
            missing.append(name)
    if missing:  # the notebooks fall back to synthetic data; these solutions work on the real sets
        pytest.skip(f"{solutions.name} uses {', '.join(missing)}, not on disk: set SEGLIB_DATA_DIR to the "
                    "folder holding the datasets (.ci/run uses ../shared/data)")
    nb.cells += [nbformat.v4.new_code_cell(block.replace("plt.show()", "plt.close('all')")) for block in blocks]
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()  # raises on any error
    outputs = [o for cell in nb.cells[-len(blocks):] for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]

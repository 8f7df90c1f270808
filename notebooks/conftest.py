"""nbval setup: the smoke configuration, output fields that may differ between machines, and the
worked solutions, which run after their notebook's last cell in the same kernel (``Solution N``
items), so a learner who pastes a solution gets working code and no notebook runs twice."""

import os
import re
from collections import defaultdict
from pathlib import Path

import nbformat
import pytest

from seglib.data import find_folder
from seglib.errors import DataError

# Kernels inherit this process's environment when they start, so set it here.
os.environ.setdefault("SEGLIB_SMOKE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # offline import otherwise warns and waits
os.environ.pop("MPLBACKEND", None)  # Agg here would make inline figures vanish

SOLUTIONS = Path(__file__).resolve().parent / "solutions"


def solution_blocks(notebook: Path) -> list[str]:
    """The Python blocks of ``solutions/NN_solutions.md``, figures closed instead of shown; none without the
    file (``tests/test_solutions.py`` asks for one per notebook)."""
    path = SOLUTIONS / f"{notebook.name[:2]}_solutions.md"
    text = path.read_text() if path.is_file() else ""
    return [block.replace("plt.show()", "plt.close('all')")
            for block in re.findall(r"```python\n(.*?)```", text, flags=re.S)]


def datasets_used(code: str) -> set[str]:
    """Datasets a solution reads: ``load_dataset("x", ...)``, ``real("x")``, ``configs["x unet"]``."""
    calls = re.findall(r"""(?:load_dataset|find_folder|real)\(\s*["'](\w+)["']""", code)
    return set(calls + re.findall(r"""configs\[["'](\w+) """, code)) - {"synthetic"}


def missing_datasets(code: str) -> list[str]:
    missing = []
    for name in sorted(datasets_used(code)):
        try:
            find_folder(name)
        except DataError:
            missing.append(name)
    return missing


def pytest_collectstart(collector):
    """nbval compares every output key except those in skip_compare: warnings go to stderr."""
    if getattr(collector, "path", None) is not None and collector.path.suffix == ".ipynb" \
            and hasattr(collector, "skip_compare"):
        collector.skip_compare += ("stderr", "image/svg+xml")


def pytest_collection_modifyitems(session, config, items):
    """Append each collected notebook's solutions as cells run after its last one, in its kernel."""
    from nbval.plugin import IPyNbCell

    last = {}  # notebook collector -> index of its last cell item
    for i, item in enumerate(items):
        if isinstance(item, IPyNbCell):
            last[item.parent] = i
    for notebook, i in sorted(last.items(), key=lambda kv: -kv[1]):  # from the end: indices stay valid
        blocks = solution_blocks(notebook.path)
        missing = missing_datasets("".join(blocks))
        solutions = []
        for n, block in enumerate(blocks, 1):
            item = IPyNbCell.from_parent(notebook, name=f"Solution {n}", cell_num=items[i].cell_num + n,
                                         cell=nbformat.v4.new_code_cell(block),
                                         options=defaultdict(bool, check=False))
            if missing:  # the notebooks fall back to synthetic data; these solutions need the real sets
                item.add_marker(pytest.mark.skip(
                    reason=f"{notebook.path.name[:2]}_solutions.md uses {', '.join(missing)}, not on disk: set "
                           "SEGLIB_DATA_DIR to the folder holding the datasets (.ci/run uses ../shared/data)"))
            solutions.append(item)
        items[i + 1:i + 1] = solutions

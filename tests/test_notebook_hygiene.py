"""Committed notebooks must come from one clean top-to-bottom run and render on GitHub."""

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.fixture(params=NOTEBOOKS, ids=lambda p: p.name)
def notebook(request):
    return json.loads(request.param.read_text()), request.param


def code_cells(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def test_there_are_notebooks():
    assert NOTEBOOKS, "no numbered notebooks found"


def test_execution_counts_run_1_to_n(notebook):
    nb, path = notebook
    counts = [c["execution_count"] for c in code_cells(nb)]
    assert counts == list(range(1, len(counts) + 1)), f"{path.name}: re-run top to bottom"


def test_no_error_outputs(notebook):
    """Not even an expected one: an error stops "Run All" in Jupyter (catch it and print it)."""
    nb, path = notebook
    for cell in code_cells(nb):
        errors = [o for o in cell["outputs"] if o["output_type"] == "error"]
        assert not errors, f"{path.name}: {errors[0]['ename']}: {errors[0]['evalue']}"
        tags = cell["metadata"].get("tags", [])
        assert "raises-exception" not in tags, f"{path.name}: {''.join(cell['source'])[:60]}"


def test_metadata_is_clean(notebook):
    nb, path = notebook
    assert "widgets" not in nb["metadata"], f"{path.name}: widget state breaks GitHub rendering"
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    assert path.stat().st_size < 3_000_000, f"{path.name} is too large to render on GitHub"


def test_shape_title_setup_recap_exercises(notebook):
    nb, path = notebook
    markdown = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    assert markdown.lstrip().startswith(f"# {path.name[:2]}."), f"{path.name}: title '# NN. ...'"
    for heading in ("Learning objectives", "## 0. Setup", "## Recap", "## Exercises"):
        assert heading in markdown, f"{path.name}: missing {heading!r}"
    assert "settings_from_env()" in "".join(code_cells(nb)[0]["source"]), "first code cell: setup"


def test_outputs_hold_no_machine_paths(notebook):
    """What one machine's folders look like means nothing to a reader (print seglib.paths.display_path)."""
    nb, path = notebook
    for cell in code_cells(nb):
        text = json.dumps(cell["outputs"])
        for prefix in ("/work/", "/tmp/", "/home/", "/root/", "/Users/", "C:\\\\"):
            source = "".join(cell["source"])[:60]
            assert prefix not in text, f"{path.name}: an output holds a path under {prefix}: {source}"

"""scripts/gpu_report.py: the README's GPU tables are what the committed results JSON says, and a row that failed
on the GPU (out of memory) is reported, not a crash."""

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("gpu_report", REPO / "scripts" / "gpu_report.py")
gpu_report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_report)


def newest(kind: str) -> dict:
    return json.loads(sorted((REPO / "benchmarks" / "results").glob(f"*_{kind}.json"))[-1].read_text())


def speed_row_cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_the_readme_quotes_the_newest_gpu_results_as_the_report_makes_them():
    readme = (REPO / "README.md").read_text()
    assert gpu_report.recipes_table(newest("recipes")["recipes"]) in readme
    assert gpu_report.speed_table(newest("speed")) in readme


def test_a_failed_row_is_reported_in_its_table():
    speed = newest("speed")
    speed["rows"][-1] = {"regime": speed["rows"][-1]["regime"], "error": "CUDA out of memory"}
    assert speed_row_cells(gpu_report.speed_table(speed).splitlines()[-1])[:2] == [speed["rows"][-1]["regime"],
                                                                                 "CUDA out of memory"]
    recipes = newest("recipes")["recipes"]
    recipes["camvid"] = {"dataset": "camvid", "error": "timed out before its first validation"}
    assert "| CamVid-11 | timed out before its first validation |" in gpu_report.recipes_table(recipes)

"""The notebooks: committed clean, one literal `parameters` cell each, and every one runs under papermill.

The execution test drives the same runner as ``./run_all.sh`` (``ssmtl_core.study``) with ``--quick``
settings (tiny synthetic data, one epoch, one architecture) into a temporary folder, then checks each
notebook's ``metrics.json``: the keys every consumer relies on and values in their ranges.
"""

import ast
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
EXPECTED = ["00_data_and_detections", "01_arrow_of_time", "02_motion_irregularity", "03_middle_box_prediction",
            "04_knowledge_distillation", "05_train_architecture", "06_evaluate", "07_results_tables",
            "08_anomaly_gallery"]


def _cells(path):
    return json.loads(path.read_text())["cells"]


def test_every_notebook_is_there():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    for cell in _cells(path):
        if cell["cell_type"] == "code":
            assert not cell.get("outputs"), f"{path.name} has outputs: clear them before committing"
            assert cell.get("execution_count") is None, f"{path.name} has execution counts"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_one_parameters_cell_of_literals(path):
    cells = _cells(path)
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: {len(tagged)} cells tagged 'parameters'"
    source = "".join(tagged[0]["source"])
    lines = [line for line in source.splitlines() if line.strip()]
    for line in lines:
        assert "#" in line, f"{path.name}: parameter without a one-line comment: {line!r}"
        assert "=" not in line.split("#", 1)[1], f"{path.name}: papermill cannot parse '=' in a comment: {line!r}"
    for node in ast.parse(source).body:
        assert isinstance(node, ast.Assign), f"{path.name}: only assignments in the parameters cell"
        assert isinstance(node.value, ast.Constant), f"{path.name}: {ast.unparse(node)} is not a literal"
        assert node.targets[0].id.isupper()
    # a title and an imports cell come before the parameters
    assert cells[0]["cell_type"] == "markdown" and "".join(cells[0]["source"]).startswith("# ")
    index = cells.index(tagged[0])
    assert any("import" in "".join(c["source"]) for c in cells[:index] if c["cell_type"] == "code")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_path_hacks(path):
    for cell in _cells(path):
        assert "sys.path" not in "".join(cell["source"]), f"{path.name} edits sys.path"


def _in(value, low=0.0, high=1.0):
    return value is not None and not math.isnan(value) and low <= value <= high


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory):
    from ssmtl_core import study

    base = tmp_path_factory.mktemp("study")
    argv = ["--quick", "--archs", "shallow_narrow", "--reports", str(base / "reports"), "--runs", str(base / "runs"),
            "--cache", str(base / "cache"), "--data-root", str(base / "data"), "--device", "cpu"]
    code = study.main(argv)
    return code, base / "reports"


@pytest.mark.slow
def test_quick_study_runs_every_notebook(quick_study):
    code, reports = quick_study
    failed = [p.parent.name for p in reports.rglob(".step.json") if json.loads(p.read_text())["status"] != "ok"]
    assert code == 0 and not failed, f"failed notebooks: {failed}"
    assert (reports / "README.md").is_file()
    readme = (reports / "README.md").read_text()
    assert "| architecture |" in readme and "shallow_narrow" in readme


@pytest.mark.slow
def test_quick_study_metrics(quick_study):
    _, reports = quick_study
    metrics = {p.parent.relative_to(reports).as_posix(): json.loads(p.read_text()) for p in reports.rglob("metrics.json")
               if "evaluation" not in p.parts}
    expected = {"00_data_and_detections", "01_arrow_of_time", "02_motion_irregularity", "03_middle_box_prediction",
                "04_knowledge_distillation", "05_train_architecture/shallow_narrow", "06_evaluate/shallow_narrow",
                "07_results_tables", "08_anomaly_gallery"}
    assert expected <= set(metrics), f"missing: {expected - set(metrics)}"
    for name, data in metrics.items():
        assert data["notebook"] == name.split("/")[0]
        assert "versions" in data and "torch" in data["versions"]
        assert "parameters" in data and data["parameters"]["OUT_DIR"]
    assert metrics["00_data_and_detections"]["boxes"]["test"] > 0
    assert _in(metrics["00_data_and_detections"]["recall_iou_0.3"])
    for name in ("01_arrow_of_time", "02_motion_irregularity", "03_middle_box_prediction", "04_knowledge_distillation"):
        data = metrics[name]
        assert _in(data["micro_auc"]) and _in(data["macro_auc"]), name
        assert data["train"]["epochs"] == 1 and data["seed"] == 0
        assert data["detector"]["detector"] == "motion"
    evaluation = metrics["06_evaluate/shallow_narrow"]
    for key in ("micro_auc", "macro_auc", "rbdc", "tbdc"):
        assert _in(evaluation[key]), key
    assert set(evaluation["per_task"]) == {"aot", "irr", "mid", "kd"}
    assert "aot+irr+mid+kd" in evaluation["ablation"] and len(evaluation["ablation"]) == 15
    assert evaluation["teacher"].startswith("efficientnet_lite0")
    assert evaluation["dataset"]["name"] == "synthetic"
    assert metrics["05_train_architecture/shallow_narrow"]["best_val_loss"] > 0
    tables = metrics["07_results_tables"]
    assert [row["name"] for row in tables["architectures"]] == ["shallow_narrow"]
    assert (reports / "07_results_tables" / "tables.md").is_file()
    assert metrics["08_anomaly_gallery"]["arch"] == "shallow_narrow"
    assert (reports / "08_anomaly_gallery" / metrics["08_anomaly_gallery"]["clip"]).is_file()


@pytest.mark.slow
def test_quick_study_rerun_skips_unchanged_steps(quick_study, capsys):
    from ssmtl_core import study

    _, reports = quick_study
    base = reports.parent
    argv = ["--quick", "--archs", "shallow_narrow", "--reports", str(reports), "--runs", str(base / "runs"),
            "--cache", str(base / "cache"), "--data-root", str(base / "data"), "--device", "cpu"]
    assert study.main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("[skip]") == 9 and "[run]" not in out

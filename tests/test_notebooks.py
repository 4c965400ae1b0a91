"""The notebooks: committed clean, one literal `parameters` cell each, and every one runs under papermill.

The execution test drives the same runner as ``./run_all.sh`` (``ssmtl_core.study``) with ``--quick``
settings (tiny synthetic data, one epoch, one architecture) into a temporary folder, then checks each
notebook's ``metrics.json``: the keys every consumer relies on, values in their ranges, and the AUCs pinned
below.
"""

import ast
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

# -- pinned results of the quick study ------------------------------------------------------------------------
# The quick study (tiny synthetic data, motion detector, fp32 CPU training forced by --precision fp32 so that a
# CPU with native bf16 does not switch, seed 0, one epoch, the profile's cosine schedule: a warm-up over half
# the epoch) is
# seed-deterministic on a CPU, so its AUCs are pinned: a refactor that changes them changed behaviour. The
# tolerance absorbs what differs between CPUs (oneDNN and OpenCV take other SIMD paths on AVX2 and AVX-512
# machines); RBDC/TBDC are not pinned (they follow from the same scores).
# When a change alters training or scoring numerics on purpose, regenerate the values and update them here:
#   .venv/bin/python -m ssmtl_core.study --quick --archs shallow_narrow --device cpu --precision fp32 \
#       --reports /tmp/q/reports --runs /tmp/q/runs --cache /tmp/q/cache --data-root /tmp/q/data
#   .venv/bin/python tests/test_notebooks.py /tmp/q/reports     # prints the dict below from that run
PINNED_QUICK_AUC = {
    "01_arrow_of_time": {"micro_auc": 0.4609, "macro_auc": 0.4297},
    "02_motion_irregularity": {"micro_auc": 0.5044, "macro_auc": 0.5089},
    "03_middle_box_prediction": {"micro_auc": 0.5316, "macro_auc": 0.5544},
    "04_knowledge_distillation": {"micro_auc": 0.9129, "macro_auc": 0.9379},
    "06_evaluate/shallow_narrow": {"micro_auc": 0.8567, "macro_auc": 0.9016},
}
PINNED_AUC_TOLERANCE = 0.01  # absolute; the values above are rounded to 4 decimals
PINNED_QUICK_TEST_BOXES = 329  # motion-detector boxes in the tiny synthetic test videos (notebook 00)
PINNED_BOXES_TOLERANCE = 0.02  # relative

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
        assert isinstance(node.value, (ast.Constant, ast.Dict)), f"{path.name}: {ast.unparse(node)} is not a literal"
        ast.literal_eval(node.value)  # a dict (OVERRIDES) of literals only
        assert node.targets[0].id.isupper()
    # a title and an imports cell come before the parameters
    assert cells[0]["cell_type"] == "markdown" and "".join(cells[0]["source"]).startswith("# ")
    index = cells.index(tagged[0])
    assert any("import" in "".join(c["source"]) for c in cells[:index] if c["cell_type"] == "code")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_path_hacks(path):
    for cell in _cells(path):
        assert "sys.path" not in "".join(cell["source"]), f"{path.name} edits sys.path"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_stumbles(path):
    """Parameters come from ssmtl_core.settings, not a sweep of globals(); training goes through study_task."""
    code = "\n".join("".join(c["source"]) for c in _cells(path) if c["cell_type"] == "code")
    assert "__import__" not in code
    assert "globals().items()" not in code, f"{path.name}: use study_task.setup(NOTEBOOK, globals())"
    assert "prepare_training_data" not in code and not re.search(r"\btrain\(", code), "train through study_task"
    assert "range(-3, 4)" not in code, f"{path.name}: offsets come from profile.sample.temporal_half"


def _parameters(path):
    cell = next(c for c in _cells(path) if "parameters" in c.get("metadata", {}).get("tags", []))
    return {node.targets[0].id: ast.literal_eval(node.value) for node in ast.parse("".join(cell["source"])).body}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_defaults_are_the_synthetic_study(path):
    """Opened directly, a notebook does what ./run_all.sh does on the synthetic profile (for shallow_narrow) and
    so reuses its runs instead of clashing with them; only its figures go elsewhere (the next test)."""
    from ssmtl_core import study

    params = study.load_params("synthetic")
    arch = "shallow_narrow" if path.stem in ("05_train_architecture", "06_evaluate") else None
    step = study.Step(path.stem, arch)
    expected = study.step_parameters(step, params, ROOT / "reports" / "synthetic", {})
    del expected["OUT_DIR"]
    if "REPORTS_DIR" in expected:
        expected["REPORTS_DIR"] = "reports/synthetic"
    defaults = _parameters(path)
    for name, value in defaults.items():
        if name in expected:
            assert value == expected[name], f"{path.stem}: {name} = {value!r}, params/synthetic.yaml: {expected[name]!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_interactive_runs_write_to_a_scratch_folder(path):
    """A notebook run by hand writes outside reports/, in a folder git ignores: the committed reports change only
    through ./run_all.sh, which passes each notebook its report folder."""
    out = _parameters(path)["OUT_DIR"]
    assert out == f"runs/notebooks/{path.stem}", out
    assert not (ROOT / out).resolve().is_relative_to((ROOT / "reports").resolve())
    ignored = subprocess.run(["git", "check-ignore", "-q", f"{out}/metrics.json"], cwd=ROOT)
    assert ignored.returncode == 0, f"{out} is not ignored by git"


def test_notebooks_are_ruff_clean():
    ruff = Path(sys.executable).parent / "ruff"
    if not ruff.is_file():
        pytest.skip("ruff is not installed in this environment")
    result = subprocess.run([str(ruff), "check", "--no-cache", "notebooks"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _in(value, low=0.0, high=1.0):
    return value is not None and not math.isnan(value) and low <= value <= high


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory):
    from ssmtl_core import study

    base = tmp_path_factory.mktemp("study")
    argv = ["--quick", "--archs", "shallow_narrow", "--reports", str(base / "reports"), "--runs", str(base / "runs"),
            "--cache", str(base / "cache"), "--data-root", str(base / "data"), "--device", "cpu", "--precision", "fp32"]
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
        assert len(data["code"]["source_digest"]) == 64, "every metrics.json names the code that made it"
    boxes = metrics["00_data_and_detections"]["boxes"]["test"]
    assert boxes == pytest.approx(PINNED_QUICK_TEST_BOXES, rel=PINNED_BOXES_TOLERANCE), boxes
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
    assert len(evaluation["training"]["code"]["source_digest"]) == 64, "and the code its model was trained with"
    assert "aot+irr+mid+kd" in evaluation["ablation"] and len(evaluation["ablation"]) == 15
    assert evaluation["teacher"].startswith("efficientnet_lite0")
    assert evaluation["dataset"]["name"] == "synthetic"
    assert metrics["05_train_architecture/shallow_narrow"]["best_val_loss"] > 0
    tables = metrics["07_results_tables"]
    assert [row["name"] for row in tables["architectures"]] == ["shallow_narrow"]
    assert (reports / "07_results_tables" / "tables.md").is_file()
    assert metrics["08_anomaly_gallery"]["arch"] == "shallow_narrow"
    assert (reports / "08_anomaly_gallery" / metrics["08_anomaly_gallery"]["clip"]).is_file()
    joint = metrics["05_train_architecture/shallow_narrow"]["joint_loss_one_batch"]
    assert set(joint["untrained"]) == {"aot", "irr", "mid", "kd", "total"} and joint["weights"]["kd"] == 0.5


@pytest.mark.slow
def test_quick_study_pinned_aucs(quick_study):
    """The quick study's AUCs equal the pinned ones (PINNED_QUICK_AUC at the top of this file)."""
    _, reports = quick_study
    found = _pinned_values(reports)
    for step, expected in PINNED_QUICK_AUC.items():
        for key, value in expected.items():
            assert found[step][key] == pytest.approx(value, abs=PINNED_AUC_TOLERANCE), (
                f"{step} {key}: {found[step][key]:.4f}, pinned {value:.4f} (see the top of tests/test_notebooks.py "
                "to regenerate after an intended change)")


def _pinned_values(reports: Path) -> dict:
    """The pinned metrics of a quick study's reports folder, rounded as PINNED_QUICK_AUC writes them."""
    out = {}
    for step in PINNED_QUICK_AUC:
        data = json.loads((reports / step / "metrics.json").read_text())
        out[step] = {key: round(data[key], 4) for key in ("micro_auc", "macro_auc")}
    return out


@pytest.mark.slow
def test_quick_study_rerun_skips_unchanged_steps(quick_study, capsys):
    from ssmtl_core import study

    _, reports = quick_study
    base = reports.parent
    argv = ["--quick", "--archs", "shallow_narrow", "--reports", str(reports), "--runs", str(base / "runs"),
            "--cache", str(base / "cache"), "--data-root", str(base / "data"), "--device", "cpu", "--precision", "fp32"]
    assert study.main(argv) == 0
    out = capsys.readouterr().out
    steps = study.plan(["shallow_narrow"], study.load_params("synthetic", quick=True)["seeds"]["values"])
    assert len(steps) == 12  # nine notebooks, the seed study's 05 and 06, and its ensemble
    assert out.count("[skip]") == len(steps) and "[run]" not in out


# -- the exercises: each change an exercise asks for, run once ----------------------------------------------------


def exercise_changes(path: Path) -> list[dict]:
    """The parameter changes the Exercises cell of a notebook asks for: every code span ``NAME = literal``. Spans
    of one exercise that set different parameters go together (``PROFILE`` and ``REPORTS_DIR``); two values of
    the same parameter are two runs (``max_gap`` 2, then 5)."""
    cells = [c for c in _cells(path) if c["cell_type"] == "markdown" and "".join(c["source"]).startswith("## Exercises")]
    if not cells:
        return []
    changes = []
    for item in re.split(r"\n\d+\. ", "".join(cells[0]["source"]))[1:]:
        runs: list[dict] = []
        for name, value in re.findall(r"`([A-Z][A-Z_]*) = ([^`]+)`", item):
            value = ast.literal_eval(value)
            target = next((r for r in runs if name not in r), None)
            if any(r.get(name) == value for r in runs):
                continue
            if target is None:
                runs.append(target := {})
            target[name] = value
        changes += runs
    return changes


EXERCISES = [(path, change) for path in NOTEBOOKS for change in exercise_changes(path)]


def test_every_notebook_has_exercises_and_ends_with_a_summary():
    for path in NOTEBOOKS:
        cells = _cells(path)
        assert any("".join(c["source"]).startswith("## Exercises") for c in cells), path.stem
        assert "".join(cells[-1]["source"]).startswith("## Summary"), f"{path.stem} does not end with a summary"
    for stem in EXPECTED[:6]:  # 00-05: the exercises that change a setting are run below
        assert any(p.stem == stem for p, _ in EXERCISES), f"{stem}: no exercise changes a parameter"
    for path, change in EXERCISES:
        assert set(change) <= set(_parameters(path)), f"{path.stem}: an exercise sets a parameter it lacks: {change}"


@pytest.mark.slow
@pytest.mark.parametrize("path, change", EXERCISES,
                         ids=[f"{p.stem[:2]}-{','.join(f'{k}={v}' for k, v in c.items())}" for p, c in EXERCISES])
def test_exercise_runs(quick_study, tmp_path, path, change):
    """The change an exercise asks for, made the one way a student makes it (a parameter, then Run All), runs
    top to bottom on the quick study's data and runs, and reaches the model: a run that trains does so in a
    folder of its own, with the changed setting in its recorded profile."""
    import papermill as pm

    from ssmtl_core import study
    from ssmtl_core.config import load_profile
    from ssmtl_core.settings import profile_overrides
    from ssmtl_core.study_task import overrides_tag

    _, reports = quick_study
    base = reports.parent
    arch = "shallow_narrow" if path.stem in ("05_train_architecture", "06_evaluate") else None
    flags = {"RUNS_DIR": str(base / "runs"), "CACHE_DIR": str(base / "cache"), "DATA_ROOT": str(base / "data"),
             "DEVICE": "cpu", "PRECISION": "fp32"}
    values = study.step_parameters(study.Step(path.stem, arch), study.load_params("synthetic", quick=True), reports,
                                   flags)
    if "ENSEMBLE_SEEDS" in change:  # the quick study trains seeds 0 and 1 only: the ensemble it can score
        quick_seeds = study.load_params("synthetic", quick=True)["seeds"]["values"]
        change = {**change, "ENSEMBLE_SEEDS": ",".join(str(s) for s in [0, *quick_seeds])}
    values.update(change, OUT_DIR=str(tmp_path / "out"))
    declared = _parameters(path)
    pm.execute_notebook(str(path), str(tmp_path / path.name), cwd=str(ROOT), kernel_name="python3",
                        parameters={k: v for k, v in values.items() if k in declared}, progress_bar=False)
    assert (tmp_path / "out" / "metrics.json").is_file()
    if "RUNS_DIR" not in declared or "EPOCHS" not in declared:
        return  # it trains nothing
    values = {**declared, **values}  # what the notebook ran with: its defaults, then what papermill passed
    name = f"task_{_TASKS[path.stem]}_{values['ARCH']}" if path.stem in _TASKS else values["ARCH"]
    run = base / "runs" / (study.run_name(name, values["SEED"]) + overrides_tag(values["OVERRIDES"]))
    assert run.name != name or change.get("ARCH"), "an exercise's run must not reuse the default run's folder"
    recorded = json.loads((run / "run.json").read_text())["settings"]["profile"]
    expected = load_profile("synthetic", overrides=profile_overrides({k: v for k, v in change.items()}))
    for field in profile_overrides(change):
        section, key = field.split(".")
        assert recorded[section][key] == json.loads(json.dumps(getattr(getattr(expected, section), key))), field


_TASKS = {"01_arrow_of_time": "aot", "02_motion_irregularity": "irr", "03_middle_box_prediction": "mid",
          "04_knowledge_distillation": "kd"}


if __name__ == "__main__":  # print the pinned values of a quick study: python tests/test_notebooks.py REPORTS
    reports = Path(sys.argv[1])
    print("PINNED_QUICK_AUC = {")
    for step, values in _pinned_values(reports).items():
        print(f"    {json.dumps(step)}: {json.dumps(values)},")
    print("}")
    boxes = json.loads((reports / "00_data_and_detections" / "metrics.json").read_text())["boxes"]["test"]
    print(f"PINNED_QUICK_TEST_BOXES = {boxes}")

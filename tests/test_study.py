"""The runner's plan: the seed study (its architecture chosen by validation loss, never by a test label) and the
report's seed table."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssmtl_core import report
from ssmtl_core.io import write_json
from ssmtl_core.study import LOWEST_VAL_LOSS, plan, resolve_seed_arch, step_parameters
from ssmtl_core.study_task import run_name


def test_plan_without_seeds_is_the_usual_study():
    names = [s.name for s in plan(["shallow_narrow", "deep_wide"])]
    assert names[0] == "00_data_and_detections" and names[-2:] == ["07_results_tables", "08_anomaly_gallery"]
    assert "05_train_architecture/deep_wide" in names and not any("seed" in n for n in names)


def test_seed_study_takes_the_lowest_validation_loss(tmp_path):
    archs = ["shallow_narrow", "deep_wide"]
    steps = plan(archs, seeds=[1, 2])
    seeded = [s for s in steps if s.seed]
    assert [s.notebook for s in seeded] == ["05_train_architecture"] * 2 + ["06_evaluate"] * 2
    [ensemble] = [s for s in steps if s.ensemble]
    assert ensemble.notebook == "06_evaluate" and ensemble.ensemble == [0, 1, 2] and ensemble.arch == LOWEST_VAL_LOSS
    assert all(s.arch == LOWEST_VAL_LOSS for s in seeded)
    assert resolve_seed_arch(steps, tmp_path, archs) is None, "nothing trained yet: nothing to choose"
    for arch, loss in (("shallow_narrow", 0.31), ("deep_wide", 0.27)):
        write_json(tmp_path / "05_train_architecture" / arch / "metrics.json", {"best_val_loss": loss})
    assert resolve_seed_arch(steps, tmp_path, archs) == "deep_wide"
    names = [s.name for s in steps]
    assert "05_train_architecture/deep_wide-seed1" in names and "06_evaluate/deep_wide-seed2" in names
    results_step = next(s for s in steps if s.notebook == "07_results_tables")
    assert "06_evaluate/deep_wide-seed2" in results_step.depends
    params = {"common": {}, "notebooks": {}, "archs": {}, "list_archs": archs}
    values = step_parameters(next(s for s in steps if s.seed == 2 and s.notebook == "06_evaluate"), params,
                             tmp_path, {})
    assert values["SEED"] == 2 and values["ARCH"] == "deep_wide"
    assert values["OUT_DIR"].endswith("06_evaluate/deep_wide-seed2")
    assert ensemble.name == "06_evaluate/deep_wide-ensemble" and ensemble.depends == [
        "06_evaluate/deep_wide", "06_evaluate/deep_wide-seed1", "06_evaluate/deep_wide-seed2"]
    values = step_parameters(ensemble, params, tmp_path, {})
    assert values["ENSEMBLE_SEEDS"] == "0,1,2" and values["OUT_DIR"].endswith("06_evaluate/deep_wide-ensemble")
    assert "SEED" not in values
    assert run_name("deep_wide") == "deep_wide" and run_name("deep_wide", 3) == "deep_wide-seed3"


def test_seed_table_gives_each_seed_then_mean_and_spread(tmp_path):
    for name, micro in (("deep_wide", 0.90), ("deep_wide-seed1", 0.94), ("deep_wide-seed2", 0.92),
                        ("shallow_narrow", 0.80)):
        write_json(tmp_path / "06_evaluate" / name / "metrics.json",
                   {"micro_auc": micro, "macro_auc": micro, "rbdc": 0.5, "tbdc": 0.6, "training": {"epochs": 3}})
    results = report.collect_results(tmp_path)
    assert set(results["archs"]) == {"deep_wide", "shallow_narrow"}, "seed runs are not architectures"
    assert list(results["seeds"]["deep_wide"]) == [0, 1, 2]
    rows = report.seed_rows(results)
    by_seed = {r["seed"]: r for r in rows}
    assert by_seed["mean"]["micro_auc"] == pytest.approx(0.92)
    assert by_seed["std"]["micro_auc"] == pytest.approx(0.02)
    assert by_seed["min"]["micro_auc"] == pytest.approx(0.90) and by_seed["max"]["micro_auc"] == pytest.approx(0.94)
    table = report.markdown_seed_table(rows)
    assert "| deep_wide | mean | **92.0** |" in table
    assert not any(str(r["seed"]).startswith("ensemble") for r in rows), "no ensemble evaluated: no ensemble row"
    write_json(tmp_path / "06_evaluate" / "deep_wide-ensemble" / "metrics.json",
               {"micro_auc": 0.95, "macro_auc": 0.96, "rbdc": 0.55, "tbdc": 0.65,
                "ensemble": {"members": [{"seed": 0}, {"seed": 1}, {"seed": 2}]}})
    results = report.collect_results(tmp_path)
    assert set(results["archs"]) == {"deep_wide", "shallow_narrow"}, "an ensemble is not an architecture"
    rows = report.seed_rows(results)
    assert rows[-1]["seed"] == "ensemble of seeds 0, 1, 2" and rows[-1]["micro_auc"] == 0.95
    assert "| deep_wide | ensemble of seeds 0, 1, 2 | **95.0** |" in report.markdown_seed_table(rows)


def test_a_failed_rerun_leaves_no_earlier_numbers_behind(tmp_path, monkeypatch):
    import papermill

    from ssmtl_core.study import Step, run_step

    def failing(*_args, **_kwargs):
        raise RuntimeError("the notebook failed")

    monkeypatch.setattr(papermill, "execute_notebook", failing)
    out = tmp_path / "06_evaluate" / "deep_wide"
    write_json(out / "metrics.json", {"micro_auc": 0.9})  # from an earlier, successful run
    record = run_step(Step("06_evaluate", "deep_wide"), {"OUT_DIR": str(out)}, "new-key", False, lambda *_: None)
    assert record["status"] == "failed" and "the notebook failed" in record["error"]
    assert not (out / "metrics.json").exists(), "the tables would show the earlier run's numbers as this one's"


def test_a_step_reruns_when_a_step_it_depends_on_ran_after_it(tmp_path, monkeypatch):
    # 06_evaluate/deep_wide failed, was fixed and rerun with the same key: 07 must not keep its old tables.
    import papermill

    from ssmtl_core.study import Step, run_step

    executed = []

    def execute(source, executed_path, **_kwargs):
        executed.append(source)
        write_json(Path(executed_path).parent / "metrics.json", {"ok": True})

    monkeypatch.setattr(papermill, "execute_notebook", execute)
    out = tmp_path / "07_results_tables"
    step, values = Step("07_results_tables"), {"OUT_DIR": str(out)}
    first = run_step(step, values, "same-key", False, lambda *_: None)
    assert len(executed) == 1
    again = run_step(step, values, "same-key", False, lambda *_: None, depends_finished=first["finished"])
    assert again.get("skipped") and len(executed) == 1, "inputs not newer: skipped"
    run_step(step, values, "same-key", False, lambda *_: None, depends_finished="9999-01-01T00:00:00")
    assert len(executed) == 2, "a dependency finished after this step: rerun"


def test_a_step_whose_checkpoint_was_deleted_runs_again(tmp_path, monkeypatch):
    # The report says: delete the run folders of trainings made by other code, then rerun. A step whose key is
    # unchanged but whose training's checkpoint is gone must train again, not be skipped.
    import papermill

    from ssmtl_core.study import Step, missing_checkpoints, run_step

    checkpoint = tmp_path / "runs" / "shallow_narrow" / "best.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"model")
    executed = []

    def execute(source, executed_path, **_kwargs):
        executed.append(source)
        write_json(Path(executed_path).parent / "metrics.json", {"train": {"checkpoint": str(checkpoint)}})

    monkeypatch.setattr(papermill, "execute_notebook", execute)
    out = tmp_path / "05_train_architecture" / "shallow_narrow"
    step, values = Step("05_train_architecture", "shallow_narrow"), {"OUT_DIR": str(out)}
    run_step(step, values, "same-key", False, lambda *_: None)
    assert missing_checkpoints(out) == []
    assert run_step(step, values, "same-key", False, lambda *_: None).get("skipped") and len(executed) == 1
    checkpoint.unlink()
    assert missing_checkpoints(out) == [str(checkpoint)]
    messages = []
    record = run_step(step, values, "same-key", False, messages.append)
    assert not record.get("skipped") and len(executed) == 2
    assert any("is gone" in message for message in messages), messages

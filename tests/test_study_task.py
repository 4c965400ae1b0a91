"""What the notebooks share: OVERRIDES go through the same validation as every setting, and a run with other
settings gets its own folder (an exercise never needs a hand-made run_dir)."""

from __future__ import annotations

import pytest

from ssmtl_core import study_task
from ssmtl_core.errors import SSMTLError
from ssmtl_core.study import lowest_validation_loss


def _namespace(tmp_path, **parameters):
    return {"PROFILE": "synthetic", "OUT_DIR": str(tmp_path / "out"), "RUNS_DIR": str(tmp_path / "runs"),
            "ARCH": "shallow_narrow", "EPOCHS": 1, "SEED": 0, "OVERRIDES": {}, "DETECTOR": "", **parameters}


def test_overrides_reach_the_profile_and_name_the_run(tmp_path):
    default = study_task.setup("01_arrow_of_time", _namespace(tmp_path), tasks="aot")
    changed = study_task.setup("01_arrow_of_time", _namespace(tmp_path, OVERRIDES={"sample.temporal_half": 1}),
                               tasks="aot")
    assert default.profile.sample.temporal_half == 3 and changed.profile.sample.temporal_half == 1
    assert default.run_dir("task_aot_shallow_narrow").name == "task_aot_shallow_narrow"
    assert changed.run_dir("task_aot_shallow_narrow").name == "task_aot_shallow_narrow-temporal_half=1"
    seed = study_task.setup("01_arrow_of_time", _namespace(tmp_path, SEED=2, OVERRIDES={"sample.max_gap": 2}))
    assert seed.run_dir("task_aot_shallow_narrow").name == "task_aot_shallow_narrow-seed2-max_gap=2"
    assert default.profile.detect.detector == "motion", "an empty DETECTOR keeps the profile's detector"
    assert study_task.setup("00", _namespace(tmp_path, DETECTOR="yolo")).profile.detect.detector == "yolo"


def test_overrides_tag_is_short_and_safe():
    assert study_task.overrides_tag({}) == "" and study_task.overrides_tag(None) == ""
    assert study_task.overrides_tag({"train.kd_weight": 1.0, "sample.max_gap": 2}) == "-max_gap=2-kd_weight=1.0"
    assert study_task.overrides_tag({"train.tasks": "aot,irr"}) == "-tasks=aot+irr"
    long = study_task.overrides_tag({f"detect.field_{k}": "x" * 20 for k in range(4)})
    assert long.startswith("-overrides") and len(long) == len("-overrides") + 8


@pytest.mark.parametrize("overrides, message", [
    ({"sample.temporal_half": 0}, "sample.temporal_half"),  # out of range: config.validate
    ({"sample.no_such_field": 1}, "unknown setting sample.no_such_field"),  # a typo: config.apply_overrides
    ({"train.epochs": 2}, "set EPOCHS instead"),  # the notebook has EPOCHS: one way to set each value
    ({"temporal_half": 1}, "section.name"),
    ("sample.temporal_half=1", "must be a dict"),
])
def test_bad_overrides_stop_in_the_setup_cell(tmp_path, overrides, message):
    nb = study_task.setup("01_arrow_of_time", _namespace(tmp_path, OVERRIDES=overrides), tasks="aot")
    with pytest.raises(SSMTLError, match=message):
        nb.profile  # noqa: B018 - the notebooks' setup cell reads it first


def test_overrides_set_a_field_whose_parameter_the_notebook_lacks(tmp_path):
    """Notebook 05 has no TASKS parameter: its OVERRIDES may train a subset of the tasks, in a folder of its own."""
    nb = study_task.setup("05_train_architecture", _namespace(tmp_path, OVERRIDES={"train.tasks": "aot,irr,mid"}))
    assert nb.profile.train.tasks == ("aot", "irr", "mid")
    assert nb.run_dir("shallow_narrow").name == "shallow_narrow-tasks=aot+irr+mid"


def test_single_task_notebook_keeps_its_task(tmp_path):
    with pytest.raises(SSMTLError, match="trains aot alone"):
        study_task.setup("01_arrow_of_time", _namespace(tmp_path, OVERRIDES={"train.tasks": "irr"}), tasks="aot")


def test_lowest_validation_loss():
    assert lowest_validation_loss({"a": 0.3, "b": 0.2, "c": None}) == "b"
    assert lowest_validation_loss({"a": None}) is None and lowest_validation_loss({}) is None

"""One name per setting: the table of ssmtl_core/settings.py drives the CLI, the runner and the notebooks."""

import argparse
import json
from pathlib import Path

import pytest
import yaml

from ssmtl_core import settings, study
from ssmtl_core.cli import TRAIN_SETTINGS, _profile, build_parser
from ssmtl_core.config import get_profile
from ssmtl_core.errors import SSMTLError

ROOT = Path(__file__).resolve().parents[1]


def test_table_rows_are_unique_and_point_at_real_fields():
    parameters = [s.parameter for s in settings.SETTINGS]
    flags = [f for s in settings.SETTINGS for f in s.flags]
    fields = [s.field for s in settings.SETTINGS if s.field]
    assert len(parameters) == len(set(parameters))
    assert len(flags) == len(set(flags)), "two settings share a flag"
    assert len(fields) == len(set(fields)), "two parameters name the same profile field"
    profile = get_profile("synthetic")
    for row in settings.SETTINGS:
        assert row.parameter.isupper()
        if row.field:
            section, name = row.field.split(".")
            assert hasattr(getattr(profile, section), name), row


def test_every_notebook_parameter_is_a_setting():
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        names = set(study._filter_parameters(path, {name: 0 for name in settings.PARAMETERS}))
        cell = next(c for c in json.loads(path.read_text())["cells"]
                    if "parameters" in c.get("metadata", {}).get("tags", []))
        declared = {line.split("=")[0].strip() for line in "".join(cell["source"]).splitlines() if "=" in line}
        assert declared == names, f"{path.name}: not in ssmtl_core/settings.py: {declared - names}"


@pytest.mark.parametrize("profile", ["synthetic", "ped2", "avenue", "shanghaitech"])
def test_params_files_use_only_settings(profile):
    for quick in (False, True):
        study.load_params(profile, quick)  # raises on an unknown name


def test_params_file_typo_is_an_error():
    data = yaml.safe_load((ROOT / "params" / "synthetic.yaml").read_text())
    data["notebooks"]["01_arrow_of_time"]["EPOCH"] = 2
    with pytest.raises(SSMTLError, match="EPOCH"):
        study._check_params_file(data, Path("synthetic.yaml"))


def test_notebook_parameters_to_profile_overrides():
    namespace = {"EPOCHS": 2, "MAX_OBJECTS": 0, "FRAME_STRIDE": 0, "DETECTOR_WEIGHTS": "", "ARCH": "deep_wide",
                 "OUT_DIR": "x", "TASK": "aot", "SCORE_NAME": "P(backward)", "np": object()}
    parameters = settings.notebook_parameters(namespace)
    assert set(parameters) == {"EPOCHS", "MAX_OBJECTS", "FRAME_STRIDE", "DETECTOR_WEIGHTS", "ARCH", "OUT_DIR"}
    # 0 objects means "no cap" (a value); 0 frame stride and empty weights mean "the profile's default"
    assert settings.profile_overrides(parameters) == {"train.epochs": 2, "sample.max_train_objects": 0,
                                                      "train.arch": "deep_wide"}


def test_cli_flags_map_through_the_table(tmp_path):
    args = build_parser().parse_args(
        ["train", "--dataset", "synthetic", "--root", str(tmp_path), "--out", str(tmp_path / "run"), "--epochs", "2",
         "--max-objects", "50", "--frame-stride", "3", "--tasks", "aot,kd", "--detector-weights", "w.pt",
         "--lr", "0.01"])
    profile = _profile(args, TRAIN_SETTINGS)
    assert profile.train.epochs == 2 and profile.train.lr == 0.01 and profile.train.tasks == ("aot", "kd")
    assert profile.sample.max_train_objects == 50 and profile.sample.train_frame_stride == 3
    assert profile.detect.weights == "w.pt"
    untouched = _profile(build_parser().parse_args(
        ["train", "--dataset", "synthetic", "--root", str(tmp_path), "--out", str(tmp_path / "run")]), TRAIN_SETTINGS)
    assert untouched == get_profile("synthetic")


def test_params_file_in_either_vocabulary(tmp_path):
    path = tmp_path / "settings.yaml"
    path.write_text("EPOCHS: 2\nFRAME_STRIDE: 0\ntrain: {lr: 0.01}\nsample.crop_size: 48\n")
    assert settings.read_settings_file(path) == {"train.epochs": 2, "train.lr": 0.01, "sample.crop_size": 48}
    args = build_parser().parse_args(["train", "--dataset", "synthetic", "--root", str(tmp_path), "--out", "o",
                                      "--params", str(path), "--epochs", "5"])
    profile = _profile(args, TRAIN_SETTINGS)
    assert profile.train.epochs == 5 and profile.train.lr == 0.01 and profile.sample.crop_size == 48
    path.write_text("EPOCH: 2\n")
    with pytest.raises(SSMTLError, match="EPOCH"):
        settings.read_settings_file(path)
    with pytest.raises(SSMTLError, match="study parameters file"):
        settings.read_settings_file(ROOT / "params" / "ped2.yaml")


def test_runner_flags_are_the_table_flags():
    parser = argparse.ArgumentParser()
    settings.add_arguments(parser, study.RUNNER_SETTINGS, PROFILE="synthetic")
    args = parser.parse_args(["--profile", "ped2", "--data-root", "d", "--detector-weights", "w", "--epochs", "3"])
    given = settings.args_to_parameters(args, study.RUNNER_SETTINGS)
    assert given["PROFILE"] == "ped2" and given["DATA_ROOT"] == "d" and given["DETECTOR_WEIGHTS"] == "w"
    assert given["EPOCHS"] == 3 and given["RUNS_DIR"] is None


def test_a_key_written_for_a_notebook_that_lacks_it_is_refused():
    data = yaml.safe_load((ROOT / "params" / "synthetic.yaml").read_text())
    data["notebooks"]["07_results_tables"] = {"EPOCHS": 2}  # a real setting, but the tables train nothing
    with pytest.raises(SSMTLError, match="07_results_tables.*EPOCHS"):
        study._check_params_file(data, Path("synthetic.yaml"))
    tables = ROOT / "notebooks" / "07_results_tables.ipynb"
    with pytest.raises(SSMTLError, match="07_results_tables.*EPOCHS"):
        study._filter_parameters(tables, {"EPOCHS": 2, "OUT_DIR": "x"}, own={"EPOCHS"})
    # a value meant for every notebook goes to those that declare it, and only there
    assert study._filter_parameters(tables, {"EPOCHS": 2, "OUT_DIR": "x"}) == {"OUT_DIR": "x"}
    data = yaml.safe_load((ROOT / "params" / "synthetic.yaml").read_text())
    data["archs"]["deep_wide"]["05_train_architecure"] = {"EPOCHS": 1}
    with pytest.raises(SSMTLError, match="no notebook notebooks/05_train_architecure.ipynb"):
        study._check_params_file(data, Path("synthetic.yaml"))


def test_a_common_key_no_notebook_reads_is_refused():
    declared = set().union(*(study.declared_parameters(p) for p in (ROOT / "notebooks").glob("*.ipynb")))
    unread = [name for name in settings.PARAMETERS if name not in declared]
    if not unread:
        pytest.skip("every setting is a parameter of some notebook")
    data = yaml.safe_load((ROOT / "params" / "synthetic.yaml").read_text())
    data["common"][unread[0]] = 1
    with pytest.raises(SSMTLError, match=f"no notebook has a parameter {unread[0]}"):
        study._check_params_file(data, Path("synthetic.yaml"))


def test_the_study_chooses_its_detector():
    parser = argparse.ArgumentParser()
    settings.add_arguments(parser, study.RUNNER_SETTINGS, PROFILE="synthetic")
    given = settings.args_to_parameters(parser.parse_args(["--detector", "yolo+motion"]), study.RUNNER_SETTINGS)
    params = {"common": {"PROFILE": "synthetic"}, "notebooks": {}, "archs": {}, "list_archs": ["shallow_narrow"]}
    values = study.step_parameters(study.Step("00_data_and_detections"), params, ROOT / "reports" / "x",
                                   {name: given[name] for name in study.NOTEBOOK_FLAGS})
    assert values["DETECTOR"] == "yolo+motion"

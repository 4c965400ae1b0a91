"""The training precision as a value (ssmtl_core.precision), and the retired ``train.amp`` setting read back."""

import contextlib

import pytest
import torch

from ssmtl_core.config import PRECISIONS, get_profile, profile_from_dict, validate
from ssmtl_core.errors import SSMTLError
from ssmtl_core.precision import BF16, FP32, Precision
from ssmtl_core.settings import BY_PARAMETER


def test_recorded_form_round_trips():
    mixed = Precision("bf16", ("mid",))
    assert [str(p) for p in (FP32, BF16, mixed)] == ["fp32", "bf16", "bf16+fp32:mid"]
    for precision in (FP32, BF16, mixed, Precision("bf16", ("aot", "irr", "kd"))):
        assert Precision.parse(str(precision)) == precision
    with pytest.raises(SSMTLError, match="fp16"):
        Precision.parse("fp16")


def test_each_pass_runs_in_its_precision():
    mixed = Precision.parse("bf16+fp32:mid")
    assert mixed.of_pass(("mid",)) == "fp32" and mixed.of_pass(("aot", "irr", "kd")) == "bf16"
    assert FP32.of_pass(("mid",)) == "fp32" and BF16.of_pass(("mid",)) == "bf16"
    cpu = torch.device("cpu")
    assert isinstance(FP32.autocast(cpu), contextlib.nullcontext)
    assert isinstance(mixed.autocast(cpu, ("mid",)), contextlib.nullcontext)
    with mixed.autocast(cpu, ("aot",)):
        assert torch.is_autocast_enabled("cpu")


def test_one_tuple_of_precisions_for_the_flag_and_the_check():
    assert BY_PARAMETER["PRECISION"].choices is PRECISIONS
    profile = get_profile("synthetic")
    profile.train.precision = "fp16"
    with pytest.raises(SSMTLError, match="auto, fp32 or bf16"):
        validate(profile)


@pytest.mark.parametrize("amp, precision", [(True, "auto"), (False, "fp32")])
def test_an_old_checkpoints_amp_is_read_as_the_precision_it_meant(amp, precision):
    stored = get_profile("ped2").to_dict()
    assert "amp" not in stored["train"]
    stored["train"]["amp"] = amp  # what checkpoints of earlier releases hold
    assert profile_from_dict(stored).train.precision == precision

"""Tests of ssmtl_core.model: the four encoder presets of docs/method.md "Architectures", the heads, and ``ssmtl model``."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from ssmtl_core.cli import main
from ssmtl_core.config import ARCHITECTURES
from ssmtl_core.errors import SSMTLError
from ssmtl_core.model import SSMTLModel, layer_table

# docs/method.md, "Architectures": (3D conv layers, encoder output channels, spatial side at 64x64 input)
PRESETS = {
    "shallow_narrow": ([16, 32, 32], 32, 8),
    "shallow_wide": ([32, 64, 64], 64, 8),
    "deep_narrow": ([16, 16, 32, 32, 32, 32], 32, 4),
    "deep_wide": ([32, 32, 64, 64, 64, 64], 64, 4),
}


def test_presets_cover_every_architecture():
    assert set(PRESETS) == set(ARCHITECTURES)


@pytest.mark.parametrize("arch", list(PRESETS))
def test_output_shapes_for_6_and_7_frames(arch):
    filters, channels, side = PRESETS[arch]
    torch.manual_seed(0)
    model = SSMTLModel(arch, kd_dim=1080).eval()
    convs = [m for m in model.encoder.modules() if isinstance(m, nn.Conv3d)]
    assert [c.out_channels for c in convs] == filters
    assert all(c.kernel_size == (3, 3, 3) and c.padding == (1, 1, 1) and c.stride == (1, 1, 1) for c in convs)
    assert sum(isinstance(m, nn.BatchNorm3d) for m in model.encoder.modules()) == len(filters)

    n = 2
    seven = torch.rand(n, 3, 7, 64, 64)
    six = torch.rand(n, 3, 6, 64, 64)
    with torch.no_grad():
        features7 = model.encoder(seven)
        features6 = model.encoder(six)  # time collapsed: 6- and 7-frame inputs share the encoder
        out = {"aot": model.aot_head(features7), "irr": model.irr_head(features7), "kd": model.kd_head(features7),
               "mid": model.mid_head(features6)}
    assert features7.shape == (n, channels, side, side)
    assert features6.shape == (n, channels, side, side)
    assert out["aot"].shape == (n, 2)
    assert out["irr"].shape == (n, 2)
    assert out["kd"].shape == (n, 1080)
    assert out["mid"].shape == (n, 3, 64, 64)
    assert out["mid"].min() >= 0.0 and out["mid"].max() <= 1.0
    # the heads: conv 32 + BN + ReLU + dropout + 2x2 pool + FC
    assert model.aot_head.fc.in_features == 32 * (side // 2) ** 2


def test_forward_runs_every_head():
    model = SSMTLModel("shallow_narrow", kd_dim=1080, crop_size=32).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 7, 32, 32), torch.rand(2, 3, 6, 32, 32))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"aot": (2, 2), "irr": (2, 2), "kd": (2, 1080),
                                                          "mid": (2, 3, 32, 32)}
    assert set(model(torch.rand(2, 3, 7, 32, 32))) == {"aot", "irr", "kd"}


def test_time_is_collapsed_by_a_max_over_frames():
    """Encoder output of a sequence = max over frames of the per-frame features (a 1-frame conv stack)."""
    torch.manual_seed(0)
    model = SSMTLModel("shallow_narrow", kd_dim=0, crop_size=32).eval()
    x = torch.rand(1, 3, 7, 32, 32)
    full = model.encoder.layers(x)
    torch.testing.assert_close(model.encoder(x), full.amax(dim=2))


@pytest.mark.parametrize("kd_dim", [1000, 80, 0])
def test_distillation_head_follows_the_target_length(kd_dim):
    model = SSMTLModel("shallow_narrow", kd_dim=kd_dim, crop_size=32).eval()
    with torch.no_grad():
        out = model.sequence_heads(torch.rand(2, 3, 7, 32, 32))
    if kd_dim:
        assert out["kd"].shape == (2, kd_dim)
    else:
        assert "kd" not in out and model.kd_head is None
    assert model.middle(torch.rand(2, 3, 6, 32, 32)).shape == (2, 3, 32, 32)


def test_unknown_architecture_is_refused():
    with pytest.raises(SSMTLError, match="unknown architecture"):
        SSMTLModel("very_deep")


def test_config_rebuilds_the_model():
    model = SSMTLModel("deep_wide", kd_dim=80, dropout=0.1, crop_size=32, kd_probabilities=80)
    config = model.config()
    assert config == {"arch": "deep_wide", "kd_dim": 80, "crop_size": 32, "dropout": 0.1, "kd_probabilities": 80}
    again = SSMTLModel.from_config(config)
    again.load_state_dict(model.state_dict())
    # checkpoints made before the sigmoid had no kd_probabilities: they rebuild as before (linear outputs)
    old = SSMTLModel.from_config({"arch": "deep_wide", "kd_dim": 80, "crop_size": 32, "dropout": 0.1})
    assert old.model_config.kd_probabilities == 0


def test_distillation_probabilities_start_low_and_stay_in_range():
    model = SSMTLModel("shallow_narrow", kd_dim=1080, crop_size=32, kd_probabilities=80).eval()
    with torch.no_grad():
        out = model.sequence_heads(torch.rand(4, 3, 7, 32, 32))["kd"]
    probabilities = out[:, 1000:]
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    assert probabilities.mean() < 0.05, "the class probabilities start near the low prior"
    assert (out[:, :1000].abs() < 5).all() and (out[:, :1000] < 0).any(), "the logits stay linear (signed)"


def test_layer_table_counts_every_parameter():
    model = SSMTLModel("deep_narrow", kd_dim=1080)
    rows = layer_table(model)
    assert sum(r["params"] for r in rows) == sum(p.numel() for p in model.parameters())
    encoder_out = [r for r in rows if r["layer"] == "encoder (max over time)"]
    assert len(encoder_out) == 1 and encoder_out[0]["output"] == (32, 4, 4)
    assert rows[-1]["output"] == (3, 64, 64)  # the decoder's sigmoid
    assert model.training  # left as it was


_ROW = re.compile(r"^(\S+)\s+(\S+)\s+([0-9x]*)\s+([0-9,]+)$")


@pytest.mark.parametrize("arch", list(PRESETS))
def test_cli_model_prints_layers_shapes_and_total(arch, capsys):
    assert main(["model", "--arch", arch]) == 0
    text = capsys.readouterr().out
    lines = text.strip().splitlines()
    rows = [m.groups() for line in lines[2:-1] if (m := _ROW.match(line.replace("encoder (max over time)",
                                                                                 "encoder_(max_over_time)")))]
    assert len(rows) == len(lines) - 3, "every line between header and total is a layer row"
    model = SSMTLModel(arch, kd_dim=1080)
    expected = sum(p.numel() for p in model.parameters())
    total = int(re.search(r"total parameters: ([0-9,]+)", lines[-1]).group(1).replace(",", ""))
    assert total == expected
    assert sum(int(r[3].replace(",", "")) for r in rows) == expected
    # every layer has an output shape; the encoder output is the documented side x side x channels
    assert all(r[2] for r in rows)
    _, channels, side = PRESETS[arch]
    encoder_row = [r for r in rows if r[0] == "encoder_(max_over_time)"]
    assert encoder_row and encoder_row[0][2] == f"{channels}x{side}x{side}"
    convs = [r for r in rows if r[1] == "Conv3d"]
    assert len(convs) == len(PRESETS[arch][0])
    kd_fc = [r for r in rows if r[0] == "kd_head.fc"]
    assert kd_fc and kd_fc[0][2] == "1080"

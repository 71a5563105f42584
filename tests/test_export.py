"""Export of a run's encoder as a timm VisionTransformer: strict loading and identical features."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file

import maelab
from maelab.checkpoint import CheckpointError, save_checkpoint
from maelab.cli import main
from maelab.config import ConfigError, resolve_config
from maelab.export import TIMM_MODEL_NAME, export_encoder, load_exported, timm_kwargs
from maelab.methods import build_mae, load_model
from tests.conftest import TINY_MODEL


@pytest.fixture
def tiny_run(tmp_path: Path) -> Path:
    """A run directory holding one checkpoint of a tiny MAE with trained-looking (random) weights."""
    cfg = resolve_config(None, {"model": {**TINY_MODEL, "patch_size": 8, "mlp_ratio": 2.0}}, "test")
    torch.manual_seed(1)
    model = build_mae(cfg)
    with torch.no_grad():  # move every weight away from its init, so a skipped tensor would show
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    run = tmp_path / "run"
    meta = {"method": "mae", "step": 1, "epoch": 1.0, "config": cfg.to_dict()}
    save_checkpoint(run, "step_00000001", model.state_dict(), meta, {"optimizer": {}})
    return run


def test_timm_kwargs_of_config_and_model_agree() -> None:
    cfg = resolve_config(None, {"model": {"name": "vit-tiny", "patch_size": 2}}, "test")
    from_cfg = timm_kwargs(cfg.model)
    from_model = timm_kwargs(build_mae(cfg).config)
    assert from_cfg == from_model
    assert from_cfg == dict(img_size=32, patch_size=2, in_chans=3, embed_dim=192, depth=12, num_heads=3,
                            mlp_ratio=4.0, num_classes=0)  # fmt: skip


def test_export_round_trip_strict_and_same_features(tiny_run: Path, tmp_path: Path) -> None:
    assert main(["export", str(tiny_run), "--format", "timm", "--out", str(tmp_path / "enc.safetensors")]) == 0
    spec = json.loads((tmp_path / "enc.json").read_text())
    assert spec["model_name"] == TIMM_MODEL_NAME and spec["kwargs"]["patch_size"] == 8

    # What a user of another code base does with the two files: plain timm, strict=True.
    vit = timm.create_model(spec["model_name"], pretrained=False, **spec["kwargs"]).eval()
    vit.load_state_dict(load_file(str(tmp_path / "enc.safetensors")), strict=True)
    data_cfg = timm.data.resolve_model_data_config(vit)
    mae, cfg = load_model(str(tiny_run))
    assert tuple(data_cfg["mean"]) == pytest.approx(cfg.data.mean) and tuple(data_cfg["input_size"]) == (3, 32, 32)

    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ref = mae.forward_features(x)  # (B, 1 + N, D)
        assert ref.shape == (3, 1 + 16, 32)
        assert (vit.forward_features(x) - ref).abs().max() < 1e-5
        assert (load_exported(tmp_path / "enc.safetensors").forward_features(x) - ref).abs().max() < 1e-5
        assert (maelab.load_encoder(tiny_run)(x) - ref[:, 0]).abs().max() < 1e-5  # CLS feature


def test_export_errors_name_the_problem(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ConfigError, match=r"\.safetensors"):
        export_encoder(tiny_run, tmp_path / "enc.pt")
    with pytest.raises(ConfigError, match="--format"):
        export_encoder(tiny_run, tmp_path / "enc.safetensors", fmt="onnx")
    assert main(["export", str(tmp_path / "missing"), "--out", str(tmp_path / "e.safetensors")]) == 2
    assert "no such run or checkpoint" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="enc.json"):
        load_exported(tmp_path / "enc.safetensors")

"""Run directories written before the layered-package move (tests/fixtures/pre_layout) still load, resume
and export: state-dict keys, config fields and checkpoint files did not change."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file

from maelab import methods
from maelab.checkpoint import load_meta, load_weights, resolve_checkpoint
from maelab.export import export_encoder
from maelab.models import DINO, MAE
from maelab.train import pretrain

from .conftest import write_image_folder

FIXTURES = Path(__file__).parent / "fixtures" / "pre_layout"
KINDS = {"mae": MAE, "dino": DINO}


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(params=sorted(KINDS))
def old_run(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of a pre-layout run, in a directory holding the 8x8 image folder its config names ("data")."""
    write_image_folder(tmp_path / "data", per_class=6, size=8)
    monkeypatch.chdir(tmp_path)
    return Path(shutil.copytree(FIXTURES / request.param, tmp_path / request.param))


def test_old_run_loads_strict(old_run: Path) -> None:
    module, cfg = methods.load_model(str(old_run))
    assert isinstance(module, KINDS[cfg.train.method]) and not module.training
    stored = load_weights(resolve_checkpoint(old_run))
    state = module.state_dict()
    assert sorted(stored) == sorted(state)  # the key names of the old code, every one
    assert all(torch.equal(stored[k], state[k]) for k in stored)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert module.forward_features(x).shape == (2, 1 + 16, 32)


def test_old_run_resumes_at_its_step(old_run: Path) -> None:
    before = records(old_run)
    assert load_meta(old_run)["step"] == 6
    pretrain(resume=old_run, overrides={"epochs": 3, "device": "cpu"})
    assert load_meta(old_run)["step"] == 9
    after = records(old_run)
    assert after[:6] == before and [r["step"] for r in after] == list(range(1, 10))
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in after)


def test_old_run_exports_to_timm(old_run: Path, tmp_path: Path) -> None:
    weights, spec_path = export_encoder(old_run, tmp_path / "enc.safetensors")
    spec = json.loads(spec_path.read_text())
    vit = timm.create_model(spec["model_name"], pretrained=False, **spec["kwargs"]).eval()
    vit.load_state_dict(load_file(str(weights)), strict=True)
    module, _ = methods.load_model(str(old_run))
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert (vit.forward_features(x) - module.forward_features(x)).abs().max() < 1e-5


def test_a_fresh_run_reproduces_the_old_loss_curve(old_run: Path, tmp_path: Path) -> None:
    """The same config, seed and images give the losses the old code logged: the seeded initial weights
    (and the training step) are what they were before the move."""
    from maelab.rundir import load_config

    cfg = load_config(old_run)
    cfg.train.out, cfg.train.device = str(tmp_path / "fresh"), "cpu"
    fresh = pretrain(cfg)
    old, new = records(old_run), records(fresh)
    assert [r["step"] for r in new] == [r["step"] for r in old]
    assert [r["loss"] for r in new] == pytest.approx([r["loss"] for r in old], rel=1e-5)

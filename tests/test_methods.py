"""The contract of every registered pretraining method (``methods.METHODS``): a new method passes these
tests or the training loop, the evaluations and the export cannot rely on it.

It builds from a config; one optimizer step (with the method's hooks, as the loop calls them) lowers
the loss of that batch; ``forward_features`` gives (B, 1 + N, D); ``encoder_state_dict()`` loads
strict into the timm ViT of ``export.timm_kwargs``; a checkpoint round-trips; a resumed run continues
at its step and ends where an uninterrupted one does.
"""

from __future__ import annotations

import copy
import json
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from torch import nn

from maelab import methods
from maelab.checkpoint import load_meta, load_weights, resolve_checkpoint, save_checkpoint
from maelab.config import Config, DinoConfig, ModelConfig
from maelab.export import create_timm_encoder, timm_kwargs
from maelab.models import DINOSpec, MAESpec
from maelab.optim import param_groups
from maelab.train import pretrain

from .conftest import tiny_config, train_tiny_run


@pytest.fixture(params=sorted(methods.METHODS))
def name(request: pytest.FixtureRequest) -> str:
    return request.param


def config(name: str, tmp_path: Path) -> Config:
    return tiny_config(tmp_path / "data", tmp_path / "run", subset=0, method=name)


def build(name: str, cfg: Config) -> nn.Module:
    torch.manual_seed(0)
    return methods.get_method(name).build(cfg)


def uint8_batch(cfg: Config, n: int = 8) -> torch.Tensor:
    """A fixed batch (n, C, S, S) of uint8 images, as the loop hands them to ``Method.loss``."""
    m = cfg.model
    return torch.randint(0, 256, (n, m.in_channels, m.img_size, m.img_size), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(0))  # fmt: skip


def images(cfg: Config, n: int = 2) -> torch.Tensor:
    """Normalised-looking float images (n, C, S, S)."""
    m = cfg.model
    return torch.randn(n, m.in_channels, m.img_size, m.img_size, generator=torch.Generator().manual_seed(1))


def loss_on(name: str, module: nn.Module, batch: torch.Tensor, cfg: Config) -> float:
    """The loss of ``batch`` with seed-0 augmentation and masks, computed on a copy (``module`` and its
    buffers, e.g. DINO's center, stay as they are)."""
    torch.manual_seed(0)
    with torch.no_grad():
        return float(methods.get_method(name).loss(copy.deepcopy(module), batch, cfg))


def test_the_config_names_every_model_field() -> None:
    """Specs are picked from the config by field name (``spec_from`` ignores other names): a renamed
    config field would silently leave a spec default, so the names must match."""
    model, dino = {f.name for f in fields(ModelConfig)}, {f.name for f in fields(DinoConfig)}
    assert {f.name for f in fields(MAESpec)} | {"name"} == model  # the preset name is the config's alone
    assert {f.name for f in fields(DINOSpec)} <= model | dino


def test_one_optimizer_step_lowers_the_loss_of_its_batch(name: str, tmp_path: Path) -> None:
    cfg = config(name, tmp_path)
    method, module = methods.get_method(name), build(name, cfg).train()
    if method.setup is not None:
        method.setup(module, 1, 1, 0)
    batch = uint8_batch(cfg)
    before = loss_on(name, module, batch, cfg)
    optimizer = torch.optim.AdamW(param_groups(module, 0.0), lr=1e-3)
    torch.manual_seed(0)
    loss = method.loss(module, batch, cfg)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss.item() == pytest.approx(before, rel=1e-5)
    loss.backward()
    if method.before_step is not None:
        method.before_step(module, 0)
    optimizer.step()
    if method.after_step is not None:
        method.after_step(module, 0)
    assert loss_on(name, module, batch, cfg) < before
    if method.metrics is not None:
        assert all(isinstance(v, float) for v in method.metrics(module).values())


def test_forward_features_shape_and_strict_timm_encoder(name: str, tmp_path: Path) -> None:
    cfg = config(name, tmp_path)
    module = build(name, cfg).eval()
    m = cfg.model
    x = images(cfg)
    with torch.no_grad():
        feats = module.forward_features(x)
        assert feats.shape == (2, 1 + (m.img_size // m.patch_size) ** 2, m.embed_dim)  # (B, 1 + N, D)
        vit = create_timm_encoder(timm_kwargs(cfg.model, cfg.data.mean, cfg.data.std)).eval()
        vit.load_state_dict(module.encoder_state_dict(), strict=True)
        assert (vit.forward_features(x) - feats).abs().max() < 1e-5
        assert torch.allclose(vit(x), feats[:, 0], atol=1e-5)  # timm's forward: the CLS feature (B, D)


def test_checkpoint_round_trip(name: str, tmp_path: Path) -> None:
    cfg = config(name, tmp_path)
    module = build(name, cfg)
    with torch.no_grad():  # away from the seeded init, so a tensor that is not restored would show
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))
    meta = {"method": name, "step": 1, "epoch": 1.0, "config": cfg.to_dict()}
    save_checkpoint(tmp_path / "ckpt", "step_00000001", module.state_dict(), meta, {"optimizer": {}})
    assert sorted(load_weights(resolve_checkpoint(tmp_path / "ckpt"))) == sorted(module.state_dict())
    loaded, loaded_cfg = methods.load_model(str(tmp_path / "ckpt"))
    assert type(loaded) is type(module) and not loaded.training and loaded_cfg.to_dict() == cfg.to_dict()
    state = module.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in loaded.state_dict().items())


def test_resume_continues_at_its_step(name: str, tmp_path: Path) -> None:
    full = train_tiny_run(tmp_path, method=name, out=tmp_path / "full")  # 3 steps
    part = train_tiny_run(tmp_path, method=name, out=tmp_path / "part", stop_after_steps=2)
    assert load_meta(part)["step"] == 2
    pretrain(resume=part)
    steps = [json.loads(line)["step"] for line in (part / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3] and load_meta(part)["step"] == 3
    a, b = load_weights(resolve_checkpoint(full)), load_weights(resolve_checkpoint(part))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)

"""Frozen features: pooling, the on-disk cache and its invalidation, random-init and timm backbones."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from maelab import checkpoint as ckpt
from maelab.augment import normalize
from maelab.checkpoint import CheckpointError
from maelab.config import ConfigError, resolve_config
from maelab.eval.features import (
    cached_features,
    extract_features,
    pool_tokens,
    random_init_encoder,
    random_timm_encoder,
    run_encoder,
    timm_encoder,
)
from maelab.methods import build_mae
from tests.conftest import TINY_MODEL

DINO_NAME = "vit_small_patch14_dinov2"
# A DINOv2-architecture ViT small enough for a test: 32x32 inputs, 4x4 patches, width 64, 2 blocks.
DINO_KWARGS = dict(patch_size=4, embed_dim=64, depth=2, num_heads=2)


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("MAELAB_CACHE", str(cache))
    return cache


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_cfg():
    return resolve_config(None, {"model": dict(TINY_MODEL)}, "test")


def images(n: int = 6, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8), torch.arange(n) % 2


def write_run(run: Path, cfg, step: int, scale: float = 1.0) -> Path:
    """A run directory whose checkpoint holds a (scaled) random MAE: what pretraining would leave."""
    torch.manual_seed(step)
    model = build_mae(cfg)
    state = {k: v * scale if v.is_floating_point() else v for k, v in model.state_dict().items()}
    meta = {"method": "mae", "step": step, "config": cfg.to_dict()}
    return ckpt.save_checkpoint(run, f"step_{step:08d}", state, meta, {}, keep=1)


def test_cls_and_mean_pooling_shapes_and_values():
    cfg = tiny_cfg()
    enc = random_init_encoder(cfg, seed=0)
    imgs, _ = images(5)
    feats = extract_features(enc, imgs, batch_size=2, progress=False)
    assert set(feats) == {"cls", "mean"}
    assert feats["cls"].shape == (5, 32) and feats["mean"].shape == (5, 32)
    with torch.no_grad():
        tokens = enc.module.forward_features(normalize(imgs, cfg.data.mean, cfg.data.std))  # (5, 1 + 64, 32)
    torch.testing.assert_close(feats["cls"], tokens[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(feats["mean"], tokens[:, 1:].mean(1), atol=1e-5, rtol=1e-5)
    # The two poolings really are different features.
    assert not torch.allclose(feats["cls"], feats["mean"])


def test_pool_tokens_respects_prefix_tokens():
    tokens = torch.arange(2 * 6 * 3, dtype=torch.float32).view(2, 6, 3)
    torch.testing.assert_close(pool_tokens(tokens, "mean", 2), tokens[:, 2:].mean(1))
    torch.testing.assert_close(pool_tokens(tokens, "cls", 2), tokens[:, 0])
    with pytest.raises(ConfigError, match="no CLS token"):
        pool_tokens(tokens, "cls", 0)
    with pytest.raises(ConfigError, match="--pooling"):
        pool_tokens(tokens, "max", 1)


def test_random_init_is_seeded():
    cfg = tiny_cfg()
    a, b, c = random_init_encoder(cfg, 0), random_init_encoder(cfg, 0), random_init_encoder(cfg, 1)
    assert a.digest == b.digest != c.digest
    imgs, _ = images(3)
    fa, fc = extract_features(a, imgs, progress=False), extract_features(c, imgs, progress=False)
    torch.testing.assert_close(fa["cls"], extract_features(b, imgs, progress=False)["cls"])
    assert not torch.allclose(fa["cls"], fc["cls"])


def test_cache_hit_and_invalidation_when_checkpoint_changes(tmp_path: Path, private_cache: Path):
    cfg = tiny_cfg()
    run = tmp_path / "run"
    write_run(run, cfg, step=1)
    imgs, labels = images(6)

    enc, _ = run_encoder(run)
    first = cached_features(enc, imgs, labels, "train", progress=False)
    assert not first.from_cache
    assert len(list((private_cache / "features").glob("*.safetensors"))) == 1
    again = cached_features(run_encoder(run)[0], imgs, labels, "train", progress=False)
    assert again.from_cache
    torch.testing.assert_close(again.get("cls"), first.get("cls"))
    torch.testing.assert_close(again.labels, labels)

    # Other images (a different subset) are another cache entry.
    other = cached_features(enc, imgs[:4], labels[:4], "train", progress=False)
    assert not other.from_cache and other.get("mean").shape == (4, 32)

    # Rewrite the weights (same run, same step name): new features, not the cached ones.
    write_run(run, cfg, step=1, scale=2.0)
    changed = cached_features(run_encoder(run)[0], imgs, labels, "train", progress=False)
    assert not changed.from_cache
    assert not torch.allclose(changed.get("cls"), first.get("cls"))


def test_no_cache_writes_nothing(private_cache: Path):
    enc = random_init_encoder(tiny_cfg(), 0)
    imgs, labels = images(4)
    out = cached_features(enc, imgs, labels, "test", progress=False, cache=False)
    assert not out.from_cache and out.get("cls").shape == (4, 32)
    assert not (private_cache / "features").exists()


def _dino_weights(tmp_path: Path, fmt: str, name: str = DINO_NAME) -> tuple[torch.nn.Module, Path]:
    import timm

    torch.manual_seed(123)
    model = timm.create_model(name, pretrained=False, num_classes=0, img_size=32, **DINO_KWARGS).eval()
    path = tmp_path / f"{name}.{fmt}"
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if fmt == "safetensors":
        save_file(state, str(path))
    else:
        torch.save({"model": state}, path)  # the common {"model": state_dict} wrapping
    return model, path


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_timm_dinov2_backbone_from_local_weights(tmp_path: Path, fmt: str):
    model, path = _dino_weights(tmp_path, fmt)
    enc = timm_encoder(DINO_NAME, path, img_size=32, kwargs=DINO_KWARGS)
    assert enc.num_prefix_tokens == 1
    assert enc.mean == (0.485, 0.456, 0.406)  # the model's own normalisation, not CIFAR's
    imgs, _ = images(4)
    feats = extract_features(enc, imgs, batch_size=3, progress=False)
    with torch.no_grad():
        tokens = model.forward_features(normalize(imgs, enc.mean, enc.std))  # (4, 1 + 64, 64)
    torch.testing.assert_close(feats["cls"], tokens[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(feats["mean"], tokens[:, 1:].mean(1), atol=1e-5, rtol=1e-5)

    baseline = random_timm_encoder(DINO_NAME, 32, DINO_KWARGS, seed=0)
    assert baseline.digest != enc.digest
    assert extract_features(baseline, imgs, progress=False)["cls"].shape == (4, 64)


def test_timm_register_tokens_are_not_patch_tokens(tmp_path: Path):
    name = "vit_small_patch14_reg4_dinov2"
    model, path = _dino_weights(tmp_path, "safetensors", name)
    enc = timm_encoder(name, path, img_size=32, kwargs=DINO_KWARGS)
    assert enc.num_prefix_tokens == 5  # CLS + 4 registers
    imgs, _ = images(2)
    with torch.no_grad():
        tokens = model.forward_features(normalize(imgs, enc.mean, enc.std))  # (2, 5 + 64, 64)
    torch.testing.assert_close(
        extract_features(enc, imgs, progress=False)["mean"], tokens[:, 5:].mean(1), atol=1e-5, rtol=1e-5
    )


def test_timm_images_resized_to_backbone_size(tmp_path: Path):
    _, path = _dino_weights(tmp_path, "safetensors")
    enc = timm_encoder(DINO_NAME, path, img_size=32, kwargs=DINO_KWARGS)
    small, _ = images(3, size=16)
    assert extract_features(enc, small, progress=False)["cls"].shape == (3, 64)


def test_timm_missing_or_wrong_weights_are_clear_errors(tmp_path: Path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(CheckpointError, match=r"--weights .*nope\.safetensors: no such file.*never downloaded"):
        timm_encoder(DINO_NAME, missing, img_size=32, kwargs=DINO_KWARGS)
    _, path = _dino_weights(tmp_path, "safetensors")
    with pytest.raises(CheckpointError, match="shape mismatch"):
        timm_encoder(DINO_NAME, path, img_size=32, kwargs={**DINO_KWARGS, "embed_dim": 32})
    with pytest.raises(ConfigError, match="unknown timm model"):
        timm_encoder("no_such_model_xyz", path, img_size=32)

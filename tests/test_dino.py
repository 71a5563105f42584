"""DINO: EMA, centring, schedules, multi-crop augmentation, last-layer freezing, a real short run."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from maelab.augment import normalize
from maelab.augment_dino import color_jitter, dino_multicrop, gaussian_blur, random_grayscale, random_solarize
from maelab.checkpoint import load_weights, resolve_checkpoint
from maelab.config import ConfigError, DinoConfig, resolve_config
from maelab.data import class_balanced_subset, load_split
from maelab.methods import build_dino, get_method, load_model
from maelab.models.dino import (
    DINO,
    clip_grads_per_parameter,
    ema_update,
    momentum_schedule,
    suggest_momentum,
    teacher_init_weight,
    teacher_temp_schedule,
)
from maelab.train import pretrain

from .conftest import TINY_MODEL, tiny_config, train_tiny_run

# DINO(...) keywords of a tiny model: the encoder fields (as ModelConfig) and the head sizes.
SMALL_DINO = dict(embed_dim=32, encoder_depth=1, encoder_heads=2, out_dim=64, head_hidden_dim=32, bottleneck_dim=16)
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def tiny_crops(b: int = 4, local: int = 2) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (b, 3, 32, 32), dtype=torch.uint8, generator=gen)
    return dino_multicrop(images, MEAN, STD, DinoConfig(local_crops=local), generator=gen)


def test_ema_update_exact_on_a_hand_case() -> None:
    teacher, student = nn.Linear(2, 1), nn.Linear(2, 1)
    with torch.no_grad():
        teacher.weight.copy_(torch.tensor([[1.0, 2.0]]))
        teacher.bias.fill_(10.0)
        student.weight.copy_(torch.tensor([[3.0, -2.0]]))
        student.bias.fill_(0.0)
    ema_update(teacher, student, 0.9)
    # 0.9 * teacher + 0.1 * student
    assert torch.allclose(teacher.weight, torch.tensor([[1.2, 1.6]]))
    assert torch.allclose(teacher.bias, torch.tensor([9.0]))
    assert torch.equal(student.weight, torch.tensor([[3.0, -2.0]]))  # the student is untouched


def test_center_update_is_an_ema_of_the_batch_mean() -> None:
    model = DINO(**SMALL_DINO, center_momentum=0.9)
    out = torch.zeros(4, 64)
    out[:, 0] = torch.tensor([1.0, 2.0, 3.0, 6.0])  # batch mean 3 in dimension 0
    model.update_center(out)
    assert model.center[0, 0].item() == pytest.approx(0.3) and model.center[0, 1:].abs().max() == 0
    model.update_center(out)
    assert model.center[0, 0].item() == pytest.approx(0.9 * 0.3 + 0.1 * 3.0)


def test_momentum_schedule_cosine_from_base_to_one() -> None:
    m = momentum_schedule(0.996, 101)
    assert m[0] == pytest.approx(0.996) and m[-1] == pytest.approx(1.0) and m[50] == pytest.approx(0.998)
    assert torch.all(m.diff() >= 0)


def test_teacher_keeps_its_init_in_short_runs_and_a_warning_says_so() -> None:
    # A teacher EMA of a student that moved to s after T steps holds prod(m) of its initial weights.
    assert teacher_init_weight(torch.tensor([0.5, 0.5, 1.0])) == pytest.approx(0.25)
    assert teacher_init_weight(momentum_schedule(0.996, 120)) > 0.7  # DINO's ImageNet momentum, 120 steps
    assert teacher_init_weight(momentum_schedule(0.996, 125_000)) < 1e-6
    base = suggest_momentum(120)
    assert teacher_init_weight(momentum_schedule(base, 120)) == pytest.approx(0.05, rel=0.1)
    with pytest.warns(UserWarning, match=r"--momentum-teacher 0.996 over 120 steps leaves 7\d% .* try --momentum"):
        DINO(**SMALL_DINO).setup(steps_per_epoch=15, total_steps=120)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DINO(**SMALL_DINO, momentum_teacher=base).setup(steps_per_epoch=15, total_steps=120)
        DINO(**SMALL_DINO).setup(steps_per_epoch=15, total_steps=120, start_step=60)  # resuming: said already


def test_teacher_temp_schedule_warmup_then_constant() -> None:
    t = teacher_temp_schedule(0.04, 0.07, warmup_steps=10, total_steps=30)
    assert len(t) == 30 and t[0] == pytest.approx(0.04) and t[9] == pytest.approx(0.07) and t[29] == pytest.approx(0.07)
    assert 0.04 < t[5] < 0.07 and torch.all(t.diff() >= -1e-12)
    # The model's schedules are per step, warm-up given in epochs.
    model = DINO(**SMALL_DINO, warmup_teacher_temp_epochs=2)
    model.setup(steps_per_epoch=5, total_steps=20)
    assert model.teacher_temps[0] == pytest.approx(0.04) and model.teacher_temps[9] == pytest.approx(0.07)
    assert model.teacher_temps[4] < 0.07 and len(model.momentums) == 20 and model.momentums[-1] == pytest.approx(1.0)
    model.setup(5, 20, start_step=12)  # resuming: the schedules continue at step 12
    assert model.current_teacher_temp() == pytest.approx(0.07) and model.step == 12


def test_multicrop_shapes_two_global_and_l_local() -> None:
    crops = dino_multicrop(
        torch.zeros(3, 3, 32, 32, dtype=torch.uint8), MEAN, STD,
        DinoConfig(local_crops=5, global_crop_size=24, local_crop_size=12),
    )  # fmt: skip
    assert [tuple(c.shape) for c in crops] == [(3, 3, 24, 24)] * 2 + [(3, 3, 12, 12)] * 5


def test_augmentations_keep_range_and_differ_per_sample() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 16, 16, generator=gen).expand(64, -1, -1, -1).contiguous()  # one image, 64 times
    for out in (
        color_jitter(x, p=1.0, generator=gen), gaussian_blur(x, 1.0, generator=gen),
        random_grayscale(x, 0.5, generator=gen), random_solarize(x, 0.5, generator=gen),
    ):  # fmt: skip
        assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
        per_sample = out.flatten(1)
        assert (per_sample - per_sample[:1]).abs().amax(dim=1).gt(1e-4).any()  # not one draw for the batch
    # Probability 0 is the identity; probability 1 always applies.
    assert torch.allclose(color_jitter(x, p=0.0), x, atol=1e-6) and torch.equal(gaussian_blur(x, 0.0), x)
    gray = random_grayscale(x, 1.0)
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 1], gray[:, 2])
    sol = random_solarize(x, 1.0)
    assert torch.allclose(sol, torch.where(x >= 0.5, 1 - x, x))
    blurred = gaussian_blur(x, 1.0, sigma=(1.0, 1.0))
    assert blurred.var() < x.var() and torch.allclose(blurred.mean(), x.mean(), atol=0.02)
    # Multi-crop of identical images: every image gets its own crops; de-normalised pixels stay in [0, 1].
    crops = dino_multicrop((x[:8] * 255).round().to(torch.uint8), MEAN, STD, DinoConfig(local_crops=2), generator=gen)
    for c in crops:
        pixels = c * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)
        assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
        assert not torch.allclose(c[0], c[1])


def test_last_layer_frozen_in_first_epoch_and_grads_clipped() -> None:
    torch.manual_seed(0)
    model = DINO(**SMALL_DINO, freeze_last_layer=1.0, dino_grad_clip=0.5)
    model.setup(steps_per_epoch=2, total_steps=4)
    last = list(model.student.head.last_layer.parameters())
    trainable = [p for p in last if p.requires_grad]
    assert len(trainable) == 1  # only v of the weight norm: the gain is fixed to 1 (norm_last_layer)
    for step, frozen in ((0, True), (1, True), (2, False)):
        model.zero_grad(set_to_none=True)
        model(tiny_crops()).backward()
        assert trainable[0].grad is not None and trainable[0].grad.abs().sum() > 0
        model.before_optimizer_step(step)
        assert (trainable[0].grad is None) == frozen
        grads = [p.grad for p in model.student.parameters() if p.grad is not None]
        assert grads and max(g.norm().item() for g in grads) <= 0.5 + 1e-4
        assert all(p.grad is None for p in model.teacher.parameters())  # the teacher gets no gradients


def test_per_parameter_clip_leaves_small_gradients() -> None:
    a, b = nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(2))
    a.grad, b.grad = torch.tensor([3.0, 4.0, 0.0]), torch.tensor([0.1, 0.0])
    clip_grads_per_parameter([a, b], 1.0)
    assert a.grad.norm().item() == pytest.approx(1.0, rel=1e-5) and torch.equal(b.grad, torch.tensor([0.1, 0.0]))


def test_teacher_features_load_into_timm_vit() -> None:
    """The evaluation path: forward_features runs the teacher, its weights load into timm strictly."""
    from maelab.eval.finetune import copy_encoder_weights, timm_vit

    cfg = resolve_config(None, {"model": dict(TINY_MODEL), "train": {"method": "dino"}}, "test")
    torch.manual_seed(0)
    model = build_dino(cfg).eval()
    with torch.no_grad():  # make the teacher differ from the student
        for p in model.teacher.backbone.parameters():
            p.add_(0.01 * torch.randn_like(p))
    x = torch.randn(2, 3, 32, 32)
    feats = model.forward_features(x)
    assert feats.shape == (2, 1 + 64, 32)
    assert torch.allclose(feats, model.teacher.backbone(x)) and not torch.allclose(feats, model.student.backbone(x))
    vit = timm_vit(cfg, num_classes=10).eval()
    copy_encoder_weights(vit, model)  # strict: only the classifier head is missing
    assert torch.allclose(vit.forward_features(x), feats, atol=1e-5)


def test_method_registry_and_config_errors() -> None:
    assert get_method("dino").setup is not None and get_method("mae").setup is None
    with pytest.raises(ConfigError, match="unknown --method"):
        get_method("byol")
    with pytest.raises(ConfigError, match="local-crop-size 18"):
        resolve_config(None, {"dino": {"local_crop_size": 18}}, "test")


def test_method_dino_gets_dinos_optimizer_recipe_unless_told() -> None:
    """`--method dino` alone trains with DINO's recipe; a --config file or a flag still wins."""
    from maelab.config import METHOD_TRAIN_DEFAULTS

    dino = resolve_config(None, {"train": {"method": "dino"}}, "test").train
    recipe = METHOD_TRAIN_DEFAULTS["dino"]
    assert (dino.blr, dino.betas, dino.weight_decay, dino.weight_decay_end, dino.min_lr) == (
        recipe["blr"], recipe["betas"], 0.04, 0.4, recipe["min_lr"]
    )  # fmt: skip
    mae = resolve_config(None, {}, "test").train
    assert (mae.blr, mae.betas, mae.weight_decay) == (1.5e-4, (0.9, 0.95), 0.05)
    from_file = resolve_config({"train": {"method": "dino", "weight_decay": 0.1}}, {"train": {"blr": 1e-3}}, "f.toml")
    assert (from_file.train.weight_decay, from_file.train.blr, from_file.train.betas) == (0.1, 1e-3, (0.9, 0.999))


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_short_dino_run_learns_without_collapse(cifar_dir: Path, tmp_path: Path) -> None:
    from maelab.models.dino import collapse_stats

    dino = dict(out_dim=256, head_hidden_dim=64, bottleneck_dim=32, local_crops=4, warmup_teacher_temp_epochs=1.0)
    cfg = tiny_config(
        cifar_dir, tmp_path / "run", subset=200, dino=dino, method="dino", batch_size=20, lr=2e-3, log_every=5,
        betas=(0.9, 0.999),
    )  # fmt: skip
    run = pretrain(cfg)
    recs = records(run)
    assert len(recs) == 4 and all(math.isfinite(r["loss"]) for r in recs)  # 20 steps, a record every 5
    for key in ("teacher_entropy", "kl", "center_norm", "teacher_temp", "momentum"):
        assert key in recs[-1]
    assert recs[0]["teacher_temp"] < recs[-1]["teacher_temp"] == pytest.approx(0.07)
    # The loss is CE = H(teacher) + KL(teacher || student). Centring and the temperature warm-up raise
    # H(teacher) early on, so the part the student optimises is the KL: it must fall.
    assert recs[-1]["kl"] < 0.8 * recs[0]["kl"]
    model, cfg = load_model(str(run))
    assert isinstance(model, DINO) and not model.training
    test = class_balanced_subset(load_split(cifar_dir, "test"), 200)
    images = normalize(test.images, cfg.data.mean, cfg.data.std)
    assert model.forward_features(images[:2]).shape == (2, 65, 32)
    s = collapse_stats(model.teacher_probs(images))
    # No collapse: per-image entropy neither ~0 (one-hot) nor ~log K (uniform), and the mean prediction
    # is more spread than a single one (entropy of the mean - mean entropy = mutual information between
    # image and prototype > 0; both collapses drive it to 0).
    assert 0.02 * s["max_entropy"] < s["entropy"] < 0.98 * s["max_entropy"]
    assert s["marginal_entropy"] - s["entropy"] > 0.1


def test_dino_resume_equals_uninterrupted(tmp_path: Path) -> None:
    """Teacher, student, center and schedules continue exactly after a stop (tiny random images)."""
    common = dict(method="dino", per_class=10, batch_size=5, epochs=2, log_every=2)  # 4 steps an epoch
    full = train_tiny_run(tmp_path, out=tmp_path / "full", **common)
    part = train_tiny_run(tmp_path, out=tmp_path / "part", stop_after_steps=3, **common)
    pretrain(resume=part)
    a, b = load_weights(resolve_checkpoint(full)), load_weights(resolve_checkpoint(part))
    assert a.keys() == b.keys() and "center" in a
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert records(full)[-1]["teacher_entropy"] == pytest.approx(records(part)[-1]["teacher_entropy"], rel=1e-5)

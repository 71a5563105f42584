"""Fine-tuning: encoder -> timm ViT, layer-wise lr decay (none from scratch), a short run whose loss falls,
from scratch, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from maelab import MAE
from maelab.cli import main
from maelab.config import resolve_config
from maelab.data import ImageData
from maelab.eval import finetune as finetune_module
from maelab.eval.finetune import FinetuneConfig, build_classifier, finetune, layer_decay_param_groups, recipe_for
from maelab.eval.stats import unpack_correct

from .conftest import TINY_MODEL, train_tiny_run

DEPTH = 3


def tiny_cfg(**model: object):
    return resolve_config(None, {"model": {**TINY_MODEL, "encoder_depth": DEPTH, **model}}, "test")


def trained_like_mae(cfg) -> MAE:
    """A tiny MAE whose weights differ from any fresh initialisation (stands in for a pretrained one)."""
    from maelab.methods import build_mae

    torch.manual_seed(123)
    mae = build_mae(cfg)
    with torch.no_grad():
        for p in mae.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return mae.eval()


def separable_data(n: int = 64, seed: int = 0) -> ImageData:
    """Two classes a ViT can tell apart in a few steps: dark vs bright images plus noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    base = torch.where(labels.view(-1, 1, 1, 1) == 1, 180.0, 60.0)
    images = (base + 40 * torch.randn(n, 3, 32, 32, generator=g)).clamp(0, 255).to(torch.uint8)
    return ImageData(images, labels, ["dark", "bright"])


def test_encoder_loads_into_timm_and_gives_the_same_tokens() -> None:
    cfg = tiny_cfg()
    mae = trained_like_mae(cfg)
    vit = build_classifier(mae, cfg, FinetuneConfig(drop_path=0.0), num_classes=10).eval()
    for name, value in mae.encoder_state_dict().items():
        assert torch.equal(vit.state_dict()[name], value), name
    assert vit.head.weight.abs().max() < 1e-3 and vit.head.bias.abs().max() == 0  # MAE head init
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(vit.forward_features(x), mae.forward_features(x), atol=1e-5)
    assert vit(x).shape == (2, 10)


def test_layer_decay_lr_scale_per_block() -> None:
    cfg, ld = tiny_cfg(), 0.5
    vit = build_classifier(None, cfg, FinetuneConfig(), num_classes=10)
    scale = {id(p): g["lr_scale"] for g in layer_decay_param_groups(vit, 0.05, ld) for p in g["params"]}
    decay = {id(p): g["weight_decay"] for g in layer_decay_param_groups(vit, 0.05, ld) for p in g["params"]}
    names = dict(vit.named_parameters())
    # stem = layer 0, block i = layer i + 1, head = layer depth + 1: scale ld ** (depth + 1 - layer)
    for name in ("cls_token", "pos_embed", "patch_embed.proj.weight"):
        assert scale[id(names[name])] == pytest.approx(ld ** (DEPTH + 1))
    for i in range(DEPTH):
        assert scale[id(names[f"blocks.{i}.attn.qkv.weight"])] == pytest.approx(ld ** (DEPTH - i))
        assert scale[id(names[f"blocks.{i}.mlp.fc2.bias"])] == pytest.approx(ld ** (DEPTH - i))
    assert scale[id(names["head.weight"])] == 1.0
    assert len(scale) == len(names)  # every parameter is optimised exactly once
    assert decay[id(names["pos_embed"])] == 0 and decay[id(names["blocks.0.norm1.weight"])] == 0
    assert decay[id(names["blocks.0.attn.qkv.weight"])] == 0.05


def test_from_scratch_baseline_has_no_layer_decay() -> None:
    """The random-init baseline trains every layer at the full lr (same budget, all else equal); a pretrained
    encoder keeps the decay."""
    cfg, ft = tiny_cfg(), FinetuneConfig(layer_decay=0.75, epochs=7, blr=2e-3)
    scratch = recipe_for(ft, from_scratch=True)
    assert scratch.layer_decay == 1.0 and recipe_for(ft, from_scratch=False) == ft
    assert {**vars(scratch), "layer_decay": 0.75} == vars(ft)  # nothing else changes
    vit = build_classifier(None, cfg, scratch, num_classes=10)
    assert {g["lr_scale"] for g in layer_decay_param_groups(vit, 0.05, scratch.layer_decay)} == {1.0}
    pretrained = build_classifier(trained_like_mae(cfg), cfg, ft, num_classes=10)
    scales = {g["lr_scale"] for g in layer_decay_param_groups(pretrained, 0.05, ft.layer_decay)}
    assert min(scales) == pytest.approx(0.75 ** (DEPTH + 1)) and max(scales) == 1.0


def test_finetune_uses_the_recipe_of_its_init(monkeypatch: pytest.MonkeyPatch) -> None:
    """finetune() itself applies the rule, records the layer decay it used and the per-image test flags."""
    seen: list[float] = []
    real = finetune_module.layer_decay_param_groups

    def spy(vit: torch.nn.Module, weight_decay: float, layer_decay: float) -> list[dict]:
        seen.append(layer_decay)
        return real(vit, weight_decay, layer_decay)

    monkeypatch.setattr(finetune_module, "layer_decay_param_groups", spy)
    cfg = tiny_cfg()
    ft = FinetuneConfig(epochs=1, batch_size=16, layer_decay=0.75, drop_path=0.0, device="cpu", quiet=True)
    train, test = separable_data(32), separable_data(20, seed=1)
    scratch = finetune(None, cfg, ft, train, test)
    pretrained = finetune(trained_like_mae(cfg), cfg, ft, train, test)
    assert seen == [1.0, 0.75]
    assert (scratch["layer_decay"], scratch["recipe"]["layer_decay"]) == (1.0, 1.0)
    assert (pretrained["layer_decay"], pretrained["recipe"]["layer_decay"]) == (0.75, 0.75)
    assert (
        scratch["recipe"]["epochs"] == pretrained["recipe"]["epochs"] == 1 and scratch["steps"] == pretrained["steps"]
    )
    for r in (scratch, pretrained):
        flags = unpack_correct(r["test_correct"])
        assert flags.shape == (20,) and 100.0 * flags.sum() / 20 == pytest.approx(r["top1"])


def test_from_scratch_is_a_different_seeded_init() -> None:
    cfg = tiny_cfg()
    ft = FinetuneConfig(seed=0)
    pretrained = build_classifier(trained_like_mae(cfg), cfg, ft, 10)
    scratch = build_classifier(None, cfg, ft, 10)
    again = build_classifier(None, cfg, ft, 10)
    w = "blocks.0.attn.qkv.weight"
    assert not torch.allclose(pretrained.state_dict()[w], scratch.state_dict()[w])
    assert torch.equal(scratch.state_dict()[w], again.state_dict()[w])
    other = build_classifier(None, cfg, FinetuneConfig(seed=1), 10)
    assert not torch.equal(scratch.state_dict()[w], other.state_dict()[w])


def test_short_finetune_loss_falls() -> None:
    cfg = tiny_cfg()
    ft = FinetuneConfig(epochs=3, batch_size=16, blr=3e-2, warmup_epochs=0.5, drop_path=0.0, device="cpu", quiet=True)
    result = finetune(trained_like_mae(cfg), cfg, ft, separable_data(64), separable_data(40, seed=1))
    assert result["steps"] == 3 * (64 // 16) and result["init"] == "mae"
    assert result["last_loss"] < result["first_loss"] - 0.1
    assert result["top1"] > 75.0
    assert [h["epoch"] for h in result["history"]] == [1, 2, 3] and "test_top1" in result["history"][-1]


def test_cli_finetune_beside_baseline(tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["eval", "finetune", str(tiny_run), "--epochs", "2", "--batch-size", "4", "--device", "cpu", "--quiet"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "MAE pretrained" in out and "random init" in out
    result = json.loads((tiny_run / "eval" / "finetune.json").read_text())
    assert result["mae"]["init"] == "mae" and result["scratch"]["init"] == "scratch"
    assert result["mae"]["steps"] == 2 * 3 and result["mae"]["test_images"] == 12
    # the 1-epoch default warm-up of a 2-epoch run would leave no decay: a tenth of the 6 steps, rounded
    assert result["mae"]["warmup_steps"] == result["scratch"]["warmup_steps"] == 1
    assert result["mae"]["recipe"]["layer_decay"] == 0.75 and result["scratch"]["recipe"]["layer_decay"] == 1.0
    assert result["scratch"]["layer_decay"] == 1.0  # the baseline's own recipe: no layer decay
    assert (tiny_run / "eval" / "finetune.md").read_text().startswith("# Fine-tuning")

    assert main([*args, "--from-scratch", "--epochs", "1"]) == 0
    scratch = json.loads((tiny_run / "eval" / "finetune_scratch.json").read_text())
    assert set(scratch) >= {"scratch"} and "mae" not in scratch


def test_cli_finetune_rejects_bad_values(tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "finetune", str(tiny_run), "--layer-decay", "0", "--quiet"]) == 2
    assert "--layer-decay" in capsys.readouterr().err
    assert main(["eval", "finetune", str(tiny_run), "--batch-size", "100", "--quiet", "--device", "cpu"]) == 2
    assert "--batch-size 100" in capsys.readouterr().err


def test_cli_finetunes_a_dino_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`maelab eval finetune` takes a DINO run too: its teacher encoder goes into the same timm ViT."""
    run = train_tiny_run(tmp_path, method="dino")
    args = ["eval", "finetune", str(run), "--epochs", "1", "--batch-size", "4", "--device", "cpu", "--quiet"]
    assert main(args) == 0
    assert "DINO pretrained" in capsys.readouterr().out
    result = json.loads((run / "eval" / "finetune.json").read_text())
    assert result["dino"]["init"] == "dino" and result["scratch"]["init"] == "scratch"
    assert result["dino"]["steps"] == 3 and result["dino"]["top1"] >= 0.0

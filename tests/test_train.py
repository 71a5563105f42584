"""Training: a real short run whose loss falls, exact resume, schedules, weight-decay groups."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from maelab import MAE
from maelab.checkpoint import latest_checkpoint, load_meta
from maelab.config import resolve_config
from maelab.methods import load_model
from maelab.optim import adamw, lr_schedule, param_groups
from maelab.rundir import is_finished, read_summary
from maelab.train import pretrain

from .conftest import TINY_MODEL, tiny_config, train_tiny_run


def losses(run: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


def test_lr_schedule_warmup_then_cosine() -> None:
    lrs = lr_schedule(1.0, 0.1, total_steps=100, warmup_steps=10)
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and lrs[-1] == pytest.approx(0.1, abs=1e-3)
    assert torch.all(lrs[10:].diff() <= 0)


def test_no_weight_decay_on_biases_norms_tokens() -> None:
    m = MAE(**TINY_MODEL, pos_embed="learned")
    decay, no_decay = param_groups(m, 0.05)
    names = {id(p): n for n, p in m.named_parameters()}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    assert {"cls_token", "mask_token", "pos_embed", "decoder_pos_embed", "norm.weight", "blocks.0.attn.qkv.bias"} <= (
        no_decay_names
    )
    assert all(p.ndim == 2 or p.ndim == 4 for p in decay["params"])  # linear and conv weights only
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0


def test_adamw_is_fused_on_cpu_and_steps_like_the_for_loop_one() -> None:
    # maelab.optim.adamw takes PyTorch's fused kernel on CPUs too (~4x the for-loop step, benchmarks/adamw.py);
    # it must update the parameters as the for-loop AdamW does, weight-decay groups included.
    torch.manual_seed(0)
    models = [MAE.from_preset("ref", **TINY_MODEL) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    initial = [p.detach().clone() for p in models[0].parameters()]
    fused = adamw(param_groups(models[0], 0.05), torch.device("cpu"), lr=1e-2, betas=(0.9, 0.95))
    loop = torch.optim.AdamW(param_groups(models[1], 0.05), lr=1e-2, betas=(0.9, 0.95), foreach=False)
    assert fused.defaults["fused"] is True and not loop.defaults["fused"]
    imgs = torch.randn(4, 3, 32, 32)
    # One step from the same weights and masks: the gradients are then bit-equal. (After it the weights differ by
    # rounding, and the key bias, whose gradient is rounding noise -- softmax ignores it -- gets unrelated updates
    # that Adam scales up to the lr.)
    for model, opt in ((models[0], fused), (models[1], loop)):
        torch.manual_seed(1)
        model(imgs)[0].backward()
        opt.step()
    for (name, a), (_, b) in zip(models[0].named_parameters(), models[1].named_parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    stepped = [
        not torch.equal(p, p0) for p, p0 in zip(models[0].parameters(), initial, strict=True) if p.grad is not None
    ]
    assert stepped and all(stepped)  # every trained parameter moved


def test_weight_decay_cosine_schedule_on_the_decayed_group_only(tmp_path: Path) -> None:
    """--weight-decay-end: the decayed group follows a cosine to it; biases/norms/tokens stay at 0."""
    run = train_tiny_run(tmp_path, per_class=8, epochs=2, log_every=1, weight_decay=0.04, weight_decay_end=0.4)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    expected = lr_schedule(0.04, 0.4, total_steps=8, warmup_steps=0)
    assert [r["weight_decay"] for r in records] == pytest.approx(expected.tolist(), abs=1e-6)
    assert records[0]["weight_decay"] == pytest.approx(0.04) and records[-1]["weight_decay"] > 0.38
    state = torch.load(latest_checkpoint(run) / "state.pt", weights_only=True)
    groups = state["optimizer"]["param_groups"]
    assert groups[0]["weight_decay"] == pytest.approx(expected[-1].item()) and groups[1]["weight_decay"] == 0.0
    # MAE's default (-1) keeps the weight decay constant.
    assert resolve_config(None, {}, "test").train.weight_decay_end < 0


@pytest.mark.slow
def test_short_real_run_loss_falls(cifar_dir: Path, tmp_path: Path) -> None:
    run = pretrain(tiny_config(cifar_dir, tmp_path / "run", epochs=3, lr=2e-3, log_every=5))
    curve = [loss for _, loss in losses(run)]
    assert len(curve) == 6  # 30 steps, a record every 5
    assert curve[-1] < 0.8 * curve[0]
    for name in ("config.json", "metrics.jsonl", "summary.json"):
        assert (run / name).is_file()
    assert json.loads((run / "summary.json").read_text())["status"] == "finished"
    model, cfg = load_model(str(run))
    assert isinstance(model, MAE) and cfg.model.embed_dim == 32 and not model.training


@pytest.mark.parametrize("stop_at", [7, 10])  # mid-epoch 1; the end of epoch 1 (epoch 2 must not replay its order)
def test_resume_equals_uninterrupted(tmp_path: Path, stop_at: int) -> None:
    common = dict(per_class=20, epochs=2, log_every=1)  # 40 images, batch 4: 10 steps an epoch
    full = train_tiny_run(tmp_path, out=tmp_path / "full", **common)
    part = train_tiny_run(tmp_path, out=tmp_path / "part", stop_after_steps=stop_at, **common)
    assert load_meta(part)["step"] == stop_at
    pretrain(resume=part)
    a, b = losses(full), losses(part)
    assert [s for s, _ in a] == [s for s, _ in b] == list(range(1, 21))
    assert max(abs(x - y) for (_, x), (_, y) in zip(a, b, strict=True)) < 1e-6
    wa = load_model(str(full))[0].state_dict()
    wb = load_model(str(part))[0].state_dict()
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_resume_can_extend_epochs_and_keeps_checkpoints(tmp_path: Path) -> None:
    run = train_tiny_run(tmp_path, per_class=20, epochs=1, keep_checkpoints=2)  # 10 steps an epoch
    pretrain(resume=run, overrides={"epochs": 3})
    assert load_meta(run)["step"] == 30
    kept = sorted(p.name for p in (run / "checkpoints").glob("step_*"))
    assert kept == ["step_00000020", "step_00000030"]
    assert latest_checkpoint(run).name == "step_00000030"


def test_an_error_mid_run_leaves_no_finished_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash (here: the optimizer at its 3rd step) must not mark the run finished, or sweeps would never resume it."""
    calls = {"n": 0}
    step = torch.optim.AdamW.step

    def failing_step(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("out of memory (simulated)")
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", failing_step)
    with pytest.raises(RuntimeError, match="simulated"):
        train_tiny_run(tmp_path, per_class=20)  # 10 steps
    summary = read_summary(tmp_path / "run")
    assert summary is not None and summary.status == "failed" and summary.steps == 2
    assert not is_finished(tmp_path / "run")

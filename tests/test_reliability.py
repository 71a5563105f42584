"""Faults: signals save and exit, kill -9 mid-write keeps a loadable checkpoint, divergence stops cleanly,
and torchrun DDP on 2 CPU processes follows the single-process loss curve."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from maelab import methods
from maelab.checkpoint import latest_checkpoint, load_meta, load_train_state, load_weights
from maelab.train import TrainingError

from .conftest import TINY_MODEL, train_tiny_run, write_image_folder

TINY_FLAGS = [f"--{k.replace('_', '-')}={v}" for k, v in TINY_MODEL.items()]


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_checkpoint_and_exits(tmp_path: Path, sig: int) -> None:
    data = write_image_folder(tmp_path / "d", per_class=32, size=32)
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "maelab", "pretrain", "--data-dir", str(data), "--batch-size", "8", "--epochs", "1000",
         "--log-every", "1", "--out", str(run), "--quiet", *TINY_FLAGS],  # fmt: skip
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.time() + 120
    while not ((run / "metrics.jsonl").is_file() and (run / "metrics.jsonl").read_text().count("\n") >= 3):
        assert time.time() < deadline and proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        time.sleep(0.1)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "continue with `maelab pretrain --resume" in out
    meta = load_meta(run)
    assert meta["reason"] == "interrupted" and meta["step"] >= 3
    assert _records(run)[-1]["step"] == meta["step"]


KILL_WRITER = textwrap.dedent(
    """
    import sys, torch
    from maelab.checkpoint import save_checkpoint
    run = sys.argv[1]
    big = {"w": torch.randn(4_000_000)}  # 16 MB of weights: writing takes a while
    step = 0
    while True:
        step += 1
        big["w"][0] = step
        save_checkpoint(run, f"step_{step:08d}", big, {"step": step}, {"opt": torch.randn(1_000_000)}, keep=2)
    """
)


def test_kill_9_mid_write_leaves_a_loadable_checkpoint(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(KILL_WRITER)
    run = tmp_path / "run"
    rng = random.Random(0)
    for attempt in range(5):
        proc = subprocess.Popen([sys.executable, str(script), str(run)])
        deadline = time.time() + 120
        while latest_checkpoint(run) is None or (attempt == 0 and load_meta(run)["step"] < 2):
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.6))  # a random moment, most likely inside a write
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        found = latest_checkpoint(run)
        step = load_meta(found)["step"]
        weights = load_weights(found)
        assert weights["w"][0].item() == step  # the weights belong to the step the metadata names
        assert load_train_state(found)["opt"].shape == (1_000_000,)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = methods.METHODS["mae"]

    def exploding(model: torch.nn.Module, batch: torch.Tensor, cfg: object) -> torch.Tensor:
        calls["n"] += 1
        loss = real.loss(model, batch, cfg)
        return loss * float("nan") if calls["n"] > 13 else loss

    monkeypatch.setitem(methods.METHODS, "mae", methods.Method(build=real.build, loss=exploding))
    with pytest.raises(TrainingError, match="loss became nan at step 14.*last good checkpoint"):
        train_tiny_run(tmp_path, per_class=20, epochs=3)  # 10 steps an epoch
    assert load_meta(tmp_path / "run")["step"] == 10  # end of epoch 1
    assert all(torch.isfinite(v).all() for v in load_weights(tmp_path / "run").values())
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "diverged"


@pytest.mark.slow
def test_torchrun_ddp_matches_single_process(tmp_path: Path) -> None:
    data = write_image_folder(tmp_path / "data", per_class=250, size=32)  # random images: the loss still falls
    common = ["--data-dir", str(data), "--subset", "500", "--epochs", "2", "--lr", "2e-3", "--warmup-epochs",
              "0.5", "--log-every", "1", "--quiet", "--device", "cpu", *TINY_FLAGS]  # fmt: skip
    single = tmp_path / "single"
    ddp = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "maelab", "pretrain", *common, "--batch-size", "100", "--out", str(single)],
                   check=True, env=env, capture_output=True)  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "maelab",
         "pretrain", *common, "--batch-size", "50", "--out", str(ddp)],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    a, b = _records(single), _records(ddp)
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 11))
    assert [r["lr"] for r in a] == pytest.approx([r["lr"] for r in b])  # lr scaled by the same global batch
    # Same initial weights and global batch; masks, crops and batch composition are drawn per process,
    # so the curves agree within sampling noise, not bit for bit.
    diffs = [abs(x["loss"] - y["loss"]) / x["loss"] for x, y in zip(a, b, strict=True)]
    assert diffs[0] < 0.05 and max(diffs) < 0.1, diffs
    assert b[-1]["loss"] < 0.85 * b[0]["loss"]
    assert load_meta(ddp)["world_size"] == 2
    # Resume across world sizes: the 2-process run continues in one process, from its epoch (the global
    # batch is now 50, so an epoch has 10 steps instead of 5).
    out = subprocess.run([sys.executable, "-m", "maelab", "pretrain", "--resume", str(ddp), "--epochs", "3", "--quiet"],
                         check=True, env=env, capture_output=True, text=True)  # fmt: skip
    assert "continuing at the start of epoch 3 (step 20)" in out.stdout
    assert load_meta(ddp)["epoch"] == 3 and load_meta(ddp)["world_size"] == 1


def test_more_torchrun_ranks_than_gpus_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """Local rank 1 on a 1-GPU machine: a ConfigError with the fix, not CUDA's "invalid device ordinal"
    (seen on an H200 machine, results/gpu_h200_check)."""
    from maelab.config import ConfigError
    from maelab.distributed import init_distributed

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match=r"local rank 1, but this machine has 1 CUDA GPU\(s\).*--nproc-per-node 1"):
        init_distributed(torch.device("cuda"))

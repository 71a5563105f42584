"""Shared fixtures: tiny models and configs, tiny image folders and the tiny runs trained on them, the real
CIFAR-10 when available. Every test that trains a tiny run builds it here (``tiny_config``, ``train_tiny_run``,
the ``tiny_run`` fixture)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from maelab.config import Config, resolve_config

# The README's test command passes a relative MAELAB_DATA; make it absolute so that subprocesses
# started in other directories (examples, torchrun) find the data too.
if os.environ.get("MAELAB_DATA"):
    os.environ["MAELAB_DATA"] = str(Path(os.environ["MAELAB_DATA"]).resolve())

TINY_MODEL = dict(
    embed_dim=32, encoder_depth=1, encoder_heads=2, decoder_embed_dim=16, decoder_depth=1, decoder_heads=2
)
# The DINO head and crops of tiny DINO runs (the encoder is TINY_MODEL's).
TINY_DINO = dict(out_dim=64, head_hidden_dim=32, bottleneck_dim=16, local_crops=2)


@pytest.fixture(autouse=True)
def fp32_on_cpus_with_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests compare against fp32 references with tight tolerances; on a CI machine whose CPU has native
    bf16, ``--precision auto`` would pick bf16. Report no bf16 CPU flags (tests/test_runtime.py sets its own)."""
    monkeypatch.setattr("maelab.runtime.cpu_flags", lambda cpuinfo="/proc/cpuinfo": frozenset())


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run a test on one thread: tiny matmuls gain nothing from threads, and on a shared 2-core
    machine OpenMP's spin-waiting makes them ~10x slower. The setting is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def cifar_dir() -> Path:
    """The real CIFAR-10 image folder from $MAELAB_DATA (skipped when unset)."""
    raw = os.environ.get("MAELAB_DATA")
    if not raw:
        pytest.skip("MAELAB_DATA is not set (export MAELAB_DATA=../shared/data/cifar10)")
    return Path(raw)


def write_image_folder(
    root: Path, per_class: int = 6, size: int = 8, classes: tuple[str, ...] = ("cat", "dog")
) -> Path:
    """ROOT/{train,test}/<class>/<i>.png with random RGB images; returns ROOT."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return write_image_folder(tmp_path / "folder")


def tiny_config(
    data_dir: Path, out: Path, *, subset: int = 500, dino: dict[str, object] | None = None, **train: object
) -> Config:
    """A tiny model (``TINY_MODEL``) on 32x32 images that trains in seconds on a CPU.

    ``subset`` 500 suits CIFAR-10; pass 0 for a small folder. ``train`` overrides the train section
    (``method="dino"`` gets the ``TINY_DINO`` head, updated by ``dino``).
    """
    train_values = dict(epochs=2, batch_size=50, warmup_epochs=0.5, log_every=1, quiet=True, out=str(out), seed=0)
    train_values.update(train)
    values = {"model": dict(TINY_MODEL), "data": {"data_dir": str(data_dir), "subset": subset}, "train": train_values}
    if train_values.get("method") == "dino":
        values["dino"] = {**TINY_DINO, **(dino or {})}
    return resolve_config(None, values, "test")


def train_tiny_run(
    root: Path, method: str = "mae", per_class: int = 6, stop_after_steps: int | None = None, **train: object
) -> Path:
    """Pretrain a tiny run (default ROOT/run) on the CPU, on a 2-class folder of random 32x32 images at
    ROOT/data (written once, ``per_class`` images per class and split): 1 epoch of batch 4, no warm-up,
    so ``per_class=6`` gives 3 steps an epoch. ``train`` overrides the train section (``out`` included)."""
    from maelab.train import pretrain

    data = root / "data"
    if not data.is_dir():
        write_image_folder(data, per_class=per_class, size=32)
    values: dict[str, object] = dict(method=method, epochs=1, batch_size=4, warmup_epochs=0, device="cpu")
    values.update(train)
    out = Path(str(values.pop("out", root / "run")))
    return pretrain(tiny_config(data, out, subset=0, **values), stop_after_steps=stop_after_steps)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-step tiny MAE run (:func:`train_tiny_run`), one per test module."""
    return train_tiny_run(tmp_path_factory.mktemp("tiny_run"))

"""Shared fixtures: tiny models and configs, a tiny image folder, the real CIFAR-10 when available."""

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


def write_image_folder(root: Path, per_class: int = 6, size: int = 8, classes: tuple[str, ...] = ("cat", "dog")) -> Path:
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


def tiny_config(data_dir: Path, out: Path, **train: object) -> Config:
    """A tiny MAE on 32x32 CIFAR-10 that trains in seconds on a CPU."""
    train_values = dict(epochs=2, batch_size=50, warmup_epochs=0.5, log_every=1, quiet=True, out=str(out), seed=0)
    train_values.update(train)
    return resolve_config(
        None,
        {"model": dict(TINY_MODEL), "data": {"data_dir": str(data_dir), "subset": 500}, "train": train_values},
        "test",
    )

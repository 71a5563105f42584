"""TensorBoard logging: scalars of every metrics record and reconstruction grids of fixed test images."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from maelab.config import Config, ConfigError
from maelab.tblog import IMAGE_TAG, MIN_SIDE_PX, NUM_IMAGES, SCALARS, TensorBoardLogger, image_grid
from maelab.train import pretrain
from tests.conftest import tiny_config, write_image_folder

pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install 'maelab[tensorboard]')")


def small_config(data_dir: Path, out: Path, **train: object) -> Config:
    """A tiny MAE on 100 images of ``data_dir``: 5 steps an epoch, 2 epochs."""
    return tiny_config(data_dir, out, subset=100, epochs=2, batch_size=20, log_every=2, **train)


def read_events(log_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def decode(event) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))


def test_image_grid_is_one_row_per_image_upscaled() -> None:
    panels = torch.rand(3, 4, 3, 32, 32)
    grid = image_grid(panels)
    scale = MIN_SIDE_PX // 32
    pad = 2
    assert grid.shape == (3, 3 * 32 * scale + 4 * pad, 4 * 32 * scale + 5 * pad)
    # top-left panel = first image's first column, nearest-neighbour upscaled
    assert torch.equal(grid[:, pad : pad + scale, pad : pad + scale], panels[0, 0, :, :1, :1].expand(3, scale, scale))


def test_missing_tensorboard_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now raises ImportError
    with pytest.raises(ConfigError, match="pip install"):  # before any data is read
        TensorBoardLogger(tmp_path, tiny_config(tmp_path / "data", tmp_path / "run"))


def test_short_run_logs_scalars_and_fixed_reconstructions(tmp_path: Path) -> None:
    # 100 images / batch 20 = 5 steps per epoch; a grid after each of the 2 epochs.
    data = write_image_folder(tmp_path / "data", per_class=50, size=32)
    run = pretrain(small_config(data, tmp_path / "tb", tensorboard=True, tensorboard_every=1))
    plain = pretrain(small_config(data, tmp_path / "plain"))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # Logging reconstructions must not change training (it never draws from the global RNG).
    assert records == [
        {**r, "img_per_s": records[i]["img_per_s"], "wall_time": records[i]["wall_time"]}
        for i, r in enumerate(json.loads(line) for line in (plain / "metrics.jsonl").read_text().splitlines())
    ]

    acc = read_events(run / "tensorboard")
    tags = acc.Tags()
    assert set(SCALARS.values()) <= set(tags["scalars"])
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [r["step"] for r in records] == [2, 4, 5, 6, 8, 10]
    assert np.allclose([e.value for e in loss], [r["loss"] for r in records], rtol=1e-6)
    assert np.allclose([e.value for e in acc.Scalars("train/lr")], [r["lr"] for r in records], rtol=1e-6)

    images = acc.Images(IMAGE_TAG)
    assert [e.step for e in images] == [5, 10]
    first, last = decode(images[0]), decode(images[1])
    assert first.shape == (NUM_IMAGES * MIN_SIDE_PX + (NUM_IMAGES + 1) * 2, 4 * MIN_SIDE_PX + 5 * 2, 3)
    col = MIN_SIDE_PX + 2  # width of one column with its padding
    # The same test images and the same masks each time: identical originals and masked inputs ...
    assert np.array_equal(first[:, : 2 * col], last[:, : 2 * col])
    # ... while the reconstructions change as the model trains.
    assert not np.array_equal(first[:, 2 * col : 3 * col], last[:, 2 * col : 3 * col])

"""Batched augmentation: shapes, ranges, per-sample randomness, exactness of the identity crop."""

from __future__ import annotations

import torch

from maelab.augment import denormalize, mae_augment, normalize, random_crop_boxes, random_resized_crop

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def test_normalize_round_trip() -> None:
    imgs = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    x = normalize(imgs, MEAN, STD)
    assert x.dtype == torch.float32
    assert torch.allclose(denormalize(x, MEAN, STD) * 255, imgs.float(), atol=1e-3)


def test_augment_shapes_ranges_and_per_sample() -> None:
    torch.manual_seed(0)
    imgs = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8).repeat(64, 1, 1, 1)
    out = mae_augment(imgs, MEAN, STD, 32)
    assert out.shape == (64, 3, 32, 32) and out.dtype == torch.float32
    lo = (0 - torch.tensor(MEAN)) / torch.tensor(STD)
    hi = (1 - torch.tensor(MEAN)) / torch.tensor(STD)
    assert torch.all(out.amin((0, 2, 3)) >= lo - 1e-5) and torch.all(out.amax((0, 2, 3)) <= hi + 1e-5)
    # The same image gives a different crop per sample.
    flat = out.flatten(1)
    assert torch.cdist(flat, flat).fill_diagonal_(1).min() > 0


def test_boxes_stay_inside_and_follow_scale() -> None:
    torch.manual_seed(0)
    theta = random_crop_boxes(10000, scale=(0.2, 1.0))
    w, h = theta[:, 0, 0].abs(), theta[:, 1, 1]
    cx, cy = theta[:, 0, 2], theta[:, 1, 2]
    assert torch.all(cx - w >= -1 - 1e-6) and torch.all(cx + w <= 1 + 1e-6)
    assert torch.all(cy - h >= -1 - 1e-6) and torch.all(cy + h <= 1 + 1e-6)
    assert (w * h).min() >= 0.2 * 0.75 - 1e-6  # clamping to the image can only shrink a too-wide box
    flips = (theta[:, 0, 0] < 0).float().mean()
    assert 0.45 < flips < 0.55


def test_full_box_without_flip_is_identity() -> None:
    x = torch.randn(2, 3, 8, 8)
    out = random_resized_crop(x, 8, scale=(1.0, 1.0), hflip=False, ratio=(1.0, 1.0))
    assert torch.allclose(out, x, atol=1e-5)
    flipped = random_crop_boxes(4, (1.0, 1.0), (1.0, 1.0), hflip=True)
    assert torch.equal(flipped[:, 0, 0].abs(), torch.ones(4))

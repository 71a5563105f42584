"""Batched augmentation on the device: tensor ops over the whole batch, no per-image Python.

Random-resized-crop is one ``affine_grid`` + ``grid_sample`` with a different crop box per image;
the horizontal flip is the sign of the box's x-scale, so flipping costs nothing extra.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 (B, C, H, W), scaled to [0, 1] then standardised per channel."""
    m = torch.tensor(mean, device=images.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=images.device).view(1, -1, 1, 1)
    return (images.float() / 255.0 - m) / s


def denormalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Inverse of :func:`normalize` into [0, 1] float pixels (clamped)."""
    m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    return (x * s + m).clamp(0.0, 1.0)


def random_crop_boxes(
    n: int,
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    hflip: bool = True,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-image affine crops as (n, 2, 3) ``affine_grid`` matrices in [-1, 1] coordinates.

    Area fraction ~ U(scale) and log aspect ratio ~ U(log ratio) as torchvision's
    RandomResizedCrop, with the box clamped to the image instead of resampled.
    """
    u = torch.rand(n, 5, device=device, generator=generator)
    area = scale[0] + (scale[1] - scale[0]) * u[:, 0]
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[:, 1]
    aspect = torch.exp(log_r)
    w = torch.sqrt(area * aspect).clamp(max=1.0)  # fractions of the image width / height
    h = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (u[:, 2] * (1 - w) + w / 2) * 2 - 1  # box centre in [-1, 1], box inside the image
    cy = (u[:, 3] * (1 - h) + h / 2) * 2 - 1
    sign = torch.where(u[:, 4] < 0.5, -1.0, 1.0) if hflip else torch.ones_like(w)
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0] = w * sign
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = h
    theta[:, 1, 2] = cy
    return theta


def random_resized_crop(
    x: torch.Tensor,
    out_size: int,
    scale: tuple[float, float] = (0.2, 1.0),
    hflip: bool = True,
    generator: torch.Generator | None = None,
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """Crop a random box per image and resize it to ``out_size`` (bilinear); x (B, C, H, W) float."""
    theta = random_crop_boxes(x.shape[0], scale, ratio, hflip, x.device, generator)
    grid = F.affine_grid(theta, [x.shape[0], x.shape[1], out_size, out_size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def mae_augment(
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    out_size: int,
    min_scale: float = 0.2,
    hflip: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """MAE pretraining augmentation: uint8 (B, C, H, W) -> normalised float (B, C, out, out)."""
    return random_resized_crop(normalize(images, mean, std), out_size, (min_scale, 1.0), hflip, generator)

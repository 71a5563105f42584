"""DINO's multi-crop augmentation, batched on the device: per-sample random parameters, tensor ops only.

Every op takes float pixels (B, C, H, W) in [0, 1] and draws one parameter per image (with the
given generator or the global RNG); an image that does not get an op gets its identity
parameters (factor 1, shift 0, a delta kernel), so no op branches on the host. The pipeline of
DINO (Caron et al. 2021, ``DataAugmentationDINO``) is

    global crop 1: random-resized-crop + flip, colour jitter (p 0.8), grayscale (p 0.2), blur (p 1.0)
    global crop 2: the same with blur p 0.1 and solarisation (p 0.2)
    local crops:   smaller random-resized-crops at a lower resolution, jitter, grayscale, blur (p 0.5)

with sizes, scales and probabilities taken from :class:`maelab.config.DinoConfig`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from maelab.augment import random_resized_crop
from maelab.config import DinoConfig

# ITU-R 601 luma weights, as torchvision's rgb_to_grayscale.
LUMA = (0.299, 0.587, 0.114)
RGB2YIQ = torch.tensor([LUMA, [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=torch.float64)
YIQ2RGB = torch.linalg.inv(RGB2YIQ)  # exact inverse, so a zero hue shift is the identity


def _uniform(n: int, lo: float, hi: float, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """(n, 1, 1, 1) draws from U(lo, hi) on ``like``'s device."""
    u = torch.rand(n, 1, 1, 1, device=like.device, generator=generator)
    return lo + (hi - lo) * u


def _coin(n: int, p: float, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """(n, 1, 1, 1) booleans, True with probability ``p``."""
    return torch.rand(n, 1, 1, 1, device=like.device, generator=generator) < p


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> luma (B, 1, H, W)."""
    w = torch.tensor(LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def rotate_hue(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Rotate the chroma of (B, 3, H, W) RGB in YIQ space by ``turns`` (B, 1, 1, 1) of a full circle.

    A linear stand-in for torchvision's HSV hue shift: luma is kept and the hue angle moves by the
    same amount, without the HSV round trip (whose per-pixel branches are slow on the device).
    """
    rgb2yiq, yiq2rgb = (m.to(x.device, x.dtype) for m in (RGB2YIQ, YIQ2RGB))
    yiq = torch.einsum("ij,bjhw->bihw", rgb2yiq, x)
    angle = 2 * math.pi * turns.view(-1)
    cos, sin = torch.cos(angle).view(-1, 1, 1), torch.sin(angle).view(-1, 1, 1)
    i, q = yiq[:, 1], yiq[:, 2]
    yiq = torch.stack([yiq[:, 0], cos * i - sin * q, sin * i + cos * q], dim=1)
    return torch.einsum("ij,bjhw->bihw", yiq2rgb, yiq)


def color_jitter(
    x: torch.Tensor,
    strengths: Sequence[float] = (0.4, 0.4, 0.2, 0.1),
    p: float = 0.8,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Brightness, contrast, saturation, hue jitter of (B, 3, H, W) in [0, 1], each image its own factors.

    Factors ~ U(1 - s, 1 + s) (hue: a shift ~ U(-s, s) turns) as torchvision's ColorJitter, applied
    in that fixed order (torchvision shuffles the order) with clamping to [0, 1] after each op.
    Images not drawn (probability 1 - p) get factors 1 and shift 0, i.e. are unchanged.
    """
    b, s_con, s_sat, s_hue = strengths
    n = x.shape[0]
    on = _coin(n, p, x, generator)

    def factor(s: float) -> torch.Tensor:
        return torch.where(on, _uniform(n, max(0.0, 1 - s), 1 + s, x, generator), torch.ones((), device=x.device))

    x = (x * factor(b)).clamp(0, 1)
    mean = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)  # per-image mean luma, as torchvision's contrast
    x = ((x - mean) * factor(s_con) + mean).clamp(0, 1)
    gray = grayscale(x)
    x = ((x - gray) * factor(s_sat) + gray).clamp(0, 1)
    shift = torch.where(on, _uniform(n, -s_hue, s_hue, x, generator), torch.zeros((), device=x.device))
    return rotate_hue(x, shift).clamp(0, 1)


def random_grayscale(x: torch.Tensor, p: float = 0.2, generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace each image (B, 3, H, W) by its luma (on all 3 channels) with probability ``p``."""
    return torch.where(_coin(x.shape[0], p, x, generator), grayscale(x).expand_as(x), x)


def gaussian_blur(
    x: torch.Tensor,
    p: float,
    sigma: Sequence[float] = (0.1, 1.0),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Blur each image (B, C, H, W) with probability ``p`` by a separable gaussian, sigma ~ U(sigma) px.

    One grouped convolution for the whole batch: every (image, channel) plane gets its image's
    kernel; images not drawn get a delta kernel. The kernel spans +-2 sigma_max (reflect padding).
    """
    n, c, h, w = x.shape
    radius = max(1, min(math.ceil(2 * sigma[1]), min(h, w) - 1))  # reflect padding needs radius < size
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)  # (k,)
    sig = _uniform(n, sigma[0], sigma[1], x, generator).view(n, 1)
    kernel = torch.exp(-0.5 * (offsets / sig) ** 2)  # (n, k)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    delta = (offsets == 0).to(x.dtype).expand(n, -1)
    kernel = torch.where(_coin(n, p, x, generator).view(n, 1), kernel, delta)
    kernel = kernel.repeat_interleave(c, dim=0)  # (n*c, k): one kernel per plane
    planes = x.reshape(1, n * c, h, w)
    planes = F.conv2d(F.pad(planes, (radius, radius, 0, 0), mode="reflect"), kernel.view(n * c, 1, 1, -1), groups=n * c)
    planes = F.conv2d(F.pad(planes, (0, 0, radius, radius), mode="reflect"), kernel.view(n * c, 1, -1, 1), groups=n * c)
    return planes.view(n, c, h, w)


def random_solarize(
    x: torch.Tensor, p: float = 0.2, threshold: float = 0.5, generator: torch.Generator | None = None
) -> torch.Tensor:
    """With probability ``p`` per image, invert the pixels >= ``threshold`` (x -> 1 - x), as PIL's solarize."""
    on = _coin(x.shape[0], p, x, generator)
    return torch.where(on & (x >= threshold), 1.0 - x, x)


def _view(
    x: torch.Tensor,
    size: int,
    scale: Sequence[float],
    cfg: DinoConfig,
    hflip: bool,
    blur_p: float,
    solarize_p: float,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """One DINO view of every image of x (B, 3, H, W) in [0, 1] -> (B, 3, size, size) in [0, 1]."""
    v = random_resized_crop(x, size, (scale[0], scale[1]), hflip, generator).clamp(0, 1)
    if v.shape[1] == 3:  # colour ops need RGB
        v = color_jitter(v, cfg.jitter, cfg.jitter_prob, generator)
        v = random_grayscale(v, cfg.grayscale_prob, generator)
    v = gaussian_blur(v, blur_p, cfg.blur_sigma, generator)
    if solarize_p > 0:
        v = random_solarize(v, solarize_p, generator=generator)
    return v


def dino_multicrop(
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    cfg: DinoConfig,
    hflip: bool = True,
    generator: torch.Generator | None = None,
) -> list[torch.Tensor]:
    """uint8 images (B, C, H, W) -> [global 1, global 2, local 1, ..., local L], normalised float.

    Globals are (B, C, global_crop_size, global_crop_size), locals (B, C, local_crop_size,
    local_crop_size); crop k of image i is row i of tensor k. All L local crops are drawn in one
    batched call of L*B images.
    """
    x = images.float() / 255.0
    b1, b2, b_local = cfg.blur_prob
    views = [
        _view(x, cfg.global_crop_size, cfg.global_crop_scale, cfg, hflip, b1, 0.0, generator),
        _view(x, cfg.global_crop_size, cfg.global_crop_scale, cfg, hflip, b2, cfg.solarize_prob, generator),
    ]
    if cfg.local_crops > 0:
        rep = x.repeat(cfg.local_crops, 1, 1, 1)  # (L*B, C, H, W), crop-major
        local = _view(rep, cfg.local_crop_size, cfg.local_crop_scale, cfg, hflip, b_local, 0.0, generator)
        views += list(local.chunk(cfg.local_crops))
    m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    return [(v - m) / s for v in views]

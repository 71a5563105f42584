"""Patchify, unpatchify and per-sample random masking: pure tensor functions.

Conventions used everywhere in maelab (as in the MAE paper's code):
- patches are taken row-major over the image grid, and the pixels inside a patch are ordered
  (p, p, C): row, column, channel;
- ``mask`` is (B, N) with 0 = kept (visible) and 1 = removed (masked);
- indices index the N patches only; the CLS token is never part of the masking index space.
"""

from __future__ import annotations

import torch


def patchify(imgs: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cut images into flattened patches.

    imgs: (B, C, H, W) -> (B, N, p*p*C) with N = (H/p) * (W/p), row-major, pixels ordered (p, p, C).
    """
    b, c, h, w = imgs.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"image size {h}x{w} is not divisible by patch_size={p}")
    gh, gw = h // p, w // p
    x = imgs.reshape(b, c, gh, p, gw, p)
    x = x.permute(0, 2, 4, 3, 5, 1)  # (B, gh, gw, p, p, C)
    return x.reshape(b, gh * gw, p * p * c)


def unpatchify(patches: torch.Tensor, patch_size: int, channels: int = 3) -> torch.Tensor:
    """Inverse of :func:`patchify` for a square grid.

    patches: (B, N, p*p*C) -> (B, C, H, W) with H = W = sqrt(N) * p.
    """
    b, n, d = patches.shape
    p = patch_size
    g = int(round(n**0.5))
    if g * g != n or d != p * p * channels:
        raise ValueError(f"cannot unpatchify {tuple(patches.shape)} with patch_size={p}, channels={channels}")
    x = patches.reshape(b, g, g, p, p, channels)
    x = x.permute(0, 5, 1, 3, 2, 4)  # (B, C, gh, p, gw, p)
    return x.reshape(b, channels, g * p, g * p)


def num_visible(num_patches: int, mask_ratio: float) -> int:
    """Number of patches kept at ``mask_ratio``; raises if the ratio is invalid or keeps nothing."""
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    len_keep = int(num_patches * (1 - mask_ratio))
    if len_keep < 1:
        raise ValueError(f"mask_ratio={mask_ratio} leaves no visible patch out of {num_patches}; use a smaller ratio")
    return len_keep


def random_masking(
    x: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep a random subset of tokens per sample (argsort of uniform noise, then gather).

    x: (B, N, D) patch tokens (no CLS). noise: optional (B, N) in [0, 1) to fix the masks.
    Returns visible_tokens (B, N_keep, D), mask (B, N) with 1 = masked in the original order,
    and ids_restore (B, N) that undoes the shuffle.
    """
    b, n, d = x.shape
    len_keep = num_visible(n, mask_ratio)
    if noise is None:
        noise = torch.rand(b, n, device=x.device)
    # Ascending noise: the first len_keep indices are kept, the rest removed.
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :len_keep]
    visible_tokens = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, d))
    mask = torch.ones(b, n, device=x.device)
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return visible_tokens, mask, ids_restore

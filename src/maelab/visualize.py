"""Reconstructions of an MAE for the eye: fixed seeded masks, the prediction mapped back to pixels,
and figures with one row per test image, columns original | masked input | reconstruction |
reconstruction with the visible patches pasted back. (Scoring them: :mod:`maelab.eval.reconstruction`.)

Images and masks are chosen by a seed (images by a seeded permutation of the test split, masks by
row ``i`` of :func:`fixed_noise` for image ``i``), so figures of different
runs with the same seed show the same images under the same masks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from maelab.augment import denormalize, normalize
from maelab.models.mae import MAE
from maelab.runtime import autocast

# Masked patches in the masked-input panel are painted this grey (in [0, 1] pixels).
GREY = 0.5
COLUMNS = ("original", "masked input", "reconstruction", "recon. + visible")
NORM_PIX_NOTE = (
    "norm_pix_loss model: predicted patches were un-normalised with each patch's true mean and std, "
    "information the model did not see"
)


def fixed_noise(num_images: int, num_patches: int, seed: int) -> torch.Tensor:
    """Masking noise (num_images, num_patches) in [0, 1) from a CPU generator seeded with ``seed``."""
    return torch.rand(num_images, num_patches, generator=torch.Generator().manual_seed(seed))


def patch_mean_std(model: MAE, imgs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-patch mean and std (B, N, 1) of ``imgs`` (B, C, H, W), exactly as ``MAE.target`` normalises."""
    patches = model.patchify(imgs).float()
    return patches.mean(dim=-1, keepdim=True), (patches.var(dim=-1, keepdim=True) + 1.0e-6) ** 0.5


def prediction_to_input_space(model: MAE, imgs: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """Predicted patches (B, N, p*p*C) -> images (B, C, H, W) in the model's (normalised) input space.

    For ``norm_pix_loss`` models each patch is un-normalised with the true patch's mean/std of ``imgs``
    (information the model did not see); otherwise the prediction already is in input space.
    """
    pred = pred.float()
    if model.norm_pix_loss:
        mean, std = patch_mean_std(model, imgs)
        pred = pred * std + mean
    return model.unpatchify(pred)


def pixel_mask(mask: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Patch mask (B, N), 1 = masked, row-major -> pixel mask (B, 1, H, W)."""
    b, n = mask.shape
    g = int(round(n**0.5))
    grid = mask.reshape(b, 1, g, g)
    return grid.repeat_interleave(patch_size, dim=2).repeat_interleave(patch_size, dim=3)


@dataclass
class Reconstruction:
    """One batch, in [0, 1] pixels: original, prediction and pasted-back images (B, C, H, W),
    pixel mask (B, 1, H, W) with 1 = masked, and the per-image masked MSE in loss space (B,)."""

    original: torch.Tensor
    prediction: torch.Tensor
    pasted: torch.Tensor
    mask: torch.Tensor
    loss_space_mse: torch.Tensor


@torch.no_grad()
def reconstruct(
    model: MAE,
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    noise: torch.Tensor,
    mask_ratio: float | None = None,
    amp_dtype: torch.dtype | None = None,
) -> Reconstruction:
    """Mask ``images`` (uint8 (B, C, H, W)) with ``noise`` (B, N) at ``mask_ratio`` (default: the
    model's) and reconstruct them. Returns a :class:`Reconstruction` in [0, 1] pixel space.

    ``amp_dtype`` (None = fp32) autocasts the model's forward only; the metrics are computed in fp32.
    """
    ratio = model.mask_ratio if mask_ratio is None else mask_ratio
    x = normalize(images, mean, std)
    with autocast(x.device, amp_dtype):
        latent, mask, ids_restore = model.forward_encoder(x, ratio, noise.to(x.device))
        pred = model.forward_decoder(latent, ids_restore)  # (B, N, p*p*C)
    per_patch = ((pred.float() - model.target(x)) ** 2).mean(dim=-1)  # (B, N)
    loss_space = (per_patch * mask).sum(dim=1) / mask.sum(dim=1)
    original = denormalize(x, mean, std)
    prediction = denormalize(prediction_to_input_space(model, x, pred), mean, std)
    pmask = pixel_mask(mask, model.patch_size)
    pasted = torch.where(pmask.bool(), prediction, original)
    return Reconstruction(original, prediction, pasted, pmask, loss_space)


def choose_images(num_images: int, n: int, seed: int) -> torch.Tensor:
    """``n`` distinct image indices (n,) out of ``num_images``, from a permutation seeded with ``seed``."""
    return torch.randperm(num_images, generator=torch.Generator().manual_seed(seed))[:n]


@torch.no_grad()
def reconstruction_panels(
    model: MAE,
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    noise: torch.Tensor,
    mask_ratio: float | None = None,
) -> torch.Tensor:
    """The four panels of each image: uint8 images (n, C, H, W) -> (n, 4, C, H, W) in [0, 1], in
    :data:`COLUMNS` order; masked patches of the masked input are :data:`GREY`."""
    r = reconstruct(model, images, mean, std, noise, mask_ratio)
    masked_input = torch.where(r.mask.bool(), torch.full_like(r.original, GREY), r.original)
    return torch.stack([r.original, masked_input, r.prediction, r.pasted], dim=1).cpu()


def save_figure(
    panels: torch.Tensor, path: str | Path, title: str, caption: str = "", panel_inches: float = 1.4
) -> Path:
    """Draw panels (n, 4, C, H, W) in [0, 1] as an n x 4 grid, nearest-neighbour upscaled, to ``path``."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    n, cols = panels.shape[:2]
    fig, axes = plt.subplots(n, cols, figsize=(cols * panel_inches, n * panel_inches + 0.9), squeeze=False)
    for i in range(n):
        for j in range(cols):
            ax = axes[i][j]
            ax.imshow(panels[i, j].permute(1, 2, 0).numpy(), interpolation="nearest", vmin=0.0, vmax=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(COLUMNS[j] if cols == len(COLUMNS) else str(j), fontsize=9)
    fig.suptitle(title, fontsize=10)
    if caption:
        fig.text(0.5, 0.005, caption, ha="center", va="bottom", fontsize=7, wrap=True)
    fig.tight_layout(rect=(0, 0.03 if caption else 0, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

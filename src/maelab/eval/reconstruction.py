"""Reconstruction quality of an MAE on held-out images, under a fixed, seeded set of masks.

Masks come from uniform noise drawn once for the whole split by a ``torch.Generator`` seeded with
``seed`` (row ``i`` belongs to image ``i``) and passed to the model as ``noise=``. The same seed
therefore gives the same masks to every model with the same patch grid, whatever the batch size,
and at a higher mask ratio the masked set only grows (the argsort of the noise is shared).

Three numbers, all over the masked patches only:

- ``mse_loss_space``: the training loss, MSE in the model's target space (normalised inputs, or
  per-patch normalised pixels for ``norm_pix_loss`` models);
- ``psnr``: 10 log10(1 / MSE) per image from the MSE over masked pixels in [0, 1] pixel space,
  averaged over images (an exact reconstruction is capped at ``PSNR_CAP`` dB);
- ``ssim``: the SSIM map (torchmetrics, Gaussian window 11 / sigma 1.5, data range 1) between the
  original and the pasted-back reconstruction (visible patches from the input, masked ones from the
  prediction), averaged over the masked pixels of each image, then over images. Pasting back shows
  the masked patches in the context the viewer sees; averaging the map over masked pixels keeps
  the exact visible patches from counting, though windows near a patch border see both.

For ``norm_pix_loss`` models the prediction is turned into pixels with each patch's TRUE mean and
standard deviation, which the model never saw: their PSNR/SSIM measure structure within a patch,
not the patch's brightness or contrast.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torchmetrics.functional.image import structural_similarity_index_measure
from tqdm.auto import tqdm

from maelab.augment import denormalize, normalize
from maelab.models.mae import MAE
from maelab.runtime import autocast, choose_precision

# Largest PSNR reported: an exact reconstruction would be +inf, which JSON and means cannot hold.
PSNR_CAP = 100.0


def fixed_noise(num_images: int, num_patches: int, seed: int) -> torch.Tensor:
    """Masking noise (num_images, num_patches) in [0, 1) from a CPU generator seeded with ``seed``."""
    return torch.rand(num_images, num_patches, generator=torch.Generator().manual_seed(seed))


def balanced_indices(labels: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of the first ``n // num_classes`` images of every class (sorted); all if ``n <= 0``."""
    if n <= 0 or n >= len(labels):
        return torch.arange(len(labels))
    classes = labels.unique()
    per_class = max(n // len(classes), 1)
    idx = [torch.nonzero(labels == c).flatten()[:per_class] for c in classes]
    return torch.cat(idx).sort().values


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


def psnr_from_mse(mse: torch.Tensor) -> torch.Tensor:
    """PSNR in dB for signals in [0, 1]: 10 log10(1 / mse), capped at ``PSNR_CAP``."""
    return (10 * torch.log10(1.0 / mse.clamp_min(10 ** (-PSNR_CAP / 10)))).clamp_max(PSNR_CAP)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, pmask: torch.Tensor) -> torch.Tensor:
    """Per-image MSE (B,) over the masked pixels of (B, C, H, W) images; pmask (B, 1, H, W)."""
    m = pmask.expand_as(pred)
    return (((pred - target) ** 2) * m).sum(dim=(1, 2, 3)) / m.sum(dim=(1, 2, 3)).clamp_min(1)


def masked_ssim(pred: torch.Tensor, target: torch.Tensor, pmask: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM (B,): torchmetrics' SSIM map of [0, 1] images averaged over masked pixels."""
    _, ssim_map = structural_similarity_index_measure(
        pred.float(), target.float(), data_range=1.0, return_full_image=True, reduction="none"
    )  # (B, C, H, W)
    m = pmask.expand_as(ssim_map)
    return (ssim_map * m).sum(dim=(1, 2, 3)) / m.sum(dim=(1, 2, 3)).clamp_min(1)


@torch.no_grad()
def evaluate_reconstruction(
    model: MAE,
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    mask_ratio: float | None = None,
    seed: int = 0,
    batch_size: int = 500,
    indices: torch.Tensor | None = None,
    quiet: bool = True,
    precision: str = "auto",
) -> dict[str, float | int | str]:
    """Reconstruction quality of ``model`` on uint8 ``images`` (N, C, H, W) under fixed masks.

    ``indices`` picks the images to score (default: all); image ``i`` always gets noise row ``i``
    of :func:`fixed_noise` (N rows), so a subset sees the same masks as the full split. The model runs
    under ``precision`` (auto | fp32 | bf16, see ``runtime.choose_precision``).
    Returns mse_loss_space, psnr, ssim (means over images), mask_ratio, num_images, seed, precision, precision_reason.
    """
    ratio = model.mask_ratio if mask_ratio is None else mask_ratio
    noise = fixed_noise(images.shape[0], model.num_patches, seed)
    idx = torch.arange(images.shape[0]) if indices is None else indices.cpu()
    device = next(model.parameters()).device
    choice = choose_precision(precision, device)
    sums = {"mse_loss_space": 0.0, "psnr": 0.0, "ssim": 0.0}
    for start in tqdm(range(0, len(idx), batch_size), disable=quiet, desc="reconstruction", unit="batch"):
        batch = idx[start : start + batch_size]
        r = reconstruct(model, images[batch.to(images.device)].to(device), mean, std, noise[batch], ratio, choice.dtype)
        sums["mse_loss_space"] += r.loss_space_mse.sum().item()
        sums["psnr"] += psnr_from_mse(masked_mse(r.prediction, r.original, r.mask)).sum().item()
        sums["ssim"] += masked_ssim(r.pasted, r.original, r.mask).sum().item()
    out = {k: v / len(idx) for k, v in sums.items()}
    return {**out, "mask_ratio": ratio, "num_images": len(idx), "seed": seed, **choice.as_dict()}

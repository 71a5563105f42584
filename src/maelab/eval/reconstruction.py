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

import torch
from torchmetrics.functional.image import structural_similarity_index_measure
from tqdm.auto import tqdm

from maelab.models.mae import MAE
from maelab.runtime import choose_precision
from maelab.visualize import fixed_noise, reconstruct

# Largest PSNR reported: an exact reconstruction would be +inf, which JSON and means cannot hold.
PSNR_CAP = 100.0


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

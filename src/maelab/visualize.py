"""Reconstruction figures: one row per test image, columns original | masked input | reconstruction |
reconstruction with the visible patches pasted back.

Images and masks are chosen by a seed (images by a seeded permutation of the test split, masks by
row ``i`` of :func:`maelab.eval.reconstruction.fixed_noise` for image ``i``), so figures of different
runs with the same seed show the same images under the same masks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from maelab.eval.reconstruction import reconstruct
from maelab.models.mae import MAE

# Masked patches in the masked-input panel are painted this grey (in [0, 1] pixels).
GREY = 0.5
COLUMNS = ("original", "masked input", "reconstruction", "recon. + visible")
NORM_PIX_NOTE = (
    "norm_pix_loss model: predicted patches were un-normalised with each patch's true mean and std, "
    "information the model did not see"
)


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

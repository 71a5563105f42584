"""Reconstruction figures: one row per test image, columns original | masked input | reconstruction |
reconstruction with the visible patches pasted back.

Images and masks are chosen by a seed (images by a seeded permutation of the test split, masks by
row ``i`` of :func:`maelab.eval.reconstruction.fixed_noise` for image ``i``), so figures of different
runs with the same seed show the same images under the same masks.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from maelab.eval.reconstruction import fixed_noise, reconstruct
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


def reconstruct_run(
    run: str | Path,
    n: int = 8,
    out: str | Path | None = None,
    mask_ratio: float | None = None,
    seed: int = 0,
    data_dir: str | None = None,
    num_eval: int = 2000,
    device: str = "auto",
    quiet: bool = False,
) -> dict[str, Any]:
    """What ``maelab reconstruct RUN`` does: the figure of ``n`` test images and the reconstruction
    metrics over ``num_eval`` class-balanced test images (0 = all), both under the masks
    of ``seed``; writes ``RUN/eval/reconstruction_mr<R>_seed<S>.{json,md}`` and returns the result."""
    from maelab.config import ConfigError
    from maelab.data import load_split
    from maelab.eval.reconstruction import balanced_indices, evaluate_reconstruction
    from maelab.eval.results import markdown_table, write_eval_report
    from maelab.methods import load_model
    from maelab.runtime import resolve_device

    start = time.perf_counter()
    dev = resolve_device(device)
    model, cfg = load_model(str(run), dev)
    if not isinstance(model, MAE):
        raise ConfigError(f"{run}: reconstruction needs an MAE run, this is a {cfg.train.method!r} run")
    model.set_fused_attention(dev.type == "cuda")
    ratio = model.mask_ratio if mask_ratio is None else mask_ratio
    if not 0.0 <= ratio < 1.0:
        raise ConfigError(f"--mask-ratio must be in [0, 1), got {ratio}")
    if n < 1:
        raise ConfigError(f"--n must be >= 1, got {n}")
    d = cfg.data
    test = load_split(data_dir or d.data_dir, "test", d.dataset, cfg.model.img_size, d.resize, d.skip_bad_images)
    name = f"reconstruction_mr{ratio:g}_seed{seed}"
    figure = Path(out) if out else Path(run) / "eval" / f"{name}.png"

    idx = choose_images(len(test), min(n, len(test)), seed)
    noise = fixed_noise(len(test), model.num_patches, seed)
    panels = reconstruction_panels(model, test.images[idx].to(dev), d.mean, d.std, noise[idx], ratio)
    caption = NORM_PIX_NOTE if model.norm_pix_loss else ""
    save_figure(panels, figure, f"{Path(run).name}: mask ratio {ratio:g}, seed {seed}", caption)

    metrics = evaluate_reconstruction(
        model, test.images, d.mean, d.std, ratio, seed, indices=balanced_indices(test.labels, num_eval), quiet=quiet
    )
    result = {
        "run": str(run), "figure": str(figure), "trained_mask_ratio": model.mask_ratio,
        "norm_pix_loss": model.norm_pix_loss, **metrics, "wall_time_s": round(time.perf_counter() - start, 2),
    }  # fmt: skip
    table = markdown_table(
        ["mask ratio", "images", "MSE (loss space)", "PSNR masked (dB)", "SSIM masked"],
        [[ratio, metrics["num_images"], metrics["mse_loss_space"], metrics["psnr"], metrics["ssim"]]],
    )
    note = f"\n{NORM_PIX_NOTE}.\n" if model.norm_pix_loss else ""
    markdown = f"# Reconstruction of {run} (test split, mask seed {seed})\n\n{table}\nFigure: {figure}\n{note}"
    result["json"], result["markdown"] = map(str, write_eval_report(run, name, result, markdown))
    result["table"] = table
    return result

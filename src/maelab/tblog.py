"""TensorBoard logging of a pretraining run (``--tensorboard``): scalars and reconstruction grids.

Event files go to ``RUN/tensorboard/`` (view with ``tensorboard --logdir RUN``). Every metrics
record of the training loop becomes the scalars ``train/loss``, ``train/lr``, ``train/img_per_s``;
every ``--tensorboard-every`` epochs an image ``reconstructions`` shows the same 8 test images under
the same masks (a seeded choice of images and a seeded noise tensor), so that pictures of
successive epochs differ only by what the model learned. Rows are images, columns
:data:`maelab.visualize.COLUMNS`. Logging never touches the global RNG, so training with and
without it is identical.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from maelab.config import Config, ConfigError

NUM_IMAGES = 8
# Images are 32 px; shown 4x larger (nearest neighbour) so patches stay visible in the browser.
MIN_SIDE_PX = 128
SCALARS = {"loss": "train/loss", "lr": "train/lr", "img_per_s": "train/img_per_s"}
IMAGE_TAG = "reconstructions"


def _summary_writer(log_dir: Path, purge_step: int | None) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:  # torch raises this when the tensorboard package is missing
        raise ConfigError(
            "--tensorboard needs the tensorboard package: pip install 'maelab[tensorboard]' (or pip install tensorboard)"
        ) from e
    return SummaryWriter(str(log_dir), purge_step=purge_step)


class TensorBoardLogger:
    """Writes a run's scalars and fixed-image reconstruction grids to ``run_dir/tensorboard``.

    ``purge_step``: when a run is resumed from step S, events after S from the first attempt are
    hidden by TensorBoard, as the metrics file drops them.
    """

    def __init__(self, run_dir: str | Path, cfg: Config, purge_step: int | None = None, seed: int = 0) -> None:
        self.log_dir = Path(run_dir) / "tensorboard"
        self.writer = _summary_writer(self.log_dir, purge_step or None)  # first: fail early without tensorboard

        from maelab.data import load_data
        from maelab.visualize import choose_images, fixed_noise

        self.cfg = cfg
        d = cfg.data
        test = load_data(d, "test", cfg.model.img_size)
        idx = choose_images(len(test), min(NUM_IMAGES, len(test)), seed)
        self.images = test.images[idx]  # (n, C, H, W) uint8, kept on the CPU
        grid = cfg.model.img_size // cfg.model.patch_size
        self.noise = fixed_noise(len(idx), grid * grid, seed)  # (n, N): the same masks at every call

    def log_scalars(self, step: int, record: dict[str, Any]) -> None:
        """Write loss, lr and img/s of one metrics record (``train.py``'s dict) at ``step``."""
        for key, tag in SCALARS.items():
            if key in record:
                self.writer.add_scalar(tag, float(record[key]), step)

    @torch.no_grad()
    def log_reconstructions(self, step: int, model: nn.Module) -> None:
        """Write the (n rows x 4 columns) reconstruction grid of the fixed images at ``step``.

        Runs the model in eval mode and fp32 and restores its training mode afterwards. Models
        without a pixel decoder are skipped.
        """
        from maelab.models.mae import MAE
        from maelab.visualize import reconstruction_panels

        if not isinstance(model, MAE):
            return
        was_training = model.training
        model.eval()
        try:
            device = next(model.parameters()).device
            panels = reconstruction_panels(
                model, self.images.to(device), self.cfg.data.mean, self.cfg.data.std, self.noise
            )  # (n, 4, C, H, W) in [0, 1]
        finally:
            model.train(was_training)
        self.writer.add_image(IMAGE_TAG, image_grid(panels), step)
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()


def image_grid(panels: torch.Tensor, min_side: int = MIN_SIDE_PX) -> torch.Tensor:
    """panels (n, cols, C, H, W) in [0, 1] -> one (C, H', W') image, a row per image, upscaled."""
    from torchvision.utils import make_grid

    n, cols = panels.shape[:2]
    flat = panels.reshape(n * cols, *panels.shape[2:]).float()
    scale = max(1, -(-min_side // flat.shape[-1]))  # ceil division
    flat = F.interpolate(flat, scale_factor=scale, mode="nearest")
    return make_grid(flat, nrow=cols, padding=2, pad_value=1.0)

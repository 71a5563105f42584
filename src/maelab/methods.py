"""The registry of pretraining methods: every method goes through the same training loop.

A method says how to build its module from a config and how to turn a batch of uint8 images
(already on the device) into a scalar loss, augmentation included. The module's ``state_dict``
is what checkpoints store. Optional hooks let a method keep per-step schedules (``setup``), touch
gradients before the optimizer step (``before_step``), update an EMA teacher (``after_step``) and
add scalars to the metrics records (``metrics``). Every module has ``forward_features(imgs)`` ->
(B, 1 + N, D) and ``encoder_state_dict()`` (timm names), so one evaluation path serves all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from maelab.augment import mae_augment
from maelab.augment_dino import dino_multicrop
from maelab.config import Config, ConfigError
from maelab.models.dino import DINO, DINOSpec
from maelab.models.mae import MAE, MAESpec
from maelab.models.vit import spec_from


@dataclass(frozen=True)
class Method:
    """build(config) -> module; loss(module, uint8 batch (B, C, H, W), config) -> scalar loss."""

    build: Callable[[Config], nn.Module]
    loss: Callable[[nn.Module, torch.Tensor, Config], torch.Tensor]
    # Called after every optimizer step with (module, step), e.g. for an EMA teacher.
    after_step: Callable[[nn.Module, int], None] | None = None
    # Called once before training with (module, steps_per_epoch, total_steps, start_step): schedules.
    setup: Callable[[nn.Module, int, int, int], None] | None = None
    # Called after backward, before gradient clipping and the optimizer step, with (module, step).
    before_step: Callable[[nn.Module, int], None] | None = None
    # Extra scalars for a metrics record (called at log steps only, where the loop syncs anyway).
    metrics: Callable[[nn.Module], dict[str, float]] | None = None


def build_mae(cfg: Config) -> MAE:
    """The MAE described by ``cfg.model`` (its fields are :class:`~maelab.models.mae.MAESpec`'s, by name)."""
    return MAE(spec_from(MAESpec, cfg.model))


def mae_loss(model: nn.Module, batch: torch.Tensor, cfg: Config) -> torch.Tensor:
    """Random-resized-crop + flip on the device, then the masked-patch MSE."""
    d = cfg.data
    x = mae_augment(batch, d.mean, d.std, cfg.model.img_size, d.crop_min_scale, d.hflip)
    loss, _, _ = model(x)
    return loss


def build_dino(cfg: Config) -> DINO:
    """The DINO student/teacher pair on the encoder described by ``cfg.model``, head and loss by ``cfg.dino``."""
    return DINO(spec_from(DINOSpec, cfg.model, cfg.dino))


def dino_loss(model: nn.Module, batch: torch.Tensor, cfg: Config) -> torch.Tensor:
    """Multi-crop augmentation on the device (2 global + L local crops), then the DINO loss."""
    crops = dino_multicrop(batch, cfg.data.mean, cfg.data.std, cfg.dino, cfg.data.hflip)
    return model(crops)


METHODS: dict[str, Method] = {
    "mae": Method(build=build_mae, loss=mae_loss),
    "dino": Method(
        build=build_dino,
        loss=dino_loss,
        after_step=DINO.after_step,
        setup=DINO.setup,
        before_step=DINO.before_optimizer_step,
        metrics=DINO.log_metrics,
    ),
}


def get_method(name: str) -> Method:
    """Look up a method by name; the error (a ConfigError, so the CLI prints it) lists the known ones."""
    if name not in METHODS:
        raise ConfigError(f"unknown --method {name!r}; choose one of {sorted(METHODS)}")
    return METHODS[name]


def load_model(run_or_checkpoint: str, device: str | torch.device = "cpu") -> tuple[nn.Module, Config]:
    """Rebuild a trained module (e.g. the MAE) from a run or checkpoint directory alone, in eval mode.

    Weights come from safetensors and the config from the checkpoint's JSON metadata: nothing is
    unpickled. Returns (module, config).
    """
    from maelab import checkpoint as ckpt
    from maelab.config import config_from_dict

    found = ckpt.resolve_checkpoint(run_or_checkpoint)
    meta = ckpt.load_meta(found)
    cfg = config_from_dict(meta["config"], str(found / "meta.json"))
    module = get_method(cfg.train.method).build(cfg)
    ckpt.load_state_strict(module, ckpt.load_weights(found), str(found))
    return module.to(device).eval(), cfg

"""The registry of pretraining methods: every method goes through the same training loop.

A method says how to build its module from a config and how to turn a batch of uint8 images
(already on the device) into a scalar loss, augmentation included. The module's ``state_dict``
is what checkpoints store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from maelab.augment import mae_augment
from maelab.config import Config
from maelab.models.mae import MAE


@dataclass(frozen=True)
class Method:
    """build(config) -> module; loss(module, uint8 batch (B, C, H, W), config) -> scalar loss."""

    build: Callable[[Config], nn.Module]
    loss: Callable[[nn.Module, torch.Tensor, Config], torch.Tensor]
    # Called after every optimizer step with (module, step), e.g. for an EMA teacher.
    after_step: Callable[[nn.Module, int], None] | None = None


def build_mae(cfg: Config) -> MAE:
    """The MAE described by ``cfg.model``."""
    m = cfg.model
    return MAE(
        img_size=m.img_size, patch_size=m.patch_size, in_channels=m.in_channels, embed_dim=m.embed_dim,
        encoder_depth=m.encoder_depth, encoder_heads=m.encoder_heads, decoder_embed_dim=m.decoder_embed_dim,
        decoder_depth=m.decoder_depth, decoder_heads=m.decoder_heads, mask_ratio=m.mask_ratio,
        norm_pix_loss=m.norm_pix_loss, mlp_ratio=m.mlp_ratio, pos_embed=m.pos_embed, drop_path=m.drop_path,
    )  # fmt: skip


def mae_loss(model: nn.Module, batch: torch.Tensor, cfg: Config) -> torch.Tensor:
    """Random-resized-crop + flip on the device, then the masked-patch MSE."""
    d = cfg.data
    x = mae_augment(batch, d.mean, d.std, cfg.model.img_size, d.crop_min_scale, d.hflip)
    loss, _, _ = model(x)
    return loss


METHODS: dict[str, Method] = {"mae": Method(build=build_mae, loss=mae_loss)}


def get_method(name: str) -> Method:
    """Look up a method by name; the error lists the known ones."""
    if name not in METHODS:
        raise ValueError(f"unknown --method {name!r}; choose one of {sorted(METHODS)}")
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

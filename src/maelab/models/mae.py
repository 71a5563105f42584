"""Masked Autoencoder (He et al. 2022), reading top to bottom like the paper.

patchify -> patch embedding + positional embedding -> random masking (keep 1 - mask_ratio)
-> encoder on the visible tokens + CLS only -> decoder on encoded tokens + one shared mask token
at every masked position (un-shuffled with ``ids_restore``) + decoder positional embedding
-> pixel prediction for every patch -> MSE on the masked patches only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from maelab.models.masking import num_visible, patchify, random_masking, unpatchify
from maelab.models.vit import (
    ENCODER_PREFIXES,
    EncoderSpec,
    ViTEncoder,
    get_preset,
    init_mae_weights,
    make_blocks,
    norm_layer,
    sincos_pos_embed,
    spec_from,
)

__all__ = ["ENCODER_PREFIXES", "MAE", "MAESpec"]


@dataclass(frozen=True)
class MAESpec(EncoderSpec):
    """An MAE: its encoder's :class:`EncoderSpec` plus the decoder and the loss (names as ``ModelConfig``'s)."""

    decoder_embed_dim: int = 128
    decoder_depth: int = 2
    decoder_heads: int = 4
    mask_ratio: float = 0.75  # fraction of patches removed per image
    norm_pix_loss: bool = False  # regress per-patch normalised pixels

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.decoder_embed_dim % self.decoder_heads:
            raise ValueError(
                f"decoder_embed_dim={self.decoder_embed_dim} is not divisible by decoder_heads={self.decoder_heads}"
            )
        num_visible(self.grid**2, self.mask_ratio)


class MAE(ViTEncoder):
    """ViT masked autoencoder: a :class:`ViTEncoder` (timm ``VisionTransformer`` names) plus masking and a decoder.

    ``MAE(img_size=32, patch_size=4, embed_dim=256, encoder_depth=4, ...)`` takes the fields of
    :class:`MAESpec` as keywords; ``MAE(spec, **fields)`` starts from a spec (an :class:`EncoderSpec`
    gives the encoder). The encoder's parameters sit at the top level
    (``cls_token``, ``blocks.0...``), so ``encoder_state_dict()`` loads strict into timm.
    """

    def __init__(self, spec: EncoderSpec | None = None, **fields: Any) -> None:
        spec = spec_from(MAESpec, spec, **fields)
        super().__init__(spec, init_weights=False)  # initialised below, with the decoder
        self.spec: MAESpec = spec
        self.config: dict[str, Any] = dataclasses.asdict(spec)
        self.in_channels = spec.in_channels
        self.mask_ratio = spec.mask_ratio
        self.norm_pix_loss = spec.norm_pix_loss
        self.num_patches = spec.grid**2
        dd, learned = spec.decoder_embed_dim, spec.pos_embed == "learned"

        # --- decoder ---
        self.decoder_embed = nn.Linear(spec.embed_dim, dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dd))
        self.decoder_pos_embed = nn.Parameter(sincos_pos_embed(spec.grid, dd), requires_grad=learned)
        self.decoder_blocks = make_blocks(dd, spec.decoder_depth, spec.decoder_heads, spec.mlp_ratio)
        self.decoder_norm = norm_layer(dd)
        self.decoder_pred = nn.Linear(dd, spec.patch_size**2 * spec.in_channels)

        self._init_weights()

    @classmethod
    def from_preset(cls, name: str, patch_size: int = 4, **overrides: Any) -> MAE:
        """Build a named preset (``ref``, ``vit-tiny``, ``vit-small``) at patch size 2 or 4."""
        sizes = vars(get_preset(name)).copy()
        sizes.update(overrides)
        return cls(patch_size=patch_size, **sizes)

    def _init_weights(self) -> None:
        # One pass over encoder and decoder, in the draw order the MAE always had, so seeded weights are unchanged.
        learned = [self.pos_embed, self.decoder_pos_embed] if self.pos_embed.requires_grad else []
        init_mae_weights(self, [self.cls_token, self.mask_token, *learned])

    # ------------------------------------------------------------------ patches
    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, p*p*C), row-major patches, pixels ordered (p, p, C)."""
        return patchify(imgs, self.patch_size)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, N, p*p*C) -> (B, C, H, W)."""
        return unpatchify(patches, self.patch_size, self.in_channels)

    # ------------------------------------------------------------------ encoder
    def forward_encoder(
        self, imgs: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode the visible patches of ``imgs`` (B, C, H, W).

        Returns latent (B, 1 + N_visible, D) with CLS first, mask (B, N) with 1 = masked, and
        ids_restore (B, N). ``mask_ratio=0`` keeps every patch in its original order (then the
        latent equals :meth:`forward_features`).
        """
        x = self.embed_patches(imgs)  # (B, N, D): positions are added before masking
        b, n, _ = x.shape
        if mask_ratio == 0 and noise is None:
            mask = torch.zeros(b, n, device=x.device)
            ids_restore = torch.arange(n, device=x.device).expand(b, n)
        else:
            x, mask, ids_restore = random_masking(x, mask_ratio, noise)  # (B, N_visible, D)
        return self.transform(self.prepend_cls(x)), mask, ids_restore

    # ------------------------------------------------------------------ decoder
    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Predict pixels of every patch: latent (B, 1 + N_visible, D) -> (B, N, p*p*C)."""
        x = self.decoder_embed(latent)  # (B, 1 + N_visible, Dd)
        b, n = ids_restore.shape
        n_visible = x.shape[1] - 1
        mask_tokens = self.mask_token.to(x.dtype).expand(b, n - n_visible, -1)
        patches = torch.cat([x[:, 1:, :], mask_tokens], dim=1)  # shuffled order: visible first
        patches = torch.gather(patches, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[2]))
        x = torch.cat([x[:, :1, :], patches], dim=1) + self.decoder_pos_embed
        for block in self.decoder_blocks:
            x = block(x)
        x = self.decoder_norm(x)
        return self.decoder_pred(x[:, 1:, :])  # drop CLS

    # ------------------------------------------------------------------ loss
    def target(self, imgs: torch.Tensor) -> torch.Tensor:
        """Regression target (B, N, p*p*C): pixels, or per-patch normalised pixels if ``norm_pix_loss``."""
        target = self.patchify(imgs).float()
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        return target

    def forward_loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean over masked patches of the per-patch MSE. pred (B, N, p*p*C), mask (B, N) 1 = masked."""
        per_patch = ((pred.float() - self.target(imgs)) ** 2).mean(dim=-1)  # (B, N)
        return (per_patch * mask).sum() / mask.sum()

    def forward(
        self, imgs: torch.Tensor, mask_ratio: float | None = None, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """imgs (B, C, H, W) -> loss (scalar), pred (B, N, p*p*C), mask (B, N) with 1 = masked."""
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        latent, mask, ids_restore = self.forward_encoder(imgs, ratio, noise)
        pred = self.forward_decoder(latent, ids_restore)
        return self.forward_loss(imgs, pred, mask), pred, mask

"""Masked Autoencoder (He et al. 2022), reading top to bottom like the paper.

patchify -> patch embedding + positional embedding -> random masking (keep 1 - mask_ratio)
-> encoder on the visible tokens + CLS only -> decoder on encoded tokens + one shared mask token
at every masked position (un-shuffled with ``ids_restore``) + decoder positional embedding
-> pixel prediction for every patch -> MSE on the masked patches only.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.layers import PatchEmbed
from torch import nn

from maelab.models.masking import num_visible, patchify, random_masking, unpatchify
from maelab.models.vit import (
    get_preset,
    init_mae_weights,
    make_blocks,
    norm_layer,
    set_fused_attention,
    sincos_pos_embed,
)

# Keys of the encoder in timm's VisionTransformer naming; everything else belongs to the decoder.
ENCODER_PREFIXES = ("cls_token", "pos_embed", "patch_embed.", "blocks.", "norm.")


class MAE(nn.Module):
    """ViT masked autoencoder whose encoder uses timm ``VisionTransformer`` parameter names."""

    def __init__(
        self,
        img_size: int = 32,
        patch_size: int = 4,
        in_channels: int = 3,
        embed_dim: int = 256,
        encoder_depth: int = 4,
        encoder_heads: int = 4,
        decoder_embed_dim: int = 128,
        decoder_depth: int = 2,
        decoder_heads: int = 4,
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = False,
        mlp_ratio: float = 4.0,
        pos_embed: str = "sincos",
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size={img_size} is not divisible by patch_size={patch_size}")
        if embed_dim % encoder_heads or decoder_embed_dim % decoder_heads:
            raise ValueError(
                f"embed_dim={embed_dim} / encoder_heads={encoder_heads} and decoder_embed_dim="
                f"{decoder_embed_dim} / decoder_heads={decoder_heads} must divide evenly"
            )
        if pos_embed not in ("sincos", "learned"):
            raise ValueError(f"pos_embed must be 'sincos' or 'learned', got {pos_embed!r}")
        self.config: dict[str, Any] = dict(
            img_size=img_size, patch_size=patch_size, in_channels=in_channels, embed_dim=embed_dim,
            encoder_depth=encoder_depth, encoder_heads=encoder_heads, decoder_embed_dim=decoder_embed_dim,
            decoder_depth=decoder_depth, decoder_heads=decoder_heads, mask_ratio=mask_ratio,
            norm_pix_loss=norm_pix_loss, mlp_ratio=mlp_ratio, pos_embed=pos_embed, drop_path=drop_path,
        )  # fmt: skip
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss
        grid = img_size // patch_size
        self.num_patches = grid * grid
        num_visible(self.num_patches, mask_ratio)
        learned = pos_embed == "learned"

        # --- encoder (timm VisionTransformer names) ---
        self.patch_embed = PatchEmbed(img_size, patch_size, in_channels, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(sincos_pos_embed(grid, embed_dim), requires_grad=learned)
        self.blocks = make_blocks(embed_dim, encoder_depth, encoder_heads, mlp_ratio, drop_path)
        self.norm = norm_layer(embed_dim)

        # --- decoder ---
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(sincos_pos_embed(grid, decoder_embed_dim), requires_grad=learned)
        self.decoder_blocks = make_blocks(decoder_embed_dim, decoder_depth, decoder_heads, mlp_ratio)
        self.decoder_norm = norm_layer(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size * patch_size * in_channels)

        self._init_weights()

    @classmethod
    def from_preset(cls, name: str, patch_size: int = 4, **overrides: Any) -> MAE:
        """Build a named preset (``ref``, ``vit-tiny``, ``vit-small``) at patch size 2 or 4."""
        sizes = vars(get_preset(name)).copy()
        sizes.update(overrides)
        return cls(patch_size=patch_size, **sizes)

    def _init_weights(self) -> None:
        # Same draw order as before the helper existed, so seeded weights are unchanged.
        learned = [self.pos_embed, self.decoder_pos_embed] if self.pos_embed.requires_grad else []
        init_mae_weights(self, [self.cls_token, self.mask_token, *learned])

    def set_fused_attention(self, enabled: bool) -> None:
        """Use SDPA (``True``, GPUs) or explicit matmul-softmax attention (``False``, CPUs)."""
        set_fused_attention(self, enabled)

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
        ids_restore (B, N). ``mask_ratio=0`` keeps every patch in its original order.
        """
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:, :]  # (B, N, D)
        b, n, _ = x.shape
        if mask_ratio == 0 and noise is None:
            mask = torch.zeros(b, n, device=x.device)
            ids_restore = torch.arange(n, device=x.device).expand(b, n)
        else:
            x, mask, ids_restore = random_masking(x, mask_ratio, noise)  # (B, N_visible, D)
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(b, -1, -1)
        x = torch.cat([cls, x], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x), mask, ids_restore

    def forward_features(self, imgs: torch.Tensor) -> torch.Tensor:
        """All tokens of the unmasked image, as timm's ``forward_features``: (B, 1 + N, D)."""
        return self.forward_encoder(imgs, 0.0)[0]

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

    # ------------------------------------------------------------------ export helpers
    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The encoder's weights under timm ``VisionTransformer`` names."""
        return {k: v for k, v in self.state_dict().items() if k.startswith(ENCODER_PREFIXES)}

"""ViT building blocks shared by every method: presets, positional embeddings, timm blocks.

The encoder's parameters carry timm ``VisionTransformer`` names (``cls_token``, ``pos_embed``,
``patch_embed.proj``, ``blocks.N.*``, ``norm``) so its state dict loads strict into
``timm.create_model("vit_base_patch16_224", **timm_kwargs(config))``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from timm.layers.pos_embed_sincos import build_sincos2d_pos_embed
from timm.models.vision_transformer import Block
from torch import nn

# LayerNorm eps 1e-6 as in timm's ViT and the MAE paper's code.
norm_layer = partial(nn.LayerNorm, eps=1e-6)


@dataclass(frozen=True)
class Preset:
    """Encoder/decoder sizes of a named model; the patch size is chosen separately (2 or 4)."""

    embed_dim: int
    encoder_depth: int
    encoder_heads: int
    decoder_embed_dim: int
    decoder_depth: int
    decoder_heads: int
    mlp_ratio: float = 4.0


PRESETS: dict[str, Preset] = {
    # The small reference model of this project: fast enough to pretrain on a 2-core CPU.
    "ref": Preset(256, 4, 4, 128, 2, 4),
    # ViT-Tiny / ViT-Small encoders (DeiT sizes) with a light decoder suited to 32x32 images.
    "vit-tiny": Preset(192, 12, 3, 128, 2, 4),
    "vit-small": Preset(384, 12, 6, 256, 4, 8),
}


def get_preset(name: str) -> Preset:
    """Look up a preset by name (``ref``, ``vit-tiny``, ``vit-small``; ``_`` and ``-`` are equal)."""
    key = name.lower().replace("_", "-")
    if key not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[key]


def sincos_pos_embed(grid_size: int, dim: int, cls_token: bool = True) -> torch.Tensor:
    """Fixed 2-D sin-cos positional embedding, row-major over the grid.

    Returns (1, [1 +] grid_size**2, dim); the CLS position (if any) gets zeros, as in MAE.
    """
    pe = build_sincos2d_pos_embed([grid_size, grid_size], dim=dim)  # (N, dim)
    if cls_token:
        pe = torch.cat([torch.zeros(1, dim), pe], dim=0)
    return pe.unsqueeze(0)


def make_blocks(dim: int, depth: int, heads: int, mlp_ratio: float, drop_path: float = 0.0) -> nn.ModuleList:
    """``depth`` timm transformer blocks (pre-norm, qkv bias, GELU MLP), drop path rising linearly."""
    rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
    return nn.ModuleList(
        Block(dim, heads, mlp_ratio=mlp_ratio, qkv_bias=True, norm_layer=norm_layer, drop_path=r) for r in rates
    )


def set_fused_attention(module: nn.Module, enabled: bool) -> None:
    """Choose the attention kernel of every timm block in ``module``.

    ``True`` uses ``F.scaled_dot_product_attention`` (right on GPUs); ``False`` the explicit
    matmul-softmax path, which is faster on CPUs at the short sequences of small images.
    """
    for m in module.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = enabled


def init_vit_weights(module: nn.Module) -> None:
    """MAE initialisation: xavier-uniform linears, zero biases, unit LayerNorms (use with ``apply``)."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def init_mae_weights(module: nn.Module, tokens: list[nn.Parameter]) -> None:
    """The MAE initialisation of a model with a ``patch_embed``: ``tokens`` (CLS / mask tokens, learned
    positional embeddings) ~ N(0, 0.02), xavier-uniform linears, and the patch projection initialised
    as a linear layer (xavier on its flattened weight)."""
    for token in tokens:
        nn.init.normal_(token, std=0.02)
    module.apply(init_vit_weights)
    w = module.patch_embed.proj.weight
    nn.init.xavier_uniform_(w.view(w.shape[0], -1))
    nn.init.zeros_(module.patch_embed.proj.bias)


class ViTEncoder(nn.Module):
    """A ViT encoder alone (no head), its parameters under timm ``VisionTransformer`` names.

    The same building blocks and initialisation as :class:`maelab.models.mae.MAE`'s encoder, so its
    ``state_dict()`` loads into timm exactly like ``MAE.encoder_state_dict()``. Unlike the MAE it
    accepts any input size that is a multiple of the patch size: the positional embedding is
    resampled (bicubic, as DINO's ``interpolate_pos_encoding``) for other grids, e.g. DINO's
    local crops.
    """

    def __init__(
        self,
        img_size: int = 32,
        patch_size: int = 4,
        in_channels: int = 3,
        embed_dim: int = 256,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        pos_embed: str = "sincos",
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size={img_size} is not divisible by patch_size={patch_size}")
        if embed_dim % heads:
            raise ValueError(f"embed_dim={embed_dim} is not divisible by heads={heads}")
        if pos_embed not in ("sincos", "learned"):
            raise ValueError(f"pos_embed must be 'sincos' or 'learned', got {pos_embed!r}")
        from timm.layers import PatchEmbed

        self.patch_size = patch_size
        self.grid = img_size // patch_size
        self.embed_dim = embed_dim
        learned = pos_embed == "learned"
        self.patch_embed = PatchEmbed(img_size, patch_size, in_channels, embed_dim, strict_img_size=False)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(sincos_pos_embed(self.grid, embed_dim), requires_grad=learned)
        self.blocks = make_blocks(embed_dim, depth, heads, mlp_ratio, drop_path)
        self.norm = norm_layer(embed_dim)
        init_mae_weights(self, [self.cls_token] + ([self.pos_embed] if learned else []))

    def pos_embed_for(self, grid: int) -> torch.Tensor:
        """(1, 1 + grid**2, D): the positional embedding, bicubically resampled when ``grid`` differs."""
        if grid == self.grid:
            return self.pos_embed
        from timm.layers import resample_abs_pos_embed

        return resample_abs_pos_embed(self.pos_embed, [grid, grid], [self.grid, self.grid], num_prefix_tokens=1)

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        """imgs (B, C, H, H) with H a multiple of the patch size -> normed tokens (B, 1 + (H/p)**2, D), CLS first."""
        pos = self.pos_embed_for(imgs.shape[-1] // self.patch_size)
        x = self.patch_embed(imgs) + pos[:, 1:, :]  # (B, N, D)
        cls = (self.cls_token + pos[:, :1, :]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

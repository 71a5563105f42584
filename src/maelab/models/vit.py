"""The ViT encoder every method trains, and its building blocks: presets, positional embeddings, timm blocks.

:class:`ViTEncoder` is the one encoder of maelab: the MAE extends it with masking and a decoder,
DINO wraps two of them (student and teacher). Its sizes are one :class:`EncoderSpec`, whose field
names are those of :class:`maelab.config.ModelConfig`, so a spec is picked from a config by name
(:func:`spec_from`) and no list of constructor arguments is repeated.

The encoder's parameters carry timm ``VisionTransformer`` names (``cls_token``, ``pos_embed``,
``patch_embed.proj``, ``blocks.N.*``, ``norm``) so its state dict loads strict into
``timm.create_model("vit_base_patch16_224", **timm_kwargs(config))``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import torch
from timm.layers import PatchEmbed
from timm.layers.pos_embed_sincos import build_sincos2d_pos_embed
from timm.models.vision_transformer import Block
from torch import nn

# The encoder's keys in timm's VisionTransformer naming (a subclass's other keys are not the encoder's).
ENCODER_PREFIXES = ("cls_token", "pos_embed", "patch_embed.", "blocks.", "norm.")
# LayerNorm eps 1e-6 as in timm's ViT and the MAE paper's code.
norm_layer = partial(nn.LayerNorm, eps=1e-6)
Spec = TypeVar("Spec")


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


@dataclass(frozen=True)
class EncoderSpec:
    """Sizes and options of a ViT encoder; invalid combinations raise ``ValueError`` on construction.

    Field names are those of :class:`maelab.config.ModelConfig` (and of ``MAE(...)``'s arguments).
    """

    img_size: int = 32
    patch_size: int = 4
    in_channels: int = 3
    embed_dim: int = 256
    encoder_depth: int = 4
    encoder_heads: int = 4
    mlp_ratio: float = 4.0
    pos_embed: str = "sincos"  # "sincos" (fixed 2-D) or "learned"
    drop_path: float = 0.0  # stochastic depth rate, rising linearly to this value at the last block

    def __post_init__(self) -> None:
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size={self.img_size} is not divisible by patch_size={self.patch_size}")
        if self.embed_dim % self.encoder_heads:
            raise ValueError(f"embed_dim={self.embed_dim} is not divisible by encoder_heads={self.encoder_heads}")
        if self.pos_embed not in ("sincos", "learned"):
            raise ValueError(f"pos_embed must be 'sincos' or 'learned', got {self.pos_embed!r}")

    @property
    def grid(self) -> int:
        """Patches per image side."""
        return self.img_size // self.patch_size


def spec_from(spec_type: type[Spec], *sources: object, **overrides: Any) -> Spec:
    """A ``spec_type`` dataclass whose fields are taken by name from ``sources`` (dataclasses such as
    the config sections or another spec, or mappings; later ones win; ``None`` is skipped) and from
    ``overrides``, which must all be fields. Other names in ``sources`` are ignored."""
    names = {f.name for f in dataclasses.fields(spec_type)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for source in sources:
        if source is None:
            continue
        items = source if isinstance(source, Mapping) else dataclasses.asdict(source)  # type: ignore[call-overload]
        values.update((k, v) for k, v in items.items() if k in names)
    values.update(overrides)
    return spec_type(**values)


class ViTEncoder(nn.Module):
    """A ViT encoder (no head), its parameters under timm ``VisionTransformer`` names.

    ``forward_features(imgs)`` reads like timm's: :meth:`embed_patches` (patch embedding + positions)
    -> :meth:`prepend_cls` -> :meth:`transform` (blocks + final norm). Methods that change the token
    sequence (the MAE's masking) call these steps themselves. Any input size that is a multiple of
    the patch size works: the positional embedding is resampled (bicubic, as DINO's
    ``interpolate_pos_encoding``) for other grids, e.g. DINO's local crops.

    ``init_weights=False`` leaves the MAE initialisation to a subclass that adds modules (the MAE
    initialises encoder and decoder in one pass, so that seeded weights stay what they were).
    """

    def __init__(self, spec: EncoderSpec | None = None, *, init_weights: bool = True) -> None:
        super().__init__()
        spec = spec if spec is not None else EncoderSpec()
        self.spec = spec
        self.patch_size = spec.patch_size
        self.grid = spec.grid
        self.embed_dim = spec.embed_dim
        learned = spec.pos_embed == "learned"
        self.patch_embed = PatchEmbed(
            spec.img_size, spec.patch_size, spec.in_channels, spec.embed_dim, strict_img_size=False
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, spec.embed_dim))
        self.pos_embed = nn.Parameter(sincos_pos_embed(spec.grid, spec.embed_dim), requires_grad=learned)
        self.blocks = make_blocks(
            spec.embed_dim, spec.encoder_depth, spec.encoder_heads, spec.mlp_ratio, spec.drop_path
        )
        self.norm = norm_layer(spec.embed_dim)
        if init_weights:
            init_mae_weights(self, [self.cls_token] + ([self.pos_embed] if learned else []))

    def pos_embed_for(self, grid: int) -> torch.Tensor:
        """(1, 1 + grid**2, D): the positional embedding, bicubically resampled when ``grid`` differs."""
        if grid == self.grid:
            return self.pos_embed
        from timm.layers import resample_abs_pos_embed

        return resample_abs_pos_embed(self.pos_embed, [grid, grid], [self.grid, self.grid], num_prefix_tokens=1)

    def embed_patches(self, imgs: torch.Tensor) -> torch.Tensor:
        """imgs (B, C, H, H) -> patch tokens with their positions added (B, N, D), N = (H/p)**2, no CLS."""
        pos = self.pos_embed_for(imgs.shape[-1] // self.patch_size)
        return self.patch_embed(imgs) + pos[:, 1:, :]

    def prepend_cls(self, x: torch.Tensor) -> torch.Tensor:
        """tokens (B, n, D) -> (B, 1 + n, D): the CLS token (plus its position) in front."""
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)
        return torch.cat([cls, x], dim=1)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """tokens (B, L, D) -> the transformer blocks, then the final norm: (B, L, D)."""
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward_features(self, imgs: torch.Tensor) -> torch.Tensor:
        """imgs (B, C, H, H) -> all normed tokens (B, 1 + N, D), CLS first, as timm's ``forward_features``."""
        return self.transform(self.prepend_cls(self.embed_patches(imgs)))

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`forward_features` (a subclass such as the MAE may return its loss instead)."""
        return self.forward_features(imgs)

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The encoder's weights under timm ``VisionTransformer`` names (a subclass's other modules left out)."""
        return {k: v for k, v in self.state_dict().items() if k.startswith(ENCODER_PREFIXES)}

    def set_fused_attention(self, enabled: bool) -> None:
        """Use SDPA (``True``, GPUs) or explicit matmul-softmax attention (``False``, CPUs), in every block."""
        set_fused_attention(self, enabled)

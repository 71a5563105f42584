"""The MAE implementations maelab is measured against, all at the same sizes.

Every contender is an ``nn.Module`` with ``forward(imgs) -> scalar loss`` (random masking inside,
MSE on the masked patches, as the MAE paper) and ``encode(imgs) -> (B, 1 + N, D)`` (all tokens,
no masking) so one harness times them all. Sizes come from a maelab preset, e.g. ``ref``:
embed 256, depth 4, 4 heads, decoder 128 x 2 with 4 heads, patch 4, MLP ratio 4, 32x32 images.

- ``hf``: HuggingFace ``transformers.ViTMAEForPreTraining`` with ``attn_implementation="sdpa"``.
- ``lightly``: lightly's ``MaskedVisionTransformerTIMM`` around a timm ``VisionTransformer`` plus
  ``MAEDecoderTIMM``, wired as lightly's own MAE example (the decoder predicts masked tokens only).
- ``textbook``: a plain MAE as written from the paper: einops patchify, manual softmax attention.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from maelab.models.vit import get_preset


@dataclass(frozen=True)
class Sizes:
    """Model sizes shared by every contender."""

    img_size: int
    patch_size: int
    embed_dim: int
    depth: int
    heads: int
    decoder_dim: int
    decoder_depth: int
    decoder_heads: int
    mlp_ratio: float
    mask_ratio: float

    @classmethod
    def from_preset(cls, name: str, patch_size: int = 4, img_size: int = 32, mask_ratio: float = 0.75) -> Sizes:
        p = get_preset(name)
        return cls(img_size, patch_size, p.embed_dim, p.encoder_depth, p.encoder_heads, p.decoder_embed_dim,
                   p.decoder_depth, p.decoder_heads, p.mlp_ratio, mask_ratio)  # fmt: skip


# ------------------------------------------------------------------------------------ HuggingFace
class HFMAE(nn.Module):
    """``transformers.ViTMAEForPreTraining`` (SDPA attention) behind the common interface."""

    def __init__(self, s: Sizes) -> None:
        super().__init__()
        from transformers import ViTMAEConfig, ViTMAEForPreTraining

        config = ViTMAEConfig(
            hidden_size=s.embed_dim, num_hidden_layers=s.depth, num_attention_heads=s.heads,
            intermediate_size=int(s.embed_dim * s.mlp_ratio), image_size=s.img_size, patch_size=s.patch_size,
            num_channels=3, qkv_bias=True, decoder_hidden_size=s.decoder_dim,
            decoder_num_hidden_layers=s.decoder_depth, decoder_num_attention_heads=s.decoder_heads,
            decoder_intermediate_size=int(s.decoder_dim * s.mlp_ratio), mask_ratio=s.mask_ratio,
            norm_pix_loss=False, layer_norm_eps=1e-6, attn_implementation="sdpa",
        )  # fmt: skip
        self.net = ViTMAEForPreTraining(config)
        self.mask_ratio = s.mask_ratio

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        self.net.config.mask_ratio = self.mask_ratio
        return self.net(pixel_values=imgs).loss

    def encode(self, imgs: torch.Tensor) -> torch.Tensor:
        self.net.config.mask_ratio = 0.0  # HF masks inside the embeddings; 0 keeps every patch
        return self.net.vit(pixel_values=imgs).last_hidden_state


# ------------------------------------------------------------------------------------ lightly
class LightlyMAE(nn.Module):
    """lightly's MAE modules around a timm ViT, as in lightly's MAE example."""

    def __init__(self, s: Sizes) -> None:
        super().__init__()
        from lightly.models import utils
        from lightly.models.modules import MAEDecoderTIMM, MaskedVisionTransformerTIMM
        from timm.models.vision_transformer import VisionTransformer

        self.utils = utils
        vit = VisionTransformer(
            img_size=s.img_size, patch_size=s.patch_size, embed_dim=s.embed_dim, depth=s.depth,
            num_heads=s.heads, mlp_ratio=s.mlp_ratio, qkv_bias=True, num_classes=0,
        )  # fmt: skip
        self.backbone = MaskedVisionTransformerTIMM(vit=vit)
        with warnings.catch_warnings():  # MAEDecoderTIMM is deprecated in favour of a differently wired class
            warnings.simplefilter("ignore")
            self.decoder = MAEDecoderTIMM(
                num_patches=vit.patch_embed.num_patches, patch_size=s.patch_size, embed_dim=s.embed_dim,
                decoder_embed_dim=s.decoder_dim, decoder_depth=s.decoder_depth, decoder_num_heads=s.decoder_heads,
                mlp_ratio=s.mlp_ratio,
            )  # fmt: skip
        self.patch_size = s.patch_size
        self.mask_ratio = s.mask_ratio
        self.sequence_length = self.backbone.sequence_length

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        u = self.utils
        b = imgs.shape[0]
        idx_keep, idx_mask = u.random_token_mask((b, self.sequence_length), self.mask_ratio, device=imgs.device)
        x = self.backbone.encode(images=imgs, idx_keep=idx_keep)
        x = self.decoder.embed(x)
        x_full = u.repeat_token(self.decoder.mask_token, (b, self.sequence_length))
        x_full = u.set_at_index(x_full, idx_keep, x.type_as(x_full))
        x_pred = self.decoder.predict(u.get_at_index(self.decoder.decode(x_full), idx_mask))
        target = u.get_at_index(u.patchify(imgs, self.patch_size), idx_mask - 1)  # no CLS in patches
        return F.mse_loss(x_pred, target)

    def encode(self, imgs: torch.Tensor) -> torch.Tensor:
        return self.backbone.encode(images=imgs)


# ------------------------------------------------------------------------------------ textbook
class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from einops import rearrange

        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        attn = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # (B, h, n, n), softmax by hand
        out = attn.softmax(dim=-1) @ v
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TextbookMAE(nn.Module):
    """A plain MAE from the paper: einops patchify, argsort masking, manual attention."""

    def __init__(self, s: Sizes) -> None:
        super().__init__()
        n = (s.img_size // s.patch_size) ** 2
        patch_dim = s.patch_size**2 * 3
        self.p, self.mask_ratio = s.patch_size, s.mask_ratio
        self.patch_embed = nn.Linear(patch_dim, s.embed_dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, s.embed_dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, s.embed_dim) * 0.02)
        self.blocks = nn.ModuleList(_Block(s.embed_dim, s.heads, s.mlp_ratio) for _ in range(s.depth))
        self.norm = nn.LayerNorm(s.embed_dim, eps=1e-6)
        self.decoder_embed = nn.Linear(s.embed_dim, s.decoder_dim)
        self.mask_token = nn.Parameter(torch.randn(1, 1, s.decoder_dim) * 0.02)
        self.decoder_pos_embed = nn.Parameter(torch.randn(1, n + 1, s.decoder_dim) * 0.02)
        self.decoder_blocks = nn.ModuleList(
            _Block(s.decoder_dim, s.decoder_heads, s.mlp_ratio) for _ in range(s.decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(s.decoder_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(s.decoder_dim, patch_dim)

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        from einops import rearrange

        return rearrange(imgs, "b c (h p1) (w p2) -> b (h w) (p1 p2 c)", p1=self.p, p2=self.p)

    def _encoder(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        patches = self.patchify(imgs)  # (B, N, p*p*3)
        b, n, _ = patches.shape
        x = self.patch_embed(patches) + self.pos_embed[:, 1:]
        keep = int(n * (1 - self.mask_ratio))
        ids_shuffle = torch.rand(b, n, device=imgs.device).argsort(dim=1)
        ids_restore = ids_shuffle.argsort(dim=1)
        x = torch.gather(x, 1, ids_shuffle[:, :keep, None].expand(-1, -1, x.shape[-1]))
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(b, -1, -1)
        x = self._encoder(torch.cat([cls, x], dim=1))
        x = self.decoder_embed(x)
        y = torch.cat([x[:, 1:], self.mask_token.expand(b, n - keep, -1)], dim=1)
        y = torch.gather(y, 1, ids_restore[:, :, None].expand(-1, -1, y.shape[-1]))
        y = torch.cat([x[:, :1], y], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            y = blk(y)
        pred = self.decoder_pred(self.decoder_norm(y))[:, 1:]
        mask = torch.ones(b, n, device=imgs.device)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        loss = ((pred - patches) ** 2).mean(dim=-1)
        return (loss * mask).sum() / mask.sum()

    def encode(self, imgs: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(self.patchify(imgs)) + self.pos_embed[:, 1:]
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        return self._encoder(torch.cat([cls, x], dim=1))


PEERS: dict[str, Callable[[Sizes], nn.Module]] = {"hf": HFMAE, "lightly": LightlyMAE, "textbook": TextbookMAE}

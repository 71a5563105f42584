"""Models: the one ViT encoder (and its spec), the masking functions, the MAE and DINO."""

from maelab.models.dino import DINO, DINOSpec
from maelab.models.mae import MAE, MAESpec
from maelab.models.masking import patchify, random_masking, unpatchify
from maelab.models.vit import PRESETS, EncoderSpec, ViTEncoder, get_preset, spec_from

__all__ = [
    "DINO", "DINOSpec", "MAE", "MAESpec", "PRESETS", "EncoderSpec", "ViTEncoder", "get_preset", "patchify",
    "random_masking", "spec_from", "unpatchify",
]  # fmt: skip

"""Models: the shared ViT pieces, the masking functions and the MAE."""

from maelab.models.mae import MAE
from maelab.models.masking import patchify, random_masking, unpatchify
from maelab.models.vit import PRESETS, get_preset

__all__ = ["MAE", "PRESETS", "get_preset", "patchify", "random_masking", "unpatchify"]

"""maelab: pretrain Vision Transformers with Masked Autoencoders and measure what they learned."""

from maelab.export import load_encoder
from maelab.models import MAE, PRESETS

__version__ = "0.1.0"
__all__ = ["MAE", "PRESETS", "__version__", "load_encoder"]

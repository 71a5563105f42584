"""A run's encoder as a plain timm ``VisionTransformer``: files for other code bases, or a live model.

The MAE's encoder already carries timm's parameter names, so exporting is a filter of the state
dict plus the ``timm.create_model`` arguments that rebuild the same architecture. Both come from
:func:`timm_kwargs`, the one place that maps a maelab model config to timm; fine-tuning or feature
code that needs a timm ViT of a run should import it rather than rebuild the mapping.

Written files: ``encoder.safetensors`` (weights only, no pickle) and ``encoder.json`` beside it::

    {"model_name": "vit_base_patch16_224", "kwargs": {...}, "source": {...}}

so that ``timm.create_model(j["model_name"], pretrained=False, **j["kwargs"])`` loads the weights
with ``strict=True``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from maelab.checkpoint import CheckpointError, atomic_write, atomic_write_text, load_state_strict, resolve_checkpoint
from maelab.config import ConfigError, ModelConfig

# Every architecture argument is overridden by timm_kwargs; this name only picks timm's ViT class.
TIMM_MODEL_NAME = "vit_base_patch16_224"
FORMATS = ("timm",)


def timm_kwargs(
    model_config: ModelConfig | Mapping[str, Any],
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> dict[str, Any]:
    """``timm.create_model(TIMM_MODEL_NAME, pretrained=False, **kwargs)`` arguments of a maelab encoder.

    ``model_config`` is a :class:`~maelab.config.ModelConfig` or an ``MAE.config`` dict. The model
    has no classifier (``num_classes=0``): its ``forward`` returns the final-norm CLS token (B, D)
    and ``forward_features`` all tokens (B, 1 + N, D), as ``MAE.forward_features``. ``mean``/``std``
    (the run's input normalisation) go into the pretrained config, so that
    ``timm.data.resolve_model_data_config(model)`` reports how inputs must be normalised.
    """
    m = dataclasses.asdict(model_config) if dataclasses.is_dataclass(model_config) else dict(model_config)
    kwargs: dict[str, Any] = {
        "img_size": int(m["img_size"]),
        "patch_size": int(m["patch_size"]),
        "in_chans": int(m["in_channels"]),
        "embed_dim": int(m["embed_dim"]),
        "depth": int(m["encoder_depth"]),
        "num_heads": int(m["encoder_heads"]),
        "mlp_ratio": float(m["mlp_ratio"]),
        "num_classes": 0,
    }
    if mean is not None and std is not None:
        size = (kwargs["in_chans"], kwargs["img_size"], kwargs["img_size"])
        kwargs["pretrained_cfg_overlay"] = {"mean": list(mean), "std": list(std), "input_size": list(size)}
    return kwargs


def create_timm_encoder(kwargs: Mapping[str, Any], model_name: str = TIMM_MODEL_NAME) -> nn.Module:
    """A randomly initialised timm ViT built from :func:`timm_kwargs` (never downloads weights)."""
    import timm

    return timm.create_model(model_name, pretrained=False, **kwargs)


def _run_encoder_state(run: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """The encoder tensors of a run's newest checkpoint (or a checkpoint dir), timm kwargs, source info."""
    from maelab.methods import load_model

    found = resolve_checkpoint(run)
    module, cfg = load_model(str(found))
    if not hasattr(module, "encoder_state_dict"):
        raise ConfigError(f"{run}: method {cfg.train.method!r} has no timm-compatible encoder to export")
    kwargs = timm_kwargs(cfg.model, cfg.data.mean, cfg.data.std)
    source = {"run": str(run), "checkpoint": str(found), "method": cfg.train.method, "model": cfg.model.name}
    return module.encoder_state_dict(), kwargs, source


def load_encoder(run: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The encoder of a run (newest checkpoint) or checkpoint directory as a timm ViT in eval mode.

    Inputs are normalised images (B, C, S, S) (see ``timm.data.resolve_model_data_config``);
    ``model(x)`` gives the CLS feature (B, D), ``model.forward_features(x)`` all tokens (B, 1 + N, D).
    """
    state, kwargs, source = _run_encoder_state(run)
    model = create_timm_encoder(kwargs)
    load_state_strict(model, state, f"encoder of {source['checkpoint']}")
    return model.to(device).eval()


def json_path_for(weights: str | Path) -> Path:
    """The architecture file written beside an exported weights file: ``X.safetensors`` -> ``X.json``."""
    return Path(weights).with_suffix(".json")


def export_encoder(run: str | Path, out: str | Path, fmt: str = "timm") -> tuple[Path, Path]:
    """Write a run's encoder to ``out`` (safetensors) and its timm arguments to ``out`` with ``.json``.

    Returns (weights path, json path). Both files are written atomically.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ConfigError(f"--out {out}: the file name must end in .safetensors")
    state, kwargs, source = _run_encoder_state(run)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    atomic_write(
        out, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "timm", "model_name": TIMM_MODEL_NAME})
    )
    spec = {"format": fmt, "model_name": TIMM_MODEL_NAME, "kwargs": kwargs, "source": source}
    meta_path = json_path_for(out)
    atomic_write_text(meta_path, json.dumps(spec, indent=2) + "\n")
    return out, meta_path


def load_exported(weights: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the timm ViT of an exported ``X.safetensors`` from ``X.json`` and load it strictly (eval mode)."""
    weights = Path(weights)
    meta_path = json_path_for(weights)
    if not weights.is_file() or not meta_path.is_file():
        raise CheckpointError(f"{weights}: expected the weights file and {meta_path} beside it (maelab export)")
    try:
        spec = json.loads(meta_path.read_text())
        name, kwargs = spec["model_name"], spec["kwargs"]
    except (json.JSONDecodeError, KeyError) as e:
        raise CheckpointError(f"{meta_path}: not a maelab export description ({e})") from e
    model = create_timm_encoder(kwargs, name)
    load_state_strict(model, load_file(str(weights)), str(weights))
    return model.to(device).eval()

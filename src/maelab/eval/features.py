"""Frozen features of an encoder, pooled and cached on disk.

An :class:`Encoder` is anything that maps normalised images (B, C, S, S) to tokens (B, T, D) with
``num_prefix_tokens`` leading tokens (CLS, registers) before the patch tokens: the encoder of a
maelab run, the same architecture at random init (the baseline of every report), or a timm model
with a local weights file. Features are extracted once per (encoder weights, images) in eval mode,
without augmentation and with masking off, and stored as safetensors under
``cache_dir()/features/``; the key hashes the weights file, so a changed checkpoint is re-extracted.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from maelab.augment import normalize
from maelab.checkpoint import CheckpointError, atomic_write, load_state_strict, resolve_checkpoint
from maelab.config import Config, ConfigError
from maelab.data import cache_dir
from maelab.models.vit import set_fused_attention
from maelab.runtime import autocast, choose_precision

POOLINGS = ("cls", "mean")
# Bump when extraction changes in a way that alters stored features.
FEATURE_CACHE_VERSION = 1


@dataclass
class Encoder:
    """A frozen encoder: normalised images (B, C, img_size, img_size) -> tokens (B, T, D).

    ``digest`` identifies weights and architecture; together with the preprocessing fields it keys
    the feature cache. ``spec`` says how it was built (JSON-able, written into reports).
    """

    name: str
    module: nn.Module
    tokens: Callable[[torch.Tensor], torch.Tensor]
    num_prefix_tokens: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    img_size: int
    digest: str
    spec: dict[str, Any] = field(default_factory=dict)


@dataclass
class FeatureSet:
    """Pooled features of one split: ``features[pooling]`` (N, D) float32 and labels (N,) int64, on the CPU."""

    features: dict[str, torch.Tensor]
    labels: torch.Tensor
    from_cache: bool
    seconds: float
    precision: str = "fp32"  # the extraction's precision (fp32 / bf16 autocast), see runtime.choose_precision
    precision_reason: str = ""

    def get(self, pooling: str) -> torch.Tensor:
        """The (N, D) features of ``pooling``; a clear error if this encoder has no such pooling."""
        if pooling not in self.features:
            raise ConfigError(f"--pooling {pooling}: not available for this encoder (has {sorted(self.features)})")
        return self.features[pooling]


# ------------------------------------------------------------------------------------ digests
def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def state_digest(module: nn.Module) -> str:
    """SHA-256 over a module's state dict (names, shapes, dtypes and values)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def data_digest(images: torch.Tensor, labels: torch.Tensor) -> str:
    """BLAKE2b of the uint8 images (N, C, H, W) and labels (N,): the cache key of a (sub)split."""
    h = hashlib.blake2b(digest_size=20)
    h.update(f"{tuple(images.shape)}".encode())
    h.update(np.ascontiguousarray(images.numpy()).data)
    h.update(np.ascontiguousarray(labels.numpy().astype(np.int64)).data)
    return h.hexdigest()


def _hash_json(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


# ------------------------------------------------------------------------------------ encoders
def _maelab_encoder(name: str, module: nn.Module, cfg: Config, digest: str, spec: dict[str, Any]) -> Encoder:
    if not hasattr(module, "forward_features"):
        raise CheckpointError(f"{name}: method {cfg.train.method!r} builds a module without forward_features")
    module.eval()
    return Encoder(
        name=name, module=module, tokens=module.forward_features, num_prefix_tokens=1,
        mean=tuple(cfg.data.mean), std=tuple(cfg.data.std), img_size=cfg.model.img_size, digest=digest, spec=spec,
    )  # fmt: skip


def run_encoder(run: str | Path) -> tuple[Encoder, Config]:
    """The encoder of a run's newest checkpoint (or of a checkpoint directory), and the run's config."""
    from maelab.methods import load_model

    found = resolve_checkpoint(run)
    module, cfg = load_model(str(found))
    digest = _hash_json("run", file_digest(found / "model.safetensors"), cfg.to_dict()["model"], cfg.train.method)
    spec = {"kind": "run", "run": str(run), "checkpoint": str(found)}
    return _maelab_encoder(f"checkpoint {found.name}", module, cfg, digest, spec), cfg


def random_init_encoder(cfg: Config, seed: int = 0) -> Encoder:
    """The same architecture as ``cfg`` at its random initialisation after ``torch.manual_seed(seed)``."""
    from maelab.methods import get_method

    torch.manual_seed(seed)
    module = get_method(cfg.train.method).build(cfg)
    digest = _hash_json("random", state_digest(module), cfg.to_dict()["model"], cfg.train.method, seed)
    spec = {"kind": "random-init", "seed": seed}
    return _maelab_encoder(f"random init (seed {seed})", module, cfg, digest, spec)


def _create_timm(name: str, img_size: int, kwargs: dict[str, Any]) -> nn.Module:
    import timm

    if not timm.is_model(name):
        raise ConfigError(f"--backbone timm:{name}: unknown timm model (see timm.list_models('*{name[:8]}*'))")
    try:
        # pretrained=False: weights only ever come from a local file, never the network.
        return timm.create_model(name, pretrained=False, num_classes=0, img_size=img_size, **kwargs)
    except TypeError as e:
        raise ConfigError(f"--backbone timm:{name}: cannot create it with img_size={img_size} {kwargs}: {e}") from e


def _timm_tokens(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    def tokens(x: torch.Tensor) -> torch.Tensor:
        out = module.forward_features(x)
        if out.ndim == 4:  # a CNN feature map (B, C, H, W) -> (B, H*W, C) tokens
            out = out.flatten(2).transpose(1, 2)
        return out

    return tokens


def _timm_data_stats(module: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    import timm.data

    data_cfg = timm.data.resolve_model_data_config(module)
    return tuple(data_cfg["mean"]), tuple(data_cfg["std"])


def _timm_encoder(module: nn.Module, img_size: int, digest: str, spec: dict[str, Any], label: str) -> Encoder:
    module.eval()
    mean, std = _timm_data_stats(module)
    prefix = int(getattr(module, "num_prefix_tokens", 0))
    return Encoder(label, module, _timm_tokens(module), prefix, mean, std, img_size, digest, spec)


def timm_encoder(name: str, weights: str | Path, img_size: int, kwargs: dict[str, Any] | None = None) -> Encoder:
    """A timm model ``name`` created for ``img_size`` inputs with weights from a local file.

    ``weights`` is a .safetensors or .pth file (read with ``weights_only=True``); classifier-head
    keys are dropped, positional embeddings are resampled by timm's own filter when the grid
    differs, and any other mismatch is an error. Inputs are normalised with the model's mean/std.
    """
    from timm.models import load_state_dict

    kwargs = dict(kwargs or {})
    path = Path(weights)
    if not path.is_file():
        raise CheckpointError(
            f"--weights {weights}: no such file. timm backbones are never downloaded; save the weights "
            f"locally (.safetensors or .pth) and pass that file"
        )
    module = _create_timm(name, img_size, kwargs)
    try:
        state = load_state_dict(str(path), use_ema=False, weights_only=True)
    except Exception as e:
        raise CheckpointError(f"--weights {path}: refused or unreadable ({type(e).__name__}: {e})") from e
    # timm's own loader filter (resamples pos_embed, remaps original DINOv2/CLIP key names).
    filter_fn = getattr(sys.modules[type(module).__module__], "checkpoint_filter_fn", None)
    if filter_fn is not None:
        state = filter_fn(state, module)
    own = module.state_dict()
    state = {k: v for k, v in state.items() if k in own or not k.startswith("head")}
    load_state_strict(module, state, f"--weights {path} for timm:{name}")
    digest = _hash_json("timm", name, img_size, kwargs, file_digest(path))
    spec = {"kind": "timm", "name": name, "weights": str(path), "img_size": img_size, "kwargs": kwargs}
    return _timm_encoder(module, img_size, digest, spec, f"timm:{name}")


def random_timm_encoder(name: str, img_size: int, kwargs: dict[str, Any] | None = None, seed: int = 0) -> Encoder:
    """The timm architecture of :func:`timm_encoder` at random init after ``torch.manual_seed(seed)``."""
    kwargs = dict(kwargs or {})
    torch.manual_seed(seed)
    module = _create_timm(name, img_size, kwargs)
    digest = _hash_json("timm-random", name, img_size, kwargs, state_digest(module), seed)
    spec = {"kind": "random-init", "name": name, "seed": seed, "img_size": img_size, "kwargs": kwargs}
    return _timm_encoder(module, img_size, digest, spec, f"random init (seed {seed})")


# ------------------------------------------------------------------------------------ extraction
def pool_tokens(tokens: torch.Tensor, pooling: str, num_prefix_tokens: int) -> torch.Tensor:
    """tokens (B, T, D) -> (B, D): ``cls`` = token 0, ``mean`` = mean of the patch tokens (after the prefix)."""
    if pooling == "cls":
        if num_prefix_tokens < 1:
            raise ConfigError("--pooling cls: this encoder has no CLS token; use --pooling mean")
        return tokens[:, 0]
    if pooling == "mean":
        return tokens[:, num_prefix_tokens:].mean(dim=1)
    raise ConfigError(f"--pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")


@torch.no_grad()
def extract_features(
    encoder: Encoder,
    images: torch.Tensor,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    progress: bool = True,
    desc: str = "features",
    precision: str = "auto",
) -> dict[str, torch.Tensor]:
    """uint8 images (N, C, H, W) -> {pooling: (N, D) float32 on the CPU} for every pooling the encoder has.

    Eval mode, masking off, no augmentation: normalise with the encoder's mean/std and, if H differs
    from ``encoder.img_size``, resize bicubically (antialiased). The encoder runs under ``precision``
    (``auto``: bf16 autocast where bf16 is native, see ``runtime.choose_precision``); features are stored in fp32.
    """
    device = torch.device(device)
    amp_dtype = choose_precision(precision, device).dtype
    module = encoder.module.to(device).eval()
    set_fused_attention(module, device.type == "cuda")  # the explicit path is faster on CPUs
    poolings = [p for p in POOLINGS if p != "cls" or encoder.num_prefix_tokens >= 1]
    out: dict[str, list[torch.Tensor]] = {p: [] for p in poolings}
    n = images.shape[0]
    for start in tqdm(range(0, n, batch_size), desc=desc, disable=not progress, unit="batch", dynamic_ncols=True):
        x = normalize(images[start : start + batch_size].to(device), encoder.mean, encoder.std)
        if x.shape[-1] != encoder.img_size or x.shape[-2] != encoder.img_size:
            x = F.interpolate(x, size=(encoder.img_size,) * 2, mode="bicubic", align_corners=False, antialias=True)
        with autocast(device, amp_dtype):
            tokens = encoder.tokens(x).float()  # (B, T, D)
        for p in poolings:
            out[p].append(pool_tokens(tokens, p, encoder.num_prefix_tokens).cpu())
    return {p: torch.cat(v) if v else torch.zeros(0) for p, v in out.items()}


def feature_cache_path(
    encoder: Encoder, images: torch.Tensor, labels: torch.Tensor, split: str, precision: str = "fp32"
) -> Path:
    """Where the features of ``encoder`` on these images are cached (one file holds every pooling).

    ``precision`` is the resolved one (fp32 | bf16): bf16 features differ, so they get their own key;
    fp32 keys are unchanged, so caches written before precision was a choice stay valid.
    """
    key = _hash_json(
        FEATURE_CACHE_VERSION, encoder.digest, encoder.mean, encoder.std, encoder.img_size,
        encoder.num_prefix_tokens, data_digest(images, labels), *([] if precision == "fp32" else [precision]),
    )  # fmt: skip
    return cache_dir() / "features" / f"{split}-n{images.shape[0]}-{key[:24]}.safetensors"


def cached_features(
    encoder: Encoder,
    images: torch.Tensor,
    labels: torch.Tensor,
    split: str,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    progress: bool = True,
    cache: bool = True,
    precision: str = "auto",
) -> FeatureSet:
    """Features of ``images`` (N, C, H, W) uint8 from the cache, or extracted (and cached) now,
    under ``precision`` (auto | fp32 | bf16, resolved for ``device``; part of the cache key)."""
    start = time.perf_counter()
    choice = choose_precision(precision, torch.device(device))
    path = feature_cache_path(encoder, images, labels, split, choice.name)
    if cache and path.is_file():
        try:
            stored = load_file(str(path))
            feats = {p: stored[p] for p in POOLINGS if p in stored}
            return FeatureSet(feats, stored["labels"], True, time.perf_counter() - start, choice.name, choice.reason)
        except Exception as e:  # a corrupt cache file costs a re-extraction, never the evaluation
            warnings.warn(f"ignoring unreadable feature cache {path}: {e}", stacklevel=2)
    desc = f"{split} features {encoder.name}"
    feats = extract_features(encoder, images, batch_size, device, progress, desc, choice.name)
    if cache:
        tensors = {**{p: f.contiguous() for p, f in feats.items()}, "labels": labels.long().contiguous()}
        meta = {"encoder": encoder.name, "spec": json.dumps(encoder.spec), "split": split, "precision": choice.name}
        try:
            atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
        except OSError as e:
            warnings.warn(f"could not cache features at {path}: {e}", stacklevel=2)
    return FeatureSet(feats, labels.long(), False, time.perf_counter() - start, choice.name, choice.reason)

"""Optimizer pieces shared by pretraining, fine-tuning, probes and benchmarks: AdamW groups, schedules."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

NO_DECAY_NAMES = ("cls_token", "mask_token", "pos_embed", "decoder_pos_embed")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on weight matrices only (not biases, norms, tokens, positional embeddings)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or name.split(".")[-1] in NO_DECAY_NAMES:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# Devices whose AdamW has a fused kernel (one kernel over every parameter) in the torch maelab installs. On CPUs
# too: on a 2-core Xeon the reference model's fused AdamW step is ~4x faster than PyTorch's for-loop default, ~4% of
# a 64-image training step (benchmarks/adamw.py; benchmarks/README.md, "Optimizer").
FUSED_ADAMW_DEVICES = ("cuda", "cpu")


def adamw(groups: list[dict[str, Any]], device: torch.device, lr: float, betas: tuple[float, ...]) -> torch.optim.AdamW:
    """AdamW over ``groups`` (e.g. :func:`param_groups`; extra keys such as ``lr_scale`` are kept), fused where
    ``device`` has the kernel (:data:`FUSED_ADAMW_DEVICES`), else the for-loop implementation."""
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), fused=device.type in FUSED_ADAMW_DEVICES)


def lr_schedule(peak_lr: float, min_lr: float, total_steps: int, warmup_steps: int) -> torch.Tensor:
    """Per-optimizer-step learning rates (total_steps,): linear warm-up, then cosine to ``min_lr``."""
    steps = torch.arange(total_steps, dtype=torch.float64)
    warm = peak_lr * (steps + 1) / max(warmup_steps, 1)
    progress = (steps - warmup_steps) / max(total_steps - warmup_steps, 1)
    cosine = min_lr + (peak_lr - min_lr) * 0.5 * (1 + torch.cos(math.pi * progress))
    return torch.where(steps < warmup_steps, warm, cosine)

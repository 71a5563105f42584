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


def lr_schedule(peak_lr: float, min_lr: float, total_steps: int, warmup_steps: int) -> torch.Tensor:
    """Per-optimizer-step learning rates (total_steps,): linear warm-up, then cosine to ``min_lr``."""
    steps = torch.arange(total_steps, dtype=torch.float64)
    warm = peak_lr * (steps + 1) / max(warmup_steps, 1)
    progress = (steps - warmup_steps) / max(total_steps - warmup_steps, 1)
    cosine = min_lr + (peak_lr - min_lr) * 0.5 * (1 + torch.cos(math.pi * progress))
    return torch.where(steps < warmup_steps, warm, cosine)

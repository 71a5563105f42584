"""Fine-tuning: the whole encoder + a linear head, end to end.

A reduced version of the MAE paper's fine-tuning protocol, not the protocol itself: it keeps AdamW
with layer-wise lr decay, warm-up + cosine per step, drop path, label smoothing and batched
on-device random-resized-crop + flip of the uint8 training images, and has NO mixup, CutMix,
RandAugment or random erasing. Its accuracies therefore compare initialisations under one short
recipe; they are not the paper's numbers.

The encoder is loaded into a timm ``VisionTransformer`` through its timm-named state dict (strict:
only the new head is missing). Layer-wise lr decay (``timm.optim.param_groups_layer_decay``) gives
lr scale ``ld**(depth+1)`` to the patch embedding, CLS and positional embedding, ``ld**(depth-i)``
to block ``i`` (the final norm goes with the last block) and 1 to the head.

The from-scratch baseline (``mae=None``, the MAE's own random initialisation) has its own recipe,
decided in one place (:func:`recipe_for`): the same budget and every other setting, but no layer
decay (``layer_decay`` 1.0). Layer decay protects pretrained lower layers; on a random encoder it
would only slow the random patch embedding down (to ~0.24x the lr at depth 4, ld 0.75), a handicap
of the baseline. Each result records the layer decay it used.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict
from typing import Any

import timm
import torch
from timm.optim import param_groups_layer_decay
from torch import nn
from tqdm.auto import tqdm

from maelab.augment import normalize, random_resized_crop
from maelab.config import Config, ConfigError, FinetuneConfig
from maelab.data import ImageData
from maelab.eval.stats import pack_correct
from maelab.export import TIMM_MODEL_NAME, timm_kwargs
from maelab.methods import build_mae
from maelab.models.mae import MAE
from maelab.models.vit import set_fused_attention
from maelab.optim import adamw, lr_schedule
from maelab.runtime import autocast, choose_precision, resolve_device


def timm_vit(cfg: Config, num_classes: int, global_pool: str = "avg", drop_path: float = 0.0) -> nn.Module:
    """A timm ``VisionTransformer`` with the encoder sizes of ``cfg.model`` and a fresh linear head.

    ``fc_norm=False`` keeps timm's final ``norm`` (applied to every token before pooling), so the
    MAE encoder's state dict, final norm included, loads with only ``head.*`` missing.
    """
    kwargs = timm_kwargs(cfg.model)
    kwargs.update(num_classes=num_classes, global_pool=global_pool, fc_norm=False, drop_path_rate=drop_path)
    return timm.create_model(TIMM_MODEL_NAME, pretrained=False, **kwargs)


def copy_encoder_weights(vit: nn.Module, mae: MAE | nn.Module) -> None:
    """Copy ``mae``'s encoder (any method's module with ``encoder_state_dict()``, e.g. MAE or DINO)
    into ``vit``; everything but the head must match exactly.

    The head is re-initialised as in the MAE paper (weights ~ N(0, 2e-5), zero bias).
    """
    result = vit.load_state_dict(mae.encoder_state_dict(), strict=False)
    if set(result.missing_keys) != {"head.weight", "head.bias"} or result.unexpected_keys:
        raise ConfigError(
            f"encoder does not fit the timm ViT: missing {result.missing_keys}, unexpected {result.unexpected_keys}"
        )
    nn.init.trunc_normal_(vit.head.weight, std=2e-5)
    nn.init.zeros_(vit.head.bias)


# A warm-up as long as the run would end it at the peak lr, never decayed (a 1-epoch fine-tune with the 1-epoch
# default warm-up); the paper's recipes warm up for 5-7% of the epochs, so at most a tenth of the run is used.
MAX_WARMUP_FRACTION = 0.1
SCRATCH_LAYER_DECAY = 1.0  # the from-scratch baseline: every layer at the full lr (nothing pretrained to protect)


def recipe_for(ft: FinetuneConfig, from_scratch: bool) -> FinetuneConfig:
    """The recipe a run actually uses: ``ft`` for a pretrained encoder; for the from-scratch baseline the
    same budget and settings with ``layer_decay`` 1.0. The one place this is decided, so ``maelab eval
    finetune`` (with or without ``--from-scratch``), ``maelab compare`` and the API all agree."""
    return dataclasses.replace(ft, layer_decay=SCRATCH_LAYER_DECAY) if from_scratch else ft


def layer_decay_param_groups(vit: nn.Module, weight_decay: float, layer_decay: float) -> list[dict[str, Any]]:
    """AdamW groups with an ``lr_scale`` per layer (timm's BEiT-style grouping) and no weight decay
    on 1-D parameters, ``cls_token`` and ``pos_embed``."""
    return param_groups_layer_decay(
        vit, weight_decay, no_weight_decay_list=tuple(vit.no_weight_decay()), layer_decay=layer_decay
    )


def build_classifier(mae: MAE | nn.Module | None, cfg: Config, ft: FinetuneConfig, num_classes: int) -> nn.Module:
    """The timm ViT to fine-tune: ``mae``'s encoder, or (``mae=None``) the MAE's random
    initialisation drawn with ``ft.seed``, the from-scratch baseline."""
    if mae is None:
        torch.manual_seed(ft.seed)
        mae = build_mae(cfg)  # the same initialisation pretraining starts from
    torch.manual_seed(ft.seed)
    vit = timm_vit(cfg, num_classes, ft.global_pool, ft.drop_path)
    copy_encoder_weights(vit, mae)
    return vit


@torch.no_grad()
def correct_flags(model: nn.Module, data: ImageData, cfg: Config, batch_size: int = 500) -> torch.Tensor:
    """(N,) bool on the CPU: whether ``model`` classifies each of the uint8 ``data`` images (already on
    the model's device) right; kept per image so that two inits can be compared paired on the same images."""
    model.eval()
    flags = []
    for start in range(0, len(data), batch_size):
        x = normalize(data.images[start : start + batch_size], cfg.data.mean, cfg.data.std)
        flags.append(model(x).argmax(dim=1) == data.labels[start : start + batch_size])
    return torch.cat(flags).cpu()


def accuracy(model: nn.Module, data: ImageData, cfg: Config, batch_size: int = 500) -> float:
    """Top-1 accuracy (in [0, 1]) of ``model`` on uint8 ``data`` (already on the model's device)."""
    correct = correct_flags(model, data, cfg, batch_size)
    return correct.sum().item() / len(correct)


def finetune(
    mae: MAE | nn.Module | None,
    cfg: Config,
    ft: FinetuneConfig,
    train: ImageData,
    test: ImageData,
    label: str = "finetune",
    precision: str = "auto",
) -> dict[str, Any]:
    """Fine-tune ``mae``'s encoder (or, ``mae=None``, a random one) on ``train``; score on ``test``.

    ``cfg`` is the pretraining run's config (model sizes, normalisation); ``ft`` the recipe, which the
    from-scratch baseline takes without layer decay (:func:`recipe_for`); ``precision`` (auto | fp32 |
    bf16) as ``runtime.choose_precision``. Returns a dict with ``top1`` (test accuracy, %),
    ``test_correct`` (the (N_test,) per-image flags, packed by ``stats.pack_correct``), the per-epoch
    ``history`` (mean train loss, test top-1 when evaluated), ``first_loss`` / ``last_loss``,
    ``layer_decay``, ``warmup_steps`` (at most :data:`MAX_WARMUP_FRACTION` of the steps) and ``recipe``
    (what this run used), ``precision`` / ``precision_reason`` and
    ``wall_time_s``.
    """
    ft.validate()
    ft = recipe_for(ft, from_scratch=mae is None)
    start_time = time.perf_counter()
    device = resolve_device(ft.device)
    choice = choose_precision(precision, device)  # auto: bf16 only where it is native (CUDA, AVX-512 BF16 / AMX)
    amp_dtype = choice.dtype
    num_classes = len(train.classes)
    model = build_classifier(mae, cfg, ft, num_classes).to(device)
    set_fused_attention(model, device.type == "cuda")  # explicit attention is faster on CPUs
    groups = layer_decay_param_groups(model, ft.weight_decay, ft.layer_decay)
    optimizer = adamw(groups, device, lr=0.0, betas=(0.9, 0.999))
    criterion = nn.CrossEntropyLoss(label_smoothing=ft.label_smoothing)

    train, test = train.to(device), test.to(device)  # uint8 on the device; batches are index slices
    steps_per_epoch = len(train) // ft.batch_size
    if steps_per_epoch < 1:
        raise ConfigError(f"--batch-size {ft.batch_size} is larger than the {len(train)} training images")
    total_steps = ft.epochs * steps_per_epoch
    peak_lr = ft.blr * ft.batch_size / 256
    warmup = round(min(ft.warmup_epochs, MAX_WARMUP_FRACTION * ft.epochs) * steps_per_epoch)
    lrs = lr_schedule(peak_lr, ft.min_lr, total_steps, warmup).tolist()

    torch.manual_seed(ft.seed)  # augmentation draws from the global generator
    perm_gen = torch.Generator().manual_seed(ft.seed)
    history: list[dict[str, Any]] = []
    bar = tqdm(total=total_steps, disable=ft.quiet, unit="step", dynamic_ncols=True, desc=label)
    step = 0
    for epoch in range(ft.epochs):
        model.train()
        perm = torch.randperm(len(train), generator=perm_gen).to(device)
        epoch_loss = torch.zeros((), device=device)
        for s in range(steps_per_epoch):
            idx = perm[s * ft.batch_size : (s + 1) * ft.batch_size]
            for g in optimizer.param_groups:
                g["lr"] = lrs[step] * g["lr_scale"]
            x = normalize(train.images[idx], cfg.data.mean, cfg.data.std)
            x = random_resized_crop(x, cfg.model.img_size, (ft.crop_min_scale, 1.0), ft.hflip)
            with autocast(device, amp_dtype):
                loss = criterion(model(x), train.labels[idx])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            epoch_loss += loss.detach()
            step += 1
            bar.update(1)
        record: dict[str, Any] = {"epoch": epoch + 1, "train_loss": epoch_loss.item() / steps_per_epoch}
        last = epoch + 1 == ft.epochs
        if last or (ft.eval_every and (epoch + 1) % ft.eval_every == 0):
            with autocast(device, amp_dtype):
                correct = correct_flags(model, test, cfg)
            record["test_top1"] = 100.0 * correct.sum().item() / len(correct)
        history.append(record)
        bar.set_postfix({k: f"{v:.3f}" for k, v in record.items() if k != "epoch"})
        if ft.quiet:
            shown = ", ".join(f"{k} {v:.4g}" for k, v in record.items() if k != "epoch")
            print(f"{label} epoch {epoch + 1}/{ft.epochs}: {shown}", flush=True)
    bar.close()
    return {
        "init": "scratch" if mae is None else cfg.train.method, "top1": history[-1]["test_top1"],
        "test_correct": pack_correct(correct), "layer_decay": ft.layer_decay, "first_loss": history[0]["train_loss"],
        "last_loss": history[-1]["train_loss"], "history": history,
        "train_images": len(train), "test_images": len(test), "steps": total_steps, "warmup_steps": warmup, "peak_lr": peak_lr,
        "device": str(device), **choice.as_dict(),
        "wall_time_s": round(time.perf_counter() - start_time, 2), "recipe": asdict(ft),
    }  # fmt: skip

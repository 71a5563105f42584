"""Fine-tuning: the whole encoder + a linear head, the MAE paper's end-to-end protocol.

The encoder is loaded into a timm ``VisionTransformer`` through its timm-named state dict (strict:
only the new head is missing). Recipe: AdamW with layer-wise lr decay
(``timm.optim.param_groups_layer_decay``: lr scale ``ld**(depth+1)`` for the patch embedding, CLS
and positional embedding, ``ld**(depth-i)`` for block ``i`` (the final norm goes with the last
block), 1 for the head), warm-up + cosine per step, drop path, label smoothing, and batched
on-device random-resized-crop + flip of the uint8 training images. ``from_scratch`` runs the identical recipe
from the MAE's own random initialisation, so "pretraining vs none" is one flag apart.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import timm
import torch
from timm.optim import param_groups_layer_decay
from torch import nn
from tqdm.auto import tqdm

from maelab.augment import normalize, random_resized_crop
from maelab.config import Config, ConfigError
from maelab.data import ImageData
from maelab.export import TIMM_MODEL_NAME, timm_kwargs
from maelab.methods import build_mae
from maelab.models.mae import MAE
from maelab.models.vit import set_fused_attention
from maelab.optim import lr_schedule
from maelab.runtime import autocast, resolve_device, resolve_precision


@dataclass
class FinetuneConfig:
    """The fine-tuning recipe (the same for the pretrained encoder and the from-scratch baseline)."""

    epochs: int = 10
    batch_size: int = 128
    blr: float = 1.0e-3  # lr = blr * batch_size / 256
    min_lr: float = 1.0e-6
    warmup_epochs: float = 1.0
    weight_decay: float = 0.05
    layer_decay: float = 0.75
    drop_path: float = 0.1
    label_smoothing: float = 0.1
    crop_min_scale: float = 0.25  # random-resized-crop area in [crop_min_scale, 1]
    hflip: bool = True
    global_pool: str = "avg"  # avg: mean of the normed patch tokens; token: the CLS token
    eval_every: int = 0  # epochs between test evaluations; 0 = only after the last epoch
    seed: int = 0
    device: str = "auto"
    quiet: bool = False

    def validate(self) -> None:
        """Reject values that cannot work, naming the option."""
        checks = [
            (self.epochs > 0, f"--epochs must be > 0, got {self.epochs}"),
            (self.batch_size > 0, f"--batch-size must be > 0, got {self.batch_size}"),
            (self.blr > 0, f"--blr must be > 0, got {self.blr}"),
            (self.warmup_epochs >= 0, f"--warmup-epochs must be >= 0, got {self.warmup_epochs}"),
            (0 < self.layer_decay <= 1, f"--layer-decay must be in (0, 1], got {self.layer_decay}"),
            (0 <= self.drop_path < 1, f"--drop-path must be in [0, 1), got {self.drop_path}"),
            (0 <= self.label_smoothing < 1, f"--label-smoothing must be in [0, 1), got {self.label_smoothing}"),
            (0 < self.crop_min_scale <= 1, f"--crop-min-scale must be in (0, 1], got {self.crop_min_scale}"),
            (self.global_pool in ("avg", "token"), f"--global-pool must be avg or token, got {self.global_pool!r}"),
            (self.eval_every >= 0, f"--eval-every must be >= 0, got {self.eval_every}"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


def timm_vit(cfg: Config, num_classes: int, global_pool: str = "avg", drop_path: float = 0.0) -> nn.Module:
    """A timm ``VisionTransformer`` with the encoder sizes of ``cfg.model`` and a fresh linear head.

    ``fc_norm=False`` keeps timm's final ``norm`` (applied to every token before pooling), so the
    MAE encoder's state dict, final norm included, loads with only ``head.*`` missing.
    """
    kwargs = timm_kwargs(cfg.model)
    kwargs.update(num_classes=num_classes, global_pool=global_pool, fc_norm=False, drop_path_rate=drop_path)
    return timm.create_model(TIMM_MODEL_NAME, pretrained=False, **kwargs)


def load_encoder(vit: nn.Module, mae: MAE | nn.Module) -> None:
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
    load_encoder(vit, mae)
    return vit


@torch.no_grad()
def accuracy(model: nn.Module, data: ImageData, cfg: Config, batch_size: int = 500) -> float:
    """Top-1 accuracy (in [0, 1]) of ``model`` on uint8 ``data`` (already on the model's device)."""
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=data.images.device)
    for start in range(0, len(data), batch_size):
        x = normalize(data.images[start : start + batch_size], cfg.data.mean, cfg.data.std)
        correct += (model(x).argmax(dim=1) == data.labels[start : start + batch_size]).sum()
    return correct.item() / len(data)


def finetune(
    mae: MAE | nn.Module | None, cfg: Config, ft: FinetuneConfig, train: ImageData, test: ImageData, label: str = "finetune"
) -> dict[str, Any]:
    """Fine-tune ``mae``'s encoder (or, ``mae=None``, a random one) on ``train``; score on ``test``.

    ``cfg`` is the pretraining run's config (model sizes, normalisation). Returns a dict with
    ``top1`` (test accuracy, %), the per-epoch ``history`` (mean train loss, test top-1 when
    evaluated), ``first_loss`` / ``last_loss`` and ``wall_time_s``.
    """
    ft.validate()
    start_time = time.perf_counter()
    device = resolve_device(ft.device)
    amp_dtype = resolve_precision("auto", device)  # fp32 on CPU: bf16 is emulated and very slow there
    num_classes = len(train.classes)
    model = build_classifier(mae, cfg, ft, num_classes).to(device)
    set_fused_attention(model, device.type == "cuda")  # explicit attention is faster on CPUs
    groups = layer_decay_param_groups(model, ft.weight_decay, ft.layer_decay)
    optimizer = torch.optim.AdamW(groups, lr=0.0, betas=(0.9, 0.999))
    criterion = nn.CrossEntropyLoss(label_smoothing=ft.label_smoothing)

    train, test = train.to(device), test.to(device)  # uint8 on the device; batches are index slices
    steps_per_epoch = len(train) // ft.batch_size
    if steps_per_epoch < 1:
        raise ConfigError(f"--batch-size {ft.batch_size} is larger than the {len(train)} training images")
    total_steps = ft.epochs * steps_per_epoch
    peak_lr = ft.blr * ft.batch_size / 256
    warmup = round(min(ft.warmup_epochs, ft.epochs) * steps_per_epoch)
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
                record["test_top1"] = 100.0 * accuracy(model, test, cfg)
        history.append(record)
        bar.set_postfix({k: f"{v:.3f}" for k, v in record.items() if k != "epoch"})
        if ft.quiet:
            shown = ", ".join(f"{k} {v:.4g}" for k, v in record.items() if k != "epoch")
            print(f"{label} epoch {epoch + 1}/{ft.epochs}: {shown}", flush=True)
    bar.close()
    return {
        "init": "scratch" if mae is None else cfg.train.method, "top1": history[-1]["test_top1"],
        "first_loss": history[0]["train_loss"], "last_loss": history[-1]["train_loss"], "history": history,
        "train_images": len(train), "test_images": len(test), "steps": total_steps, "peak_lr": peak_lr,
        "device": str(device), "precision": "fp32" if amp_dtype is None else "bf16",
        "wall_time_s": round(time.perf_counter() - start_time, 2), "recipe": asdict(ft),
    }  # fmt: skip


def finetune_run(
    run: str,
    ft: FinetuneConfig,
    data_dir: str | None = None,
    subset: int = 0,
    test_subset: int = 0,
    from_scratch: bool = False,
    baseline: bool = True,
) -> dict[str, Any]:
    """What ``maelab eval finetune RUN`` does: fine-tune RUN's encoder (or, ``from_scratch``, only the
    random-init encoder) on the train split (``subset`` class-balanced images, 0 = all), score on the
    test split, and unless ``baseline=False`` also run the identical recipe from scratch. Writes
    ``RUN/eval/finetune[_scratch].{json,md}`` and returns the result (with a markdown ``table``)."""
    from maelab.data import class_balanced_subset, load_split
    from maelab.eval.results import markdown_table, write_eval_report
    from maelab.methods import load_model

    ft.validate()
    pretrained, cfg = load_model(run, "cpu")  # MAE or DINO: both give their encoder under timm names
    method = cfg.train.method
    d = cfg.data
    root = data_dir or d.data_dir
    train = load_split(root, "train", d.dataset, cfg.model.img_size, d.resize, d.skip_bad_images)
    test = load_split(root, "test", d.dataset, cfg.model.img_size, d.resize, d.skip_bad_images)
    train = class_balanced_subset(train, subset) if subset else train
    test = class_balanced_subset(test, test_subset) if test_subset else test

    inits = ["scratch"] if from_scratch else [method] + (["scratch"] if baseline else [])
    results = {}
    for init in inits:
        label = f"fine-tune ({method.upper()} init)" if init == method else "fine-tune (random init)"
        results[init] = finetune(pretrained if init == method else None, cfg, ft, train, test, label)
    rows = [
        [(f"{method.upper()} pretrained" if k == method else "random init"), r["top1"], r["first_loss"], r["last_loss"],
         r["wall_time_s"]]
        for k, r in results.items()
    ]  # fmt: skip
    table = markdown_table(["encoder", "test top-1 (%)", "first-epoch loss", "last-epoch loss", "time (s)"], rows)
    recipe = (
        f"{ft.epochs} epochs, batch {ft.batch_size}, blr {ft.blr:g}, layer decay {ft.layer_decay:g}, drop path "
        f"{ft.drop_path:g}, label smoothing {ft.label_smoothing:g}, {len(train)} train / {len(test)} test images"
    )
    markdown = f"# Fine-tuning of {run}\n\n{recipe}.\n\n{table}"
    result: dict[str, Any] = {"run": run, "subset": subset, "test_subset": test_subset, **results}
    name = "finetune_scratch" if from_scratch else "finetune"
    result["json"], result["markdown"] = map(str, write_eval_report(run, name, result, markdown))
    result["table"] = f"{recipe}\n{table}"
    return result

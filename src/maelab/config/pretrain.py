"""Run configuration as plain dataclasses: defaults < preset < TOML file < command-line flags.

Every field has a help text; the CLI flags are generated from these fields (``--field-name``),
so ``maelab pretrain --help`` documents each option with its default. Unknown keys in a file or
a run's ``config.json`` are an error that names the file, section and key.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from maelab.config.core import ConfigError, check, opt, unknown_key, update_section
from maelab.models.vit import get_preset


@dataclass
class ModelConfig:
    """The encoder / decoder architecture (a preset, optionally overridden field by field)."""

    name: str = opt("ref", "model preset: ref (embed 256, depth 4), vit-tiny (192x12), vit-small", "model")
    img_size: int = opt(32, "input image size (pixels, square)")
    patch_size: int = opt(4, "patch size in pixels (2 or 4 for 32x32 images)")
    in_channels: int = opt(3, "image channels")
    embed_dim: int = opt(256, "encoder width (set by --model unless given)")
    encoder_depth: int = opt(4, "encoder blocks (set by --model unless given)")
    encoder_heads: int = opt(4, "encoder attention heads (set by --model unless given)")
    decoder_embed_dim: int = opt(128, "decoder width (set by --model unless given)")
    decoder_depth: int = opt(2, "decoder blocks (set by --model unless given)")
    decoder_heads: int = opt(4, "decoder attention heads (set by --model unless given)")
    mlp_ratio: float = opt(4.0, "MLP hidden size / width (set by --model unless given)")
    mask_ratio: float = opt(0.75, "fraction of patches removed per image, in [0, 1)")
    norm_pix_loss: bool = opt(False, "regress per-patch normalised pixels (mean 0, var 1 per patch)")
    pos_embed: str = opt("sincos", "positional embedding: sincos (fixed 2-D) or learned")
    drop_path: float = opt(0.0, "stochastic depth rate of the encoder")


@dataclass
class DataConfig:
    """Where the images come from, which of them, and how they are normalised and augmented."""

    data_dir: str = opt("", "data root: ROOT/{train,test}/<class>/* or cifar-10-batches-py (default: $MAELAB_DATA)")
    dataset: str = opt("auto", "data layout: auto, folder (ImageFolder) or cifar10 (python batches)")
    subset: int = opt(0, "use a class-balanced subset of this many training images (0 = all)")
    holdout: int = opt(
        0, "hold out this many class-balanced training images (the last of each class) as a validation split: "
        "never pretrained on; evaluations score on them with --split val (0 = none)",
    )  # fmt: skip
    download: bool = opt(False, "download CIFAR-10 through torchvision when --dataset cifar10 is missing")
    skip_bad_images: bool = opt(False, "skip unreadable images with a warning instead of stopping")
    resize: bool = opt(False, "resize images whose size differs from the first image instead of stopping")
    mean: tuple[float, ...] = opt((0.4914, 0.4822, 0.4465), "per-channel mean used to normalise inputs")
    std: tuple[float, ...] = opt((0.2470, 0.2435, 0.2616), "per-channel std used to normalise inputs")
    crop_min_scale: float = opt(0.2, "random-resized-crop: smallest crop area (fraction of the image)")
    hflip: bool = opt(True, "random horizontal flip")


@dataclass
class TrainConfig:
    """The method, optimizer, schedule, precision, device and where the run is written."""

    method: str = opt("mae", "pretraining method")
    recipe: str = opt(
        "paper", "MAE training recipe: paper (MAE's ImageNet values: batch 256, blr 1.5e-4, 5 warm-up epochs, raw "
        "pixels) or short (the CPU search's winner, results/recipe_cpu: batch 64, lr 1e-3, 1 warm-up epoch, "
        "norm_pix_loss); flags given beside it win", choices=("paper", "short"), metavar=None,
    )  # fmt: skip
    epochs: int = opt(100, "training epochs")
    steps: int = opt(
        0, "total optimizer steps; when > 0 it replaces --epochs (e.g. a step count fitted to a time budget)"
    )
    minutes: float = opt(
        0.0, "train for about this many minutes on this machine: --steps fitted by a short calibration run of the "
        "training loop first (5%% of the budget, 5-60 s, not counted, not kept), re-fitted once from the run's own "
        "speed at the end of the warm-up; 0 = off, by --epochs or --steps",
    )  # fmt: skip
    batch_size: int = opt(256, "images per step on each device (before gradient accumulation)")
    accum_steps: int = opt(1, "gradient accumulation steps per optimizer step")
    blr: float = opt(1.5e-4, "base learning rate; lr = blr * effective_batch / 256")
    lr: float = opt(0.0, "absolute learning rate (overrides --blr when > 0)")
    min_lr: float = opt(0.0, "learning rate at the end of the cosine schedule")
    warmup_epochs: float = opt(5.0, "linear warm-up length in epochs (capped at a quarter of the run's steps)")
    fixed_warmup_steps: int = opt(
        0,
        "linear warm-up length in optimizer steps, not capped (0 = from --warmup-epochs); a --minutes run sets "
        "it when it re-fits its steps, so that the warm-up it trained stays the warm-up",
    )
    weight_decay: float = opt(0.05, "AdamW weight decay (not on biases, norms, tokens, pos. embeddings)")
    weight_decay_end: float = opt(
        -1.0, "weight decay at the end of a cosine schedule from --weight-decay (< 0 = constant)"
    )
    betas: tuple[float, ...] = opt((0.9, 0.95), "AdamW betas")
    grad_clip: float = opt(0.0, "clip the gradient norm to this value (0 = off)")
    device: str = opt("auto", "auto, cpu, cuda or cuda:N")
    precision: str = opt("auto", "auto (bf16 autocast on CUDA and on CPUs with native bf16, else fp32), fp32 or bf16")
    compile: bool = opt(
        False,
        "torch.compile the model (its masks come from inductor's own random generator: the same --seed gives "
        "other masks than an eager run)",
    )
    seed: int = opt(0, "random seed (data order, augmentation, masks, init)")
    out: str = opt("", "run directory (default: runs/<method>-<model>-<time>)")
    log_every: int = opt(10, "optimizer steps between metric records (and host syncs)")
    save_every: int = opt(1, "epochs between checkpoints (the last epoch is always saved)")
    keep_checkpoints: int = opt(2, "checkpoints kept on disk (newest first)")
    quiet: bool = opt(False, "no progress bar; one log line per epoch")
    tensorboard: bool = opt(
        False, "log loss, lr, img/s and reconstructions to RUN/tensorboard (pip install maelab[tensorboard])"
    )
    tensorboard_every: int = opt(1, "epochs between TensorBoard reconstruction grids of 8 fixed test images")

    def images_per_step(self, world_size: int = 1) -> int:
        """Images per optimizer step: batch x accumulation steps x processes."""
        return self.batch_size * self.accum_steps * world_size

    def peak_lr(self, world_size: int = 1) -> float:
        """The peak learning rate: ``lr``, or else ``blr`` x images per step / 256 (the MAE paper's scaling rule)."""
        return self.lr if self.lr > 0 else self.blr * self.images_per_step(world_size) / 256

    def warmup_steps(self, steps_per_epoch: int, total_steps: int) -> int:
        """Warm-up steps: ``fixed_warmup_steps`` when set, else ``warmup_epochs`` capped at a quarter of the run
        so that short runs reach the peak lr."""
        if self.fixed_warmup_steps > 0:
            return min(self.fixed_warmup_steps, total_steps)
        return round(min(self.warmup_epochs * steps_per_epoch, total_steps / 4))


@dataclass
class DinoConfig:
    """DINO (Caron et al. 2021) settings, used by ``--method dino``; defaults are adapted to 32x32 images."""

    out_dim: int = opt(4096, "DINO head output dimension (prototypes); 65536 in the paper for ImageNet")
    head_hidden_dim: int = opt(2048, "DINO head MLP hidden width")
    bottleneck_dim: int = opt(256, "DINO head bottleneck width (L2-normalised before the last layer)")
    norm_last_layer: bool = opt(True, "fix the weight-norm gain of the head's last layer to 1")
    global_crop_size: int = opt(32, "DINO global crop size in pixels (2 global crops)")
    global_crop_scale: tuple[float, ...] = opt((0.4, 1.0), "DINO global crop area range (fractions of the image)")
    local_crops: int = opt(6, "number of DINO local crops (0 = two global crops only)")
    local_crop_size: int = opt(16, "DINO local crop size in pixels (a multiple of --patch-size)")
    local_crop_scale: tuple[float, ...] = opt((0.1, 0.4), "DINO local crop area range (fractions of the image)")
    jitter: tuple[float, ...] = opt(
        (0.4, 0.4, 0.2, 0.1), "colour jitter strengths: brightness, contrast, saturation, hue (fraction of a turn)"
    )
    jitter_prob: float = opt(0.8, "probability of colour jitter per crop")
    grayscale_prob: float = opt(0.2, "probability of grayscale per crop")
    blur_prob: tuple[float, ...] = opt(
        (1.0, 0.1, 0.5), "gaussian blur probability: global crop 1, global crop 2, local"
    )
    blur_sigma: tuple[float, ...] = opt((0.1, 1.0), "gaussian blur sigma range in pixels (2.0 max at 224 px in DINO)")
    solarize_prob: float = opt(0.2, "solarisation probability of global crop 2")
    student_temp: float = opt(0.1, "student softmax temperature")
    teacher_temp: float = opt(0.07, "teacher softmax temperature after the warm-up")
    warmup_teacher_temp: float = opt(0.04, "teacher temperature at step 0 (linear warm-up to --teacher-temp)")
    warmup_teacher_temp_epochs: float = opt(10.0, "teacher temperature warm-up length in epochs (capped at --epochs)")
    momentum_teacher: float = opt(0.996, "EMA momentum of the teacher at step 0 (cosine to 1 at the end)")
    center_momentum: float = opt(0.9, "EMA momentum of the teacher-output center")
    dino_grad_clip: float = opt(3.0, "clip each parameter's gradient norm to this value, as DINO (0 = off)")
    freeze_last_layer: float = opt(1.0, "epochs during which the head's last layer gets no gradient")


# Each method's optimizer recipe from its paper: applied by ``resolve_config`` above the defaults
# and below a --config file and flags, so `--method dino` trains with DINO's recipe unless told.
# DINO (Caron et al. 2021, ViT-S/16): lr 5e-4 * batch / 256, AdamW default betas, weight decay
# cosine 0.04 -> 0.4, min lr 1e-6. MAE's recipe is the TrainConfig defaults.
METHOD_TRAIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "dino": {"blr": 5.0e-4, "betas": (0.9, 0.999), "weight_decay": 0.04, "weight_decay_end": 0.4, "min_lr": 1.0e-6},
}

# Named MAE training recipes, applied by ``resolve_config`` above the model preset and below a
# --config file and flags. "short" won the equal-wall-clock search on a validation split of the
# training set (results/recipe_cpu: 8 candidates, 3 min each, 2-core CPU, fp32), beating the
# runner-up by +2.7 k-NN / +3.7 linear points (paired, McNemar p 1e-5 / 1e-7) and "paper" (below
# the random encoder at that budget); more optimizer steps per minute is what a short schedule needs.
TRAIN_RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {},
    "short": {"model": {"norm_pix_loss": True}, "train": {"batch_size": 64, "lr": 1.0e-3, "warmup_epochs": 1.0}},
}

SECTIONS: dict[str, type] = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig, "dino": DinoConfig}


@dataclass
class Config:
    """A whole pretraining run: one section per dataclass, saved as the run's config.json."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    dino: DinoConfig = field(default_factory=DinoConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain JSON-able dict, one entry per section."""
        return {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}


def config_from_dict(data: dict[str, Any], where: str) -> Config:
    """Build a Config from nested dicts (a TOML file or a run's config.json), strictly."""
    cfg = Config()
    for name, values in data.items():
        if name not in SECTIONS:
            raise unknown_key(name, list(SECTIONS), where)
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: section [{name}] must be a table, got {values!r}")
        update_section(getattr(cfg, name), values, f"{where} [{name}]")
    return cfg


def resolve_config(file_values: dict[str, Any] | None, cli_values: dict[str, dict[str, Any]], where: str) -> Config:
    """defaults < model preset and method recipe < file < CLI. ``cli_values`` holds only flags the user gave."""
    file_values = file_values or {}
    file_model = file_values.get("model", {}) if isinstance(file_values.get("model", {}), dict) else {}
    name = cli_values.get("model", {}).get("name") or file_model.get("name") or ModelConfig.name
    cfg = Config()
    try:
        preset = get_preset(name)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    update_section(cfg.model, {"name": name, **vars(preset)}, "preset")
    file_train = file_values.get("train", {}) if isinstance(file_values.get("train", {}), dict) else {}
    method = cli_values.get("train", {}).get("method") or file_train.get("method") or TrainConfig.method
    update_section(cfg.train, METHOD_TRAIN_DEFAULTS.get(str(method), {}), f"{method} recipe")
    recipe = cli_values.get("train", {}).get("recipe") or file_train.get("recipe") or TrainConfig.recipe
    if recipe not in TRAIN_RECIPES:
        raise ConfigError(f"--recipe {recipe!r}: choose one of {', '.join(TRAIN_RECIPES)}")
    if recipe != "paper" and method != "mae":
        raise ConfigError(f"--recipe {recipe} is an MAE recipe; --method {method} trains with its paper's recipe")
    for section, values in TRAIN_RECIPES[str(recipe)].items():
        update_section(getattr(cfg, section), values, f"{recipe} recipe")
    cfg.train.recipe = str(recipe)
    file_cfg = config_from_dict(file_values, where)  # validates the file on its own
    for section in SECTIONS:
        given = {k: getattr(getattr(file_cfg, section), k) for k in file_values.get(section, {})}
        update_section(getattr(cfg, section), given, where)
        update_section(getattr(cfg, section), cli_values.get(section, {}), "command line")
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Reject values that cannot work, naming the option and the value."""
    m, d, t = cfg.model, cfg.data, cfg.train
    checks = [
        (m.img_size > 0 and m.patch_size > 0 and m.img_size % m.patch_size == 0,
         f"--img-size {m.img_size} must be a positive multiple of --patch-size {m.patch_size}"),
        (0.0 <= m.mask_ratio < 1.0, f"--mask-ratio must be in [0, 1), got {m.mask_ratio}"),
        (int((m.img_size // m.patch_size) ** 2 * (1 - m.mask_ratio)) >= 1,
         f"--mask-ratio {m.mask_ratio} leaves no visible patch"),
        (m.pos_embed in ("sincos", "learned"), f"--pos-embed must be sincos or learned, got {m.pos_embed!r}"),
        (d.dataset in ("auto", "folder", "cifar10"), f"--dataset must be auto, folder or cifar10, got {d.dataset!r}"),
        (d.subset >= 0, f"--subset must be >= 0, got {d.subset}"),
        (d.holdout >= 0, f"--holdout must be >= 0, got {d.holdout}"),
        (0.0 < d.crop_min_scale <= 1.0, f"--crop-min-scale must be in (0, 1], got {d.crop_min_scale}"),
        (len(d.mean) == m.in_channels and len(d.std) == m.in_channels and min(d.std) > 0,
         f"--mean/--std need {m.in_channels} values (std > 0), got {d.mean} / {d.std}"),
        (t.epochs > 0, f"--epochs must be > 0, got {t.epochs}"),
        (t.steps >= 0, f"--steps must be >= 0, got {t.steps}"),
        (t.minutes >= 0 and math.isfinite(t.minutes), f"--minutes must be >= 0, got {t.minutes}"),
        (t.batch_size > 0, f"--batch-size must be > 0, got {t.batch_size}"),
        (t.accum_steps > 0, f"--accum-steps must be > 0, got {t.accum_steps}"),
        (t.warmup_epochs >= 0, f"--warmup-epochs must be >= 0, got {t.warmup_epochs}"),
        (t.fixed_warmup_steps >= 0, f"--fixed-warmup-steps must be >= 0, got {t.fixed_warmup_steps}"),
        (t.precision in ("auto", "fp32", "bf16"), f"--precision must be auto, fp32 or bf16, got {t.precision!r}"),
        (t.tensorboard_every > 0, f"--tensorboard-every must be > 0, got {t.tensorboard_every}"),
        (t.log_every > 0 and t.save_every > 0 and t.keep_checkpoints > 0,
         "--log-every, --save-every and --keep-checkpoints must be > 0"),
        (len(t.betas) == 2 and all(0 <= b < 1 for b in t.betas), f"--betas needs two values in [0, 1), got {t.betas}"),
    ]  # fmt: skip
    check(checks + dino_checks(cfg))


def dino_checks(cfg: Config) -> list[tuple[bool, str]]:
    """(ok, message) pairs for the ``[dino]`` section (checked whatever the method, defaults pass)."""
    g, p = cfg.dino, cfg.model.patch_size

    def unit_range(v: tuple[float, ...]) -> bool:
        return len(v) == 2 and 0 < v[0] <= v[1] <= 1

    return [
        (g.out_dim > 0 and g.head_hidden_dim > 0 and g.bottleneck_dim > 0,
         "--out-dim, --head-hidden-dim and --bottleneck-dim must be > 0"),
        (g.global_crop_size > 0 and g.global_crop_size % p == 0,
         f"--global-crop-size {g.global_crop_size} must be a positive multiple of --patch-size {p}"),
        (g.local_crops >= 0, f"--local-crops must be >= 0, got {g.local_crops}"),
        (g.local_crop_size > 0 and g.local_crop_size % p == 0,
         f"--local-crop-size {g.local_crop_size} must be a positive multiple of --patch-size {p}"),
        (unit_range(g.global_crop_scale), f"--global-crop-scale needs two values 0 < lo <= hi <= 1, got {g.global_crop_scale}"),
        (unit_range(g.local_crop_scale), f"--local-crop-scale needs two values 0 < lo <= hi <= 1, got {g.local_crop_scale}"),
        (len(g.jitter) == 4 and min(g.jitter) >= 0 and g.jitter[3] <= 0.5,
         f"--jitter needs 4 values >= 0 (hue <= 0.5), got {g.jitter}"),
        (all(0 <= q <= 1 for q in (g.jitter_prob, g.grayscale_prob, g.solarize_prob)),
         "--jitter-prob, --grayscale-prob and --solarize-prob must be in [0, 1]"),
        (len(g.blur_prob) == 3 and all(0 <= q <= 1 for q in g.blur_prob),
         f"--blur-prob needs 3 probabilities (global 1, global 2, local), got {g.blur_prob}"),
        (len(g.blur_sigma) == 2 and 0 < g.blur_sigma[0] <= g.blur_sigma[1],
         f"--blur-sigma needs two values 0 < lo <= hi, got {g.blur_sigma}"),
        (g.student_temp > 0 and g.teacher_temp > 0 and g.warmup_teacher_temp > 0,
         "--student-temp, --teacher-temp and --warmup-teacher-temp must be > 0"),
        (g.warmup_teacher_temp_epochs >= 0, f"--warmup-teacher-temp-epochs must be >= 0, got {g.warmup_teacher_temp_epochs}"),
        (0 <= g.momentum_teacher <= 1, f"--momentum-teacher must be in [0, 1], got {g.momentum_teacher}"),
        (0 <= g.center_momentum < 1, f"--center-momentum must be in [0, 1), got {g.center_momentum}"),
        (g.dino_grad_clip >= 0 and g.freeze_last_layer >= 0, "--dino-grad-clip and --freeze-last-layer must be >= 0"),
    ]  # fmt: skip


# ------------------------------------------------------------------------------------ stored configs
def config_dict_with_defaults(stored: dict[str, Any], where: str) -> dict[str, Any]:
    """A stored ``Config.to_dict()`` (from sweep.json or a compare's metrics.json) as JSON, with the
    options it predates filled in with their defaults, so that an upgrade does not block a resume."""
    try:
        return json.loads(json.dumps(config_from_dict(stored, where).to_dict()))
    except ConfigError:
        return stored  # unknown keys: shown as differences below, not as a crash

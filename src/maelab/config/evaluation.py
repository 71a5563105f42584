"""Options of every command but pretraining (evaluation, reconstruction, bench, export, report) and their
validation. Fields made with ``opt`` become the commands' flags (``maelab.cli.flags``); fields made
without it (the positional RUN, a probe's seed) are set by the command.

Options several commands share (``--data-dir``, ``--device``, ``--precision``, ...) are declared once,
by the field helpers below.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from maelab.config.core import ConfigError, check, opt
from maelab.models.vit import get_preset

PRECISIONS = ("auto", "fp32", "bf16")
DEFAULT_LRS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
DEFAULT_EPOCHS = 100
DEFAULT_BATCH_SIZE = 256


# ------------------------------------------------------------------------------------ shared fields
def data_dir_opt() -> Any:
    """``--data-dir``: the run's data root unless given."""
    return opt("", "data root (default: the run's, else $MAELAB_DATA)", metavar="DIR")


def subset_opt(split: str = "training") -> Any:
    """``--subset`` (training) / ``--test-subset``: class-balanced subset size, 0 = all."""
    return opt(0, f"class-balanced {split} images (0 = all)")


def device_opt() -> Any:
    """``--device``."""
    return opt("auto", "auto, cpu, cuda or cuda:N")


def precision_opt() -> Any:
    """``--precision`` of a command that runs a model (see ``runtime.choose_precision``)."""
    return opt("auto", "auto (bf16 where it is native, else fp32), fp32 or bf16 autocast", choices=PRECISIONS)


def quiet_opt(what: str = "no progress bars") -> Any:
    """``--quiet``."""
    return opt(False, what)


def precision_check(precision: str) -> tuple[bool, str]:
    """The ``(ok, message)`` check of a ``--precision`` value."""
    return precision in PRECISIONS, f"--precision must be auto, fp32 or bf16, got {precision!r}"


# ------------------------------------------------------------------------------------ frozen features
@dataclass
class ProbeConfig:
    """SGD (momentum 0.9, no weight decay, as MAE's probe) with a per-step cosine schedule after a warm-up."""

    lrs: tuple[float, ...] = opt(DEFAULT_LRS, "candidate SGD learning rates, one probe head each")
    epochs: int = opt(DEFAULT_EPOCHS, "probe epochs")
    batch_size: int = opt(DEFAULT_BATCH_SIZE, "feature rows per probe step", "probe_batch_size")
    momentum: float = 0.9
    warmup_fraction: float = 0.1
    val_fraction: float = opt(0.1, "fraction of the training images held out to choose the lr")
    seed: int = 0  # the command's --seed

    def validate(self) -> None:
        """Reject values that cannot work, naming the flag."""
        check([
            (self.epochs >= 1 and self.batch_size >= 1,
             f"--epochs and --probe-batch-size must be >= 1, got {self.epochs}, {self.batch_size}"),
            (len(self.lrs) > 0 and min(self.lrs) > 0, f"--lrs must be > 0, got {list(self.lrs)}"),
            (0 < self.val_fraction < 1, f"--val-fraction must be in (0, 1), got {self.val_fraction}"),
        ])  # fmt: skip


@dataclass
class RunData:
    """The run an evaluation reads (the positional RUN) and the train/test images it uses."""

    run: str = ""
    data_dir: str = data_dir_opt()
    subset: int = subset_opt()
    test_subset: int = subset_opt("test")


@dataclass
class FrozenEvalOptions(RunData):
    """``maelab eval knn|linear``: frozen features of RUN (or of a timm ``--backbone``) and its random init."""

    pooling: tuple[str, ...] = opt(
        ("cls",), "feature: CLS token and/or mean of the patch tokens; several give one row each",
        choices=("cls", "mean"),
    )  # fmt: skip
    split: str = opt(
        "test", "score on the test images, or on the run's held-out training images (val: the run was pretrained "
        "with --holdout N; use it to choose settings without touching the test set)", choices=("test", "val"),
    )  # fmt: skip
    batch_size: int = opt(256, "images per feature-extraction batch")
    device: str = device_opt()
    precision: str = precision_opt()
    seed: int = opt(0, "seed of the baseline, the probe's split and init")
    baseline: bool = opt(True, "evaluate the random-init encoder of the same shape beside it")
    cache: bool = opt(True, "reuse cached features (--no-cache extracts them again)")
    out: str = opt("", "where to write the report (default: RUN/eval)", metavar="DIR")
    backbone: str = opt("", "evaluate a timm model instead of a RUN (default: none)", metavar="timm:NAME")
    weights: str = opt("", "local .safetensors/.pth weights for --backbone (default: none)", metavar="FILE")
    img_size: int = opt(0, "--backbone input size: images are resized to it (default: the data's size)")
    backbone_arg: tuple[str, ...] = opt(
        (), "extra timm.create_model argument for --backbone, VALUE as JSON (e.g. embed_dim=384); repeatable "
        "(default: none)", action="append", metavar="KEY=VALUE",
    )  # fmt: skip
    quiet: bool = quiet_opt()

    def validate(self) -> None:
        """Reject values that cannot work, naming the flag."""
        check([
            (not (self.backbone and not self.out), "--backbone has no run directory to write into; pass --out DIR"),
            (not (self.run and (self.weights or self.backbone_arg or self.img_size)),
             "--weights, --backbone-arg and --img-size apply to --backbone only, not to a RUN"),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (len(self.pooling) > 0 and set(self.pooling) <= {"cls", "mean"},
             f"--pooling must be cls and/or mean, got {list(self.pooling)}"),
            precision_check(self.precision),
        ])  # fmt: skip
        self.backbone_kwargs()

    def backbone_kwargs(self) -> dict[str, Any]:
        """``--backbone-arg KEY=VALUE`` items as timm.create_model keyword arguments (VALUE parsed as JSON)."""
        out: dict[str, Any] = {}
        for item in self.backbone_arg:
            key, sep, raw = item.partition("=")
            if not sep or not key:
                raise ConfigError(f"--backbone-arg {item!r}: expected KEY=VALUE")
            try:
                out[key] = json.loads(raw)
            except json.JSONDecodeError:
                out[key] = raw  # a bare string such as global_pool=token
        return out


@dataclass
class KnnOptions(FrozenEvalOptions):
    """``maelab eval knn``: weighted k-NN (DINO's) on frozen features."""

    k: tuple[int, ...] = opt((10, 20, 200), "neighbours; one accuracy each", metavar="K")
    temperature: float = opt(0.07, "vote temperature T")  # as eval.knn.DEFAULT_TEMPERATURE

    def validate(self) -> None:
        """Reject values that cannot work, naming the flag."""
        super().validate()
        check([
            (len(self.k) > 0 and min(self.k) >= 1, f"--k values must be >= 1, got {list(self.k)}"),
            (self.temperature > 0, f"--temperature must be > 0, got {self.temperature}"),
        ])  # fmt: skip


@dataclass
class LinearOptions(FrozenEvalOptions):
    """``maelab eval linear``: a linear probe on frozen features (its seed is ``seed``)."""

    probe: ProbeConfig = field(default_factory=ProbeConfig, metadata={"help": "linear probe options"})

    def validate(self) -> None:
        """Reject values that cannot work, naming the flag."""
        super().validate()
        self.probe.validate()


# ------------------------------------------------------------------------------------ fine-tuning
@dataclass
class FinetuneConfig:
    """The fine-tuning recipe: the same budget for the pretrained encoder and the from-scratch baseline; the
    baseline trains without layer-wise lr decay (``eval.finetune.recipe_for``)."""

    epochs: int = opt(10, "fine-tuning epochs")
    batch_size: int = opt(128, "images per step")
    blr: float = opt(1.0e-3, "base lr; lr = blr * batch / 256")
    min_lr: float = opt(1.0e-6, "final cosine lr")
    warmup_epochs: float = opt(1.0, "linear lr warm-up epochs (at most a tenth of --epochs is used)")
    weight_decay: float = opt(0.05, "AdamW weight decay")
    layer_decay: float = opt(
        0.75, "lr scale per block below the head, block i gets ld**(depth-i); pretrained encoders only (the "
        "from-scratch baseline trains every layer at the full lr, 1.0)",
    )  # fmt: skip
    drop_path: float = opt(0.1, "stochastic depth rate")
    label_smoothing: float = opt(0.1, "label smoothing of the cross-entropy")
    crop_min_scale: float = opt(0.25, "random-resized-crop: smallest crop area (fraction of the image)")
    hflip: bool = opt(True, "random horizontal flip")
    global_pool: str = opt("avg", "avg (mean of the normed patch tokens) or token (CLS)", choices=("avg", "token"))
    eval_every: int = opt(0, "test every N epochs (0 = only after the last)")
    seed: int = opt(0, "head init, data order, augmentation")
    device: str = device_opt()
    quiet: bool = quiet_opt("no progress bar; one line per epoch")

    def validate(self) -> None:
        """Reject values that cannot work, naming the option."""
        check([
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
        ])  # fmt: skip


@dataclass
class FinetuneOptions(RunData):
    """``maelab eval finetune``: RUN's encoder fine-tuned end to end beside the same recipe from random init."""

    from_scratch: bool = opt(False, "fine-tune only a randomly initialised encoder")
    baseline: bool = opt(True, "also fine-tune the random-init encoder with the same recipe")
    precision: str = precision_opt()
    recipe: FinetuneConfig = field(default_factory=FinetuneConfig, metadata={"help": "fine-tuning recipe"})

    def validate(self) -> None:
        """Reject values that cannot work, naming the flag."""
        check([
            (self.subset >= 0 and self.test_subset >= 0, "--subset and --test-subset must be >= 0"),
            precision_check(self.precision),
        ])  # fmt: skip
        self.recipe.validate()


# ------------------------------------------------------------------------------------ reconstruction
@dataclass
class ReconstructOptions:
    """``maelab reconstruct``: reconstruction figure and metrics of an MAE run under fixed masks."""

    run: str = ""
    n: int = opt(8, "images (rows) in the figure")
    out: str = opt("", "figure path (default: RUN/eval/reconstruction_mr<R>_seed<S>.png)", metavar="FILE")
    mask_ratio: float | None = opt(None, "mask ratio (default: the run's own)")
    seed: int = opt(0, "chooses the images and the masks")
    num_eval: int = opt(2000, "class-balanced test images scored (0 = all)")
    data_dir: str = data_dir_opt()
    device: str = device_opt()
    precision: str = precision_opt()
    quiet: bool = quiet_opt("no progress bar")

    def validate(self) -> None:
        """Reject values that cannot work, naming the flag (the run's own ratio is checked when loaded)."""
        check([
            (self.n >= 1, f"--n must be >= 1, got {self.n}"),
            (self.mask_ratio is None or 0.0 <= self.mask_ratio < 1.0,
             f"--mask-ratio must be in [0, 1), got {self.mask_ratio}"),
            (self.num_eval >= 0, f"--num-eval must be >= 0, got {self.num_eval}"),
            precision_check(self.precision),
        ])  # fmt: skip


# ------------------------------------------------------------------------------------ tools
@dataclass
class BenchOptions:
    """``maelab bench``: training / inference throughput of the MAE on random images."""

    model: str = opt("ref", "model preset: ref, vit-tiny, vit-small")
    patch_size: int = opt(4, "patch size")
    batch_size: int = opt(256, "images per step")
    mask_ratio: tuple[float, ...] = opt((0.75,), "one or more mask ratios, each benchmarked", metavar="R")
    precision: str = precision_opt()
    device: str = device_opt()
    compile: bool = opt(False, "torch.compile the model")
    attention: str = opt(
        "auto", "attention kernel: auto (explicit on CPU, SDPA on CUDA), sdpa or explicit",
        choices=("auto", "sdpa", "explicit"),
    )  # fmt: skip
    rounds: int = opt(3, "timed rounds; the median is printed")
    steps: int = opt(3, "steps per timed round")
    warmup: int = opt(2, "untimed warm-up steps")
    speedup: bool = opt(
        False, "also time the training step at every --mask-ratio interleaved, round by round, and print each "
        "ratio's speed-up over the last one given (median, min-max, 95%% t-interval over rounds)",
    )  # fmt: skip

    def validate(self) -> None:
        """Reject values that cannot work, naming the flag."""
        check([
            (min(self.batch_size, self.rounds, self.steps) >= 1 and self.warmup >= 0,
             "--batch-size, --rounds and --steps must be >= 1 and --warmup >= 0"),
            (not self.speedup or len(self.mask_ratio) >= 2, "--speedup needs at least two --mask-ratio values"),
            (len(set(self.mask_ratio)) == len(self.mask_ratio), f"--mask-ratio {self.mask_ratio}: give each ratio once"),
            *[(0.0 <= r < 1.0, f"--mask-ratio {r}: must be in [0, 1)") for r in self.mask_ratio],
            precision_check(self.precision),
        ])  # fmt: skip
        try:
            get_preset(self.model)
        except ValueError as e:
            raise ConfigError(f"--model: {e}") from e


@dataclass
class ExportOptions:
    """``maelab export``: a run's encoder as a timm VisionTransformer state dict."""

    run: str = ""
    format: str = opt("timm", "export format", choices=("timm",))
    out: str = opt("encoder.safetensors", "weights file; the arguments go to FILE with .json", metavar="FILE")


@dataclass
class ReportOptions:
    """``maelab report``: a self-contained HTML report of a run or a results directory."""

    path: str = ""
    out: str = opt("", "where report.md/report.html go (default: PATH)", metavar="DIR")
    reconstruct: bool = opt(True, "draw a reconstruction figure of a run without one (needs the test split)")
    data_dir: str = data_dir_opt()

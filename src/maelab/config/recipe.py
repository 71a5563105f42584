"""Options of ``maelab recipe`` (the short-schedule recipe search) and its table of candidates.

A candidate is a named set of overrides ({section: {field: value}}) of the pretraining config; every
candidate trains for the same wall-clock budget on the training images minus a held-out validation
split, and is scored on that split (never on the test set). See :mod:`maelab.experiments.recipe`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from maelab.config.core import ConfigError, check, merge_sections, opt
from maelab.config.evaluation import data_dir_opt, device_opt, precision_check, precision_opt, quiet_opt
from maelab.config.pretrain import METHOD_TRAIN_DEFAULTS


@dataclass(frozen=True)
class RecipeCandidate:
    """One recipe: ``overrides`` of the pretraining config, applied above :data:`RECIPE_BASE`; ``default``:
    trained by a search that names no ``--candidates`` (else only when named)."""

    name: str
    description: str
    overrides: dict[str, dict[str, Any]]
    default: bool = True


def _with(base: dict[str, dict[str, Any]], **sections: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``base`` with the fields of ``sections`` replaced or added (copies; ``base`` is unchanged)."""
    return merge_sections(base, sections)


def _named(name: str, base: dict[str, dict[str, Any]], description: str, **sections: dict[str, Any]) -> RecipeCandidate:
    """A candidate trained only when named in ``--candidates``: ``base`` with the fields of ``sections`` changed."""
    return RecipeCandidate(name, description, _with(base, **sections), default=False)


# Pretraining values every candidate shares (below its overrides): the ref encoder (256 x 4, 4 heads,
# decoder 128 x 2) at patch 4, mask 0.75, 32x32 (the ModelConfig defaults). Loss curves need points:
# a record every 5 steps (one host sync each, negligible on a CPU). One checkpoint kept per run.
RECIPE_BASE: dict[str, dict[str, Any]] = {
    "model": {"name": "ref", "patch_size": 4, "mask_ratio": 0.75, "img_size": 32},
    "train": {"method": "mae", "log_every": 5, "keep_checkpoints": 1},
}

# The values are pinned, not left to the defaults, so that a candidate means the same recipe after
# the defaults change (e.g. to this search's winner) and a resumed search is not silently altered.
_DEFAULTS = {"train": {"batch_size": 256, "blr": 1.5e-4, "lr": 0.0, "warmup_epochs": 5.0},
             "model": {"norm_pix_loss": False}}  # fmt: skip
_GUESS = {"train": {"batch_size": 128, "blr": 1.5e-4, "lr": 1.0e-3, "warmup_epochs": 1.0},
          "model": {"norm_pix_loss": True}}  # fmt: skip

_BS64 = _with(_GUESS, train={"batch_size": 64})  # pass 1's winner (the short recipe)
_BS64_COMPILE = _with(_BS64, train={"compile": True})

# DINO's candidates: DINO's paper optimizer recipe (METHOD_TRAIN_DEFAULTS["dino"]: blr 5e-4 x batch / 256, betas
# 0.9/0.999, weight decay 0.04 -> 0.4, min lr 1e-6; not the MAE guess) at batch 64, warm-up 5 epochs (capped at a
# quarter of the run), pinned as above; they differ only in the blur. The search fits each one's teacher momentum
# to its planned steps (experiments.recipe_plan.fit_teacher_momentum, the rule of maelab compare).
_DINO = {
    "train": {"method": "dino", "batch_size": 64, "lr": 0.0, "warmup_epochs": 5.0, **METHOD_TRAIN_DEFAULTS["dino"]}
}

# name, what it tests, overrides. The lr of `guess` is absolute (--lr), so bs64 keeps it at batch 64.
RECIPE_CANDIDATES: tuple[RecipeCandidate, ...] = (
    RecipeCandidate(
        "defaults",
        "maelab's defaults before this search: batch 256, blr 1.5e-4 (lr 1.5e-4), warm-up "
        "5 epochs (capped at a quarter of the run), raw-pixel loss",
        _DEFAULTS,
    ),
    RecipeCandidate("guess", "a user's first guess: batch 128, lr 1e-3, warm-up 1 epoch, norm_pix_loss", _GUESS),
    RecipeCandidate(
        "guess-raw-pixels",
        "guess without norm_pix_loss (raw-pixel targets)",
        _with(_GUESS, model={"norm_pix_loss": False}),
    ),
    RecipeCandidate("bs64", "guess at batch 64 (twice the optimizer steps, same lr)", _BS64),
    RecipeCandidate("lr2e-3", "guess with lr 2e-3", _with(_GUESS, train={"lr": 2.0e-3})),
    RecipeCandidate(
        "light-decoder",
        "guess with a decoder 64 wide x 1 block",
        _with(_GUESS, model={"decoder_embed_dim": 64, "decoder_depth": 1}),
    ),
    RecipeCandidate(
        "narrow",
        "guess with a narrower encoder: embed 192, depth 4, 3 heads",
        _with(_GUESS, model={"embed_dim": 192, "encoder_depth": 4, "encoder_heads": 3}),
    ),
    RecipeCandidate(
        "subset-10k",
        "guess on a 10,000-image class-balanced subset (more epochs, fewer images)",
        _with(_GUESS, data={"subset": 10000}),
    ),
    # Pass 2 around the first pass's winner bs64 (named only, so the committed pass-1 command is unchanged):
    # `--candidates bs64 bs32 bs64-raw-pixels bs64-narrow bs64-light-decoder`, with several --seed.
    _named("bs32", _BS64, "bs64 at batch 32 (twice its optimizer steps, same lr)", train={"batch_size": 32}),
    _named("bs64-raw-pixels", _BS64, "bs64 without norm_pix_loss (raw-pixel targets)", model={"norm_pix_loss": False}),
    _named(
        "bs64-narrow",
        _BS64,
        "bs64 with the narrower encoder: embed 192, depth 4, 3 heads",
        model={"embed_dim": 192, "encoder_depth": 4, "encoder_heads": 3},
    ),
    _named(
        "bs64-light-decoder",
        _BS64,
        "bs64 with a decoder 64 wide x 1 block",
        model={"decoder_embed_dim": 64, "decoder_depth": 1},
    ),
    # Pass 3: the knobs pass 1 and 2 left out -- patch size, encoder depth, decoder depth -- and a milder
    # crop, each one change of bs64 (named only: `--candidates bs64 bs64-patch8 bs64-deep-narrow
    # bs64-deep-decoder bs64-crop0.35`).
    _named(
        "bs64-patch8",
        _BS64,
        "bs64 with 8-pixel patches (16 per image, 4 visible): ~4x fewer tokens per image, more images per minute",
        model={"patch_size": 8},
    ),
    _named(
        "bs64-deep-narrow",
        _BS64,
        "bs64 with a deeper, narrower encoder of about the same cost: embed 192, depth 6, 3 heads",
        model={"embed_dim": 192, "encoder_depth": 6, "encoder_heads": 3},
    ),
    _named("bs64-deep-decoder", _BS64, "bs64 with a decoder 4 blocks deep (128 wide)", model={"decoder_depth": 4}),
    _named(
        "bs64-crop0.35",
        _BS64,
        "bs64 with a milder random-resized crop: smallest area 0.35 of the image (0.2 in MAE)",
        data={"crop_min_scale": 0.35},
    ),
    # Pass 4, on a CPU with native bf16 (the 15-minute goals' machine): the short recipe compiled (torch.compile: ~1.25x
    # its eager img/s there, same maths) against the changes that bf16's cheaper matmuls may now pay for, each one
    # change of it (named only: `--candidates bs64-compile bs128-compile bs64-deep-compile bs64-deep-decoder-compile
    # bs64-wide-decoder-compile`).
    _named("bs64-compile", _BS64_COMPILE, "bs64, torch.compile'd (the same maths, more steps per minute)"),
    _named(
        "bs128-compile",
        _BS64_COMPILE,
        "bs64-compile at batch 128 with lr 2e-3 (bf16 runs batch 128 at ~1.4x the img/s of batch 64)",
        train={"batch_size": 128, "lr": 2.0e-3},
    ),
    _named(
        "bs64-deep-compile",
        _BS64_COMPILE,
        "bs64-compile with a deeper encoder: 6 blocks instead of 4 (256 wide)",
        model={"encoder_depth": 6},
    ),
    _named(
        "bs64-deep-decoder-compile",
        _BS64_COMPILE,
        "bs64-compile with a decoder 4 blocks deep (128 wide)",
        model={"decoder_depth": 4},
    ),
    _named(
        "bs64-wide-decoder-compile",
        _BS64_COMPILE,
        "bs64-compile with a wider decoder: 256 wide (2 blocks, 8 heads)",
        model={"decoder_embed_dim": 256, "decoder_heads": 8},
    ),
    # Pass 5, fp32 at the 15-minute budget itself (CPUs without native bf16, where a 64-image step's small GEMMs run
    # well below the fp32 GEMM peak): a higher lr, and batch 128 (larger GEMMs) at the lr scaled with it (named only:
    # `--candidates bs64 bs64-lr2e-3 bs128-lr2e-3 bs64-light-decoder`; results/recipe_cpu/pass5).
    _named("bs64-lr2e-3", _BS64, "bs64 with lr 2e-3", train={"lr": 2.0e-3}),
    _named(
        "bs128-lr2e-3",
        _BS64,
        "bs64 at batch 128 with lr 2e-3 (the lr scaled with the batch)",
        train={"batch_size": 128, "lr": 2.0e-3},
    ),
    # Pass 6, fp32 at 15 minutes, in the same search folder as pass 5 (its candidates are reused): the warm-up. One
    # epoch is 703 steps on the 45,000 images left by --holdout 5000, ~18% of a 15-minute fp32 run (~3,900 steps) at
    # half the peak lr on average; a quarter epoch (176 steps) gives that time to the peak (named only: `--candidates bs64 bs64-lr2e-3 bs128-lr2e-3
    # bs64-light-decoder bs64-warmup0.25 bs64-lr2e-3-warmup0.25`; results/recipe_cpu/pass6).
    _named("bs64-warmup0.25", _BS64, "bs64 with a quarter-epoch warm-up", train={"warmup_epochs": 0.25}),
    _named(
        "bs64-lr2e-3-warmup0.25",
        _BS64,
        "bs64 with lr 2e-3 and a quarter-epoch warm-up",
        train={"lr": 2.0e-3, "warmup_epochs": 0.25},
    ),
    # Pass 7, fp32 at 15 minutes, same search folder as passes 5-6: the light decoder's saved compute (it trains
    # ~1.45x the images per second) spent on a deeper encoder instead, and the one optimizer knob not yet searched,
    # weight decay (named only: `--candidates bs64 bs64-lr2e-3 bs128-lr2e-3 bs64-light-decoder bs64-warmup0.25
    # bs64-lr2e-3-warmup0.25 bs64-deep-light-decoder bs64-wd0`; results/recipe_cpu/pass7).
    _named(
        "bs64-deep-light-decoder",
        _BS64,
        "bs64 with a 6-block encoder (256 wide) and a decoder 64 wide x 1 block (about bs64's cost per image)",
        model={"encoder_depth": 6, "decoder_embed_dim": 64, "decoder_depth": 1},
    ),
    _named("bs64-wd0", _BS64, "bs64 without weight decay (0.05 in MAE)", train={"weight_decay": 0.0}),
    # DINO's CIFAR augmentation (named only: `--candidates dino-blur dino-light-blur dino-no-blur`).
    _named(
        "dino-blur",
        _DINO,
        "DINO, blur as maelab's DINO defaults: p (1.0, 0.1, 0.5), sigma 0.1-1.0 px",
        dino={"blur_prob": (1.0, 0.1, 0.5), "blur_sigma": (0.1, 1.0)},
    ),
    _named(
        "dino-light-blur",
        _DINO,
        "DINO, blur sigma at the reference's share of the image width: 0.1-2.0 px at 224 px -> 0.014-0.29 px at 32",
        dino={"blur_prob": (1.0, 0.1, 0.5), "blur_sigma": (0.014, 0.29)},
    ),
    _named(
        "dino-no-blur",
        _DINO,
        "DINO without blur: p (0, 0, 0)",
        dino={"blur_prob": (0.0, 0.0, 0.0), "blur_sigma": (0.1, 1.0)},
    ),
)


def candidates_by_name(names: tuple[str, ...] = (), table: tuple[RecipeCandidate, ...] = RECIPE_CANDIDATES
                       ) -> list[RecipeCandidate]:  # fmt: skip
    """The candidates named (in the order given), or the table's default ones (the MAE recipes); an unknown
    name is a ConfigError."""
    known = {c.name: c for c in table}
    if not names:
        return [c for c in table if c.default]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"--candidates {' '.join(unknown)}: unknown; choose from {', '.join(known)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"--candidates {' '.join(names)}: each candidate once")
    return [known[n] for n in names]


@dataclass
class RecipeOptions:
    """What ``maelab recipe`` searches and how: the budget, the validation split, the evaluation."""

    data_dir: str = data_dir_opt()  # no run here: $MAELAB_DATA unless given
    out: str = opt("runs/recipe-cpu", "results folder (re-running with it continues the search)")
    budget_minutes: float = opt(4.0, "wall-clock minutes of training steps per candidate on this machine")
    holdout: int = opt(5000, "class-balanced training images held out as the validation split (never pretrained "
                       "on; every score is on them, never on the test set)")  # fmt: skip
    eval_subset: int = opt(10000, "non-held-out training images whose frozen features train the k-NN / linear "
                           "probe (class-balanced, 0 = all)")  # fmt: skip
    candidates: tuple[str, ...] = opt(
        (), "candidates to train (default: the MAE ones: " + ", ".join(c.name for c in RECIPE_CANDIDATES if c.default)
        + "; trained only when named: " + ", ".join(c.name for c in RECIPE_CANDIDATES if not c.default) + ")",
        metavar="NAME",
    )  # fmt: skip
    seed: int = opt(0, "random seed of every candidate (init, data order, masks) and of the probes")
    device: str = device_opt()
    precision: str = precision_opt()  # of training and of the features
    probe_epochs: int = opt(100, "linear-probe epochs")
    calibration_steps: int = opt(5, "timed steps of the short training-loop run that measures a candidate's img/s "
                                 "before its step count is fixed (after its warm-up; it also times at least 5 s and "
                                 "a twentieth of the budget)")  # fmt: skip
    refit: bool = opt(True, "re-fit a candidate's step count once, at the end of its lr warm-up, from its run's own "
                      "speed (as pretrain --minutes), so that it ends at the budget; --no-refit trains the "
                      "calibrated steps, as searches did before (per call; the report says which runs "
                      "re-fitted)")  # fmt: skip
    quiet: bool = quiet_opt("no progress bars; one log line per epoch")
    isolate: bool = True  # pretrain in a fresh process per run (tests set False: no seconds of imports)

    def validate(self) -> None:
        """Reject values that cannot work, naming the flag."""
        checks = [
            (self.budget_minutes > 0, f"--budget-minutes must be > 0, got {self.budget_minutes}"),
            (self.holdout > 0, f"--holdout must be > 0 (the validation split), got {self.holdout}"),
            (self.eval_subset >= 0, f"--eval-subset must be >= 0, got {self.eval_subset}"),
            (self.probe_epochs >= 1, f"--probe-epochs must be >= 1, got {self.probe_epochs}"),
            (self.calibration_steps >= 1, f"--calibration-steps must be >= 1, got {self.calibration_steps}"),
            (bool(self.out), "--out must name a folder"),
            precision_check(self.precision),
        ]  # fmt: skip
        check(checks)

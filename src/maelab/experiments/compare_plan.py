"""The plan of MAE vs DINO: the settings a comparison keeps, each method's run config (with the DINO
teacher momentum fitted to the run's length), the checks during pretraining, and the rule of the equal
wall-clock budget."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection
from pathlib import Path
from typing import Any

from maelab.config import METHOD_TRAIN_DEFAULTS, Config
from maelab.config.experiments import CompareOptions, method_config
from maelab.config.pretrain import DinoConfig
from maelab.eval.knn import PAIRED_K
from maelab.experiments.stages import Stages
from maelab.models.dino import momentum_schedule, suggest_momentum, teacher_init_weight

METHOD_NAMES = ("mae", "dino")
KNN_K = PAIRED_K  # the k reported in tables and curves (DINO's default)
STATE_FILE = "metrics.json"
TEACHER_INIT_LEFT = 0.05  # the most of its random init a DINO teacher may keep at the end of a run
MOMENTUM_RULE = (
    f"teacher momentum m0 chosen so that the teacher keeps <= {TEACHER_INIT_LEFT:.0%} of its random init at the end of "
    "the run"
)
# The DINO schedule (ViT-S/16, 100 epochs) its 1-epoch freeze and temperature warm-up belong to.
DINO_SCHEDULE_EPOCHS = 100
SHORT_RUN_WARMUPS = ("freeze_last_layer", "warmup_teacher_temp_epochs")  # DinoConfig fields counted in epochs
WARMUP_RULE = (
    f"DINO's last-layer freeze and teacher-temperature warm-up take the share of the run they take of DINO's "
    f"{DINO_SCHEDULE_EPOCHS}-epoch schedule"
)
MOMENTUM_FORMULA = (
    f"(the EMA momentum rises from m0 to 1 on a cosine; m0 = 1 - 2 ln({1 / TEACHER_INIT_LEFT:g}) / T for a run of T "
    "steps, lower for a run cut before the end of its schedule)"
)


def compare_settings(base: Config, opts: CompareOptions) -> dict[str, Any]:
    """What a comparison keeps in ``OUT/metrics.json``: the shared config (no method, no out), the options
    and DINO's recipe (MAE's recipe is the config itself)."""
    shared = base.to_dict()
    shared["train"]["method"], shared["train"]["out"] = "", ""
    return {"config": shared, "options": dataclasses.asdict(opts), "dino_recipe": METHOD_TRAIN_DEFAULTS["dino"]}


def open_stages(out: Path, base: Config, opts: CompareOptions) -> Stages:
    """``OUT/metrics.json``: created for a new comparison, or checked against these settings to continue one
    (``options.progress`` may change). When and at which git commit each stage was computed is kept as the
    sweep's metrics.json keeps it, under ``stages_computed``."""
    return Stages(
        out / STATE_FILE, compare_settings(base, opts), "a comparison", config_keys=("config",),
        option_defaults={"options": dataclasses.asdict(CompareOptions())}, ignore=("options.progress",),
        computed_key="stages_computed", device=base.train.device,
    )  # fmt: skip


def given_momentum(base: Config, opts: CompareOptions) -> float | None:
    """The teacher momentum the user chose, or None to fit it to each DINO run: ``opts.momentum_teacher``
    if set, else ``base``'s ``--momentum-teacher`` when it differs from DINO's default (the config does not
    say whether a value equal to the default was typed)."""
    if opts.momentum_teacher is not None:
        return opts.momentum_teacher
    value = base.dino.momentum_teacher
    return None if value == DinoConfig().momentum_teacher else value


def teacher_momentum(schedule_steps: int, run_steps: int | None = None) -> float:
    """The base teacher momentum m0 that leaves <= ``TEACHER_INIT_LEFT`` of the random init in the teacher
    after ``run_steps`` steps (default: all) of a ``schedule_steps``-step cosine schedule from m0 to 1.

    A full run takes :func:`maelab.models.dino.suggest_momentum`: the sum of 1 - m over the cosine is
    (1 - m0) T / 2, set to ln(1 / 0.05). A run cut early stops while m is still near m0, so the same sum
    over the steps it runs needs a smaller 1 - m0. As -log(m) >= 1 - m, the teacher keeps at most the 5%.
    """
    run = min(run_steps or schedule_steps, schedule_steps)
    if run >= schedule_steps:
        return suggest_momentum(schedule_steps, TEACHER_INIT_LEFT)
    cosine = float((1.0 - momentum_schedule(0.0, schedule_steps)[:run]).sum())  # sum of (1 - m) / (1 - m0)
    return max(0.0, 1.0 - math.log(1.0 / TEACHER_INIT_LEFT) / cosine)


def teacher_left(momentum: float, schedule_steps: int, run_steps: int | None = None) -> float:
    """Share of its random init a teacher keeps after ``run_steps`` (default: all) of the schedule."""
    return teacher_init_weight(momentum_schedule(momentum, schedule_steps)[: run_steps or schedule_steps])


def with_teacher_momentum(
    cfg: Config, given: float | None, stop: int | None = None, given_values: Collection[str] = ()
) -> Config:
    """``cfg`` with, for a DINO run, the teacher momentum ``given`` or else :func:`teacher_momentum` of the
    run's own length (cut at step ``stop`` if given), and the warm-ups not in ``given_values`` shrunk to the
    run (:func:`with_short_run_warmups`); set in place, returned for chaining."""
    if cfg.train.method == "dino":
        total = schedule_steps(cfg)
        cfg.dino.momentum_teacher = given if given is not None else teacher_momentum(total, stop)
        with_short_run_warmups(cfg, total / max(1, steps_per_epoch(cfg)), given_values)
    return cfg


def with_short_run_warmups(cfg: Config, run_epochs: float, given_values: Collection[str] = ()) -> Config:
    """``cfg`` with DINO's epoch-counted warm-ups (``freeze_last_layer``, ``warmup_teacher_temp_epochs``) taking
    the share of a ``run_epochs``-epoch run that they take of DINO's :data:`DINO_SCHEDULE_EPOCHS`-epoch schedule,
    for a run shorter than that; a value named in ``given_values`` ("dino.freeze_last_layer": typed, even if equal
    to the default) or other than DINO's default is taken as given and kept. Without it a
    1-epoch run would keep the head's last layer frozen at its random init for the whole run. In place."""
    share = min(1.0, run_epochs / DINO_SCHEDULE_EPOCHS)
    default = DinoConfig()
    for name in SHORT_RUN_WARMUPS:
        if f"dino.{name}" not in given_values and getattr(cfg.dino, name) == getattr(default, name):
            setattr(cfg.dino, name, getattr(default, name) * share)
    return cfg


def momentum_record(run_dino: DinoConfig, cfg: Config, steps: int, stop: int | None = None) -> dict[str, Any]:
    """What a DINO run's record says of its teacher: the momentum it used (``run_dino``, from the run's own
    config.json), how it was chosen, the share of the random init the teacher kept after ``steps``, and
    the epoch-counted warm-ups it ran with (:func:`with_short_run_warmups`)."""
    used, total = run_dino.momentum_teacher, schedule_steps(cfg)
    if math.isclose(used, teacher_momentum(total, stop), abs_tol=1e-9):
        rule = "fitted to the run length"
    elif math.isclose(used, cfg.dino.momentum_teacher, abs_tol=1e-9):
        rule = "given"
    else:
        rule = "as the run started (an older maelab)"
    warmups = {name: round(getattr(run_dino, name), 6) for name in SHORT_RUN_WARMUPS}
    return {"momentum_teacher": round(used, 6), "momentum_rule": rule,
            "teacher_init_left": round(teacher_left(used, total, steps), 4), **warmups}  # fmt: skip


def run_configs(
    base: Config, runs_dir: Path, given: float | None = None, given_values: Collection[str] = ()
) -> dict[str, Config]:
    """{method: its equal-epoch run config into ``runs_dir/<method>``}, each with its paper's recipe (for DINO
    without the values only MAE's ``--recipe`` set, unless in ``given_values``: :func:`method_config`) and
    DINO's teacher momentum fitted to its length unless ``given`` (:func:`with_teacher_momentum`)."""
    cfgs = {m: method_config(base, m, str(runs_dir / m), given=given_values) for m in METHOD_NAMES}
    for cfg in cfgs.values():
        with_teacher_momentum(cfg, given, given_values=given_values)
    return cfgs


def steps_per_epoch(cfg: Config) -> int:
    """Optimizer steps per epoch of ``cfg``'s training set, by the training loop's rule (one process)."""
    from maelab.data import load_data

    n = len(load_data(cfg.data, "train", cfg.model.img_size))
    return n // cfg.train.images_per_step()


def schedule_steps(cfg: Config) -> int:
    """Optimizer steps of ``cfg``'s whole schedule, by the training loop's rule: ``--steps`` or epochs x steps per epoch."""
    return cfg.train.steps or cfg.train.epochs * max(1, steps_per_epoch(cfg))


def check_steps(total_steps: int, points: int) -> list[int]:
    """The steps at which a run pauses for its k-NN / entropy checks: ``points`` evenly spaced, the last
    at ``total_steps``; just ``[total_steps]`` when ``points`` is 0."""
    if not points:
        return [total_steps]
    return sorted({max(1, round(total_steps * i / points)) for i in range(1, points + 1)})


def time_budget_epochs(budget_s: float, seconds_per_epoch: float, steps_per_epoch: int) -> tuple[int, int | None]:
    """(epochs, stop_after_steps) that fit ``budget_s``: whole epochs with a complete schedule, or
    below one epoch a 1-epoch schedule cut after the steps that fit (at least 1)."""
    epochs = math.floor(budget_s / seconds_per_epoch + 1e-9)
    if epochs >= 1:
        return epochs, None
    return 1, max(1, math.floor(budget_s / seconds_per_epoch * steps_per_epoch))

"""The plan of MAE vs DINO: the settings a comparison keeps, each method's run config, the checks
during pretraining, and the rule of the equal wall-clock budget."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from maelab.config import METHOD_TRAIN_DEFAULTS, Config
from maelab.config.experiments import CompareOptions, method_config
from maelab.experiments.stages import Stages

METHOD_NAMES = ("mae", "dino")
KNN_K = 20  # the k reported in tables and curves (DINO's default)
POOLINGS = ("cls", "mean")  # the token poolings every encoder is evaluated with
STATE_FILE = "metrics.json"


def compare_settings(base: Config, opts: CompareOptions) -> dict[str, Any]:
    """What a comparison keeps in ``OUT/metrics.json``: the shared config (no method, no out), the options
    and DINO's recipe (MAE's recipe is the config itself)."""
    shared = base.to_dict()
    shared["train"]["method"], shared["train"]["out"] = "", ""
    return {"config": shared, "options": dataclasses.asdict(opts), "dino_recipe": METHOD_TRAIN_DEFAULTS["dino"]}


def open_stages(out: Path, base: Config, opts: CompareOptions) -> Stages:
    """``OUT/metrics.json``: created for a new comparison, or checked against these settings to continue one
    (``options.progress`` may change)."""
    return Stages(
        out / STATE_FILE, compare_settings(base, opts), "a comparison", config_keys=("config",),
        option_defaults={"options": dataclasses.asdict(CompareOptions())}, ignore=("options.progress",),
    )  # fmt: skip


def run_configs(base: Config, runs_dir: Path) -> dict[str, Config]:
    """{method: its equal-epoch run config into ``runs_dir/<method>``}, each with its paper's recipe."""
    return {m: method_config(base, m, str(runs_dir / m)) for m in METHOD_NAMES}


def steps_per_epoch(cfg: Config) -> int:
    """Optimizer steps per epoch of ``cfg``'s training set, by the training loop's rule (one process)."""
    from maelab.data import load_data

    n = len(load_data(cfg.data, "train", cfg.model.img_size))
    return n // (cfg.train.batch_size * cfg.train.accum_steps)


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

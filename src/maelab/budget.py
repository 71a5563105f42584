"""Wall-clock budgets: the optimizer steps that fill N minutes of training on this machine.

A schedule (warm-up, cosine lr) needs its length before the first step, so a time budget becomes a step
count: a short calibration run of the same config through the same training loop measures the loop's
img/s (data indexing, augmentation, optimizer, logging and checkpoints included), and the steps are the
budget's seconds at that speed. ``maelab pretrain --minutes`` and ``maelab recipe`` (every candidate the
same budget) both count time as :func:`maelab.rundir.training_seconds` does: training steps only, not
process start, data loading or evaluation. Both then re-fit the steps once, at the end of the lr warm-up, from
the run's own speed (:class:`Refit`; a recipe candidate's run is given its steps and the budget:
``maelab.train.pretrain(cfg, budget_s=...)``); the record goes to ``RUN/budget.json`` (:func:`read_budget`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from maelab import rundir
from maelab.config import Config, ConfigError

# A calibration times the metric windows after the one holding step WARMUP_STEPS (allocations and AdamW's
# state come on the first step; torch.compile, when set, on the first too), at least MIN_CALIBRATION_SECONDS
# (a few steps are noisy) and CALIBRATION_SHARE of the budget, training again for longer (at most
# CALIBRATION_RUNS runs) when a run was too short.
WARMUP_STEPS = 2
MIN_CALIBRATION_SECONDS = 5.0
CALIBRATION_SHARE = 0.05
CALIBRATION_RUNS = 3
# `pretrain --minutes`: the calibration times this share of the budget, at most MAX_CALIBRATION_SECONDS (a
# minute of steps gives the speed to a few percent; longer only delays the run).
MAX_CALIBRATION_SECONDS = 60.0
MIN_CALIBRATION_STEPS = 5  # timed steps at least, however fast they are
# `pretrain --minutes` then re-fits its steps once, at the end of the lr warm-up, from the run's own speed (a
# minute's calibration overestimated a long run's sustained speed: 15-minute runs ended 8-13% over), and so does
# each candidate's run of `maelab recipe` (its calibration is a short run too: pass 6's candidates used 102% and
# 118% of the budget without the re-fit). The cosine part of the lr schedule starts there, so the steps already
# trained keep their lr (a weight-decay or DINO momentum cosine over the whole run is re-laid from there). At
# least MIN_REFIT_SECONDS must be timed, or the calibration's plan stands; a run whose warm-up is at most
# WARMUP_STEPS steps has nothing to time and keeps the plan, and so does a run resumed before its warm-up's end.
MIN_REFIT_SECONDS = 10.0
BUDGET_FILE = "budget.json"  # RUN/budget.json: the calibration (or the given budget) and the re-fit


def planned_steps(budget_s: float, img_per_s: float, per_step: int, overhead_s: float = 0.0) -> int:
    """Optimizer steps that fill ``budget_s`` seconds at ``img_per_s`` with ``per_step`` images a step (>= 1),
    after ``overhead_s`` seconds of the run's first, slower steps."""
    if img_per_s <= 0 or per_step <= 0:
        raise ValueError(f"need a positive speed and batch, got {img_per_s} img/s and {per_step} images a step")
    return max(1, round(max(budget_s - overhead_s, 0.0) * img_per_s / per_step))


def loop_speed(records: list[dict[str, Any]], per_step: int, skip_steps: int = WARMUP_STEPS) -> dict[str, Any]:
    """The speed of a training loop from its metric ``records``, in the seconds the budget is counted in
    (:func:`maelab.rundir.training_seconds`): the windows up to the first record at or after step
    ``skip_steps`` are the warm-up, the rest are timed. Returns {img_per_s (0 when nothing was timed),
    timed_steps, timed_seconds, skipped_steps, start_overhead_s: the warm-up's seconds beyond that speed}."""
    start = next((r["step"] for r in records if r["step"] >= skip_steps), records[-1]["step"] if records else 0)
    head = rundir.training_seconds(records, per_step, start)
    steps = records[-1]["step"] - start if records else 0
    seconds = rundir.training_seconds(records, per_step) - head
    rate = steps * per_step / seconds if steps > 0 and seconds > 0 else 0.0
    overhead = max(0.0, head - start * per_step / rate) if rate > 0 else 0.0
    return {"img_per_s": round(rate, 2), "timed_steps": steps, "timed_seconds": round(seconds, 3),
            "skipped_steps": start, "start_overhead_s": round(overhead, 3)}  # fmt: skip


def calibration_length(speed: dict[str, Any], min_steps: int, min_seconds: float, log_every: int) -> int:
    """Steps of the next calibration run: the warm-up, then ``min_steps`` and ``min_seconds`` at the speed of
    the last run (``speed``, from :func:`loop_speed`; none yet: ``{}``), with a tenth to spare, and a
    metric window more (the timed part starts at a record)."""
    per_s = speed["timed_steps"] / speed["timed_seconds"] if speed.get("timed_seconds") else 0.0
    return WARMUP_STEPS + log_every + max(min_steps, math.ceil(1.1 * min_seconds * per_s))


def measure_speed(
    cfg: Config, scratch: Path, min_steps: int, min_seconds: float, train: Callable[[Config], Any]
) -> dict[str, Any]:
    """Training img/s of ``cfg``: ``train(cfg')`` trains ``cfg`` for a few steps into ``scratch`` (``cfg'`` has
    ``steps`` and ``out`` set; deleted after) with the loop the run will use. Timed as the budget is counted,
    after the warm-up (:func:`loop_speed`); trained again, longer, until ``min_steps`` steps and
    ``min_seconds`` are timed (at most :data:`CALIBRATION_RUNS` runs). Returns loop_speed's dict with {runs,
    steps_run, window_img_per_s, precision, precision_reason, device}."""
    per_step, steps, runs = cfg.train.images_per_step(), 0, 0
    speed: dict[str, Any] = {}
    while runs < CALIBRATION_RUNS:
        runs += 1
        steps = calibration_length(speed, min_steps, min_seconds, cfg.train.log_every)
        shutil.rmtree(scratch, ignore_errors=True)  # never resume a calibration: time it from its start
        train(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=steps, out=str(scratch))))
        records = rundir.read_metrics(scratch)
        speed = loop_speed(records, per_step)
        if speed["timed_steps"] >= min_steps and speed["timed_seconds"] >= min_seconds:
            break
    if speed["img_per_s"] <= 0:
        raise ConfigError(f"{scratch}: the calibration run of {steps} steps timed no step after its warm-up")
    summary = rundir.read_summary(scratch)
    shutil.rmtree(scratch)
    if summary is None:
        raise ConfigError(f"{scratch}: the calibration run wrote no summary.json")
    return {
        **speed, "runs": runs, "steps_run": steps,
        "window_img_per_s": [r["img_per_s"] for r in records if r["step"] > speed["skipped_steps"]],
        "precision": summary.precision, "precision_reason": summary.precision_reason, "device": summary.device,
    }  # fmt: skip


def fit_to_minutes(cfg: Config, train: Callable[[Config], Any]) -> tuple[Config, dict[str, Any]]:
    """``cfg`` with ``train.steps`` fitted to ``train.minutes`` of training on this machine, and the calibration
    (:func:`measure_speed`'s dict with budget_s and planned_steps). ``train`` is the training loop, run quietly
    into a temporary folder for :data:`CALIBRATION_SHARE` of the budget (5 s to a minute); the calibration
    is not part of the run: its steps are trained again, from the run's own start."""
    budget_s = 60.0 * cfg.train.minutes
    if budget_s <= 0:
        raise ConfigError(f"--minutes must be > 0 to fit a step count, got {cfg.train.minutes}")
    seconds = min(MAX_CALIBRATION_SECONDS, max(MIN_CALIBRATION_SECONDS, CALIBRATION_SHARE * budget_s))
    quiet = dataclasses.replace(cfg.train, minutes=0.0, quiet=True, tensorboard=False)
    with tempfile.TemporaryDirectory(prefix="maelab-calibration-") as tmp:
        speed = measure_speed(
            dataclasses.replace(cfg, train=quiet), Path(tmp) / "run", MIN_CALIBRATION_STEPS, seconds, train
        )
    steps = planned_steps(budget_s, speed["img_per_s"], cfg.train.images_per_step(), speed["start_overhead_s"])
    fitted = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=steps))
    return fitted, {**speed, "budget_s": budget_s, "planned_steps": steps}


def given_budget(cfg: Config, budget_s: float, resumed: bool = False) -> dict[str, Any]:
    """The record of a new run given its steps (``cfg.train.steps``, planned elsewhere, e.g. by a recipe
    candidate's calibration) and a budget of ``budget_s`` seconds of training: {budget_s, planned_steps}, what
    :func:`fit_to_minutes` gives a ``--minutes`` run, for the same one :class:`Refit`. Refused (ConfigError):
    a budget <= 0, no ``--steps``, ``--minutes`` too, a resume (``resumed``) or several processes."""
    checks = (
        (not resumed, "budget_s is for a new run: a resume continues the schedule its config.json holds"),
        (math.isfinite(budget_s) and budget_s > 0, f"budget_s must be > 0 seconds, got {budget_s}"),
        (cfg.train.steps > 0, "budget_s re-fits the steps a run is given: set train.steps (--steps)"),
        (cfg.train.minutes == 0, f"--minutes {cfg.train.minutes:g} fits the steps itself; budget_s is for given steps"),
        (int(os.environ.get("WORLD_SIZE", "1")) == 1, "budget_s re-fits in one process; under torchrun give --steps"),
    )  # fmt: skip
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    return {"budget_s": float(budget_s), "planned_steps": cfg.train.steps}


def read_budget(run: str | Path) -> dict[str, Any] | None:
    """``RUN/budget.json`` of a run trained to a time budget: its calibration (or given budget) with budget_s
    and planned_steps, and ``refit`` (:meth:`Refit.watch`'s dict) once re-fitted; None for other runs."""
    path = Path(run) / BUDGET_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def refit_steps(budget_s: float, trained_s: float, step: int, steps_per_s: float) -> int:
    """Total steps that end a run at ``budget_s`` seconds of training: ``step`` steps took ``trained_s``, the rest
    go at ``steps_per_s``; at least ``step + 1``."""
    if steps_per_s <= 0:
        raise ValueError(f"need a positive speed, got {steps_per_s} steps/s")
    return max(step + 1, step + round(max(budget_s - trained_s, 0.0) * steps_per_s))


class Refit:
    """The one re-fit of a ``--minutes`` run's steps (or of a run given ``budget_s``: :func:`given_budget`), at
    step ``at_step`` (the end of the warm-up), to end the run at ``budget_s`` seconds of training.

    ``watch(step)`` after every optimizer step: it starts the clock at :data:`WARMUP_STEPS` (the first
    steps allocate and compile) and at ``at_step`` returns {at_step, trained_s (since ``start``), timed_seconds,
    steps_per_s, planned_steps: the new total, or None when fewer than :data:`MIN_REFIT_SECONDS` were timed}.
    """

    def __init__(self, budget_s: float, at_step: int, start: float) -> None:
        self.budget_s, self.at_step, self.start = budget_s, at_step, start
        self.timed_from: float | None = None

    def watch(self, step: int, now: float | None = None) -> dict[str, Any] | None:
        """None before ``at_step``; the re-fit (see the class) at it."""
        now = time.perf_counter() if now is None else now
        if step == WARMUP_STEPS:
            self.timed_from = now
        if step != self.at_step or self.timed_from is None:
            return None
        timed = now - self.timed_from
        rate = (step - WARMUP_STEPS) / timed if timed > 0 else 0.0
        fit: dict[str, Any] = {"at_step": step, "trained_s": round(now - self.start, 3),
                               "timed_seconds": round(timed, 3), "steps_per_s": round(rate, 4)}  # fmt: skip
        ok = timed >= MIN_REFIT_SECONDS and rate > 0
        fit["planned_steps"] = refit_steps(self.budget_s, now - self.start, step, rate) if ok else None
        return fit

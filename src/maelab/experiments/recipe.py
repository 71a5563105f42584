"""The short-schedule recipe search: which knobs learn the most per CPU-hour, measured on a validation
split of the TRAINING set (``--holdout`` images, never pretrained on); the test set is never read.

    per candidate: calibrate (img/s of a short run of its exact config in the training loop, fresh
    process) -> steps = budget x img/s / batch -> pretrain those steps (fresh process, resumable),
    re-fitted once at the end of the lr warm-up from the run's own speed -> k-NN (k=20) and linear
    probe on frozen features of the validation images, beside the random-init encoder of the same
    shape -> rank -> report

Every candidate gets the same wall-clock budget of training steps on this machine. The calibration
runs the same code as the run (data indexing, augmentation, optimizer step, logging: the costs a
benchmark of the model alone misses, more at small batches) and times it the way the budget is
counted, so its img/s fixes a step count that fills the budget. A short calibration misjudges a long
run's sustained speed (pass 6's candidates used 102% and 118% of the budget), so, as ``maelab pretrain
--minutes`` does, the run re-fits its step count once, at the end of its lr warm-up, from its own
measured speed (:class:`maelab.budget.Refit`; not with ``--no-refit``, nor for a warm-up of at most
:data:`maelab.budget.WARMUP_STEPS` steps). After that the step count, not the clock, ends the run: the
cosine decay spans the re-fitted steps and ends where it should, and a resumed run continues that
schedule (its config.json holds it; ``RUN/budget.json`` the planned steps and the re-fit). The
training seconds the run actually used (from its metrics.jsonl, start-up excluded) are reported beside
the budget, and a candidate outside 90-110% of it is flagged.

Results folder (``OUT``)::

    recipe.json      the shared settings and every finished stage; re-running continues the search
    runs/<name>/     one pretraining run per candidate
    evals/<name>/    knn.{json,md} and linear.{json,md} (the candidate and its random-init twin)
    plots/           loss_vs_time.png, scores.png
    summary.md, summary.csv, metrics.json

Stages (in ``recipe.json``): ``calibrate:<name>`` (img/s and the planned steps; its scratch run,
``OUT/calibration/<name>``, is deleted), ``pretrain:<name>`` (the finished run's time, loss and curve, its
re-fit: :func:`refit_record`; for DINO the teacher momentum, fitted to the planned steps:
:func:`~maelab.experiments.recipe_plan.fit_teacher_momentum`), ``eval:<name>`` (the validation scores), each
with when and at which git commit it was computed (metrics.json ``stages_computed``). A candidate's
overrides are stored with its calibration: a changed candidate is refused, not mixed with old results.
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from maelab import budget, rundir
from maelab import checkpoint as ckpt
from maelab.config import Config, ConfigError
from maelab.config.recipe import RecipeCandidate
from maelab.eval.features import POOLINGS
from maelab.experiments import child
from maelab.experiments.compare_plan import momentum_record, teacher_left
from maelab.experiments.recipe_plan import (
    KNN_K,
    RecipePlan,
    baseline_config,
    fit_teacher_momentum,
)
from maelab.experiments.stages import Stages


def _train_images(cfg: Config) -> Any:
    """The images ``cfg`` pretrains on: the training split minus the held-out ones, then ``--subset``."""
    from maelab.data import load_data

    return load_data(cfg.data, "train", cfg.model.img_size)


# ------------------------------------------------------------------------------------ calibration
def measure_speed(
    cfg: Config, scratch: Path, min_steps: int, min_seconds: float, isolate: bool = True
) -> dict[str, Any]:
    """Training img/s of ``cfg`` (:func:`maelab.budget.measure_speed`), trained by the loop the run uses:
    :func:`child.train_until`, in a fresh process when ``isolate``, as the run; a DINO config's teacher
    momentum fitted to each short calibration run, as the run's to its own length. ``scratch`` is deleted
    after, and its parent (``OUT/calibration``) when no other calibration is in it."""

    def train(run_cfg: Config) -> None:
        child.train_until(scratch, fit_teacher_momentum(run_cfg), None, isolate)

    speed = budget.measure_speed(cfg, scratch, min_steps, min_seconds, train)
    with contextlib.suppress(OSError):
        scratch.parent.rmdir()
    return speed


def calibrate(plan: RecipePlan, cand: RecipeCandidate) -> dict[str, Any]:
    """The calibration stage of ``cand``: its img/s in the training loop and the steps that fill the budget
    (less the loop's start overhead, which the run's training seconds count too)."""
    cfg = plan.config(cand)
    train = _train_images(cfg)
    per_step = cfg.train.images_per_step()
    if len(train) < per_step:
        raise ConfigError(f"candidate {cand.name}: {len(train)} training images, fewer than a step's {per_step}")
    speed = measure_speed(cfg, plan.out / "calibration" / cand.name, plan.options.calibration_steps,
                          plan.calibration_s, plan.options.isolate)  # fmt: skip
    steps = budget.planned_steps(plan.budget_s, speed["img_per_s"], per_step, speed["start_overhead_s"])
    return {
        "overrides": json.loads(json.dumps(cand.overrides)), "budget_s": plan.budget_s, **speed,
        "images_per_step": per_step, "planned_steps": steps, "train_images": len(train),
        "planned_epochs": round(steps * per_step / len(train), 3),
    }  # fmt: skip


def check_candidate(stages: Stages, cand: RecipeCandidate) -> None:
    """Refuse a candidate whose overrides differ from those its stored stages ran with."""
    done = stages.get(f"calibrate:{cand.name}")
    if done is not None and done["overrides"] != json.loads(json.dumps(cand.overrides)):
        raise ConfigError(
            f"candidate {cand.name} changed since it was calibrated in {stages.path} ({done['overrides']} then, "
            f"{cand.overrides} now); use another --out, or delete its runs/{cand.name} and its stages"
        )


# ------------------------------------------------------------------------------------ pretraining
def refit_record(run: Path) -> dict[str, Any]:
    """What ``RUN/budget.json`` says of the run's one re-fit, for its stage record: ``{"refit": {at_step,
    planned_steps (before), steps (after), steps_per_s, timed_seconds, too_short (under
    :data:`maelab.budget.MIN_REFIT_SECONDS` timed: the plan stood)}}``; ``{"refit": None}`` for a run given the
    budget that did not re-fit (a warm-up of at most :data:`maelab.budget.WARMUP_STEPS` steps, or resumed inside
    it); ``{}`` for a run not given it (``--no-refit``, or trained by a search from before the re-fit)."""
    given = budget.read_budget(run)
    if given is None:
        return {}
    fit = given.get("refit")
    if fit is None:
        return {"refit": None}
    planned = given["planned_steps"]
    return {"refit": {"at_step": fit["at_step"], "planned_steps": planned, "steps": fit["planned_steps"] or planned,
                      "steps_per_s": fit["steps_per_s"], "timed_seconds": fit["timed_seconds"],
                      "too_short": fit["planned_steps"] is None}}  # fmt: skip


def run_record(run: Path, cfg: Config, calib: dict[str, Any]) -> dict[str, Any]:
    """Time, loss and curve of a finished candidate run, and its re-fit (:func:`refit_record`); checks that it
    trained on the non-held-out images. ``cfg``: the candidate's config of the planned steps."""
    summary, records, meta = rundir.read_summary(run), rundir.read_metrics(run), ckpt.load_meta(run)
    if summary is None:
        raise ckpt.CheckpointError(f"{run}: no summary.json; the run has not finished")
    per_step = cfg.train.images_per_step()
    if meta["steps_per_epoch"] != calib["train_images"] // per_step:
        raise ConfigError(
            f"{run}: pretraining ran {meta['steps_per_epoch']} steps an epoch, but the {calib['train_images']} "
            f"training images left after --holdout {cfg.data.holdout} give {calib['train_images'] // per_step} steps "
            f"of {per_step}: it read other images, maybe the held-out validation ones (the training loop must load "
            "its images with maelab.data.load_data(cfg.data, 'train', ...)); its scores would not be valid"
        )
    train_s = rundir.training_seconds(records, per_step)
    own, refit = rundir.load_config(run), refit_record(run)  # its config.json: the re-fitted steps and warm-up
    momentum = {}  # a DINO run's teacher momentum (from its own config.json), how it was chosen, what it left
    if cfg.train.method == "dino":
        momentum = momentum_record(own.dino, cfg, summary.steps)
        if summary.steps != cfg.train.steps:  # re-fitted: the momentum cosine was re-laid over the run's steps
            momentum.update(
                momentum_rule=f"{momentum['momentum_rule']} as planned, its cosine re-laid over the re-fitted steps",
                teacher_init_left=round(teacher_left(own.dino.momentum_teacher, summary.steps), 4),
            )
    return {
        "run": str(run), "steps": summary.steps, "train_seconds": round(train_s, 2),
        "budget_use": round(train_s / calib["budget_s"], 4), "wall_time_s": summary.wall_time_s,
        "epochs": round(summary.steps * per_step / calib["train_images"], 3), "steps_per_epoch": meta["steps_per_epoch"],
        "warmup_steps": own.train.warmup_steps(meta["steps_per_epoch"], summary.steps), "peak_lr": cfg.train.peak_lr(),
        "median_img_per_s": summary.median_img_per_s, "first_loss": summary.first_loss,
        "final_loss": summary.final_loss, "peak_memory_mb": summary.peak_memory_mb, "device": summary.device,
        "precision": summary.precision, **momentum, **refit,
        "curve": [{"step": r["step"], "loss": r["loss"],
                   "train_seconds": round(rundir.training_seconds(records, per_step, r["step"]), 2)} for r in records],
    }  # fmt: skip


def check_run_steps(run: Path, planned: int) -> None:
    """Refuse the run in ``run`` (a checkpoint there) unless it is a run of the ``planned`` steps: its config.json
    holds them, or the steps its one re-fit made of them (``RUN/budget.json``: planned_steps and refit)."""
    held = rundir.load_config(run).train.steps
    origin = (budget.read_budget(run) or {}).get("planned_steps", held)  # before a re-fit (its config.json: after)
    if planned not in (held, origin):
        was = f" (re-fitted from {origin})" if origin != held else ""
        raise ConfigError(f"{run} holds a run of {held} steps{was}, not the {planned} calibrated now; delete it to "
                          "train it again")  # fmt: skip


def pretrain(plan: RecipePlan, cand: RecipeCandidate, calib: dict[str, Any]) -> dict[str, Any]:
    """The pretraining stage of ``cand``: its planned steps, re-fitted once at the end of the lr warm-up from the
    run's own speed to end at the budget (``calib["budget_s"]``; not with ``--no-refit``), trained (or resumed, on
    the schedule it has) to the end; returns :func:`run_record`."""
    cfg = plan.config(cand, calib["planned_steps"])
    run = Path(cfg.train.out)
    if rundir.latest_checkpoint(run) is not None:
        check_run_steps(run, cfg.train.steps)
    if not rundir.is_finished(run):
        budget_s = calib["budget_s"] if plan.options.refit else None
        child.train_until(run, cfg, None, plan.options.isolate, budget_s=budget_s)
        if not rundir.is_finished(run):
            raise ckpt.CheckpointError(f"{run}: pretraining returned but summary.json does not say finished")
    return run_record(run, cfg, calib)


# ------------------------------------------------------------------------------------ evaluation
def load_val_data(plan: RecipePlan, img_size: int) -> Any:
    """EvalData: train = ``--eval-subset`` non-held-out training images, test = the held-out (val) images."""
    from maelab.data import load_data
    from maelab.eval.frozen import EvalData

    d = plan.base_config().data
    train = load_data(d, "train", img_size, subset=plan.options.eval_subset)
    val = load_data(d, "val", img_size)
    info = {
        "data_dir": d.data_dir, "classes": len(train.classes), "train_images": len(train), "test_images": len(val),
        "train_subset": plan.options.eval_subset or "all", "test_subset": "all",
        "test_split": f"val: the {len(val)} held-out training images (--holdout {d.holdout}); the test set is unused",
    }  # fmt: skip
    return EvalData(train, val, info)


def _by_pooling(report: dict[str, Any], value: Callable[[dict[str, Any]], Any], role: str) -> dict[str, Any]:
    return {r["pooling"]: value(r) for r in report["results"] if r["role"] == role}


def _paired(row: dict[str, Any]) -> dict[str, Any]:
    keep = ("difference", "ci_low", "ci_high", "p_value", "n")
    return {k: row["vs_random_init"][k] for k in keep} if "vs_random_init" in row else {}


def scores_of(knn: dict[str, Any], linear: dict[str, Any]) -> dict[str, Any]:
    """The compact validation result of one candidate from its k-NN and linear reports (evaluated row =
    the candidate, baseline row = its random-init twin): accuracies per pooling, the random init's, the
    paired comparison with it, and the per-image flags (packed) for comparing candidates later."""
    k = str(KNN_K)
    return {
        "val_images": knn["data"]["test_images"], "probe_train_images": knn["data"]["train_images"],
        "knn": _by_pooling(knn, lambda r: r["top1"][k], "evaluated"),
        "linear": _by_pooling(linear, lambda r: r["test_top1"], "evaluated"),
        "random_init": {"knn": _by_pooling(knn, lambda r: r["top1"][k], "baseline"),
                        "linear": _by_pooling(linear, lambda r: r["test_top1"], "baseline")},
        "vs_random_init": {"knn": _by_pooling(knn, _paired, "evaluated"),
                           "linear": _by_pooling(linear, _paired, "evaluated")},
        "correct": {"knn": _by_pooling(knn, lambda r: r["test_correct"][k], "evaluated"),
                    "linear": _by_pooling(linear, lambda r: r["test_correct"], "evaluated")},
        "seconds": {"knn": knn["wall_time_s"], "linear": linear["wall_time_s"]},
        "precision": knn["settings"].get("precision"),
    }  # fmt: skip


def evaluate(plan: RecipePlan, cand: RecipeCandidate, data: Callable[[int], Any]) -> dict[str, Any]:
    """The evaluation stage of ``cand``: k-NN and linear probe of its encoder and of the random init of the
    same encoder on the validation split, into ``OUT/evals/<name>/`` (a report already there is read back)."""
    from maelab.eval.features import random_init_encoder, run_encoder
    from maelab.eval.frozen import frozen_reports
    from maelab.eval.linear_probe import ProbeConfig
    from maelab.runtime import resolve_device

    o = plan.options
    cfg = plan.config(cand)

    def encoders() -> list[Any]:  # the candidate and the random init of the same encoder
        encoder, run_cfg = run_encoder(plan.run_dir(cand))
        return [encoder, random_init_encoder(baseline_config(run_cfg, plan.base_config()), run_cfg.train.seed)]

    reports = frozen_reports(
        plan.out / "evals" / cand.name, encoders, lambda: data(cfg.model.img_size), POOLINGS, plan.ks,
        ProbeConfig(epochs=o.probe_epochs, seed=o.seed), batch_size=256, device=resolve_device(o.device),
        progress=not o.quiet, precision=o.precision,
    )  # fmt: skip
    return scores_of(reports["knn"], reports["linear"])


# ------------------------------------------------------------------------------------ the search
def run_recipe(plan: RecipePlan, command: str = "") -> Path:
    """Run (or continue) the search of ``plan``; returns ``OUT/summary.md``.

    Each candidate is calibrated right before it trains (the machine's state is then the closest to
    its training's), and evaluated after it, so a stopped search has whole candidates to show.
    """
    from maelab.experiments.recipe_summary import write_results

    stages = plan.open_stages()
    for cand in plan.candidates:
        check_candidate(stages, cand)
    data = functools.cache(functools.partial(load_val_data, plan))
    results: dict[str, dict[str, Any]] = {}
    start = time.perf_counter()
    for cand in plan.candidates:
        calib = stages.once(f"calibrate:{cand.name}", functools.partial(calibrate, plan, cand))
        record = stages.once(f"pretrain:{cand.name}", functools.partial(pretrain, plan, cand, calib))
        scores = stages.once(f"eval:{cand.name}", functools.partial(evaluate, plan, cand, data))
        results[cand.name] = {"calibration": calib, "run": record, "val": scores}
    stages.data["wall_time_this_call_s"] = round(time.perf_counter() - start, 1)
    stages.save()
    return write_results(plan, results, command, stages.data["wall_time_this_call_s"], stages.computed())

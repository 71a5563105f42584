"""The mask-ratio sweep: one MAE per mask ratio, everything else identical, then the same evaluations.

    ratios -> pretrain each (fresh process per segment) -> equal wall-clock checkpoints of the slower
    ratios -> k-NN, linear probe, reconstruction (own ratio and a common one) per checkpoint ->
    fine-tuning of each final and each equal wall-clock checkpoint and of one from-scratch baseline
    (``--finetune-epochs`` > 0) -> report

Results folder (``OUT``)::

    sweep.json            the resolved settings and every finished stage; a re-run with the same
                          settings continues the sweep
    runs/mr<R>/           one pretraining run per ratio (config.json, metrics.jsonl, checkpoints/, summary.json)
    budget/mr<R>/         a slower ratio's checkpoint at the equal wall-clock budget
    evals/<point>/        knn.{json,md}, linear.{json,md}, reconstruction_mr<R>.json of one checkpoint;
                          finetune.json of a final or budget checkpoint (evals/random-init/: the from-scratch
                          baseline, which serves both views)
    figures/              reconstruction figures (same test images, same masks) and plots
    summary.md, summary.csv, metrics.json

Stages (recorded in ``sweep.json``): ``pretrain:mr<R>`` (a finished run's speed and loss),
``budget:mr<R>`` (each ratio but the budget ratio: its speed probe and budget step; a slower ratio's checkpoint
kept), ``eval:<point>``, ``finetune:mr<R>``, ``finetune:mr<R>-budget`` and ``finetune:random-init`` (top-1 and
per-image test flags), each with when and at which git commit it was computed (metrics.json
``stages_computed``). A ratio whose run ends before the budget (``capped``) and the budget ratio use their
final checkpoint in both views, so their equal-time fine-tune is the equal-epoch one, not a second run. A
pretraining run stopped mid-way continues from its newest checkpoint, and an evaluation whose file
exists is read back. Each pretraining segment runs in a fresh process (:mod:`maelab.experiments.child`).

A sweep finished by an older maelab (no equal-time fine-tunes) gets them when run again, as long as
``budget/mr<R>/checkpoint`` still holds its weights; where they are gone (e.g. results committed without
weights) that fine-tune is skipped with a warning, the equal-time table shows "-" and its row's note says
why: only retraining the ratio could bring the checkpoint back.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from maelab import checkpoint as ckpt
from maelab import rundir
from maelab.experiments import child
from maelab.experiments.stages import Stages
from maelab.experiments.sweep_plan import (
    PROBE_FRACTION,
    RANDOM_INIT,
    SweepPlan,
    budget_dir,
    budget_point,
    budget_step,
    open_stages,
    run_config,
    run_name,
)
from maelab.rundir import training_seconds


# ------------------------------------------------------------------------------------ pretraining
def ensure_pretrained(plan: SweepPlan, ratio: float) -> Path:
    """Pretrain ratio ``ratio`` to the end unless it is finished already; returns its run directory."""
    cfg = run_config(plan, ratio)
    run = Path(cfg.train.out)
    if not rundir.is_finished(run):
        child.train_until(run, cfg)
        if not rundir.is_finished(run):
            raise ckpt.CheckpointError(f"{run}: pretraining returned but summary.json does not say finished")
    return run


def run_stats(run: Path) -> dict[str, Any]:
    """Speed and loss of one finished run, from its summary.json, config.json and metrics.jsonl."""
    summary, cfg, records = rundir.read_summary(run), rundir.load_config(run), rundir.read_metrics(run)
    if summary is None:
        raise ckpt.CheckpointError(f"{run}: no summary.json; the run has not finished")
    ips = cfg.train.images_per_step()
    train_s = training_seconds(records, ips)
    steps_per_epoch = int(ckpt.load_meta(run)["steps_per_epoch"])  # right with --steps too
    return {
        "run": str(run), "epochs": cfg.train.epochs, "steps": summary.steps, "total_steps": summary.total_steps,
        "steps_per_epoch": steps_per_epoch, "median_img_per_s": summary.median_img_per_s,
        "train_seconds": round(train_s, 2), "seconds_per_epoch": round(train_s / summary.steps * steps_per_epoch, 2),
        "wall_time_s": summary.wall_time_s, "peak_memory_mb": summary.peak_memory_mb,
        "first_loss": summary.first_loss, "final_loss": summary.final_loss, "device": summary.device,
        "precision": summary.precision,
        "curve": [{"epoch": r["epoch"], "loss": r["loss"],
                   "train_seconds": round(training_seconds(records, ips, r["step"]), 2)} for r in records],
    }  # fmt: skip


def budget_checkpoint(plan: SweepPlan, ratio: float, budget_seconds: float, total_steps: int) -> dict[str, Any]:
    """Train ``ratio`` up to the step where its training time reaches ``budget_seconds`` and keep that
    checkpoint in ``budget/mr<R>/checkpoint``; returns the budget plan ({budget_s, probe_steps,
    seconds_per_step, step, capped, over_budget}, and train_seconds unless capped).

    The speed is measured on the first ``PROBE_FRACTION`` of the run's steps. A ratio whose whole run
    fits in the budget (``capped``) keeps no extra checkpoint: its final one stands in.
    """
    cfg = run_config(plan, ratio)
    run, bdir = Path(cfg.train.out), budget_dir(plan, ratio)
    probe = min(total_steps, max(2, math.ceil(PROBE_FRACTION * total_steps)))
    child.train_until(run, cfg, probe)
    sps, step = budget_step(rundir.read_metrics(run), cfg.train.images_per_step(), probe, budget_seconds)
    bplan = {
        "budget_s": round(budget_seconds, 3), "probe_steps": probe, "seconds_per_step": sps,
        "step": min(max(step, probe), total_steps), "capped": step >= total_steps, "over_budget": step < probe,
    }  # fmt: skip
    if bplan["capped"]:
        return bplan
    if not (bdir / "checkpoint" / "meta.json").is_file():
        child.train_until(run, cfg, bplan["step"])
        found = rundir.latest_checkpoint(run)
        if found is None or ckpt.load_meta(found)["step"] != bplan["step"]:
            raise ckpt.CheckpointError(
                f"{run}: the checkpoint at step {bplan['step']} (the equal wall-clock budget) was not kept; delete "
                f"{run} and {bdir} and re-run the sweep to train this ratio again"
            )
        tmp = bdir / ".checkpoint-tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(found, tmp)
        tmp.rename(bdir / "checkpoint")
    used = training_seconds(rundir.read_metrics(run), cfg.train.images_per_step(), bplan["step"])
    return {**bplan, "train_seconds": round(used, 2)}


# ------------------------------------------------------------------------------------ evaluation
def _frozen_evals(plan: SweepPlan, out: Path, make_encoder: Callable[[], Any], data: Callable[[], Any]) -> dict:
    """k-NN and linear probe of ``make_encoder()`` into ``out/{knn,linear}.{json,md}`` (read back if there)."""
    from maelab.eval.frozen import frozen_reports
    from maelab.eval.linear_probe import ProbeConfig
    from maelab.runtime import resolve_device

    ev = plan.eval
    return frozen_reports(
        out, lambda: [make_encoder()], data, ev.poolings, ev.ks, ProbeConfig(epochs=ev.probe_epochs, seed=ev.seed),
        batch_size=ev.feature_batch_size, device=resolve_device(plan.base.train.device),
        progress=not plan.base.train.quiet,
    )  # fmt: skip


def evaluate_point(
    plan: SweepPlan, name: str, source: Path, data: Callable[[], Any], ratios: Sequence[float]
) -> dict[str, Any]:
    """k-NN, linear probe, and reconstruction at each of ``ratios`` of the checkpoint (or run) ``source``.

    Results go to ``OUT/evals/<name>/``, figures to ``OUT/figures/reconstruction_<name>[_at_mr<R>].png``
    (the first ratio is the model's own); an evaluation whose file exists is read back, not redone.
    ``data()`` gives the evaluation data (loaded on first use).
    """
    from maelab.eval.commands import reconstruct_run
    from maelab.eval.features import run_encoder
    from maelab.eval.results import write_json
    from maelab.runtime import resolve_device

    ev, out = plan.eval, plan.out / "evals" / name
    result = _frozen_evals(plan, out, lambda: run_encoder(source)[0], data)
    for i, ratio in enumerate(ratios):
        path = out / f"reconstruction_mr{ratio:g}.json"
        if not path.is_file():
            figure = plan.out / "figures" / f"reconstruction_{name}{'' if i == 0 else f'_at_mr{ratio:g}'}.png"
            r = reconstruct_run(
                source, ev.figure_images, figure, ratio, ev.seed, plan.base.data.data_dir, ev.recon_images,
                str(resolve_device(plan.base.train.device)), plan.base.train.quiet,
            )  # fmt: skip
            r.pop("table", None)
            write_json(path, r)
        result[f"reconstruction_mr{ratio:g}"] = json.loads(path.read_text())
    return result


def evaluate_random_init(plan: SweepPlan, data: Callable[[], Any]) -> dict[str, Any]:
    """k-NN and linear probe of the swept architecture at random init (seeded with the pretraining seed);
    the mask ratio does not change the encoder, so one baseline serves every ratio."""
    from maelab.eval.features import random_init_encoder

    make = functools.partial(random_init_encoder, plan.base, plan.base.train.seed)
    return _frozen_evals(plan, plan.out / "evals" / RANDOM_INIT, make, data)


# ------------------------------------------------------------------------------------ fine-tuning
# What a fine-tuning stage keeps in sweep.json (evals/<point>/finetune.json holds everything).
FINETUNE_KEYS = ("top1", "test_correct", "layer_decay", "first_loss", "last_loss", "history", "steps", "warmup_steps",
                 "train_images",
                 "test_images", "peak_lr", "precision", "wall_time_s", "recipe")  # fmt: skip


def finetune_point(
    plan: SweepPlan, name: str, source: Path | None, train: Callable[[], Any], data: Callable[[], Any]
) -> dict[str, Any]:
    """Fine-tune the run or checkpoint ``source`` (None: the random init of the swept architecture, seeded
    like the frozen baseline) on ``train()`` and score it on ``data().test``, the images k-NN and the linear
    probe use; ``OUT/evals/<name>/finetune.json`` is read back if there.

    Every point gets the same recipe, epochs, images, batch and seed; the from-scratch baseline trains without
    layer decay (:func:`maelab.eval.finetune.recipe_for`, applied inside ``finetune``). The warm-up is at
    most a tenth of the epochs (``eval.finetune.MAX_WARMUP_FRACTION``). Returns
    :data:`FINETUNE_KEYS` of the result: ``top1`` (%) and ``test_correct`` (packed (N_test,) flags) among them.
    """
    from maelab.config import FinetuneConfig
    from maelab.eval.finetune import finetune
    from maelab.eval.results import write_json
    from maelab.methods import load_model

    path = plan.out / "evals" / name / "finetune.json"
    if not path.is_file():
        t, images = plan.base.train, train()
        ft = FinetuneConfig(epochs=plan.eval.finetune_epochs, seed=t.seed, device=t.device, quiet=t.quiet)
        ft.batch_size = min(ft.batch_size, len(images))
        module, cfg = load_model(str(source)) if source is not None else (None, plan.base)
        write_json(path, finetune(module, cfg, ft, images, data().test, f"fine-tune ({name})", t.precision))
    result = json.loads(path.read_text())
    return {k: result[k] for k in FINETUNE_KEYS if k in result}  # older results lack warmup_steps


def finetune_all(
    plan: SweepPlan, stages: Stages, points: Sequence[tuple[str, Path]], data: Callable[[], Any]
) -> dict[str, Any]:
    """{point: fine-tuning result} of each (point, run or checkpoint) of ``points`` and of the from-scratch baseline
    (``random-init``, one for both views), each a resumable stage ``finetune:<point>``: a finished one is read back,
    not redone."""
    from maelab.config import ConfigError
    from maelab.data import DataError, load_data

    @functools.cache
    def train() -> Any:
        try:
            return load_data(plan.base.data, "train", plan.base.model.img_size, subset=plan.eval.finetune_subset)
        except DataError as e:
            raise ConfigError(f"--finetune-subset {plan.eval.finetune_subset}: {e}") from e

    every: list[tuple[str, Path | None]] = [*points, (RANDOM_INIT, None)]
    return {
        point: stages.once(f"finetune:{point}", functools.partial(finetune_point, plan, point, source, train, data))
        for point, source in every
    }


def can_finetune(plan: SweepPlan, stages: Stages, point: str, source: Path) -> bool:
    """Whether ``point`` has or can get its fine-tune: its stage finished, its ``finetune.json`` is there, or the
    checkpoint ``source`` is complete. False, with a warning, where none is: a budget checkpoint of a sweep finished
    by an older maelab (which fine-tuned no equal-time checkpoint) whose weights are gone since."""
    if stages.get(f"finetune:{point}") is not None or (plan.out / "evals" / point / "finetune.json").is_file():
        return True
    try:
        ckpt.resolve_checkpoint(source)
        return True
    except ckpt.CheckpointError:
        warnings.warn(
            f"{source}: no complete checkpoint (its weights are gone), so {point} is not fine-tuned and its equal-time "
            "fine-tune is left out of the report; only retraining that ratio (a new --out) would bring it back",
            RuntimeWarning, stacklevel=2,
        )  # fmt: skip
        return False


def sweep_points(
    plan: SweepPlan, stats: dict[float, dict[str, Any]], budgets: dict[float, dict[str, Any]]
) -> list[tuple[float, str, Path]]:
    """(ratio, point, run or checkpoint) of every pretrained checkpoint the sweep evaluates: per ratio its final run,
    then its equal wall-clock checkpoint unless the run ended before the budget (capped: the final one stands in)."""
    out = []
    for ratio in plan.ratios:
        out.append((ratio, run_name(ratio), Path(stats[ratio]["run"])))
        if ratio in budgets and not budgets[ratio]["capped"]:
            out.append((ratio, budget_point(ratio), budget_dir(plan, ratio) / "checkpoint"))
    return out


# ------------------------------------------------------------------------------------ the sweep
def run_sweep(plan: SweepPlan, command: str = "") -> Path:
    """Run (or continue) the sweep of ``plan``; returns ``OUT/summary.md``.

    The budget ratio trains first: its measured training time is the budget of the others.
    """
    from maelab.eval.frozen import load_eval_data
    from maelab.experiments.sweep_summary import write_results

    stages = open_stages(plan)
    stats: dict[float, dict[str, Any]] = {}
    budgets: dict[float, dict[str, Any]] = {}
    budget_s, total_steps = 0.0, 0
    for ratio in sorted(plan.ratios, key=lambda r: r != plan.budget_ratio):
        name = run_name(ratio)
        if plan.budget_ratio is not None and ratio != plan.budget_ratio:
            make = functools.partial(budget_checkpoint, plan, ratio, budget_s, total_steps)
            budgets[ratio] = stages.once(f"budget:{name}", make)
        stats[ratio] = stages.once(f"pretrain:{name}", lambda r=ratio: run_stats(ensure_pretrained(plan, r)))
        if ratio == plan.budget_ratio:
            records = rundir.read_metrics(stats[ratio]["run"])
            budget_s = training_seconds(records, plan.base.train.images_per_step())
            total_steps = stats[ratio]["total_steps"]  # same data, batch and epochs: every ratio has this many

    ev = plan.eval
    data = functools.cache(lambda: load_eval_data(plan.base.data.data_dir, plan.base, ev.train_subset, ev.test_subset))
    evals: dict[str, dict[str, Any]] = {}
    points = sweep_points(plan, stats, budgets)
    for ratio, point, source in points:
        recon_ratios = [ratio] + ([ev.common_ratio] if ev.common_ratio != ratio else [])
        evals[point] = stages.once(f"eval:{point}", functools.partial(
            evaluate_point, plan, point, source, data, recon_ratios))  # fmt: skip
    evals[RANDOM_INIT] = stages.once(f"eval:{RANDOM_INIT}", functools.partial(evaluate_random_init, plan, data))
    if ev.finetune_epochs:
        # Final checkpoints always; a budget checkpoint unless its weights are gone (an older sweep run again).
        tuned = [(p, s) for r, p, s in points if p == run_name(r) or can_finetune(plan, stages, p, s)]
        for point, result in finetune_all(plan, stages, tuned, data).items():
            evals[point] = {**evals[point], "finetune": result}  # a copy: the eval stage's record stays as it is
    return write_results(plan, stats, budgets, evals, command, stages.computed())

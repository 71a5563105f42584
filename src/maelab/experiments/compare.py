"""MAE vs DINO on the same encoder and data: pretrain both, evaluate both, write a results folder.

Stages (each recorded in ``OUT/metrics.json`` when done, with when and at which git commit it was computed
(``stages_computed``), so a re-run skips it and an interrupted pretraining resumes from its checkpoint; see
:mod:`maelab.experiments.stages`):

1. equal epochs: pretrain MAE and DINO for ``--epochs`` each (``OUT/runs/{mae,dino}``), pausing at
   ``points`` evenly spaced steps to record k-NN accuracy (k=20) and, for DINO, the teacher's
   output entropy on the test images (collapse check);
2. equal wall-clock time: the slower method is pretrained again with as many epochs as fit into the
   faster method's training time (steps only, start-up excluded; a full schedule; below one epoch the
   first epoch is cut by steps);
3. evaluation of every encoder and the random-init baseline: weighted k-NN and linear probe on
   frozen features (CLS and mean pooling), and fine-tuning (``finetune_epochs`` > 0), each keeping
   which test images it got right, so the report compares encoders paired on the same images;
4. the report (:mod:`maelab.experiments.compare_summary`): summary.md, summary.csv, plots.

MAE trains with its ``--recipe`` (the compare's default ``short``: lr 1e-3, norm_pix_loss, one warm-up epoch),
DINO with its paper's optimizer recipe and none of the values MAE's recipe set unless they were given
(:func:`maelab.config.experiments.method_config`); everything given (encoder, data, epochs, batch, seed, a
--lr) is shared. DINO's teacher momentum is fitted to each DINO run's own length unless given
(:func:`maelab.experiments.compare_plan.teacher_momentum`: DINO's 0.996 assumes ~10^5 steps and leaves a
short run's teacher mostly random). The from-scratch
fine-tuning baseline has no layer decay (:func:`maelab.eval.finetune.recipe_for`). Pretraining runs in a child
process by default (:mod:`maelab.experiments.child`) so that each run's peak memory is its own.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from maelab import checkpoint as ckpt
from maelab import rundir
from maelab.config import Config, validate
from maelab.config.experiments import CompareOptions, method_config
from maelab.eval.features import POOLINGS
from maelab.eval.paired import RANDOM_LABEL
from maelab.experiments import child
from maelab.experiments.compare_plan import (
    KNN_K,
    METHOD_NAMES,
    check_steps,
    given_momentum,
    momentum_record,
    open_stages,
    run_configs,
    schedule_steps,
    time_budget_epochs,
    with_teacher_momentum,
)
from maelab.experiments.stages import Stages

CUT_STATUS = "stopped by the time budget"  # summary.json status of a run cut below one epoch


# ------------------------------------------------------------------------------------ pretraining
def _train_record(run: Path, cfg: Config, stop: int | None = None) -> dict[str, Any]:
    """Speed and size of a finished run from its summary.json, metrics.jsonl and last checkpoint; for DINO
    also the teacher momentum the run used (:func:`~maelab.experiments.compare_plan.momentum_record`)."""
    summary = rundir.read_summary(run)
    meta = ckpt.load_meta(run)
    epochs = meta["step"] / meta["steps_per_epoch"]
    seconds = rundir.training_seconds(rundir.read_metrics(run), cfg.train.images_per_step())

    def get(key: str) -> Any:
        return getattr(summary, key) if summary is not None else None

    momentum = {}
    if cfg.train.method == "dino":
        momentum = momentum_record(rundir.load_config(run).dino, cfg, meta["step"], stop)
    return {
        "run": str(run), "method": cfg.train.method, "epochs": round(epochs, 4), "steps": meta["step"],
        "steps_per_epoch": meta["steps_per_epoch"], "wall_time_s": get("wall_time_s"),
        "train_time_s": round(seconds, 2), "seconds_per_epoch": round(seconds / epochs, 2) if epochs else None,
        "img_per_s": get("median_img_per_s"), "peak_memory_mb": get("peak_memory_mb"), "device": get("device"),
        "first_loss": get("first_loss"), "final_loss": get("final_loss"), "status": get("status"), **momentum,
    }  # fmt: skip


@torch.no_grad()
def teacher_collapse_stats(run: Path, images: torch.Tensor, device: torch.device, batch_size: int = 256) -> dict:
    """Collapse indicators of a DINO run's teacher on uint8 ``images`` (N, C, H, W): see
    :func:`maelab.models.dino.collapse_stats` (probabilities at the final teacher temperature)."""
    from maelab.augment import normalize
    from maelab.methods import load_model
    from maelab.models.dino import collapse_stats

    model, cfg = load_model(str(run), device)
    model.set_fused_attention(device.type == "cuda")
    probs = [
        model.teacher_probs(normalize(images[i : i + batch_size].to(device), cfg.data.mean, cfg.data.std)).cpu()
        for i in range(0, len(images), batch_size)
    ]
    return collapse_stats(torch.cat(probs))


def _trajectory_point(run: Path, method: str, data: Any, device: torch.device) -> dict[str, Any]:
    """k-NN top-1 (k=20) of ``run``'s newest checkpoint and, for DINO, its teacher's collapse indicators."""
    from maelab.eval.features import run_encoder
    from maelab.eval.frozen import evaluate_knn

    meta = ckpt.load_meta(run)
    encoder, _ = run_encoder(run)
    report = evaluate_knn([encoder], data, POOLINGS, (KNN_K,), device=device, progress=False, cache=False)
    point: dict[str, Any] = {
        "step": meta["step"], "epoch": round(meta["step"] / meta["steps_per_epoch"], 4),
        "knn": {r["pooling"]: r["top1"][str(KNN_K)] for r in report["results"]},
    }  # fmt: skip
    if method == "dino":
        point["teacher"] = teacher_collapse_stats(run, data.test.images, device)
    return point


def _trained_run(
    stages: Stages, name: str, cfg: Config, opts: CompareOptions, data: Callable[[], Any], device: torch.device,
    points: int = 0, stop: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Pretrain ``cfg``'s run to its end (or cut at step ``stop``), checking it ``points`` times on the way;
    recorded as stage ``name`` (and its checks as ``name:trajectory``)."""
    if (done := stages.get(name)) is not None:
        return done
    run = Path(cfg.train.out)
    total = stop or schedule_steps(cfg)
    trajectory = stages.get(f"{name}:trajectory") or []
    resumed = ckpt.latest_checkpoint(run) is not None  # begun by an earlier call: its speed spans two calls
    for target in check_steps(total, points):
        if any(p["target"] == target for p in trajectory):
            continue
        full = target == total and stop is None  # to the schedule's end: no stop, so the run finishes
        end = CUT_STATUS if target == total and stop is not None else None
        child.train_until(run, cfg, None if full else target, opts.isolate, end_status=end)
        if points:
            trajectory.append({"target": target, **_trajectory_point(run, cfg.train.method, data(), device)})
            stages.put(f"{name}:trajectory", trajectory)
    record = {**_train_record(run, cfg, stop), "call": stages.call, "resumed": resumed}
    return stages.put(name, {**record, "trajectory": trajectory})


def _equal_time_run(
    stages: Stages, base: Config, trained: dict[str, dict], opts: CompareOptions, data: Callable[[], Any],
    device: torch.device, runs_dir: Path, momentum: float | None = None,
) -> tuple[str | None, Path]:  # fmt: skip
    """Retrain the slower method for the faster one's training time; returns (label, run), or (None, ...)
    when the same number of epochs fits (the equal-epoch run already is the equal-time run). A DINO run
    gets the teacher ``momentum`` given, else one fitted to the steps it runs."""
    walls = {m: trained[m]["train_time_s"] for m in METHOD_NAMES}
    slow = max(METHOD_NAMES, key=lambda m: walls[m])
    fast = min(METHOD_NAMES, key=lambda m: walls[m])
    info = stages.get("equal_time")
    if info is None:
        spe = trained[slow]["steps_per_epoch"]
        epochs, stop = time_budget_epochs(walls[fast], trained[slow]["seconds_per_epoch"], spe)
        info = stages.put("equal_time", {
            "budget_s": walls[fast], "reference": fast, "retrained": slow, "epochs": epochs, "stop_after_steps": stop,
            "same_as_equal_epochs": slow == fast or (epochs == base.train.epochs and stop is None),
        })  # fmt: skip
    if info["same_as_equal_epochs"]:
        return None, runs_dir / slow
    run = runs_dir / f"{slow}-equal-time"
    cfg = method_config(base, slow, str(run), info["epochs"], opts.given)
    cfg = with_teacher_momentum(cfg, momentum, info["stop_after_steps"], opts.given)
    record = _trained_run(stages, f"pretrain:{slow}-equal-time", cfg, opts, data, device, 0, info["stop_after_steps"])
    label = f"{slow.upper()} (equal time)"
    done = {**info, "run": str(run), "label": label, "train_time_s": record["train_time_s"]}
    if done != info:  # recorded once: a re-run does not re-date the stage
        stages.put("equal_time", done)
    return label, run


# ------------------------------------------------------------------------------------ evaluation
def _frozen_evaluations(
    encoders: dict[str, Path], base: Config, opts: CompareOptions, data: Any, device: torch.device
) -> dict[str, Any]:
    """k-NN and linear-probe accuracies {label: {pooling: top-1}} of every encoder and the random init, and
    which test images each got right (``knn_correct`` / ``linear_correct``: {label: {pooling: packed (N,)}})."""
    from maelab.eval.features import random_init_encoder, run_encoder
    from maelab.eval.frozen import evaluate_knn, evaluate_linear
    from maelab.eval.linear_probe import ProbeConfig

    labels = list(encoders) + [RANDOM_LABEL]
    encs = [run_encoder(run)[0] for run in encoders.values()]
    encs.append(random_init_encoder(method_config(base, "mae"), base.train.seed))
    poolings = POOLINGS
    knn = evaluate_knn(encs, data, poolings, (10, KNN_K, 200), device=device, progress=opts.progress)
    probe = ProbeConfig(epochs=opts.linear_epochs, seed=base.train.seed)
    linear = evaluate_linear(encs, data, poolings, probe, device=device, progress=opts.progress)
    out: dict[str, Any] = {"data": knn["data"], "knn": {}, "linear": {}, "knn_all_k": {}, "knn_correct": {},
                           "linear_correct": {}}  # fmt: skip
    for i, label in enumerate(labels):
        rows_k = knn["results"][i * len(poolings) : (i + 1) * len(poolings)]
        rows_l = linear["results"][i * len(poolings) : (i + 1) * len(poolings)]
        out["knn"][label] = {r["pooling"]: r["top1"][str(KNN_K)] for r in rows_k}
        out["knn_all_k"][label] = {r["pooling"]: r["top1"] for r in rows_k}
        out["linear"][label] = {r["pooling"]: r["test_top1"] for r in rows_l}
        out["knn_correct"][label] = {r["pooling"]: r["test_correct"][str(KNN_K)] for r in rows_k}
        out["linear_correct"][label] = {r["pooling"]: r["test_correct"] for r in rows_l}
    out["seconds"] = {"knn": knn["wall_time_s"], "linear": linear["wall_time_s"]}
    return out


def _finetune_all(
    stages: Stages, encoders: dict[str, Path], base: Config, opts: CompareOptions, data: Callable[[], Any]
) -> dict[str, Any]:
    """Fine-tuning test top-1 (and per-image flags, layer decay) of every encoder and, from random init, of
    the same budget without layer decay (:func:`maelab.eval.finetune.recipe_for`)."""
    from maelab.data import load_data
    from maelab.eval.finetune import FinetuneConfig, finetune
    from maelab.methods import load_model

    @functools.cache
    def train_split() -> Any:
        d = base.data
        return load_data(d, "train", base.model.img_size, subset=opts.finetune_subset)

    def tune(label: str, run: Path | None) -> dict[str, Any]:
        train = train_split()
        ft = FinetuneConfig(
            epochs=opts.finetune_epochs, batch_size=min(opts.finetune_batch_size, len(train)), seed=base.train.seed,
            device=base.train.device, quiet=not opts.progress,
        )  # fmt: skip
        module, cfg = load_model(str(run)) if run is not None else (None, method_config(base, "mae"))
        r = finetune(module, cfg, ft, train, data().test, label=f"fine-tune ({label})")
        keys = ("top1", "first_loss", "last_loss", "wall_time_s", "steps", "warmup_steps", "layer_decay")
        keys += ("test_correct",)  # per-image results, for the paired tests
        return {k: r[k] for k in keys}

    return {
        label: stages.once(f"finetune:{label}", functools.partial(tune, label, run))
        for label, run in [*encoders.items(), (RANDOM_LABEL, None)]
    }


# ------------------------------------------------------------------------------------ entry point
def run_compare(base: Config, opts: CompareOptions, out: str | Path, command: str = "") -> Path:
    """Run (or continue) the MAE-vs-DINO comparison of ``base``'s encoder and data into ``out``.

    Returns the results directory, holding summary.md, summary.csv, metrics.json, plots/*.png and
    runs/<name>/ (the pretraining runs).
    """
    from maelab.eval.frozen import load_eval_data
    from maelab.experiments.compare_summary import write_results
    from maelab.runtime import resolve_device

    opts.validate()
    validate(base)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stages = open_stages(out, base, opts)
    device = resolve_device(base.train.device)
    data = functools.cache(
        lambda: load_eval_data(base.data.data_dir or None, base, opts.eval_subset, opts.eval_test_subset)
    )
    runs_dir = out / "runs"
    momentum = given_momentum(base, opts)
    cfgs = run_configs(base, runs_dir, momentum, opts.given)
    start = time.perf_counter()
    trained = {m: _trained_run(stages, f"pretrain:{m}", cfgs[m], opts, data, device, opts.points) for m in METHOD_NAMES}
    encoders = {m.upper(): runs_dir / m for m in METHOD_NAMES}
    if opts.equal_time:
        label, run = _equal_time_run(stages, base, trained, opts, data, device, runs_dir, momentum)
        if label is not None:
            encoders[label] = run
    frozen = stages.once("frozen", lambda: _frozen_evaluations(encoders, base, opts, data(), device))
    finetuned = _finetune_all(stages, encoders, base, opts, data) if opts.finetune_epochs else {}
    stages.data["wall_time_this_call_s"] = round(time.perf_counter() - start, 1)
    # every stage, None where an older maelab kept no record: metrics.json's stages_computed, as in the sweep's
    computed = stages.data[stages.computed_key] = stages.computed()
    stages.save()
    write_results(
        out, stages.data, trained, stages.get("equal_time"), frozen, finetuned, command, str(device), computed
    )
    return out

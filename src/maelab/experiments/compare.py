"""MAE vs DINO on the same encoder and data: pretrain both, evaluate both, write a results folder.

Stages (each recorded in ``OUT/metrics.json`` when done, so a re-run skips it and an interrupted
pretraining resumes from its checkpoint):

1. equal epochs: pretrain MAE and DINO for ``--epochs`` each (``OUT/runs/{mae,dino}``), pausing at
   ``points`` evenly spaced steps to record k-NN accuracy (k=20) and, for DINO, the teacher's
   output entropy on the test images (collapse check);
2. equal wall-clock time: the slower method is pretrained again with as many epochs as fit into the
   faster method's training time (steps only, start-up excluded; a full schedule; below one epoch the
   first epoch is cut by steps);
3. evaluation of every encoder and the random-init baseline: weighted k-NN and linear probe on
   frozen features (CLS and mean pooling), and fine-tuning (``finetune_epochs`` > 0);
4. the report (:mod:`maelab.experiments.compare_report`): summary.md, summary.csv, plots.

Each method uses its paper's optimizer recipe (DINO: :data:`DINO_RECIPE`); everything else (encoder,
data, epochs, batch, warm-up, seed) is shared. Pretraining runs in a child process by default so
that each run's peak memory (``summary.json``) is its own.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from maelab import checkpoint as ckpt
from maelab.checkpoint import atomic_write_text
from maelab.config import (
    METHOD_TRAIN_DEFAULTS,
    Config,
    ConfigError,
    config_dict_with_defaults,
    config_differences,
    config_from_dict,
    validate,
)

METHOD_NAMES = ("mae", "dino")
DINO_RECIPE: dict[str, Any] = METHOD_TRAIN_DEFAULTS["dino"]  # DINO's optimizer recipe (see config.py)
KNN_K = 20  # the k reported in tables and curves (DINO's default)


class CompareError(RuntimeError):
    """A comparison stage failed (e.g. a pretraining child process); the message names the stage."""


@dataclass
class CompareOptions:
    """What ``maelab compare`` evaluates, and how much of the data it uses for it."""

    points: int = 4  # k-NN / entropy evaluations during each equal-epoch run (the last at the end)
    eval_subset: int = 5000  # class-balanced train images for k-NN / linear probe (0 = all)
    eval_test_subset: int = 1000  # class-balanced test images for every evaluation (0 = all)
    linear_epochs: int = 100
    finetune_epochs: int = 5  # 0 = no fine-tuning
    finetune_subset: int = 5000  # class-balanced train images for fine-tuning (0 = all)
    finetune_batch_size: int = 128
    equal_time: bool = True
    isolate: bool = True  # pretrain in a child process (own peak memory); False runs in-process
    progress: bool = False

    def validate(self) -> None:
        """Reject values that cannot work, naming the option."""
        checks = [
            (self.points >= 1, f"--points must be >= 1, got {self.points}"),
            (min(self.eval_subset, self.eval_test_subset, self.finetune_subset) >= 0,
             "--eval-subset, --eval-test-subset and --finetune-subset must be >= 0"),
            (self.linear_epochs >= 1, f"--linear-epochs must be >= 1, got {self.linear_epochs}"),
            (self.finetune_epochs >= 0, f"--finetune-epochs must be >= 0, got {self.finetune_epochs}"),
            (self.finetune_batch_size >= 1, f"--finetune-batch-size must be >= 1, got {self.finetune_batch_size}"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


# ------------------------------------------------------------------------------------ configs
def method_config(base: Config, method: str, out: Path, epochs: int | None = None) -> Config:
    """``base`` with ``train.method``/``train.out`` set (and DINO's optimizer recipe for ``dino``)."""
    cfg = config_from_dict(base.to_dict(), "compare")
    cfg.train.method = method
    cfg.train.out = str(out)
    if epochs is not None:
        cfg.train.epochs = epochs
    if method == "dino":
        for key, value in DINO_RECIPE.items():
            setattr(cfg.train, key, value)
    validate(cfg)
    return cfg


def time_budget_epochs(budget_s: float, seconds_per_epoch: float, steps_per_epoch: int) -> tuple[int, int | None]:
    """(epochs, stop_after_steps) that fit ``budget_s``: whole epochs with a complete schedule, or
    below one epoch a 1-epoch schedule cut after the steps that fit (at least 1)."""
    epochs = math.floor(budget_s / seconds_per_epoch + 1e-9)
    if epochs >= 1:
        return epochs, None
    return 1, max(1, math.floor(budget_s / seconds_per_epoch * steps_per_epoch))


# ------------------------------------------------------------------------------------ state
class Stages:
    """``OUT/metrics.json``: the results of finished stages, rewritten atomically after each one."""

    def __init__(self, out: Path, settings: dict[str, Any]) -> None:
        self.path = out / "metrics.json"
        self.data: dict[str, Any] = {"settings": settings, "stages": {}}
        if self.path.is_file():
            old = json.loads(self.path.read_text())
            stored, now = old.get("settings") or {}, json.loads(json.dumps(settings))
            # Options added to maelab since the file was written take their defaults, so an upgrade
            # does not block resuming a long comparison.
            if isinstance(stored.get("config"), dict):
                stored["config"] = config_dict_with_defaults(stored["config"], str(self.path))
            if isinstance(stored.get("options"), dict):
                stored["options"] = {**now["options"], **stored["options"]}
            if stored != now:
                diff = config_differences(stored, now)
                raise ConfigError(
                    f"{out} holds a comparison with other settings ({'; '.join(diff[:6])}; in {self.path}); "
                    "re-run it with its own settings to continue it, or pass another --out"
                )
            self.data = old

    def get(self, name: str) -> Any:
        return self.data["stages"].get(name)

    def put(self, name: str, value: Any) -> Any:
        self.data["stages"][name] = value
        atomic_write_text(self.path, json.dumps(self.data, indent=2) + "\n")
        return value


# ------------------------------------------------------------------------------------ pretraining
def _pretrain_entry(cfg_dict: dict[str, Any] | None, resume: str | None, stop: int | None) -> None:
    from maelab.train import pretrain

    cfg = config_from_dict(cfg_dict, "compare") if cfg_dict is not None else None
    pretrain(cfg, resume=resume, stop_after_steps=stop)


def _pretrain(cfg: Config, run: Path, stop: int | None, isolate: bool) -> None:
    """Start or resume ``run`` (new when it has no checkpoint) until ``stop`` steps (None = the end)."""
    resume = str(run) if ckpt.latest_checkpoint(run) is not None else None
    args = (None if resume else cfg.to_dict(), resume, stop)
    if not isolate:
        _pretrain_entry(*args)
        return
    proc = multiprocessing.get_context("spawn").Process(target=_pretrain_entry, args=args)
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise CompareError(f"pretraining {run} failed in its child process (exit code {proc.exitcode}); see above")


def _run_step(run: Path) -> int:
    found = ckpt.latest_checkpoint(run)
    return int(ckpt.load_meta(found)["step"]) if found is not None else 0


def _summary(run: Path) -> dict[str, Any] | None:
    path = run / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else None


def train_seconds(run: Path, images_per_step: int) -> float:
    """Time spent in training steps, from metrics.jsonl: the sum over records of steps * images / (img/s).

    Unlike the run's wall time it leaves out start-up (data loading, model building) and pauses.
    """
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    total, prev = 0.0, 0
    for r in records:
        total += (r["step"] - prev) * images_per_step / max(r["img_per_s"], 1e-9)
        prev = r["step"]
    return total


def _train_record(run: Path, cfg: Config) -> dict[str, Any]:
    """Speed and size of a finished run from its summary.json, metrics.jsonl and last checkpoint."""
    summary = _summary(run) or {}
    meta = ckpt.load_meta(ckpt.latest_checkpoint(run))
    epochs = meta["step"] / meta["steps_per_epoch"]
    seconds = train_seconds(run, cfg.train.batch_size * cfg.train.accum_steps)
    return {
        "run": str(run), "method": cfg.train.method, "epochs": round(epochs, 4), "steps": meta["step"],
        "steps_per_epoch": meta["steps_per_epoch"], "wall_time_s": summary.get("wall_time_s"),
        "train_time_s": round(seconds, 2), "seconds_per_epoch": round(seconds / epochs, 2) if epochs else None,
        "img_per_s": summary.get("median_img_per_s"), "peak_memory_mb": summary.get("peak_memory_mb"),
        "device": summary.get("device"), "first_loss": summary.get("first_loss"), "final_loss": summary.get("final_loss"),
        "status": summary.get("status"),
    }  # fmt: skip


# ------------------------------------------------------------------------------------ evaluation
def _eval_data(cfg: Config, opts: CompareOptions) -> Any:
    from maelab.eval.frozen import load_eval_data

    return load_eval_data(cfg.data.data_dir or None, cfg, opts.eval_subset, opts.eval_test_subset)


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
    from maelab.eval.features import run_encoder
    from maelab.eval.frozen import evaluate_knn

    meta = ckpt.load_meta(ckpt.latest_checkpoint(run))
    encoder, _ = run_encoder(run)
    report = evaluate_knn([encoder], data, ("cls", "mean"), (KNN_K,), device=device, progress=False, cache=False)
    point: dict[str, Any] = {
        "step": meta["step"], "epoch": round(meta["step"] / meta["steps_per_epoch"], 4),
        "knn": {r["pooling"]: r["top1"][str(KNN_K)] for r in report["results"]},
    }  # fmt: skip
    if method == "dino":
        point["teacher"] = teacher_collapse_stats(run, data.test.images, device)
    return point


def _trained_run(
    stages: Stages, name: str, cfg: Config, run: Path, opts: CompareOptions, data: Any, device: torch.device,
    points: int = 0, stop: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Pretrain ``run`` to its end (or ``stop``), evaluating ``points`` times on the way; recorded as stage ``name``."""
    if (done := stages.get(name)) is not None:
        return done
    steps_per_epoch = max(1, _steps_per_epoch(cfg))
    total = stop or cfg.train.epochs * steps_per_epoch
    targets = sorted({max(1, round(total * i / points)) for i in range(1, points + 1)}) if points else [total]
    trajectory = stages.get(f"{name}:trajectory") or []
    for target in targets:
        if any(p["target"] == target for p in trajectory):
            continue
        if _run_step(run) < target:
            _pretrain(cfg, run, None if (target == total and stop is None) else target, opts.isolate)
        if points:
            point = {"target": target, **_trajectory_point(run, cfg.train.method, data, device)}
            trajectory.append(point)
            stages.put(f"{name}:trajectory", trajectory)
    if stop is not None and _summary(run) is None:  # a cut run writes no summary; measure it from the metrics
        _write_cut_summary(run)
    return stages.put(name, {**_train_record(run, cfg), "trajectory": trajectory})


def _steps_per_epoch(cfg: Config) -> int:
    """Optimizer steps per epoch of ``cfg``'s training set, by the training loop's rule (one process)."""
    from maelab.data import class_balanced_subset, load_split

    d = cfg.data
    train = load_split(d.data_dir, "train", d.dataset, cfg.model.img_size, d.resize, d.skip_bad_images, d.download)
    n = len(class_balanced_subset(train, d.subset)) if d.subset else len(train)
    return n // (cfg.train.batch_size * cfg.train.accum_steps)


def _write_cut_summary(run: Path) -> None:
    """summary.json for a run stopped by a step budget (the loop writes none for interrupted runs)."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    speeds = sorted(r["img_per_s"] for r in records[1:] or records)
    summary = {
        "status": "stopped by the time budget", "steps": records[-1]["step"], "wall_time_s": records[-1]["wall_time"],
        "first_loss": records[0]["loss"], "final_loss": records[-1]["loss"],
        "median_img_per_s": speeds[len(speeds) // 2], "peak_memory_mb": None, "device": None,
    }  # fmt: skip
    atomic_write_text(run / "summary.json", json.dumps(summary, indent=2) + "\n")


def _frozen_evaluations(
    stages: Stages, encoders: dict[str, Path], base: Config, opts: CompareOptions, data: Any, device: torch.device
) -> dict[str, Any]:
    """k-NN and linear-probe rows {label: {pooling: accuracy}} of every encoder and the random init."""
    from maelab.eval.features import random_init_encoder, run_encoder
    from maelab.eval.frozen import evaluate_knn, evaluate_linear
    from maelab.eval.linear_probe import ProbeConfig

    if (done := stages.get("frozen")) is not None:
        return done
    labels = list(encoders) + ["random init"]
    encs = [run_encoder(run)[0] for run in encoders.values()]
    encs.append(random_init_encoder(method_config(base, "mae", Path("unused")), base.train.seed))
    poolings = ("cls", "mean")
    knn = evaluate_knn(encs, data, poolings, (10, KNN_K, 200), device=device, progress=opts.progress)
    probe = ProbeConfig(epochs=opts.linear_epochs, seed=base.train.seed)
    linear = evaluate_linear(encs, data, poolings, probe, device=device, progress=opts.progress)
    out: dict[str, Any] = {"data": knn["data"], "knn": {}, "linear": {}, "knn_all_k": {}}
    for i, label in enumerate(labels):
        rows_k = knn["results"][i * len(poolings) : (i + 1) * len(poolings)]
        rows_l = linear["results"][i * len(poolings) : (i + 1) * len(poolings)]
        out["knn"][label] = {r["pooling"]: r["top1"][str(KNN_K)] for r in rows_k}
        out["knn_all_k"][label] = {r["pooling"]: r["top1"] for r in rows_k}
        out["linear"][label] = {r["pooling"]: r["test_top1"] for r in rows_l}
    out["seconds"] = {"knn": knn["wall_time_s"], "linear": linear["wall_time_s"]}
    return stages.put("frozen", out)


def _finetune_all(
    stages: Stages, encoders: dict[str, Path], base: Config, opts: CompareOptions, data: Any
) -> dict[str, Any]:
    """Fine-tuning test top-1 of every encoder and of the identical recipe from random init."""
    from maelab.data import class_balanced_subset, load_split
    from maelab.eval.finetune import FinetuneConfig, finetune
    from maelab.methods import load_model

    d = base.data
    train = load_split(d.data_dir, "train", d.dataset, base.model.img_size, d.resize, d.skip_bad_images)
    train = class_balanced_subset(train, opts.finetune_subset) if opts.finetune_subset else train
    ft = FinetuneConfig(
        epochs=opts.finetune_epochs, batch_size=min(opts.finetune_batch_size, len(train)), seed=base.train.seed,
        device=base.train.device, quiet=not opts.progress,
    )  # fmt: skip
    results = {}
    for label, run in [*encoders.items(), ("random init", None)]:
        name = f"finetune:{label}"
        if (done := stages.get(name)) is None:
            module, cfg = load_model(str(run)) if run is not None else (None, method_config(base, "mae", Path("x")))
            r = finetune(module, cfg, ft, train, data.test, label=f"fine-tune ({label})")
            done = stages.put(name, {k: r[k] for k in ("top1", "first_loss", "last_loss", "wall_time_s", "steps")})
        results[label] = done
    return results


# ------------------------------------------------------------------------------------ entry point
def run_compare(base: Config, opts: CompareOptions, out: str | Path, command: str = "") -> Path:
    """Run (or continue) the MAE-vs-DINO comparison of ``base``'s encoder and data into ``out``.

    Returns the results directory, holding summary.md, summary.csv, metrics.json, plots/*.png and
    runs/<name>/ (the pretraining runs).
    """
    from maelab.experiments.compare_report import write_results
    from maelab.runtime import resolve_device

    opts.validate()
    validate(base)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base_dict = base.to_dict()
    base_dict["train"]["method"], base_dict["train"]["out"] = "", ""
    settings = {"config": base_dict, "options": {k: v for k, v in asdict(opts).items() if k not in ("progress",)},
                "dino_recipe": DINO_RECIPE}  # fmt: skip
    stages = Stages(out, settings)
    device = resolve_device(base.train.device)
    data = _eval_data(base, opts)
    runs_dir = out / "runs"
    cfgs = {m: method_config(base, m, runs_dir / m) for m in METHOD_NAMES}
    start = time.perf_counter()
    trained = {
        m: _trained_run(stages, f"pretrain:{m}", cfgs[m], runs_dir / m, opts, data, device, opts.points)
        for m in METHOD_NAMES
    }
    encoders = {m.upper(): runs_dir / m for m in METHOD_NAMES}
    if opts.equal_time:
        label, run = _equal_time_run(stages, base, trained, opts, data, device, runs_dir)
        if label is not None:
            encoders[label] = run
    frozen = _frozen_evaluations(stages, encoders, base, opts, data, device)
    finetuned = _finetune_all(stages, encoders, base, opts, data) if opts.finetune_epochs else {}
    stages.data["wall_time_this_call_s"] = round(time.perf_counter() - start, 1)
    write_results(out, stages.data, trained, stages.get("equal_time"), frozen, finetuned, command, str(device))
    return out


def _equal_time_run(
    stages: Stages, base: Config, trained: dict[str, dict], opts: CompareOptions, data: Any, device: torch.device,
    runs_dir: Path,
) -> tuple[str | None, Path]:  # fmt: skip
    """Retrain the slower method for the faster one's wall time; returns (label, run) or (None, ...)
    when the same number of epochs fits (the equal-epoch run already is the equal-time run)."""
    walls = {m: trained[m]["train_time_s"] for m in METHOD_NAMES}
    slow = max(METHOD_NAMES, key=lambda m: walls[m])
    fast = min(METHOD_NAMES, key=lambda m: walls[m])
    info = stages.get("equal_time")
    if info is None:
        epochs, stop = time_budget_epochs(
            walls[fast], trained[slow]["seconds_per_epoch"], trained[slow]["steps_per_epoch"]
        )
        info = stages.put("equal_time", {
            "budget_s": walls[fast], "reference": fast, "retrained": slow, "epochs": epochs, "stop_after_steps": stop,
            "same_as_equal_epochs": slow == fast or (epochs == base.train.epochs and stop is None),
        })  # fmt: skip
    if info["same_as_equal_epochs"]:
        return None, runs_dir / slow
    run = runs_dir / f"{slow}-equal-time"
    cfg = method_config(base, slow, run, info["epochs"])
    record = _trained_run(
        stages, f"pretrain:{slow}-equal-time", cfg, run, opts, data, device, 0, info["stop_after_steps"]
    )
    label = f"{slow.upper()} (equal time)"
    stages.put("equal_time", {**info, "run": str(run), "label": label, "train_time_s": record["train_time_s"]})
    return label, run

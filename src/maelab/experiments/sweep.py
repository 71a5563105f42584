"""The mask-ratio sweep: one MAE per mask ratio, everything else identical, then the same evaluations.

    ratios -> pretrain each (fresh process per segment) -> equal wall-clock checkpoints of the slower
    ratios -> k-NN, linear probe, reconstruction (own ratio and a common one) per checkpoint -> report

Results folder (``OUT``)::

    sweep.json            the resolved settings; a re-run with the same settings continues the sweep
    runs/mr<R>/           one pretraining run per ratio (config.json, metrics.jsonl, checkpoints/, summary.json)
    budget/mr<R>/         a slower ratio's checkpoint at the equal wall-clock budget, and plan.json
    evals/<point>/        knn.{json,md}, linear.{json,md}, reconstruction_mr<R>.json of one checkpoint
    figures/              reconstruction figures (same test images, same masks) and plots
    summary.md, summary.csv, metrics.json

Every stage first looks for its finished output, so an interrupted sweep continues where it stopped;
a pretraining run stopped mid-way continues from its newest checkpoint (``pretrain(resume=RUN)``).

Each pretraining segment runs in a fresh Python process: on a CPU the peak memory that
``summary.json`` reports is the process's peak RSS, which would otherwise carry over from run to
run, and no run inherits another's allocator state.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maelab import checkpoint as ckpt
from maelab.config import (
    Config,
    ConfigError,
    config_dict_with_defaults,
    config_differences,
    config_from_dict,
    resolve_config,
    validate,
)

# The slower ratios first train this fraction of their steps to measure their speed, which sets
# the step at which they reach the equal wall-clock budget.
PROBE_FRACTION = 0.1


@dataclass(frozen=True)
class EvalSettings:
    """How every checkpoint of a sweep is evaluated (subsets are class-balanced; 0 = the whole split)."""

    train_subset: int = 0  # training images the k-NN / linear probe learn from
    test_subset: int = 0  # test images they are scored on
    probe_epochs: int = 100  # linear-probe epochs (lr search and final head)
    recon_images: int = 2000  # test images scored for reconstruction
    common_ratio: float = 0.75  # every model is also scored at this mask ratio
    figure_images: int = 8  # test images in each reconstruction figure
    seed: int = 0  # chooses the figure images and the reconstruction masks
    poolings: tuple[str, ...] = ("cls", "mean")
    ks: tuple[int, ...] = (10, 20, 200)
    feature_batch_size: int = 256


@dataclass(frozen=True)
class SweepPreset:
    """Ratios, pretraining values ({section: {field: value}}, below a --config file and flags) and evals."""

    description: str
    ratios: tuple[float, ...]
    pretrain: dict[str, dict[str, Any]]
    eval: EvalSettings
    budget_ratio: float | None = 0.75


# CPU preset, for a 2-core CPU in about 90 minutes. The ref model trains at ~140 img/s (fp32, idle
# machine) at mask 0.75. Training FLOPs per image (torch.utils.flop_counter, ref, batch 128) are
# 1.136 / 0.815 / 0.500 / 0.306 GFLOP at masks 0.25 / 0.5 / 0.75 / 0.9, so an epoch of all four costs
# at most 2.27 + 1.63 + 1 + 0.61 = 5.51 epochs of the 0.75 run (fixed costs such as augmentation do
# not shrink with the ratio; interleaved timing on a loaded machine gave 4.34).
#   training: 5000 images x 20 epochs x (4.34 .. 5.51) / 140 img/s = 3100 .. 3940 s = 52 .. 66 min
#   process starts: 10 pretraining segments x ~5 s = 1 min
#   features: 7 encoders (4 final, 2 budget checkpoints, random init) x (5000 + 2000) images = 49,000
#             encoder passes over all 64 patches; `maelab bench` measured inference at 1.09x the
#             training img/s (55.6 vs 50.8 on a loaded machine), ~150 img/s idle: 330 s = 5.5 min
#   reconstruction (12 x 1000 test images) and 14 linear probes (100 epochs on 5000 x 256): ~2 min
#   total: ~60 .. 75 min idle, leaving room for a loaded machine within ~90 min.
CPU_PRESET = SweepPreset(
    description="2-core CPU, ~90 min: ref model, 5000-image class-balanced subset, 20 epochs, fp32",
    ratios=(0.25, 0.5, 0.75, 0.9),
    pretrain={
        "model": {"name": "ref"},
        "data": {"subset": 5000},
        "train": {"epochs": 20, "batch_size": 128, "blr": 1.5e-3, "warmup_epochs": 2.0, "precision": "fp32",
                  "device": "cpu", "log_every": 10},
    },  # fmt: skip
    eval=EvalSettings(train_subset=5000, test_subset=2000, probe_epochs=100, recon_images=1000),
)

# GPU preset: full CIFAR-10 (50,000 images), ViT-Tiny (192 x 12), 400 epochs, bf16 autocast; every
# evaluation on the full splits. Not timed on this machine (no GPU here).
GPU_PRESET = SweepPreset(
    description="one GPU: vit-tiny, full CIFAR-10, 400 epochs, bf16",
    ratios=(0.25, 0.5, 0.75, 0.9),
    pretrain={
        "model": {"name": "vit-tiny"},
        "data": {"subset": 0},
        "train": {"epochs": 400, "batch_size": 512, "blr": 5e-4, "warmup_epochs": 20.0, "precision": "auto",
                  "log_every": 20},
    },  # fmt: skip
    eval=EvalSettings(train_subset=0, test_subset=0, probe_epochs=100, recon_images=0),
)

# The reconstruction study: one MAE (mask 0.75) trained 50 epochs on a 5,000-image class-balanced
# subset (the issue suggests ~10,000; on the 2-core CPU 10,000 x 50 images would take ~60 min of the
# same session the 90-minute sweep needs, so the CPU preset halves the data and keeps the 50 epochs).
# On the 2-core CPU: 5,000 x 50 / ~135 img/s = ~31 min of training; evaluation: 2 encoders x 7,000
# images of features at ~150 img/s = ~95 s, plus 2000 reconstructions: ~34 min in all.
RECON_PRESET = SweepPreset(
    description="reconstruction study: ref model, mask 0.75, 5,000-image class-balanced subset, 50 epochs",
    ratios=(0.75,),
    pretrain={
        "model": {"name": "ref"},
        "data": {"subset": 5000},
        "train": {"epochs": 50, "batch_size": 128, "blr": 1.5e-3, "warmup_epochs": 5.0, "precision": "auto",
                  "log_every": 20},
    },  # fmt: skip
    eval=EvalSettings(train_subset=5000, test_subset=2000, probe_epochs=100, recon_images=2000),
    budget_ratio=None,
)

PRESETS: dict[str, SweepPreset] = {"cpu": CPU_PRESET, "gpu": GPU_PRESET, "recon-50ep": RECON_PRESET}


@dataclass
class SweepPlan:
    """Everything a sweep needs; ``base`` is the pretraining config (mask ratio and out set per run)."""

    out: Path
    preset: str
    ratios: tuple[float, ...]
    budget_ratio: float | None
    base: Config
    eval: EvalSettings = field(default_factory=EvalSettings)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able settings (what ``sweep.json`` holds)."""
        return {
            "preset": self.preset, "ratios": list(self.ratios), "budget_ratio": self.budget_ratio,
            "pretrain": self.base.to_dict(), "eval": dataclasses.asdict(self.eval),
        }  # fmt: skip


# ------------------------------------------------------------------------------------ planning
def _merge(low: dict[str, dict[str, Any]], high: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {k: dict(v) for k, v in low.items()}
    for section, values in high.items():
        out.setdefault(section, {}).update(values)
    return out


def make_plan(
    preset: str = "cpu",
    ratios: tuple[float, ...] | None = None,
    budget_ratio: float | None | str = "auto",
    file_values: dict[str, Any] | None = None,
    cli_values: dict[str, dict[str, Any]] | None = None,
    eval_overrides: dict[str, Any] | None = None,
    where: str = "command line",
) -> SweepPlan:
    """Resolve a sweep: defaults < ``preset`` < TOML ``file_values`` < ``cli_values`` (pretrain flags).

    ``budget_ratio``: the ratio whose training time is every ratio's budget; ``"auto"`` = the
    preset's (0.75) if swept, else the highest ratio; None = no equal wall-clock view.
    ``cli_values["train"]["out"]`` is the results folder (default ``runs/sweep-<preset>``).
    """
    if preset not in PRESETS:
        raise ConfigError(f"--preset {preset!r}: choose one of {', '.join(PRESETS)}")
    p = PRESETS[preset]
    cli = {k: dict(v) for k, v in (cli_values or {}).items()}
    if "mask_ratio" in cli.get("model", {}):
        raise ConfigError("--mask-ratio: the sweep sets it per run; give the ratios with --mask-ratios")
    out = Path(cli.get("train", {}).pop("out", "") or f"runs/sweep-{preset}")
    file_values = _merge(p.pretrain, file_values or {})
    base = resolve_config(file_values, cli, where)
    if base.train.method != "mae":
        raise ConfigError(f"--method {base.train.method}: the mask-ratio sweep needs MAE runs")
    ratios = tuple(float(r) for r in (ratios or p.ratios))
    if len(set(ratios)) != len(ratios):
        raise ConfigError(f"--mask-ratios {' '.join(map(str, ratios))}: each ratio once")
    for r in ratios:  # validate each run's config now, not half-way through the sweep
        try:
            validate(dataclasses.replace(base, model=dataclasses.replace(base.model, mask_ratio=r)))
        except ConfigError as e:
            raise ConfigError(f"--mask-ratios {r:g}: {e}") from e
    if budget_ratio == "auto":
        budget_ratio = p.budget_ratio if p.budget_ratio in ratios else max(ratios)
        budget_ratio = budget_ratio if len(ratios) > 1 else None
    if budget_ratio is not None and float(budget_ratio) not in ratios:
        raise ConfigError(f"--budget-ratio {budget_ratio} is not one of --mask-ratios {' '.join(map(str, ratios))}")
    ev = dataclasses.replace(p.eval, **(eval_overrides or {}))
    _check_eval(ev)
    from maelab.data import resolve_data_dir

    # Runs and evaluations read the same data whatever $MAELAB_DATA says later.
    base.data.data_dir = str(resolve_data_dir(base.data.data_dir or None).resolve())
    base.train.out = ""
    return SweepPlan(out, preset, ratios, None if budget_ratio is None else float(budget_ratio), base, ev)


def _check_eval(ev: EvalSettings) -> None:
    checks = [
        (ev.train_subset >= 0 and ev.test_subset >= 0 and ev.recon_images >= 0,
         "--eval-subset, --eval-test-subset and --recon-images must be >= 0"),
        (ev.probe_epochs >= 1, f"--probe-epochs must be >= 1, got {ev.probe_epochs}"),
        (0.0 <= ev.common_ratio < 1.0, f"--common-ratio must be in [0, 1), got {ev.common_ratio}"),
        (ev.figure_images >= 1, f"--figure-images must be >= 1, got {ev.figure_images}"),
    ]  # fmt: skip
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def run_name(ratio: float) -> str:
    """``mr0.75``: the name of a ratio's run, evaluation and figure files."""
    return f"mr{ratio:g}"


def run_config(plan: SweepPlan, ratio: float) -> Config:
    """The pretraining config of one ratio: the base config with its mask ratio and run directory."""
    cfg = config_from_dict(plan.base.to_dict(), "sweep")
    cfg.model.mask_ratio = ratio
    cfg.train.out = str(plan.out / "runs" / run_name(ratio))
    return cfg


def check_plan(plan: SweepPlan) -> None:
    """Write ``OUT/sweep.json``, or check that an existing one holds the same settings (resume)."""
    path = plan.out / "sweep.json"
    settings = plan.to_dict()
    settings["pretrain"]["train"].pop("quiet")  # the only setting a re-run may change
    if path.is_file():
        old = json.loads(path.read_text())
        if isinstance(old.get("pretrain"), dict):  # options added since it was written take their defaults
            old["pretrain"] = config_dict_with_defaults(old["pretrain"], str(path))
            old["pretrain"]["train"].pop("quiet", None)
        if old != json.loads(json.dumps(settings)):
            diff = config_differences(old, json.loads(json.dumps(settings)))
            raise ConfigError(
                f"{plan.out} holds a sweep with other settings ({'; '.join(diff[:6])}); re-run it with its own "
                f"settings to continue it, or pick another --out"
            )
        return
    plan.out.mkdir(parents=True, exist_ok=True)
    ckpt.atomic_write_text(path, json.dumps(settings, indent=2) + "\n")


# ------------------------------------------------------------------------------------ pretraining
def pretrain_child(spec_json: str) -> int:
    """Entry point of a pretraining process: ``{"config": dict | None, "resume": str | None,
    "stop_after_steps": int | None}`` -> exit code (0 done, 2 bad input, 130 stopped by a signal)."""
    from maelab.data import DataError
    from maelab.train import pretrain

    spec = json.loads(spec_json)
    try:
        if spec["resume"]:
            run = pretrain(resume=spec["resume"], stop_after_steps=spec["stop_after_steps"])
        else:
            cfg = config_from_dict(spec["config"], "sweep")
            validate(cfg)
            run = pretrain(cfg, stop_after_steps=spec["stop_after_steps"])
    except (ConfigError, DataError, ckpt.CheckpointError) as e:
        print(f"maelab sweep: error: {e}", file=sys.stderr)
        return 2
    meta = ckpt.load_meta(run)
    if meta.get("reason") == "interrupted" and meta["step"] != spec["stop_after_steps"]:
        return 130  # a signal stopped it; the checkpoint is safe
    return 0


def _pretrain_process(run: Path, cfg: Config | None, stop_after_steps: int | None) -> None:
    """Start (``cfg``) or resume (``cfg=None``) ``run`` in a fresh Python process; wait for it."""
    spec = {
        "config": cfg.to_dict() if cfg is not None else None, "resume": None if cfg is not None else str(run),
        "stop_after_steps": stop_after_steps,
    }  # fmt: skip
    code = "import sys; from maelab.experiments.sweep import pretrain_child; sys.exit(pretrain_child(sys.argv[1]))"
    proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(spec)])
    try:
        rc = proc.wait()
    except KeyboardInterrupt:
        proc.wait()  # Ctrl-C reached the child too: let it save its checkpoint before we stop
        raise
    if rc == 130:
        raise KeyboardInterrupt
    if rc != 0:
        from maelab.train import TrainingError

        raise TrainingError(
            f"pretraining {run} failed with exit code {rc} (its error is printed above); fix the cause and re-run "
            f"the same command: the sweep continues where it stopped"
        )


def train_until(run: Path, cfg: Config, stop_after_steps: int | None = None) -> None:
    """Train ``run`` (config ``cfg``) to ``stop_after_steps`` in total, or to its end (None).

    A run with a checkpoint is resumed from it; a start that died before its first checkpoint is
    discarded and started again (its metrics would otherwise be appended to).
    """
    found = ckpt.latest_checkpoint(run)
    if found is None:
        if run.exists():
            shutil.rmtree(run)
        _pretrain_process(run, cfg, stop_after_steps)
    elif stop_after_steps is None or ckpt.load_meta(found)["step"] < stop_after_steps:
        _pretrain_process(run, None, stop_after_steps)


def is_finished(run: Path) -> bool:
    """Whether ``run`` has trained all its steps (its summary.json says ``finished``)."""
    path = run / "summary.json"
    return path.is_file() and json.loads(path.read_text()).get("status") == "finished"


def ensure_pretrained(plan: SweepPlan, ratio: float) -> Path:
    """Pretrain ratio ``ratio`` to the end unless it is finished already; returns its run directory."""
    cfg = run_config(plan, ratio)
    run = Path(cfg.train.out)
    if not is_finished(run):
        train_until(run, cfg)
        if not is_finished(run):
            raise ckpt.CheckpointError(f"{run}: pretraining returned but summary.json does not say finished")
    return run


# ------------------------------------------------------------------------------------ timing
def read_records(run: Path) -> list[dict[str, Any]]:
    """The metric records of ``run/metrics.jsonl`` (step, epoch, loss, lr, img_per_s, wall_time)."""
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def training_seconds(records: list[dict[str, Any]], images_per_step: int, upto: int | None = None) -> float:
    """Seconds spent in training steps up to step ``upto`` (default: all records).

    Each record's ``img_per_s`` covers the steps since the previous record, timed from the first
    step after any (re)start: so process start, data loading and model building are left out,
    and a run trained in several segments is timed like one trained in one go.
    """
    total, prev = 0.0, 0
    for r in records:
        if upto is not None and r["step"] > upto:
            break
        if r["img_per_s"] > 0:
            total += (r["step"] - prev) * images_per_step / r["img_per_s"]
        prev = r["step"]
    return total


def images_per_step(cfg: Config) -> int:
    """Images per optimizer step of a one-process run."""
    return cfg.train.batch_size * cfg.train.accum_steps


def budget_step(
    records: list[dict[str, Any]], images_per_step: int, probe: int, budget_seconds: float
) -> tuple[float, int]:
    """(seconds per step, the step at which training time reaches ``budget_seconds``) from the records
    of the first ``probe`` steps.

    The first logged window holds the slow first steps (allocator warm-up), so the rate comes from
    the windows after it and the first window counts once at its measured length.
    """
    seen = [r for r in records if r["step"] <= probe]
    total = training_seconds(records, images_per_step, probe)
    if len(seen) < 2:
        sps = total / probe
        return sps, math.floor(budget_seconds / sps)
    first = seen[0]["step"]
    t_first = training_seconds(records, images_per_step, first)
    sps = (total - t_first) / (probe - first)
    return sps, first + math.floor((budget_seconds - t_first) / sps)


def budget_dir(plan: SweepPlan, ratio: float) -> Path:
    """Where the equal wall-clock checkpoint of ``ratio`` (and its plan.json) are kept."""
    return plan.out / "budget" / run_name(ratio)


def ensure_budget_checkpoint(plan: SweepPlan, ratio: float, budget_seconds: float, total_steps: int) -> dict[str, Any]:
    """Train ``ratio`` up to the step where its training time reaches ``budget_seconds`` and keep
    that checkpoint; returns the plan ({budget_s, probe_steps, seconds_per_step, step, capped}).

    The speed is measured on the first ``PROBE_FRACTION`` of the run's steps. A ratio whose whole
    run fits in the budget (``capped``) keeps no extra checkpoint: its final one stands in.
    """
    cfg = run_config(plan, ratio)
    run, bdir = Path(cfg.train.out), budget_dir(plan, ratio)
    plan_path = bdir / "plan.json"
    if plan_path.is_file():
        bplan = json.loads(plan_path.read_text())
    else:
        probe = min(total_steps, max(2, math.ceil(PROBE_FRACTION * total_steps)))
        train_until(run, cfg, probe)
        sps, step = budget_step(read_records(run), images_per_step(cfg), probe, budget_seconds)
        bplan = {
            "budget_s": round(budget_seconds, 3), "probe_steps": probe, "seconds_per_step": sps,
            "step": min(max(step, probe), total_steps), "capped": step >= total_steps, "over_budget": step < probe,
        }  # fmt: skip
        bdir.mkdir(parents=True, exist_ok=True)
        ckpt.atomic_write_text(plan_path, json.dumps(bplan, indent=2) + "\n")
    if bplan["capped"] or (bdir / "checkpoint" / "meta.json").is_file():
        return bplan
    train_until(run, cfg, bplan["step"])
    found = ckpt.latest_checkpoint(run)
    if found is None or ckpt.load_meta(found)["step"] != bplan["step"]:
        raise ckpt.CheckpointError(
            f"{run}: the checkpoint at step {bplan['step']} (the equal wall-clock budget) was not kept; delete "
            f"{run} and {bdir} and re-run the sweep to train this ratio again"
        )
    tmp = bdir / ".checkpoint-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(found, tmp)
    tmp.rename(bdir / "checkpoint")
    return bplan


# ------------------------------------------------------------------------------------ evaluation
def _frozen_evals(plan: SweepPlan, out: Path, make_encoder: Callable[[], Any], data: Any) -> dict[str, Any]:
    """k-NN and linear probe of ``make_encoder()`` into ``out/{knn,linear}.{json,md}`` (read back if there)."""
    from maelab.eval.frozen import evaluate_knn, evaluate_linear, knn_markdown, linear_markdown, write_report
    from maelab.eval.linear_probe import ProbeConfig
    from maelab.runtime import resolve_device

    ev, device, progress = plan.eval, resolve_device(plan.base.train.device), not plan.base.train.quiet
    result: dict[str, Any] = {}
    for kind in ("knn", "linear"):
        path = out / f"{kind}.json"
        if not path.is_file():
            encoders = [make_encoder()]
            if kind == "knn":
                report = evaluate_knn(
                    encoders, data, ev.poolings, ev.ks, batch_size=ev.feature_batch_size, device=device,
                    progress=progress,
                )  # fmt: skip
                write_report(report, knn_markdown(report), out, kind)
            else:
                probe = ProbeConfig(epochs=ev.probe_epochs, seed=ev.seed)
                report = evaluate_linear(encoders, data, ev.poolings, probe, ev.feature_batch_size, device, progress)
                write_report(report, linear_markdown(report), out, kind)
        result[kind] = json.loads(path.read_text())
    return result


def evaluate_point(plan: SweepPlan, name: str, source: Path, data: Any, ratios: Sequence[float]) -> dict[str, Any]:
    """k-NN, linear probe, and reconstruction at each of ``ratios`` of the checkpoint (or run) ``source``.

    Results go to ``OUT/evals/<name>/``, figures to ``OUT/figures/reconstruction_<name>[_at_mr<R>].png``
    (the first ratio is the model's own); an evaluation whose file exists is read back, not redone.
    """
    from maelab.eval.features import run_encoder
    from maelab.runtime import resolve_device
    from maelab.visualize import reconstruct_run

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
            ckpt.atomic_write_text(path, json.dumps(r, indent=2) + "\n")
        result[f"reconstruction_mr{ratio:g}"] = json.loads(path.read_text())
    return result


def evaluate_random_init(plan: SweepPlan, data: Any) -> dict[str, Any]:
    """k-NN and linear probe of the swept architecture at random init (seeded with the pretraining seed);
    the mask ratio does not change the encoder, so one baseline serves every ratio."""
    from maelab.eval.features import random_init_encoder

    make = lambda: random_init_encoder(plan.base, plan.base.train.seed)  # noqa: E731
    return _frozen_evals(plan, plan.out / "evals" / "random-init", make, data)


# ------------------------------------------------------------------------------------ the sweep
def run_sweep(plan: SweepPlan, command: str = "") -> Path:
    """Run (or continue) the sweep of ``plan``; returns ``OUT/summary.md``.

    The budget ratio trains first: its measured training time is the budget of the others.
    """
    from maelab.eval.frozen import load_eval_data
    from maelab.experiments.sweep_report import write_results

    check_plan(plan)
    ev = plan.eval
    runs: dict[float, Path] = {}
    budgets: dict[float, dict[str, Any]] = {}
    budget_s, total_steps = 0.0, 0
    for ratio in sorted(plan.ratios, key=lambda r: r != plan.budget_ratio):
        if plan.budget_ratio is not None and ratio != plan.budget_ratio:
            budgets[ratio] = ensure_budget_checkpoint(plan, ratio, budget_s, total_steps)
        runs[ratio] = ensure_pretrained(plan, ratio)
        if ratio == plan.budget_ratio:
            budget_s = training_seconds(read_records(runs[ratio]), images_per_step(plan.base))
            # Same data, batch and epochs: every ratio has this many steps.
            total_steps = json.loads((runs[ratio] / "summary.json").read_text())["total_steps"]

    data = load_eval_data(plan.base.data.data_dir, plan.base, ev.train_subset, ev.test_subset)
    evals: dict[str, dict[str, Any]] = {}
    for ratio in plan.ratios:
        recon_ratios = [ratio] + ([ev.common_ratio] if ev.common_ratio != ratio else [])
        evals[run_name(ratio)] = evaluate_point(plan, run_name(ratio), runs[ratio], data, recon_ratios)
        if ratio in budgets and not budgets[ratio]["capped"]:
            name = f"{run_name(ratio)}-budget"
            source = budget_dir(plan, ratio) / "checkpoint"
            evals[name] = evaluate_point(plan, name, source, data, recon_ratios)
    evals["random-init"] = evaluate_random_init(plan, data)
    return write_results(plan, runs, budgets, evals, command)

"""The plan of a mask-ratio sweep: its resolved settings, the names and paths of its runs, its state
file, and the timing rule of the equal wall-clock budget.

Values: defaults < ``--preset`` < ``--config`` file < flags. The plan is fixed when the sweep
starts: a re-run with other settings is refused (see :mod:`maelab.experiments.stages`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maelab.config import Config, ConfigError, config_from_dict, resolve_config, validate
from maelab.config.core import merge_sections
from maelab.config.experiments import EvalSettings, SweepOptions
from maelab.experiments.stages import Stages
from maelab.rundir import training_seconds

# Every ratio but the budget ratio first trains this fraction of its steps to measure its speed, which sets the step
# at which it reaches the equal wall-clock budget (a faster ratio's whole run may fit in it: "capped").
PROBE_FRACTION = 0.1
STATE_FILE = "sweep.json"
VIEWS = ("equal epochs", "equal time")  # the two comparisons of the report: same epochs, same training time
RANDOM_INIT = "random-init"  # the random-init encoder's point: the frozen floor and the from-scratch fine-tune


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
        """JSON-able settings (the ``settings`` of ``sweep.json`` and of ``metrics.json``)."""
        return {
            "preset": self.preset, "ratios": list(self.ratios), "budget_ratio": self.budget_ratio,
            "pretrain": self.base.to_dict(), "eval": dataclasses.asdict(self.eval),
        }  # fmt: skip


def make_plan(
    options: SweepOptions | None = None,
    file_values: dict[str, Any] | None = None,
    cli_values: dict[str, dict[str, Any]] | None = None,
    eval_values: dict[str, Any] | None = None,
    where: str = "command line",
) -> SweepPlan:
    """Resolve a sweep: defaults < the preset < TOML ``file_values`` < ``cli_values`` (pretraining flags
    given) and ``eval_values`` (:class:`EvalSettings` fields given).

    ``cli_values["train"]["out"]`` is the results folder (default ``runs/sweep-<preset>``). Every
    run's config is validated now, not half-way through the sweep.
    """
    options = options or SweepOptions()
    preset, ratios, budget_ratio = options.resolve()
    cli = {k: dict(v) for k, v in (cli_values or {}).items()}
    if "mask_ratio" in cli.get("model", {}):
        raise ConfigError("--mask-ratio: the sweep sets it per run; give the ratios with --mask-ratios")
    out = Path(cli.get("train", {}).pop("out", "") or f"runs/sweep-{options.preset}")
    base = resolve_config(merge_sections(preset.pretrain, file_values or {}), cli, where)
    if base.train.method != "mae":
        raise ConfigError(f"--method {base.train.method}: the mask-ratio sweep needs MAE runs")
    for r in ratios:
        try:
            validate(dataclasses.replace(base, model=dataclasses.replace(base.model, mask_ratio=r)))
        except ConfigError as e:
            raise ConfigError(f"--mask-ratios {r:g}: {e}") from e
    ev = dataclasses.replace(preset.eval, **(eval_values or {}))
    ev.validate()
    if ev.finetune_epochs == 0:  # nothing is fine-tuned: its subset is moot (and reads 0 in an older sweep.json)
        ev = dataclasses.replace(ev, finetune_subset=0)
    from maelab.data import resolve_data_dir

    # Runs and evaluations read the same data whatever $MAELAB_DATA says later.
    base.data.data_dir = str(resolve_data_dir(base.data.data_dir or None).resolve())
    base.train.out = ""
    return SweepPlan(out, options.preset, ratios, budget_ratio, base, ev)


def open_stages(plan: SweepPlan) -> Stages:
    """``OUT/sweep.json``: created for a new sweep, or checked against ``plan`` to continue one.
    ``--quiet`` is the only setting a re-run may change."""
    return Stages(
        plan.out / STATE_FILE, plan.to_dict(), "a sweep", config_keys=("pretrain",),
        option_defaults={"eval": dataclasses.asdict(EvalSettings())}, ignore=("pretrain.train.quiet",),
        device=plan.base.train.device,
    )  # fmt: skip


def run_name(ratio: float) -> str:
    """``mr0.75``: the name of a ratio's run, evaluation and figure files."""
    return f"mr{ratio:g}"


def run_config(plan: SweepPlan, ratio: float) -> Config:
    """The pretraining config of one ratio: the base config with its mask ratio and run directory."""
    cfg = config_from_dict(plan.base.to_dict(), "sweep")
    cfg.model.mask_ratio = ratio
    cfg.train.out = str(plan.out / "runs" / run_name(ratio))
    return cfg


def budget_dir(plan: SweepPlan, ratio: float) -> Path:
    """Where the equal wall-clock checkpoint of ``ratio`` is kept."""
    return plan.out / "budget" / run_name(ratio)


def budget_point(ratio: float) -> str:
    """``mr0.5-budget``: the evaluation name (``OUT/evals/<point>/``, stages, rows) of a ratio's equal wall-clock
    checkpoint."""
    return f"{run_name(ratio)}-budget"


def knn_k(plan: SweepPlan) -> str:
    """The k shown in tables, sentences and plots: 20 (DINO's default) when evaluated."""
    return "20" if 20 in plan.eval.ks else str(plan.eval.ks[0])


# What an equal-time row's checkpoint is (:func:`equal_time_kind`).
SETS_BUDGET, CAPPED, BUDGET_CHECKPOINT = "final checkpoint, sets the budget", "final checkpoint", "budget checkpoint"


def equal_time_kind(ratio: float, point: str, budget_ratio: float | None) -> str:
    """The checkpoint an equal-time row of ``ratio`` uses (``point``): the budget ratio's final one
    (:data:`SETS_BUDGET`), a capped ratio's final one (its run ended before the budget: :data:`CAPPED`) or its
    budget checkpoint (:data:`BUDGET_CHECKPOINT`). The first two are the equal-epoch checkpoints."""
    if ratio == budget_ratio:
        return SETS_BUDGET
    return CAPPED if point == run_name(ratio) else BUDGET_CHECKPOINT


def budget_share(train_seconds: float | None, budget_s: float | None) -> float | None:
    """The fraction of the budget a checkpoint's training time used; None where either is not recorded."""
    return train_seconds / budget_s if train_seconds is not None and budget_s else None


def budget_step(
    records: list[dict[str, Any]], images_per_step: int, probe: int, budget_seconds: float
) -> tuple[float, int]:
    """(seconds per step, the step at which training time reaches ``budget_seconds``) from the metric
    records of the first ``probe`` steps.

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

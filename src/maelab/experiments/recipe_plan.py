"""The plan of a recipe search: its options and candidates, each candidate's pretraining config, the
state file, and the two rules of the search: the equal wall-clock budget (steps from the img/s of a
short calibration run of the training loop itself, checked against the seconds the run then used)
and the random-init baseline of the same encoder shape.

Values of a candidate's config: defaults < :data:`RECIPE_BASE` < the search's options (data, holdout,
seed, device, precision) < the candidate's overrides < its step count and run directory (and, for DINO, the
teacher momentum fitted to that step count).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maelab.budget import CALIBRATION_SHARE, MIN_CALIBRATION_SECONDS
from maelab.config import Config, ConfigError, DinoConfig, ModelConfig, resolve_config
from maelab.config.core import merge_sections
from maelab.config.recipe import RECIPE_BASE, RECIPE_CANDIDATES, RecipeCandidate, RecipeOptions, candidates_by_name
from maelab.eval.knn import PAIRED_K
from maelab.experiments.compare_plan import with_teacher_momentum
from maelab.experiments.stages import Stages

STATE_FILE = "recipe.json"
KNN_K = PAIRED_K  # the k of the score (DINO's default)
KS = (10, KNN_K, 200)  # k-NN neighbour counts in the reports
# A candidate whose training seconds are outside this share of the budget is flagged in the summary.
BUDGET_TOLERANCE = (0.9, 1.1)
# The decoder and the loss do not change the encoder: the random-init baseline of every candidate with
# the same encoder is built from these fields of the base, so its features are cached once and reused.
ENCODER_ONLY_RESET = ("decoder_embed_dim", "decoder_depth", "decoder_heads", "norm_pix_loss", "mask_ratio")
# Options that may change between calls of one search (not part of its settings; a pretrain stage records its re-fit).
PER_CALL_OPTIONS = ("out", "candidates", "quiet", "isolate", "refit")


def _as_json(value: Any) -> Any:
    return json.loads(json.dumps(value))


@dataclass
class RecipePlan:
    """A resolved search: ``options`` (validated), the ``candidates`` of this call and the shared ``base``."""

    options: RecipeOptions
    candidates: list[RecipeCandidate]
    base: dict[str, dict[str, Any]] = field(default_factory=lambda: merge_sections(RECIPE_BASE))
    ks: tuple[int, ...] = KS

    @property
    def out(self) -> Path:
        """The results directory (``--out``)."""
        return Path(self.options.out)

    @property
    def budget_s(self) -> float:
        """The training time every candidate gets, in seconds."""
        return 60.0 * self.options.budget_minutes

    @property
    def calibration_s(self) -> float:
        """The least training time a calibration times, in seconds."""
        return max(MIN_CALIBRATION_SECONDS, CALIBRATION_SHARE * self.budget_s)

    def shared_values(self) -> dict[str, dict[str, Any]]:
        """The pretraining values of every candidate before its overrides: the base and the options."""
        o = self.options
        return merge_sections(self.base, {
            "data": {"data_dir": o.data_dir, "holdout": o.holdout},
            "train": {"seed": o.seed, "device": o.device, "precision": o.precision, "quiet": o.quiet},
        })  # fmt: skip

    def run_dir(self, cand: RecipeCandidate) -> Path:
        """Where ``cand``'s pretraining run lives: OUT/runs/<name>."""
        return self.out / "runs" / cand.name

    def config(self, cand: RecipeCandidate, steps: int = 0) -> Config:
        """``cand``'s pretraining config (``steps`` optimizer steps, into ``OUT/runs/<name>``), validated; with
        ``steps`` (the planned ones), a DINO candidate's teacher momentum is fitted to them (:func:`fit_teacher_momentum`)."""
        values = merge_sections(
            self.shared_values(), cand.overrides, {"train": {"steps": steps, "out": str(self.run_dir(cand))}}
        )
        try:
            cfg = resolve_config(None, values, f"recipe candidate {cand.name}")
        except ConfigError as e:
            raise ConfigError(f"candidate {cand.name}: {e}") from e
        return fit_teacher_momentum(cfg) if steps else cfg

    def base_config(self) -> Config:
        """The config of the shared values alone (the data and evaluation settings of every candidate)."""
        return resolve_config(None, self.shared_values(), "recipe base")

    def settings(self) -> dict[str, Any]:
        """What a search keeps in ``OUT/recipe.json``: the shared values and options (not the per-call ones)."""
        opts = {k: v for k, v in dataclasses.asdict(self.options).items() if k not in PER_CALL_OPTIONS}
        return {"options": opts, "base": _as_json(self.base), "ks": list(self.ks)}

    def open_stages(self) -> Stages:
        """``OUT/recipe.json``: created for a new search, or checked against these settings to continue one."""
        self.out.mkdir(parents=True, exist_ok=True)
        defaults = {k: v for k, v in dataclasses.asdict(RecipeOptions()).items() if k not in PER_CALL_OPTIONS}
        return Stages(
            self.out / STATE_FILE, self.settings(), "a recipe search", option_defaults={"options": defaults},
            device=self.options.device,
        )  # fmt: skip


def make_plan(
    options: RecipeOptions | None = None,
    table: tuple[RecipeCandidate, ...] = RECIPE_CANDIDATES,
    base: dict[str, dict[str, Any]] | None = None,
    ks: tuple[int, ...] = KS,
) -> RecipePlan:
    """Resolve a search: the candidates of ``options.candidates`` from ``table`` (all when none are named),
    with ``base`` below their overrides. Every candidate's config is validated now, and the data
    directory is made absolute, so runs and evaluations read the same data whatever the working directory.
    """
    from maelab.data import resolve_data_dir

    options = dataclasses.replace(options or RecipeOptions())
    options.validate()
    if KNN_K not in ks:
        raise ConfigError(f"the score needs k-NN at k={KNN_K}; got ks {ks}")
    options.data_dir = str(resolve_data_dir(options.data_dir or None).resolve())
    plan = RecipePlan(
        options, candidates_by_name(tuple(options.candidates), table), merge_sections(base or RECIPE_BASE), ks
    )
    for cand in plan.candidates:
        plan.config(cand)
    return plan


def fit_teacher_momentum(cfg: Config) -> Config:
    """A copy of ``cfg`` whose DINO teacher momentum is fitted to its ``--steps`` by the rule of ``maelab compare``
    (:func:`~maelab.experiments.compare_plan.with_teacher_momentum`: the teacher keeps <= 5% of its random init;
    DINO's 0.996 assumes ~10^5 steps), unless the candidate set one (a value other than DINO's default, as the
    compare takes it). A config of another method, or without ``--steps``, is returned as it is."""
    if cfg.train.method != "dino" or cfg.train.steps <= 0:
        return cfg
    value = cfg.dino.momentum_teacher
    given = None if value == DinoConfig().momentum_teacher else value
    return with_teacher_momentum(dataclasses.replace(cfg, dino=dataclasses.replace(cfg.dino)), given)


def budget_flag(use: float) -> str:
    """``""`` for a run whose training seconds / budget ``use`` is inside :data:`BUDGET_TOLERANCE`, else
    ``over budget`` or ``under budget``."""
    low, high = BUDGET_TOLERANCE
    return "over budget" if use > high else "under budget" if use < low else ""


def baseline_config(cfg: Config, base: Config) -> Config:
    """``cfg`` with its decoder, loss target and mask ratio set to ``base``'s: the same encoder, so the same
    random init (seeded), and one feature-cache key for every candidate of that encoder shape."""
    model = dataclasses.replace(cfg.model, **{k: getattr(base.model, k) for k in ENCODER_ONLY_RESET})
    return dataclasses.replace(cfg, model=model)


def encoder_shape(cfg: Config) -> str:
    """``256x4 (4 heads), patch 4``: the encoder a candidate trains (the random-init baseline's shape)."""
    m: ModelConfig = cfg.model
    return f"{m.embed_dim}x{m.encoder_depth} ({m.encoder_heads} heads), patch {m.patch_size}"

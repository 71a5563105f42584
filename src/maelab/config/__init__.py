"""Every option dataclass of maelab and its validation, one module per group of commands.

``maelab.config`` re-exports the names other layers use, so ``from maelab.config import Config``
works wherever the dataclass lives.
"""

from maelab.config.core import (
    ConfigError,
    config_differences,
    field_types,
    load_toml,
    opt,
    update_section,
)
from maelab.config.evaluation import (
    BenchOptions,
    ExportOptions,
    FinetuneConfig,
    FinetuneOptions,
    FrozenEvalOptions,
    KnnOptions,
    LinearOptions,
    ProbeConfig,
    ReconstructOptions,
    ReportOptions,
)
from maelab.config.experiments import (
    COMPARE_BUDGET_TEXT,
    COMPARE_PRETRAIN_DEFAULTS,
    PRESETS,
    CompareOptions,
    EvalSettings,
    SweepOptions,
    SweepPreset,
    compare_base_config,
    method_config,
)
from maelab.config.pretrain import (
    METHOD_TRAIN_DEFAULTS,
    SECTIONS,
    Config,
    DataConfig,
    DinoConfig,
    ModelConfig,
    TrainConfig,
    config_dict_with_defaults,
    config_from_dict,
    dino_checks,
    resolve_config,
    validate,
)
from maelab.config.recipe import RECIPE_BASE, RECIPE_CANDIDATES, RecipeCandidate, RecipeOptions

__all__ = [
    "BenchOptions", "ExportOptions", "FinetuneConfig", "FinetuneOptions", "FrozenEvalOptions", "KnnOptions",
    "LinearOptions", "ProbeConfig", "ReconstructOptions", "ReportOptions",
    "COMPARE_PRETRAIN_DEFAULTS", "PRESETS", "CompareOptions", "EvalSettings", "SweepOptions", "SweepPreset",
    "COMPARE_BUDGET_TEXT", "compare_base_config", "method_config",
    "RECIPE_BASE", "RECIPE_CANDIDATES", "RecipeCandidate", "RecipeOptions",
    "METHOD_TRAIN_DEFAULTS", "SECTIONS", "Config", "ConfigError", "DataConfig", "DinoConfig", "ModelConfig",
    "TrainConfig", "config_dict_with_defaults", "config_differences", "config_from_dict", "dino_checks",
    "field_types", "load_toml", "opt", "resolve_config", "update_section", "validate",
]  # fmt: skip

"""``maelab sweep``, ``maelab compare``, ``maelab recipe`` and ``maelab seeds``: every flag is generated from the option dataclasses in
:mod:`maelab.config.experiments` and the pretraining config sections (see :mod:`maelab.cli.flags`)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from maelab.cli.flags import (
    add_config_file_flag,
    add_config_flags,
    add_dataclass_flags,
    cli_values,
    given_values,
    options_from_args,
)
from maelab.config import (
    COMPARE_BUDGET_TEXT,
    COMPARE_PRETRAIN_DEFAULTS,
    PRESETS,
    CompareOptions,
    EvalSettings,
    SweepOptions,
    compare_base_config,
    load_toml,
)


def _command_line() -> str:
    """The command as typed, for the summary (``maelab sweep ...``)."""
    return "maelab " + shlex.join(sys.argv[1:])


# ------------------------------------------------------------------------------------ sweep
def cmd_sweep(args: argparse.Namespace) -> int:
    """Run (or continue) the sweep the flags describe; prints where its results are."""
    from maelab.experiments.sweep import run_sweep
    from maelab.experiments.sweep_plan import make_plan

    options = options_from_args(SweepOptions, args, "sweep")
    file_values = load_toml(args.config) if args.config else None
    plan = make_plan(options, file_values, cli_values(args), given_values(args, "eval"), args.config or "command line")
    summary = run_sweep(plan, _command_line())
    print(f"results: {plan.out}\nsummary: {summary}")
    return 0


def add_sweep_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``maelab sweep``."""
    p = sub.add_parser(
        "sweep",
        help="mask-ratio sweep (and the reconstruction study): pretrain one MAE per ratio, evaluate each",
        description="Pretrain one MAE per --mask-ratios value with everything else identical, then evaluate "
        "each (linear probe, k-NN, reconstruction at its own ratio and at --common-ratio, training speed) at "
        "equal epochs and at an equal wall-clock budget, and fine-tune each final checkpoint beside one "
        "from-scratch baseline (--finetune-epochs, 0 skips it). Writes OUT/summary.md, summary.csv, metrics.json and "
        "figures (--out, default runs/sweep-PRESET). Re-running the same command continues an interrupted "
        "sweep. Presets: " + "; ".join(f"{k}: {v.description}" for k, v in PRESETS.items()) + ". Values: "
        "defaults < --preset < --config file < flags.",
    )
    add_dataclass_flags(p, SweepOptions, "sweep")
    add_dataclass_flags(p, EvalSettings, "eval")
    add_config_file_flag(p, "[model], [data], [train]")
    add_config_flags(p)
    p.set_defaults(func=cmd_sweep)


# ------------------------------------------------------------------------------------ compare
def cmd_compare(args: argparse.Namespace) -> int:
    """Run (or continue) MAE vs DINO; prints the summary and where the results are."""
    from maelab.experiments.compare import run_compare

    given = cli_values(args)
    file_values = load_toml(args.config) if args.config else None
    # defaults < COMPARE_PRETRAIN_DEFAULTS < file < flags; what was given there applies to both methods.
    cfg, names = compare_base_config(file_values, given, args.config or "defaults")
    out = cfg.train.out or str(Path("runs") / f"compare-{cfg.model.name}")
    # A --momentum-teacher given (flag or file) is kept; otherwise each DINO run gets one fitted to its length.
    file_dino = (file_values or {}).get("dino", {}) if isinstance((file_values or {}).get("dino", {}), dict) else {}
    chosen = given["dino"].get("momentum_teacher", file_dino.get("momentum_teacher"))
    opts = options_from_args(
        CompareOptions, args, "compare", progress=not cfg.train.quiet, momentum_teacher=chosen, given=names
    )
    results = run_compare(cfg, opts, out, _command_line())
    print((results / "summary.md").read_text(), end="")
    print(f"results: {results} (summary.md, summary.csv, metrics.json, plots/, runs/)")
    return 0


def add_compare_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``maelab compare``."""
    defaults = ", ".join(f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}")
                         for vals in COMPARE_PRETRAIN_DEFAULTS.values() for k, v in vals.items())  # fmt: skip
    p = sub.add_parser(
        "compare",
        help="pretrain MAE and DINO on the same encoder and data, evaluate both beside random init",
        description="Pretrain MAE and DINO with the same encoder, data, epochs and batch (MAE with its --recipe, "
        "DINO with its paper's optimizer recipe), then again at equal training time; evaluate k-NN, linear probe and "
        "fine-tuning of each beside the random-init encoder. Re-running with the same --out skips finished stages and resumes "
        "an interrupted pretraining. Writes OUT/summary.md, summary.csv, metrics.json, plots/ and runs/. "
        f"Defaults here (unless given by a flag or --config): {defaults}. {COMPARE_BUDGET_TEXT}",
    )
    add_config_file_flag(p)
    add_dataclass_flags(p, CompareOptions, "compare")
    add_config_flags(p)
    p.set_defaults(func=cmd_compare)


# ------------------------------------------------------------------------------------ recipe
def cmd_recipe(args: argparse.Namespace) -> int:
    """Run (or continue) the recipe search the flags describe; prints the summary and where the results are."""
    from maelab.config import RecipeOptions
    from maelab.experiments.recipe import run_recipe
    from maelab.experiments.recipe_plan import make_plan

    plan = make_plan(options_from_args(RecipeOptions, args, "recipe"))
    summary = run_recipe(plan, _command_line())
    print(summary.read_text(), end="")
    print(f"results: {plan.out} (summary.md, summary.csv, metrics.json, plots/, evals/, runs/)")
    return 0


def add_recipe_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``maelab recipe``."""
    from maelab.config import RecipeOptions

    p = sub.add_parser(
        "recipe",
        help="search the short-schedule recipe (batch, lr, warm-up, loss, data, widths) at an equal wall-clock "
        "budget, scored on a validation split of the training set",
        description="Train each candidate recipe for the same wall-clock budget of training steps on this machine "
        "(its img/s is calibrated first and fixes its step count), on the training images minus --holdout "
        "held-out ones; score each on those held-out images (k-NN k=20 and linear probe on frozen features, beside "
        "the random-init encoder of the same shape; the test set is never read), rank them and report the winner's "
        "margin with paired statistics. Writes OUT/summary.md, summary.csv, metrics.json, plots/, evals/ and "
        "runs/. Re-running with the same --out continues an interrupted search. Run it on an otherwise idle "
        "machine: the budget is wall-clock.",
    )
    add_dataclass_flags(p, RecipeOptions, "recipe")
    p.set_defaults(func=cmd_recipe)


# ------------------------------------------------------------------------------------ seeds
def cmd_seeds(args: argparse.Namespace) -> int:
    """Combine finished sweeps, recipe searches or comparisons of several seeds; prints the summary and where it is."""
    from maelab.config import ConfigError
    from maelab.experiments.compare_seeds import is_compare, write_compare_seeds
    from maelab.experiments.recipe_seeds import is_search, write_search_seeds
    from maelab.experiments.seeds import write_seeds

    folders = [Path(f) for f in args.folders]
    write = write_seeds  # sweeps, unless the folders are searches or comparisons (all of them: checked)
    for kind, is_kind, writer in (("recipe search", is_search, write_search_seeds),
                                  ("comparison", is_compare, write_compare_seeds)):  # fmt: skip
        found = [f for f in folders if is_kind(f)]
        # A missing folder is not "another kind": the reader names it ("no such directory").
        if found and len(found) < len(folders) and all(f.is_dir() for f in folders):
            other = next(f for f in folders if f not in found)
            raise ConfigError(f"{other} is not a {kind} but {found[0]} is: give folders of one experiment")
        write = writer if found else write
    summary = write(folders, Path(args.out), _command_line())
    print(summary.read_text(), end="")
    print(f"results: {args.out} (summary.md, seeds.json)")
    return 0


def add_seeds_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``maelab seeds``."""
    from maelab.experiments.seeds import MIN_SEEDS

    p = sub.add_parser(
        "seeds",
        help="read finished mask-ratio sweeps (or recipe searches, or MAE-vs-DINO comparisons) of different --seed "
        "together: seed spread and decided verdicts",
        description="Read several finished `maelab sweep` folders that differ only in --seed and report, for each "
        "view, ratio and metric, the accuracy of every seed with its mean and SD over seeds, and for every pair of "
        "ratios (and each ratio vs the random init) the paired difference per seed and its 95% t-interval over "
        "seeds. Given `maelab recipe` folders instead, the same per candidate (validation split; score, steps and "
        "budget use too); given `maelab compare` folders, the same per protocol and encoder (MAE vs DINO, each vs "
        "random init, CLS vs mean pooling; speed too). "
        f"A ranking is decided only with >= {MIN_SEEDS} seeds when both the t-interval over seeds (training noise) and "
        "a paired bootstrap over the same test images of the difference pooled over seeds (test-image noise) exclude "
        "0 on the same side; how many seeds are beyond noise on their own is shown. Writes OUT/summary.md and "
        "OUT/seeds.json.",
    )
    p.add_argument(
        "folders", nargs="+", metavar="DIR", help="sweep (or recipe-search, or compare) folders, one per seed"
    )
    p.add_argument("--out", default="runs/sweep-seeds", help="results folder (default: %(default)s)")
    p.set_defaults(func=cmd_seeds)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``maelab sweep``, ``compare``, ``recipe`` and ``seeds`` on the ``maelab`` subcommand parser."""
    add_sweep_parser(sub)
    add_compare_parser(sub)
    add_recipe_parser(sub)
    add_seeds_parser(sub)

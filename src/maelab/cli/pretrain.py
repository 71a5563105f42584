"""``maelab pretrain``: flags generated from the pretraining config sections; values come from
defaults < ``--model`` preset < ``--config`` file < the flags given."""

from __future__ import annotations

import argparse

from maelab.cli.flags import add_command, add_config_file_flag, add_config_flags, cli_values
from maelab.config import ConfigError, load_toml, resolve_config

# The only flags a --resume may give: they change how the run continues, not what it trains.
RESUME_OVERRIDES = ("epochs", "quiet", "device", "log_every")


def cmd_pretrain(args: argparse.Namespace) -> int:
    """Pretrain a new run (or continue ``--resume RUN``); 130 when a signal stopped it."""
    from maelab.train import pretrain

    given = cli_values(args)
    if args.resume:
        extra = [f"--{k.replace('_', '-')}" for vals in given.values() for k in vals if k not in RESUME_OVERRIDES]
        if extra or args.config:
            raise ConfigError(
                f"--resume continues a run with its own config.json; only "
                f"{', '.join('--' + k.replace('_', '-') for k in RESUME_OVERRIDES)} may be given (got "
                f"{', '.join(extra + (['--config'] if args.config else []))})"
            )
        run = pretrain(resume=args.resume, overrides=given["train"])
    else:
        file_values = load_toml(args.config) if args.config else None
        run = pretrain(resolve_config(file_values, given, args.config or "defaults"))
    print(f"run directory: {run}")
    from maelab.checkpoint import latest_checkpoint, load_meta

    found = latest_checkpoint(run)
    if found is not None and load_meta(found).get("reason") == "interrupted":
        return 130  # stopped by a signal: the checkpoint is safe, but the run is not finished
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """``maelab pretrain``."""
    p = add_command(
        sub, "pretrain", cmd_pretrain, None, "pretrain a ViT encoder (MAE) on an image folder or CIFAR-10",
        "Pretrain a ViT with a masked autoencoder. Writes RUN/config.json, RUN/metrics.jsonl, RUN/checkpoints/ and "
        "RUN/summary.json. Values: defaults < --model preset < --config file < flags.",
    )  # fmt: skip
    add_config_file_flag(p)
    p.add_argument(
        "--resume", default="", metavar="RUN", help="continue RUN from its newest checkpoint (default: none)"
    )
    add_config_flags(p)

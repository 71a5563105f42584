"""The ``maelab`` command line: parsing only. Each command's module adds its parser and a ``cmd_*``
that builds the command's options from the flags given and calls one library function.

Flags are generated from the option dataclasses (``maelab.cli.flags``), so every option is documented
with its default, and file values (``--config run.toml``) are overridden only by flags given.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from maelab import __version__
from maelab.checkpoint import CheckpointError
from maelab.cli import eval as eval_commands
from maelab.cli import experiments, pretrain, tools
from maelab.config import ConfigError
from maelab.data import DataError
from maelab.rundir import RunDirError


def build_parser() -> argparse.ArgumentParser:
    """The ``maelab`` argument parser with all subcommands."""
    parser = argparse.ArgumentParser(
        prog="maelab",
        description="Pretrain Vision Transformers with Masked Autoencoders and measure what they learned.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example:\n  maelab pretrain --data-dir ../shared/data/cifar10 --subset 5000 --epochs 2\n"
        "Run `maelab COMMAND --help` for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"maelab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    pretrain.add_parser(sub)
    eval_commands.add_parsers(sub)
    tools.add_parsers(sub)
    experiments.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``maelab`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    # Library warnings (e.g. a DINO teacher momentum too high for the run) read as one CLI line.
    warnings.formatwarning = lambda message, category, *_: f"maelab {args.command}: warning: {message}\n"
    try:
        return args.func(args)
    except (ConfigError, DataError, CheckpointError, RunDirError) as e:
        print(f"maelab {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("maelab: interrupted", file=sys.stderr)
        return 130
    except RuntimeError as e:
        from maelab.train import TrainingError

        if isinstance(e, TrainingError):
            print(f"maelab {args.command}: error: {e}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

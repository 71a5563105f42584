"""The ``maelab`` command line: ``maelab pretrain ...`` (more subcommands join as they land).

Pretraining flags are generated from the config dataclasses, so every option is documented
with its default, and file values (``--config run.toml``) are overridden only by flags given.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from typing import Any

from maelab import __version__
from maelab.checkpoint import CheckpointError
from maelab.config import SECTIONS, ConfigError, field_types, load_toml, resolve_config
from maelab.data import DataError

RESUME_OVERRIDES = ("epochs", "quiet", "device", "log_every")


def _flag(f: dataclasses.Field) -> str:
    return "--" + (f.metadata.get("flag") or f.name).replace("_", "-")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per config field, grouped by section; defaults suppressed so we see what was given."""
    for section, cls in SECTIONS.items():
        group = parser.add_argument_group(f"{section} options")
        types = field_types(cls)
        for f in dataclasses.fields(cls):
            typ = types[f.name]
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
            if section == "model" and f.name in (
                "embed_dim", "encoder_depth", "encoder_heads", "decoder_embed_dim", "decoder_depth",
                "decoder_heads", "mlp_ratio",
            ):  # fmt: skip
                shown = f"{shown} for ref"
            help_text = f"{f.metadata['help']} (default: {shown!s})"
            kwargs: dict[str, Any] = {"dest": f"{section}.{f.name}", "default": argparse.SUPPRESS, "help": help_text}
            if typ is bool:
                kwargs["action"] = argparse.BooleanOptionalAction
            elif typ in (int, float, str):
                kwargs["type"] = typ
                kwargs["metavar"] = typ.__name__.upper()
            else:
                kwargs.update(type=float, nargs="+", metavar="X")
            group.add_argument(_flag(f), **kwargs)


def cli_values(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """{section: {field: value}} for the config flags the user actually gave."""
    out: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for key, value in vars(args).items():
        if "." in key:
            section, name = key.split(".", 1)
            out[section][name] = tuple(value) if isinstance(value, list) else value
    return out


def cmd_pretrain(args: argparse.Namespace) -> int:
    from maelab.train import pretrain

    given = cli_values(args)
    if args.resume:
        extra = [f"--{k.replace('_', '-')}" for s, vals in given.items() for k in vals if k not in RESUME_OVERRIDES]
        if extra or args.config:
            raise ConfigError(
                f"--resume continues a run with its own config.json; only "
                f"{', '.join('--' + k.replace('_', '-') for k in RESUME_OVERRIDES)} may be given (got "
                f"{', '.join(extra + (['--config'] if args.config else []))})"
            )
        run = pretrain(resume=args.resume, overrides=given["train"])
    else:
        file_values = load_toml(args.config) if args.config else None
        cfg = resolve_config(file_values, given, args.config or "defaults")
        run = pretrain(cfg)
    print(f"run directory: {run}")
    return 0


def not_yet(args: argparse.Namespace) -> int:
    raise ConfigError(f"`maelab {args.command}` is not implemented yet")


# Each subcommand has its own add_*_parser function below; build_parser only wires them together.
def add_eval_knn_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("knn", help="k-NN accuracy of frozen features (owner: evaluation)")
    p.set_defaults(func=not_yet)


def add_eval_linear_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("linear", help="linear probe on frozen features (owner: evaluation)")
    p.set_defaults(func=not_yet)


def add_eval_finetune_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help="fine-tune the whole encoder + a head (owner: fine-tuning)")
    p.set_defaults(func=not_yet)


def add_reconstruct_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reconstruct", help="reconstruction figure and quality of a run (owner: reconstruction)")
    p.set_defaults(func=not_yet)


def add_pretrain_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain",
        help="pretrain a ViT encoder (MAE) on an image folder or CIFAR-10",
        description="Pretrain a ViT with a masked autoencoder. Writes RUN/config.json, RUN/metrics.jsonl, "
        "RUN/checkpoints/ and RUN/summary.json. Values: defaults < --model preset < --config file < flags.",
    )
    p.add_argument("--config", default="", metavar="FILE", help="TOML file with [model], [data], [train] tables")
    p.add_argument("--resume", default="", metavar="RUN", help="continue RUN from its newest checkpoint")
    add_config_flags(p)
    p.set_defaults(func=cmd_pretrain)


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
    add_pretrain_parser(sub)
    evaluate = sub.add_parser("eval", help="evaluate a run's encoder: knn, linear, finetune")
    eval_sub = evaluate.add_subparsers(dest="eval_command", metavar="EVAL", required=True)
    add_eval_knn_parser(eval_sub)
    add_eval_linear_parser(eval_sub)
    add_eval_finetune_parser(eval_sub)
    add_reconstruct_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``maelab`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except (ConfigError, DataError, CheckpointError) as e:
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

"""``maelab eval knn|linear|finetune`` and ``maelab reconstruct``: options from
``maelab.config.evaluation``, work in ``maelab.eval.commands``."""

from __future__ import annotations

import argparse
from typing import Any

from maelab.cli.flags import add_dataclass_flags, options_from_args
from maelab.config import FinetuneOptions, KnnOptions, LinearOptions, ReconstructOptions


def _print_result(result: dict[str, Any]) -> int:
    print(result["table"], end="")
    if "figure" in result:
        print(f"figure: {result['figure']}")
    print(f"written: {result['json']}, {result['markdown']}")
    return 0


def cmd_eval_knn(args: argparse.Namespace) -> int:
    from maelab.eval.commands import knn_command

    return _print_result(knn_command(options_from_args(KnnOptions, args, "opts", run=args.run)))


def cmd_eval_linear(args: argparse.Namespace) -> int:
    from maelab.eval.commands import linear_command

    return _print_result(linear_command(options_from_args(LinearOptions, args, "opts", run=args.run)))


def cmd_eval_finetune(args: argparse.Namespace) -> int:
    from maelab.eval.commands import finetune_command

    return _print_result(finetune_command(options_from_args(FinetuneOptions, args, "opts", run=args.run)))


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from maelab.eval.commands import reconstruct_command

    return _print_result(reconstruct_command(options_from_args(ReconstructOptions, args, "opts", run=args.run)))


# (name, options, command, help, description, RUN is optional) of each ``maelab eval`` subcommand.
EVAL_COMMANDS = (
    ("knn", KnnOptions, cmd_eval_knn, "weighted k-NN accuracy of frozen features, beside a random-init encoder",
     "k-NN classification of frozen features as in DINO: cosine similarity, the k nearest training images vote "
     "with weight exp(sim / T). Features (masking off, no augmentation) are cached per checkpoint. Writes "
     "RUN/eval/knn.{json,md} (or DIR/ with --out).", True),
    ("linear", LinearOptions, cmd_eval_linear, "linear probe on frozen features, beside a random-init encoder",
     "Train BatchNorm1d(affine=False) + linear on frozen features (MAE's probe). One head per --lrs value is "
     "trained at once; the lr is picked on a held-out part of the TRAINING set, the head is retrained at it on "
     "all training images and tested once. Writes RUN/eval/linear.{json,md}.", True),
    ("finetune", FinetuneOptions, cmd_eval_finetune,
     "fine-tune the whole encoder + a linear head, beside the same recipe from random init",
     "Fine-tune RUN's encoder end to end (timm ViT, layer-wise lr decay, drop path, label smoothing, warm-up + "
     "cosine, random-resized-crop + flip) and report test top-1 beside the identical recipe from random "
     "initialisation. Writes RUN/eval/finetune.{json,md}.", False),
)  # fmt: skip


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """``maelab eval knn|linear|finetune`` and ``maelab reconstruct``."""
    evaluate = sub.add_parser("eval", help="evaluate a run's encoder: knn, linear, finetune")
    eval_sub = evaluate.add_subparsers(dest="eval_command", metavar="EVAL", required=True)
    for name, options, func, help_text, description, optional_run in EVAL_COMMANDS:
        p = eval_sub.add_parser(name, help=help_text, description=description)
        if optional_run:  # a timm --backbone may stand in for RUN
            p.add_argument(
                "run", nargs="?", default="", metavar="RUN", help="pretraining run (or checkpoint) directory"
            )
        else:
            p.add_argument("run", metavar="RUN", help="pretraining run (or checkpoint) directory")
        add_dataclass_flags(p, options, "opts")
        p.set_defaults(func=func)

    p = sub.add_parser(
        "reconstruct",
        help="reconstruction figure and quality (masked MSE, PSNR, SSIM) of an MAE run",
        description="Draw original | masked input | reconstruction | reconstruction + visible for N test images "
        "and score reconstruction on the test split, all under fixed masks drawn from --seed (comparable across "
        "runs). Writes the figure and RUN/eval/reconstruction_mr<R>_seed<S>.{json,md}.",
    )
    p.add_argument("run", metavar="RUN", help="MAE run (or checkpoint) directory")
    add_dataclass_flags(p, ReconstructOptions, "opts")
    p.set_defaults(func=cmd_reconstruct)

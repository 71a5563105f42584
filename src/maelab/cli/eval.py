"""``maelab eval knn|linear|finetune`` and ``maelab reconstruct``: options from
``maelab.config.evaluation``, work in ``maelab.eval.commands``."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from maelab.cli.flags import add_command, options_from_args
from maelab.config import FinetuneOptions, KnnOptions, LinearOptions, ReconstructOptions

RUN = ("run", "RUN", "pretraining run (or checkpoint) directory")


def eval_command(command: str, options: type) -> Callable[[argparse.Namespace], int]:
    """The ``cmd`` of an evaluation: build ``options`` from the flags and RUN, call
    ``maelab.eval.commands.<command>`` with them, print its table and the files it wrote."""

    def cmd(args: argparse.Namespace) -> int:
        from maelab.eval import commands

        result = getattr(commands, command)(options_from_args(options, args, "opts", run=args.run))
        print(result["table"], end="")
        if "figure" in result:
            print(f"figure: {result['figure']}")
        print(f"written: {result['json']}, {result['markdown']}")
        return 0

    return cmd


# (name, library function, options, help, description, RUN may be left out) of each ``maelab eval`` command;
# RUN may be left out for frozen features, where a timm --backbone stands in for it.
EVAL_COMMANDS = (
    ("knn", "knn_command", KnnOptions, "weighted k-NN accuracy of frozen features, beside a random-init encoder",
     "k-NN classification of frozen features as in DINO: cosine similarity, the k nearest training images vote "
     "with weight exp(sim / T). Features (masking off, no augmentation) are cached per checkpoint. Writes "
     "RUN/eval/knn.{json,md} (or DIR/ with --out).", True),
    ("linear", "linear_command", LinearOptions, "linear probe on frozen features, beside a random-init encoder",
     "Train BatchNorm1d(affine=False) + linear on frozen features (MAE's probe). One head per --lrs value is "
     "trained at once; the lr is picked on a held-out part of the TRAINING set, the head is retrained at it on "
     "all training images and tested once. Writes RUN/eval/linear.{json,md}.", True),
    ("finetune", "finetune_command", FinetuneOptions,
     "fine-tune the whole encoder + a linear head, beside the same budget from random init",
     "Fine-tune RUN's encoder end to end (timm ViT, layer-wise lr decay, drop path, label smoothing, warm-up + "
     "cosine, random-resized-crop + flip) and report test top-1 beside the same budget from random "
     "initialisation (without layer decay, which would slow its random lower layers). Writes RUN/eval/finetune.{json,md}.", False),
)  # fmt: skip


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """``maelab eval knn|linear|finetune`` and ``maelab reconstruct``."""
    evaluate = sub.add_parser("eval", help="evaluate a run's encoder: knn, linear, finetune")
    eval_sub = evaluate.add_subparsers(dest="eval_command", metavar="EVAL", required=True)
    for name, command, options, help_text, description, optional in EVAL_COMMANDS:
        add_command(eval_sub, name, eval_command(command, options), options, help_text, description, RUN, optional)
    add_command(
        sub, "reconstruct", eval_command("reconstruct_command", ReconstructOptions), ReconstructOptions,
        "reconstruction figure and quality (masked MSE, PSNR, SSIM) of an MAE run",
        "Draw original | masked input | reconstruction | reconstruction + visible for N test images and score "
        "reconstruction on the test split, all under fixed masks drawn from --seed (comparable across runs). "
        "Writes the figure and RUN/eval/reconstruction_mr<R>_seed<S>.{json,md}.",
        ("run", "RUN", "MAE run (or checkpoint) directory"),
    )  # fmt: skip

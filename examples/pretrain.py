"""Pretrain an MAE from Python and print where the run went.

    MAELAB_DATA=../shared/data/cifar10 python examples/pretrain.py --subset 5000 --epochs 2 --out runs/example
"""

from __future__ import annotations

import argparse

from maelab.config import resolve_config
from maelab.train import pretrain

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--subset", type=int, default=5000, help="class-balanced training images (0 = all)")
p.add_argument("--epochs", type=int, default=2)
p.add_argument("--batch-size", type=int, default=256)
p.add_argument("--out", default="runs/example")
p.add_argument("--tiny", action="store_true", help="a toy-sized model (embed 32, depth 1) for smoke tests")
args = p.parse_args()

model = {"name": "ref"}
if args.tiny:
    model.update(embed_dim=32, encoder_depth=1, encoder_heads=2, decoder_embed_dim=16, decoder_depth=1, decoder_heads=2)
# Same values as the CLI flags; the data root comes from --data-dir or $MAELAB_DATA.
cfg = resolve_config(
    None,
    {
        "model": model,
        "data": {"subset": args.subset},
        "train": {"epochs": args.epochs, "batch_size": args.batch_size, "out": args.out, "quiet": True},
    },
    "examples/pretrain.py",
)
run = pretrain(cfg)
print(f"run directory: {run}")

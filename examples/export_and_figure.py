"""Use a run's encoder as a plain timm model, export it, and draw a reconstruction figure.

    MAELAB_DATA=../shared/data/cifar10 python examples/export_and_figure.py runs/example --out-dir exported
"""

from __future__ import annotations

import argparse
from pathlib import Path

import timm
import torch

import maelab
from maelab.augment import normalize
from maelab.data import load_split
from maelab.export import export_encoder
from maelab.report import draw_reconstruction

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("run", help="run directory (its newest checkpoint is used)")
p.add_argument("--out-dir", default="exported")
args = p.parse_args()
out = Path(args.out_dir)

vit = maelab.load_encoder(args.run)  # a timm VisionTransformer in eval mode
data_cfg = timm.data.resolve_model_data_config(vit)  # the run's input size and normalisation
images = load_split(None, "test").images[:4]  # uint8 (4, 3, 32, 32); the data root from $MAELAB_DATA
with torch.no_grad():
    cls = vit(normalize(images, data_cfg["mean"], data_cfg["std"]))  # (4, D) CLS features
print(f"timm {type(vit).__name__}: CLS features {tuple(cls.shape)}")

weights, arguments = export_encoder(args.run, out / "encoder.safetensors")  # + encoder.json beside it
print(f"exported {weights} and {arguments}")
figure = draw_reconstruction(Path(args.run), out / "reconstruction.png")
print(f"reconstruction figure: {figure}")

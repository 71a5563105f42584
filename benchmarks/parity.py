"""Quality parity: the plain fp32 path and an optimised path train to the same loss curve.

    MAELAB_DATA=/work/shared/data/cifar10 python benchmarks/parity.py --steps 300 --batch-size 64
    ... --b-precision bf16          # on CUDA / CPUs with native bf16: the default bf16 autocast

Run A is the plain path (fp32, explicit softmax attention). Run B is the optimised path
(default: SDPA attention at the default precision, i.e. bf16 on CUDA and fp32 on CPUs). Both use
the same init, data order, augmentation and masks; the script prints both curves (mean loss per
window) and their largest relative gap.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

from maelab.augment import mae_augment
from maelab.bench import maelab_contender
from maelab.config import DataConfig
from maelab.data import class_balanced_subset, load_split
from maelab.runtime import autocast, hardware_line, resolve_device


def curve(images: torch.Tensor, args: argparse.Namespace, precision: str, attention: str) -> list[float]:
    """Mean training loss per window of ``args.window`` steps."""
    device = images.device
    torch.manual_seed(0)
    c = maelab_contender("ref", precision=precision, device=device, attention=attention)
    for g in c.optimizer.param_groups:
        g["lr"] = args.lr
    d = DataConfig()
    gen = torch.Generator(device=device).manual_seed(1)
    losses = torch.zeros(args.steps, device=device)  # host sync only at the end
    for step in range(args.steps):
        idx = torch.randint(len(images), (args.batch_size,), generator=gen, device=device)
        x = mae_augment(images[idx], d.mean, d.std, 32, d.crop_min_scale, d.hflip, generator=gen)
        noise = torch.rand(args.batch_size, 64, generator=gen, device=device)
        with autocast(device, c.amp_dtype):
            loss = c.module(x, noise=noise)[0]
        loss.backward()
        c.optimizer.step()
        c.optimizer.zero_grad(set_to_none=True)
        losses[step] = loss.detach().float()
    return losses.view(-1, args.window).mean(dim=1).tolist()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=os.environ.get("MAELAB_DATA", ""))
    p.add_argument("--subset", type=int, default=2000)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--window", type=int, default=25, help="steps averaged per printed point (divides --steps)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--b-precision", default="auto", choices=("auto", "fp32", "bf16"))
    p.add_argument("--b-attention", default="sdpa", choices=("auto", "sdpa", "explicit"))
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    if not args.data_dir:
        p.error("--data-dir (or $MAELAB_DATA) is required")
    if args.steps % args.window:
        p.error(f"--window {args.window} must divide --steps {args.steps}")

    device = resolve_device(args.device)
    print("command:", "python benchmarks/parity.py", " ".join(sys.argv[1:] if argv is None else argv))
    print("hardware:", hardware_line(device))
    images = class_balanced_subset(load_split(args.data_dir, "train"), args.subset).images.to(device)
    a = curve(images, args, "fp32", "explicit")
    b = curve(images, args, args.b_precision, args.b_attention)
    print(f"\nA = fp32, explicit attention;  B = precision {args.b_precision}, attention {args.b_attention}")
    print(f"  {'steps':>9s} {'loss A':>8s} {'loss B':>8s} {'B/A - 1':>8s}")
    for i, (la, lb) in enumerate(zip(a, b, strict=True)):
        print(f"  {i * args.window + 1:4d}-{(i + 1) * args.window:<4d} {la:8.4f} {lb:8.4f} {lb / la - 1:+8.2%}")
    gap = max(abs(lb / la - 1) for la, lb in zip(a, b, strict=True))
    print(f"  largest relative gap between the curves: {gap:.2%}; loss fell {a[0] / a[-1]:.2f}x (A), "
          f"{b[0] / b[-1]:.2f}x (B)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

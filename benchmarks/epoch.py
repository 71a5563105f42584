"""End-to-end epoch time against model-only step time, and against a torchvision DataLoader pipeline.

    MAELAB_DATA=/work/shared/data/cifar10 python benchmarks/epoch.py --subset 1024 --batch-size 256

Three ways through the same CIFAR-10 images, same model, same optimizer, interleaved per round:
- ``model-only``: the training step alone on a fixed batch, x steps per epoch;
- ``maelab``: maelab's data path — the uint8 split on the device, ``randperm`` batches,
  ``mae_augment`` (batched random-resized-crop + flip + normalise), then the step;
- ``torchvision``: ``ImageFolder`` + ``RandomResizedCrop``/``RandomHorizontalFlip``/``ToTensor``/
  ``Normalize`` through a ``DataLoader`` (per-image PIL work), then the step.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from maelab.augment import mae_augment
from maelab.bench import maelab_contender, median, random_batch
from maelab.config import DataConfig
from maelab.data import class_balanced_subset, load_split
from maelab.runtime import hardware_line, resolve_device


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=os.environ.get("MAELAB_DATA", ""))
    p.add_argument("--subset", type=int, default=1024, help="images per epoch (class-balanced; default: 1024)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers for torchvision (default: 0)")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    if not args.data_dir:
        p.error("--data-dir (or $MAELAB_DATA) is required")

    from torchvision import datasets, transforms

    device = resolve_device(args.device)
    print("command:", "python benchmarks/epoch.py", " ".join(sys.argv[1:] if argv is None else argv))
    print("hardware:", hardware_line(device))
    d = DataConfig()
    data = class_balanced_subset(load_split(args.data_dir, "train"), args.subset)
    images = data.images.to(device)  # uint8 (N, 3, 32, 32) on the device
    steps = len(images) // args.batch_size
    torch.manual_seed(0)
    c = maelab_contender("ref", device=device)
    fixed = random_batch(args.batch_size, 32, device)

    tv = datasets.ImageFolder(
        os.path.join(args.data_dir, "train"),
        transforms.Compose([
            transforms.RandomResizedCrop(32, scale=(d.crop_min_scale, 1.0)), transforms.RandomHorizontalFlip(),
            transforms.ToTensor(), transforms.Normalize(d.mean, d.std),
        ]),
    )  # fmt: skip
    idx = torch.randperm(len(tv), generator=torch.Generator().manual_seed(0))[: steps * args.batch_size].tolist()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(tv, idx), batch_size=args.batch_size, shuffle=True, drop_last=True,
        num_workers=args.workers, persistent_workers=args.workers > 0,
    )  # fmt: skip

    def model_only() -> None:
        for _ in range(steps):
            c.train_step(fixed)

    def maelab_epoch() -> None:
        perm = torch.randperm(len(images), device=device)
        for s in range(steps):
            batch = images[perm[s * args.batch_size : (s + 1) * args.batch_size]]
            c.train_step(mae_augment(batch, d.mean, d.std, 32, d.crop_min_scale, d.hflip))

    def torchvision_epoch() -> None:
        for x, _ in loader:
            c.train_step(x.to(device, non_blocking=True))

    ways = {"model-only": model_only, "maelab": maelab_epoch, "torchvision": torchvision_epoch}
    c.train_step(fixed)  # warm-up
    times: dict[str, list[float]] = {k: [] for k in ways}
    for _ in range(args.rounds):
        for name, fn in ways.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times[name].append(time.perf_counter() - start)
    base = median(times["model-only"])
    print(f"\nepoch = {steps} steps x batch {args.batch_size} ({steps * args.batch_size} images), ref model, "
          f"{c.precision}, median of {args.rounds} interleaved rounds")  # fmt: skip
    print(f"  {'pipeline':12s} {'s/epoch':>8s} {'x model-only':>13s} {'img/s':>8s}   rounds (s)")
    for name, ts in times.items():
        m = median(ts)
        print(f"  {name:12s} {m:8.2f} {m / base:13.3f} {steps * args.batch_size / m:8.1f}   "
              + " ".join(f"{t:.2f}" for t in ts))  # fmt: skip
    full = 50000 // args.batch_size
    print(f"  full CIFAR-10 epoch at this rate (maelab): {median(times['maelab']) / steps * full:.0f} s ({full} steps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

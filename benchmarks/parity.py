"""Quality parity of bf16 autocast: fp32 and bf16 MAE pretraining side by side, then a linear probe of each.

On a machine with native bf16 (a CUDA GPU from Ampere on, or a CPU with AVX-512 BF16 / AMX):

    MAELAB_DATA=/path/to/cifar10 python benchmarks/parity.py --out benchmarks/parity_bf16.json

Runs are PRECISION:SEED[:ATTENTION] (default ``fp32:0 fp32:1 bf16:0``). ``fp32:0`` and ``bf16:0`` share
the initialisation, data order, augmentation and masks, so their gap is what bf16 changes; ``fp32:1``
differs in all of those, so the fp32:0 / fp32:1 gap is the run-to-run spread that bf16's gap is judged
against (gaps are printed against the first run). The runs are stepped interleaved (``--window`` steps each, in turn) so that load on the machine
hits all of them alike, which also makes their img/s comparable. Schedule: AdamW as ``maelab pretrain``
builds it, linear warm-up then cosine to 0. Afterwards every encoder's CLS features of the CIFAR-10
train/test images (extracted in ``--probe-precision``, fp32 by default, so that only the training
precision differs) go through maelab's linear probe (lr picked on held-out train features).

Prints the loss curves (mean per window), the gaps, img/s and probe accuracies, and writes it all to
``--out`` (JSON). Refuses bf16 on a CPU without native bf16, where PyTorch emulates it (~16-100x slower
than fp32), unless ``--force``. A rehearsal of the plumbing, fp32 only, takes seconds anywhere:

    python benchmarks/parity.py --device cpu --runs fp32:0 fp32:1 --tiny --steps 4 --window 2 --batch-size 8 \\
        --subset 100 --probe-train 100 --probe-test 50 --probe-epochs 2 --out /tmp/parity.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from maelab.augment import mae_augment
from maelab.bench import adamw
from maelab.config import DataConfig
from maelab.data import ImageData, class_balanced_subset, load_split
from maelab.eval.features import Encoder, extract_features
from maelab.eval.linear_probe import ProbeConfig, linear_probe
from maelab.models.mae import MAE
from maelab.optim import lr_schedule
from maelab.runtime import (
    NATIVE_BF16_FLAGS,
    autocast,
    bf16_support,
    choose_precision,
    cpu_flags,
    environment,
    hardware_line,
    resolve_device,
    synchronize,
)

TINY = dict(embed_dim=32, encoder_depth=1, encoder_heads=2, decoder_embed_dim=16, decoder_depth=1, decoder_heads=2)


@dataclass
class Run:
    """One training run: its model, optimizer and generator (data order, augmentation, masks)."""

    label: str
    precision: str
    seed: int
    attention: str
    reason: str = ""
    losses: list[float] = field(default_factory=list)  # one per step
    seconds: list[float] = field(default_factory=list)  # one per window
    probe: dict = field(default_factory=dict)

    def curve(self, window: int) -> list[float]:
        """Mean loss per window of ``window`` steps."""
        return [statistics.fmean(self.losses[i : i + window]) for i in range(0, len(self.losses), window)]


def parse_run(spec: str) -> Run:
    """``fp32:0`` / ``bf16:1:explicit`` -> a Run (attention defaults to auto: SDPA on CUDA, explicit on CPU)."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or parts[0] not in ("fp32", "bf16") or not parts[1].isdigit():
        raise argparse.ArgumentTypeError(f"run {spec!r}: expected PRECISION:SEED[:ATTENTION], e.g. bf16:0")
    attention = parts[2] if len(parts) == 3 else "auto"
    if attention not in ("auto", "sdpa", "explicit"):
        raise argparse.ArgumentTypeError(f"run {spec!r}: attention must be auto, sdpa or explicit")
    return Run(spec, parts[0], int(parts[1]), attention)


def build(run: Run, args: argparse.Namespace, device: torch.device) -> tuple[MAE, torch.optim.Optimizer]:
    """The model at ``run.seed``'s initialisation and maelab's AdamW for it."""
    torch.manual_seed(run.seed)
    model = (MAE(**TINY) if args.tiny else MAE.from_preset(args.preset, patch_size=args.patch_size)).to(device)
    fused = device.type == "cuda" if run.attention == "auto" else run.attention == "sdpa"
    model.set_fused_attention(fused)
    return model.train(), adamw(model, device)


def train_interleaved(runs: list[Run], images: torch.Tensor, args: argparse.Namespace) -> list[MAE]:
    """Step every run ``args.steps`` times, ``args.window`` steps each in turn; returns the trained models."""
    device = images.device
    d = DataConfig()
    lrs = lr_schedule(args.lr, 0.0, args.steps, args.warmup).tolist()
    state = []
    for run in runs:
        choice = choose_precision(run.precision, device)
        run.reason = choice.reason
        model, opt = build(run, args, device)
        gen = torch.Generator(device=device).manual_seed(1000 + run.seed)
        state.append((run, model, opt, gen, choice.dtype))
    num_patches = state[0][1].num_patches
    for start in range(0, args.steps, args.window):
        for run, model, opt, gen, dtype in state:
            losses = torch.zeros(args.window, device=device)  # host sync only at the window's end
            synchronize(device)
            t0 = time.perf_counter()
            for i in range(args.window):
                for g in opt.param_groups:
                    g["lr"] = lrs[start + i]
                idx = torch.randint(len(images), (args.batch_size,), generator=gen, device=device)
                x = mae_augment(images[idx], d.mean, d.std, 32, d.crop_min_scale, d.hflip, generator=gen)
                noise = torch.rand(args.batch_size, num_patches, generator=gen, device=device)
                with autocast(device, dtype):
                    loss = model(x, noise=noise)[0]
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                losses[i] = loss.detach().float()
            synchronize(device)
            run.seconds.append(time.perf_counter() - t0)
            run.losses += losses.tolist()
        if not args.quiet:
            shown = "  ".join(f"{r.label} {r.losses[-1]:.4f}" for r, *_ in state)
            print(f"  step {start + args.window:5d}/{args.steps}: {shown}", flush=True)
    return [model for _, model, *_ in state]


def probe(model: MAE, train: ImageData, test: ImageData, args: argparse.Namespace, device: torch.device) -> dict:
    """Linear-probe top-1 (%) of ``model``'s CLS features, with maelab's feature extraction and probe."""
    d = DataConfig()
    enc = Encoder("parity", model, model.forward_features, 1, tuple(d.mean), tuple(d.std), 32, digest="")
    feats = [
        extract_features(enc, s.images, 512, device, progress=False, precision=args.probe_precision)["cls"]
        for s in (train, test)
    ]
    cfg = ProbeConfig(epochs=args.probe_epochs)
    r = linear_probe(feats[0].to(device), train.labels.to(device), feats[1].to(device), test.labels.to(device), cfg,
                     num_classes=len(train.classes))  # fmt: skip
    return {"test_top1": round(r.test_accuracy, 2), "train_top1": round(r.train_accuracy, 2), "best_lr": r.best_lr,
            "features": args.probe_precision, "epochs": args.probe_epochs}  # fmt: skip


def gap(a: list[float], b: list[float], tail: int) -> dict[str, float]:
    """Largest and last-``tail``-windows mean relative gap |b/a - 1| between two curves."""
    rel = [abs(y / x - 1) for x, y in zip(a, b, strict=True)]
    return {"max": max(rel), "tail_mean": statistics.fmean(rel[-tail:])}


def report(runs: list[Run], args: argparse.Namespace) -> dict:
    """Print the curves, gaps, speeds and probe results; return them as a JSON-able dict."""
    curves = {r.label: r.curve(args.window) for r in runs}
    print(f"\nmean loss per {args.window} steps")
    print(f"  {'steps':>11s} " + " ".join(f"{r.label:>12s}" for r in runs))
    for i in range(len(curves[runs[0].label])):
        values = " ".join(f"{curves[r.label][i]:12.4f}" for r in runs)
        print(f"  {i * args.window + 1:5d}-{(i + 1) * args.window:<5d} {values}")
    tail = max(1, len(curves[runs[0].label]) // 5)
    ref = runs[0]  # fp32:0 by default: fp32:1 against it is the seed spread, bf16:0 the effect of bf16
    gaps = {f"{r.label} vs {ref.label}": gap(curves[ref.label], curves[r.label], tail) for r in runs[1:]}
    print(f"\nrelative gap between curves (max over windows; mean over the last {tail} windows)")
    for name, g in gaps.items():
        print(f"  {name:24s} max {g['max']:7.2%}   last {g['tail_mean']:7.2%}")
    print(f"\n  {'run':12s} {'img/s':>8s} {'final loss':>10s} {'probe top-1':>11s}  precision")
    out_runs = {}
    for r in runs:
        timed = r.seconds[1:] or r.seconds  # the first window holds warm-up
        img_s = args.window * args.batch_size / statistics.median(timed)
        top1 = r.probe.get("test_top1", float("nan"))
        print(f"  {r.label:12s} {img_s:8.1f} {curves[r.label][-1]:10.4f} {top1:11.2f}  {r.precision} ({r.reason})")
        out_runs[r.label] = {**asdict(r), "curve": curves[r.label], "img_per_s": round(img_s, 1)}
    return {"runs": out_runs, "gaps": gaps, "tail_windows": tail}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=os.environ.get("MAELAB_DATA", ""))
    p.add_argument("--runs", nargs="+", type=parse_run, default=[parse_run(s) for s in ("fp32:0", "fp32:1", "bf16:0")])
    p.add_argument("--subset", type=int, default=0, help="class-balanced training images (0 = all 50,000)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--window", type=int, default=50, help="steps per printed point and per turn (divides --steps)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1.5e-3, help="peak lr after --warmup steps, cosine to 0")
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--preset", default="ref")
    p.add_argument("--patch-size", type=int, default=4)
    p.add_argument("--tiny", action="store_true", help="a 1-block width-32 MAE: to rehearse the plumbing only")
    p.add_argument("--probe-train", type=int, default=10000, help="class-balanced train images for the probe")
    p.add_argument("--probe-test", type=int, default=0, help="class-balanced test images for the probe (0 = all)")
    p.add_argument("--probe-epochs", type=int, default=100)
    p.add_argument("--probe-precision", default="fp32", choices=("fp32", "bf16", "auto"))
    p.add_argument("--device", default="auto")
    p.add_argument("--force", action="store_true", help="run bf16 even where it is emulated (~16-100x slower)")
    p.add_argument("--out", default="", help="write the results here as JSON")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if not args.data_dir:
        p.error("--data-dir (or $MAELAB_DATA) is required")
    if args.steps % args.window:
        p.error(f"--window {args.window} must divide --steps {args.steps}")
    if len({r.label for r in args.runs}) != len(args.runs):
        p.error("--runs: each run may appear once")

    device = resolve_device(args.device)
    native, why = bf16_support(device)
    wants_bf16 = any(r.precision == "bf16" for r in args.runs) or args.probe_precision == "bf16"
    if wants_bf16 and not native and not args.force:
        print(f"parity.py: refusing bf16 here: {why}. PyTorch emulates bf16 on such a CPU (~16-100x slower than "
              "fp32), so the run would take days and say nothing about native bf16. Run it on a CUDA GPU or a CPU "
              "with AVX-512 BF16 / AMX, use --runs fp32:0 fp32:1 to rehearse, or --force.", file=sys.stderr)  # fmt: skip
        return 2
    flags = cpu_flags()
    print("command:", "python benchmarks/parity.py", " ".join(sys.argv[1:] if argv is None else argv))
    print("hardware:", hardware_line(device))
    print("bf16:", "native" if native else "not native", f"({why}); CPU bf16 flags:",
          sorted(set(NATIVE_BF16_FLAGS) & flags) if flags is not None else "unknown (no x86 flags line)")  # fmt: skip
    train = load_split(args.data_dir, "train")
    test = load_split(args.data_dir, "test")
    images = (class_balanced_subset(train, args.subset) if args.subset else train).images.to(device)
    models = train_interleaved(args.runs, images, args)
    probe_train = class_balanced_subset(train, args.probe_train) if args.probe_train else train
    probe_test = class_balanced_subset(test, args.probe_test) if args.probe_test else test
    for run, model in zip(args.runs, models, strict=True):
        run.probe = probe(model, probe_train, probe_test, args, device)
    result = report(args.runs, args)
    if args.out:
        meta = {"environment": environment(str(device)), "hardware": hardware_line(device), "bf16_native": native,
                "bf16_why": why, "cpu_flags_bf16": sorted(set(NATIVE_BF16_FLAGS) & (flags or frozenset())),
                "args": {k: v for k, v in vars(args).items() if k != "runs"}}  # fmt: skip
        Path(args.out).write_text(json.dumps({**meta, **result}, indent=2) + "\n")
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""maelab against its peers, in one run, interleaved: training and inference img/s and their ratios.

    python benchmarks/compare.py                       # ref model, batch 256, mask 0.75, fp32 (+ bf16 if fast)
    python benchmarks/compare.py --variants default compile --bf16 on --bf16-batch-size 16

Each round times every contender once, in turn (round-robin), so load from other processes hits
all of them alike; the table shows the median over rounds and the ratio to the fastest peer.
Parameter counts are printed and must agree within 2%. bf16 autocast is timed only where it is
fast (CUDA, or a CPU with native bf16); elsewhere the matmul throughput that explains why is shown.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import PEERS, Sizes  # noqa: E402

from maelab.bench import (  # noqa: E402
    Contender,
    maelab_contender,
    measure_rounds,
    median,
    module_contender,
    random_batch,
    train_flops_per_image,
)
from maelab.runtime import (  # noqa: E402
    cpu_has_native_bf16,
    hardware_line,
    matmul_gflops,
    resolve_device,  # noqa: E402
)

VARIANTS = {  # name -> maelab_contender keyword arguments
    "default": {},
    "compile": {"compile": True},
    "sdpa": {"attention": "sdpa"},
    "explicit": {"attention": "explicit"},
}


def build(args: argparse.Namespace, device: torch.device, amp: torch.dtype | None) -> list[Contender]:
    precision = "fp32" if amp is None else "bf16"
    out = []
    for v in args.variants:
        torch.manual_seed(0)
        out.append(maelab_contender(args.model, args.mask_ratio, precision, device, **VARIANTS[v]))
    sizes = Sizes.from_preset(args.model, mask_ratio=args.mask_ratio)
    for name in args.peers:
        torch.manual_seed(0)
        out.append(module_contender(name, PEERS[name](sizes), device, amp))
    return out


def report(title: str, contenders: list[Contender], results: dict[str, list[float]], peers: list[str]) -> None:
    best_peer = max((median(results[p]) for p in peers), default=float("nan"))
    print(f"\n{title}")
    print(f"  {'contender':18s} {'median img/s':>12s} {'x fastest peer':>15s}   rounds (img/s)")
    for c in contenders:
        m = median(results[c.name])
        rounds = " ".join(f"{r:.1f}" for r in results[c.name])
        print(f"  {c.name:18s} {m:12.1f} {m / best_peer:15.2f}   {rounds}")


def run_precision(args: argparse.Namespace, device: torch.device, amp: torch.dtype | None, batch: int) -> None:
    precision = "fp32" if amp is None else "bf16 autocast"
    contenders = build(args, device, amp)
    imgs = random_batch(batch, 32, device)
    ref_params = contenders[0].num_params()
    print(f"\n== {precision}, batch {batch}, mask {args.mask_ratio} ==")
    for c in contenders:
        n = c.num_params()
        flops = train_flops_per_image(c, imgs[:8])
        flag = "" if abs(n - ref_params) <= 0.02 * ref_params else "  <-- differs from maelab by more than 2%"
        print(f"  {c.name:18s} params {n:>10,d} ({n / ref_params - 1:+.2%})  train GFLOP/img {flops / 1e9:.3f}{flag}")
    log = print if args.verbose else None
    train = measure_rounds(contenders, imgs, args.rounds, args.steps, args.warmup, "train", log)
    report(f"training step (forward + backward + AdamW), {precision}", contenders, train, args.peers)
    if not args.skip_infer:
        infer = measure_rounds(contenders, imgs, args.rounds, args.steps, args.warmup, "infer", log)
        report(f"encoder inference (all patches, no grad), {precision}", contenders, infer, args.peers)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ref", help="maelab preset whose sizes every contender uses (default: ref)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--mask-ratio", type=float, default=0.75)
    p.add_argument("--device", default="auto")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timed rounds (default: 3)")
    p.add_argument("--steps", type=int, default=2, help="steps per contender per round (default: 2)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per contender first (default: 2)")
    p.add_argument("--variants", nargs="+", default=["default"], choices=sorted(VARIANTS),
                   help="maelab configurations to time (default: default)")  # fmt: skip
    p.add_argument("--peers", nargs="*", default=list(PEERS), choices=sorted(PEERS))
    p.add_argument("--bf16", default="auto", choices=("auto", "on", "off"),
                   help="time bf16 autocast: auto = only where bf16 matmuls are native (default: auto)")  # fmt: skip
    p.add_argument("--bf16-batch-size", type=int, default=0, help="batch for bf16 (default: --batch-size)")
    p.add_argument("--skip-infer", action="store_true", help="time training only")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)

    device = resolve_device(args.device)
    print("command:", "python benchmarks/compare.py", " ".join(sys.argv[1:] if argv is None else argv))
    print("hardware:", hardware_line(device))
    run_precision(args, device, None, args.batch_size)

    fast_bf16 = device.type == "cuda" or cpu_has_native_bf16()
    if args.bf16 == "on" or (args.bf16 == "auto" and fast_bf16):
        run_precision(args, device, torch.bfloat16, args.bf16_batch_size or args.batch_size)
    elif args.bf16 == "auto":
        fp32, bf16 = matmul_gflops(torch.float32, device), matmul_gflops(torch.bfloat16, device)
        print(
            f"\n== bf16 autocast skipped: this CPU has no native bf16 (no avx512_bf16 / amx_bf16 flag); a 512x512 "
            f"matmul runs at {fp32:.1f} GFLOP/s in fp32 and {bf16:.1f} GFLOP/s in bf16 ({fp32 / bf16:.0f}x slower). "
            "Use --bf16 on --bf16-batch-size 16 to time it anyway. =="
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

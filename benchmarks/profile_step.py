"""Where a maelab training step spends its time: a torch.profiler table by operator and by phase.

    python benchmarks/profile_step.py                  # ref model, batch 256, mask 0.75, fp32, 2 steps

Phases (forward / backward / optimizer) are ``record_function`` ranges, so the table shows both
how the step divides and which kernels (matmul, softmax, layer norm, gather, ...) dominate.
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from maelab.bench import maelab_contender, random_batch
from maelab.runtime import autocast, hardware_line, resolve_device


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ref")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--mask-ratio", type=float, default=0.75)
    p.add_argument("--precision", default="auto")
    p.add_argument("--attention", default="auto", choices=("auto", "sdpa", "explicit"))
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--rows", type=int, default=18)
    args = p.parse_args(argv)

    device = resolve_device(args.device)
    print("command:", "python benchmarks/profile_step.py", " ".join(sys.argv[1:] if argv is None else argv))
    print("hardware:", hardware_line(device))
    torch.manual_seed(0)
    c = maelab_contender(args.model, args.mask_ratio, args.precision, device, attention=args.attention)
    imgs = random_batch(args.batch_size, 32, device)
    c.train_step(imgs)  # warm-up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(args.steps):
            with record_function("phase: forward"), autocast(device, c.amp_dtype):
                loss = c.loss(imgs)
            with record_function("phase: backward"):
                loss.backward()
            with record_function("phase: optimizer"):
                c.optimizer.step()
                c.optimizer.zero_grad(set_to_none=True)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    print(f"\nphases ({args.steps} steps, batch {args.batch_size}, {c.precision}, total self CPU {total / 1e6:.2f} s):")
    for e in events:
        if e.key.startswith("phase: "):
            print(f"  {e.key[7:]:10s} {e.cpu_time_total / 1e6:7.2f} s  {e.cpu_time_total / total:6.1%}")
    print()
    print(events.table(sort_by=sort, row_limit=args.rows, max_name_column_width=40))
    return 0


if __name__ == "__main__":
    sys.exit(main())

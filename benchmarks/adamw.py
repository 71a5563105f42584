"""AdamW's step alone: the for-loop, foreach and fused implementations on maelab's parameter groups.

    python benchmarks/adamw.py                      # ref model, 7 interleaved rounds of 20 steps each

The optimizer is the only part of a training step that does not scale with the batch: its cost is per
parameter. Each implementation gets its own AdamW over the same model's ``param_groups`` (weight decay on
matrices only, as ``pretrain``) with fixed random gradients; rounds are interleaved (each round times every
implementation once, in turn) and the median ms per step is printed beside min and max.
"""

from __future__ import annotations

import argparse
import sys

import torch

from maelab.bench import median, time_steps
from maelab.models.mae import MAE
from maelab.optim import param_groups
from maelab.runtime import hardware_line, resolve_device

KINDS = {"for-loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ref", help="maelab preset (default: ref)")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=20, help="optimizer steps per implementation per round")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)

    device = resolve_device(args.device)
    print("command:", "python benchmarks/adamw.py", " ".join(sys.argv[1:] if argv is None else argv))
    print("hardware:", hardware_line(device))
    torch.manual_seed(0)
    model = MAE.from_preset(args.model).to(device)
    for param in model.parameters():
        param.grad = torch.randn_like(param)
    count = sum(param.numel() for param in model.parameters())
    optimizers = {
        kind: torch.optim.AdamW(param_groups(model, 0.05), lr=1e-3, betas=(0.9, 0.95), **kw)
        for kind, kw in KINDS.items()
    }
    for opt in optimizers.values():  # the first steps allocate the moments
        opt.step()
    times: dict[str, list[float]] = {kind: [] for kind in optimizers}
    for _ in range(args.rounds):
        for kind, opt in optimizers.items():
            seconds = time_steps(lambda _batch, opt=opt: opt.step(), torch.empty(0), args.steps, device)
            times[kind].append(seconds / args.steps * 1e3)
    base = median(times["for-loop"])
    print(f"\nAdamW step, {args.model} model ({count:,} parameters), median of {args.rounds} interleaved rounds")
    print(f"  {'implementation':14s} {'ms/step':>8s} {'x for-loop':>11s}   min - max")
    for kind, ts in times.items():
        m = median(ts)
        print(f"  {kind:14s} {m:8.2f} {base / m:11.2f}   {min(ts):.2f} - {max(ts):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

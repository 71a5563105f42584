"""Issue 15's goals for pretraining on a 2-core CPU, read from committed results (never typed in).

For each results folder (a run's ``run/summary.json`` and ``eval/{knn,linear}.json`` on the full test
set), the better pooling of each protocol against the random-init encoder of the same shape and the
same pooling (paired, same 10,000 test images), and the distance to the goal of its budget.

    python benchmarks/goals.py results/cpu15_bs64:15 results/cpu60_bs64:60 results/cpu15_bf16:15 results/cpu60_bf16:60

Then each folder against the one before it when its budget is longer (a machine's 15- and 60-minute runs),
same protocol and pooling, paired on the same images: what the longer run bought. ``--pair A B`` (repeatable)
adds A against B, where each is a folder holding ``knn.json`` and ``linear.json`` of the same images (a results
folder's ``eval/`` or a recipe search's ``evals/<candidate>/``):

    python benchmarks/goals.py --pair results/cpu15_fp32_light_decoder/eval results/cpu15_fp32_avx512/eval
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from maelab.eval.stats import compare_paired, unpack_correct

# minutes of pretraining -> (linear goal, k-NN k=20 goal); both also need >= 15 points over random init.
GOALS = {15: (62.0, 50.0), 60: (66.0, 55.0)}
MARGIN_GOAL = 15.0


def best(results: list[dict]) -> dict:
    """The evaluated encoder's row of its better pooling (higher accuracy)."""
    rows = [r for r in results if r["role"] == "evaluated"]
    return max(rows, key=lambda r: r["vs_random_init"]["accuracy_a"])


def rows_for(folder: Path, minutes: int) -> list[str]:
    """Markdown rows (k-NN, linear) of one results folder."""
    summary = json.loads((folder / "run" / "summary.json").read_text())
    linear_goal, knn_goal = GOALS[minutes]
    out = []
    for protocol, goal in (("knn", knn_goal), ("linear", linear_goal)):
        report = json.loads((folder / "eval" / f"{protocol}.json").read_text())
        assert report["data"]["test_subset"] == "all", f"{folder}: {protocol} is not on the full test set"
        v = best(report["results"])["vs_random_init"]
        name = "k-NN k=20" if protocol == "knn" else "linear"
        reached = "yes" if v["accuracy_a"] >= goal and v["difference"] >= MARGIN_GOAL else "no"
        out.append(
            f"| {minutes} min | {folder.name} | {summary['precision']} | {summary['steps']} | "
            f"{summary['train_time_s']:.0f} ({summary['train_time_s'] / (60 * minutes):.0%}) | {name} | {v['pooling']} | "
            f"{v['accuracy_a']:.2f} | {v['accuracy_b']:.2f} | {v['difference']:+.2f} [{v['ci_low']:+.2f}, "
            f"{v['ci_high']:+.2f}], p {v['p_value']:.0e} | >= {goal:g}, >= +{MARGIN_GOAL:g} | "
            f"{v['accuracy_a'] - goal:+.2f} / {v['difference'] - MARGIN_GOAL:+.2f} | {reached} |"
        )
    return out


def correct(eval_dir: Path, protocol: str, pooling: str) -> tuple[float, object]:
    """(top-1, per-image correctness (N,) bool) of the evaluated encoder of ``eval_dir/{protocol}.json`` (k-NN:
    k=20)."""
    report = json.loads((eval_dir / f"{protocol}.json").read_text())
    row = next(r for r in report["results"] if r["role"] == "evaluated" and r["pooling"] == pooling)
    flags = row["test_correct"]["20"] if protocol == "knn" else row["test_correct"]
    return row["vs_random_init"]["accuracy_a"], unpack_correct(flags)


def paired_lines(a_dir: Path, b_dir: Path, a_name: str, b_name: str) -> list[str]:
    """Lines: A minus B for each protocol and pooling, paired on the same images (eval folders of both)."""
    out = []
    for protocol in ("knn", "linear"):
        for pooling in ("cls", "mean"):
            (_, a), (_, b) = correct(a_dir, protocol, pooling), correct(b_dir, protocol, pooling)
            if len(a) != len(b):
                raise SystemExit(f"{a_dir} and {b_dir}: {len(a)} vs {len(b)} images; not the same set")
            c = compare_paired(a, b)
            out.append(
                f"- {a_name} - {b_name}, {protocol} ({pooling}): {c.accuracy_a:.2f} vs {c.accuracy_b:.2f}, "
                f"{c.difference:+.2f} [{c.ci_low:+.2f}, {c.ci_high:+.2f}], McNemar p {c.p_value:.0e}"
            )
    return out


def folder_minutes(arg: str) -> tuple[Path, int]:
    """``FOLDER:MINUTES`` -> (folder, minutes), MINUTES one of the goals' budgets."""
    folder, sep, minutes = arg.rpartition(":")
    if not sep or not minutes.isdigit() or int(minutes) not in GOALS:
        raise argparse.ArgumentTypeError(f"{arg!r}: expected FOLDER:MINUTES with MINUTES one of {sorted(GOALS)}")
    return Path(folder), int(minutes)


def main(argv: list[str]) -> int:
    """Print the goals table for ``FOLDER:MINUTES`` arguments, then the ``--pair A B`` comparisons."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="*", type=folder_minutes, metavar="FOLDER:MINUTES",
                   help=f"a results folder and its budget in minutes ({' or '.join(map(str, GOALS))})")  # fmt: skip
    p.add_argument("--pair", nargs="+", action="append", default=[], metavar="FOLDER",
                   help="two eval folders (knn.json, linear.json of the same images): A against B; repeatable")  # fmt: skip
    args = p.parse_args(argv)
    if any(len(pair) != 2 for pair in args.pair):
        raise SystemExit("--pair needs two folders: A B")
    folders: list[tuple[Path, int]] = args.folders
    pairs = [(Path(a), Path(b)) for a, b in args.pair]
    if folders:
        print("| goal for | run | precision | steps | training s (of budget) | protocol | better pooling | MAE | "
              "random init (same pooling) | difference [paired 95% CI], McNemar p | goal | distance (score / margin) | "
              "reached |")  # fmt: skip
        print("|---|---|---|---:|---:|---|---|---:|---:|---|---|---|---|")
        for folder, minutes in folders:
            print("\n".join(rows_for(folder, minutes)))
        print()
    # Each folder against the one given before it when it had the longer budget (the same machine's series).
    for (short, short_min), (long, long_min) in zip(folders[:-1], folders[1:], strict=True):
        if long_min > short_min:
            print("\n".join(paired_lines(long / "eval", short / "eval", long.name, short.name)))
    for a, b in pairs:
        print("\n".join(paired_lines(a, b, str(a), str(b))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

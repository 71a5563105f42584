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

``--seeds LABEL:MINUTES:F1,F2,...`` (repeatable) reads one recipe's results folders, one per seed: per protocol and
pooling, the mean, SD and 95% t-interval over seeds of the accuracy and of the margin over random init, and how
many seeds reached the goal. ``--seed-pair A B`` then judges recipe A against B over seeds (the i-th folders of
each paired on the same test images) by the rule of ``maelab seeds``: decided only with >= 3 seeds when the
t-interval over seeds and the paired bootstrap over the test images of the difference pooled over seeds both exclude
0 on the same side (the count of seeds beyond noise on their own is shown, not required).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from maelab.eval.stats import compare_paired, seed_spread, unpack_correct
from maelab.experiments.seeds import seed_pair

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


def evaluated_row(eval_dir: Path, protocol: str, pooling: str) -> dict:
    """The evaluated encoder's result at ``pooling`` in ``eval_dir/{protocol}.json``."""
    report = json.loads((eval_dir / f"{protocol}.json").read_text())
    return next(r for r in report["results"] if r["role"] == "evaluated" and r["pooling"] == pooling)


def correct(eval_dir: Path, protocol: str, pooling: str) -> tuple[float, object]:
    """(top-1, per-image correctness (N,) bool) of the evaluated encoder of ``eval_dir/{protocol}.json`` (k-NN:
    k=20)."""
    row = evaluated_row(eval_dir, protocol, pooling)
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


def existing(folder: str) -> Path:
    """``folder`` as a Path; a clear argument error when it is not a folder."""
    if not Path(folder).is_dir():
        raise argparse.ArgumentTypeError(f"{folder}: no such results folder")
    return Path(folder)


def spread_cell(values: list[float]) -> str:
    """``mean +- SD [95% t-interval]`` over seeds (the mean alone for one seed)."""
    s = seed_spread(values)
    return f"{s.mean:.2f}" if s.sd is None else f"{s.mean:.2f} ± {s.sd:.2f} [{s.ci_low:.2f}, {s.ci_high:.2f}]"


def seed_rows(label: str, minutes: int, folders: list[Path]) -> list[str]:
    """Markdown rows of one recipe over seeds (results folders, one per seed): per protocol and pooling, the
    accuracy and the margin over the random init of the same pooling, and the seeds that reached the goal."""
    linear_goal, knn_goal = GOALS[minutes]
    out = []
    for protocol, goal in (("knn", knn_goal), ("linear", linear_goal)):
        for pooling in ("cls", "mean"):
            vs = [evaluated_row(f / "eval", protocol, pooling)["vs_random_init"] for f in folders]
            reached = sum(v["accuracy_a"] >= goal and v["difference"] >= MARGIN_GOAL for v in vs)
            out.append(
                f"| {label} | {minutes} min | {len(folders)} | {'k-NN k=20' if protocol == 'knn' else 'linear'} | "
                f"{pooling} | {spread_cell([v['accuracy_a'] for v in vs])} | {spread_cell([v['difference'] for v in vs])} | "
                f"{reached} of {len(folders)} |"
            )
    return out


def seed_pair_lines(a: tuple[str, list[Path]], b: tuple[str, list[Path]]) -> list[str]:
    """Lines: recipe A against recipe B over seeds (the i-th folder of each is seed i), per protocol and pooling:
    each seed's paired test on the same test images and the verdict over seeds (maelab.experiments.seeds)."""
    (name_a, folders_a), (name_b, folders_b) = a, b
    if len(folders_a) != len(folders_b):
        raise SystemExit(f"--seed-pair {name_a} {name_b}: {len(folders_a)} vs {len(folders_b)} seeds")
    out = []
    for protocol in ("knn", "linear"):
        for pooling in ("cls", "mean"):
            flags_a = [correct(f / "eval", protocol, pooling)[1] for f in folders_a]
            flags_b = [correct(f / "eval", protocol, pooling)[1] for f in folders_b]
            if any(len(x) != len(y) for x, y in zip(flags_a, flags_b, strict=True)):
                raise SystemExit(f"--seed-pair {name_a} {name_b}: a seed's two runs were tested on different images")
            if len({len(x) for x in flags_a}) > 1:  # pooled over seeds per image: the same images in every seed
                raise SystemExit(f"--seed-pair {name_a} {name_b}: the seeds were tested on different images")
            out.append(f"- {protocol} ({pooling}): " + seed_pair(protocol, name_a, name_b, flags_a, flags_b)["text"])
    return out


def seed_group(arg: str) -> tuple[str, int, list[Path]]:
    """``LABEL:MINUTES:FOLDER,FOLDER,...`` -> (label, minutes, results folders, one per seed)."""
    label, _, rest = arg.partition(":")
    minutes, _, folders = rest.partition(":")
    if not label or not minutes.isdigit() or int(minutes) not in GOALS or not folders:
        raise argparse.ArgumentTypeError(
            f"{arg!r}: expected LABEL:MINUTES:FOLDER,FOLDER,... with MINUTES one of {sorted(GOALS)}"
        )
    return label, int(minutes), [existing(f) for f in folders.split(",")]


def folder_minutes(arg: str) -> tuple[Path, int]:
    """``FOLDER:MINUTES`` -> (folder, minutes), MINUTES one of the goals' budgets."""
    folder, sep, minutes = arg.rpartition(":")
    if not sep or not minutes.isdigit() or int(minutes) not in GOALS:
        raise argparse.ArgumentTypeError(f"{arg!r}: expected FOLDER:MINUTES with MINUTES one of {sorted(GOALS)}")
    return existing(folder), int(minutes)


def main(argv: list[str]) -> int:
    """Print the goals table for ``FOLDER:MINUTES`` arguments, then the ``--pair A B`` comparisons."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="*", type=folder_minutes, metavar="FOLDER:MINUTES",
                   help=f"a results folder and its budget in minutes ({' or '.join(map(str, GOALS))})")  # fmt: skip
    p.add_argument("--pair", nargs="+", action="append", default=[], metavar="FOLDER",
                   help="two eval folders (knn.json, linear.json of the same images): A against B; repeatable")  # fmt: skip
    p.add_argument("--seeds", action="append", default=[], type=seed_group, metavar="LABEL:MINUTES:F1,F2,...",
                   help="one recipe's results folders, one per seed: mean, SD and t-interval over seeds; repeatable")  # fmt: skip
    p.add_argument("--seed-pair", nargs=2, action="append", default=[], metavar=("A", "B"),
                   help="two --seeds labels: A against B over seeds, the i-th folders paired; repeatable")  # fmt: skip
    args = p.parse_args(argv)
    if any(len(pair) != 2 for pair in args.pair):
        raise SystemExit("--pair needs two folders: A B")
    folders: list[tuple[Path, int]] = args.folders
    pairs = [(Path(a), Path(b)) for a, b in args.pair]
    for folder in {f for pair in pairs for f in pair}:
        if not all((folder / f"{protocol}.json").is_file() for protocol in ("knn", "linear")):
            raise SystemExit(f"--pair {folder}: needs knn.json and linear.json (an eval folder)")
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
    groups = {label: folders for label, _, folders in args.seeds}
    if args.seeds:
        print("\n| recipe | budget | seeds | protocol | pooling | MAE: mean ± SD [95% t-interval] | over random init "
              "(same pooling) | seeds reaching the goal |")  # fmt: skip
        print("|---|---|---:|---|---|---:|---:|---:|")
        for label, minutes, folders in args.seeds:
            print("\n".join(seed_rows(label, minutes, folders)))
    for a, b in args.seed_pair:
        if a not in groups or b not in groups:
            raise SystemExit(f"--seed-pair {a} {b}: each must be a --seeds label ({', '.join(groups) or 'none given'})")
        print(f"\n{a} against {b} over seeds:")
        print("\n".join(seed_pair_lines((a, groups[a]), (b, groups[b]))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

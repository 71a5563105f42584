"""Several seeds of one recipe search read together (``maelab seeds`` given ``maelab recipe`` folders).

Each folder is one finished ``maelab recipe`` with its own ``--seed`` and otherwise the same options
(checked). Per candidate and metric (k-NN k=20 and linear probe at each pooling, on the validation
split of the TRAINING images) the accuracy per seed with its mean +- SD over seeds, the score (mean of
k-NN and linear at the better pooling, as the search ranks) and its margin over the random init of the
same encoder shape. Every pair of candidates, and each candidate vs its random init, is judged per
metric by :func:`maelab.experiments.seeds.seed_verdict`: the paired test within each seed (same
validation images), the 95% t-interval of the difference over seeds and the paired bootstrap of the
difference pooled over seeds per image, decided only with >= 3 seeds when both exclude 0 on one side.
The random init's per-image flags are read from the search's ``evals/<candidate>/`` reports.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from maelab.eval.features import POOLINGS
from maelab.eval.results import markdown_table
from maelab.eval.stats import unpack_correct
from maelab.experiments.recipe_plan import KNN_K
from maelab.experiments.recipe_summary import score
from maelab.experiments.seeds import (
    RULE,
    check_seeds_of_one,
    computed_text,
    metrics_json,
    read_folder,
    seed_cell,
    seed_entry,
    seed_pair,
    write_report,
)
from maelab.experiments.seeds_holm import decided_line, mark_holm

FREE_OPTIONS = ("options.seed", "options.data_dir")  # the only settings the seeds of one search may differ in
RANDOM = "random init (same shape)"
REPORTS = {"knn": "knn.json", "linear": "linear.json"}
# (kind, pooling, label) of every per-image metric a search holds: k-NN k=20 and linear, at each pooling.
METRICS = [
    (kind, p, f"{'k-NN k=' + str(KNN_K) if kind == 'knn' else 'linear'} {p}") for kind in REPORTS for p in POOLINGS
]


def is_search(folder: Path) -> bool:
    """Whether ``folder`` holds a finished ``maelab recipe`` search (its metrics.json has a ranking)."""
    path = Path(folder) / "metrics.json"
    return path.is_file() and "ranking" in metrics_json(path)


def load_searches(folders: Sequence[Path]) -> list[dict[str, Any]]:
    """Each folder's ``metrics.json`` (a finished search), checked to be seeds of one search: a ConfigError
    names the folder and the setting that differs, or the seed given twice."""
    searches = [read_folder(f, ("ranking", "results"), "maelab recipe") for f in folders]
    check_seeds_of_one(searches, lambda m: m["settings"]["options"]["seed"], FREE_OPTIONS, "search")
    return searches


def flags(search: dict[str, Any], candidate: str, kind: str, pooling: str) -> np.ndarray:
    """The candidate's (N,) per-image flags on the validation split."""
    return unpack_correct(search["results"][candidate]["val"]["correct"][kind][pooling])


def random_flags(search: dict[str, Any], candidate: str, kind: str, pooling: str) -> np.ndarray:
    """The (N,) flags of the random init of the candidate's encoder shape, from ``evals/<candidate>/``."""
    report = json.loads((Path(search["folder"]) / "evals" / candidate / REPORTS[kind]).read_text())
    row = next(r for r in report["results"] if r["role"] == "baseline" and r["pooling"] == pooling)
    packed = row["test_correct"][str(KNN_K)] if kind == "knn" else row["test_correct"]
    return unpack_correct(packed)


def combine(searches: list[dict[str, Any]]) -> dict[str, Any]:
    """{"candidates": names by mean score, best first, "left_out": candidates missing from some seed,
    "table": {name: {column: entry}}, "pairs": [...]} over the seeds; an entry is {per_seed, spread}; a pair is
    one metric's seed verdict (A vs B or vs random)."""
    everywhere = set.intersection(*(set(s["results"]) for s in searches))
    names = [n for n in searches[0]["results"] if n in everywhere]
    left_out = sorted(set().union(*(set(s["results"]) for s in searches)) - everywhere)
    scores = {n: [score(s["results"][n]["val"]) for s in searches] for n in names}
    names.sort(key=lambda n: -float(np.mean([sc["score"] for sc in scores[n]])))
    table: dict[str, dict[str, Any]] = {n: {} for n in names}
    pairs: list[dict[str, Any]] = []
    for kind, pooling, label in METRICS:
        per = {n: [flags(s, n, kind, pooling) for s in searches] for n in names}
        for n in names:
            table[n][label] = seed_entry([float(f.mean() * 100) for f in per[n]])
        judged = [(a, b, per[a], per[b]) for a, b in combinations(names, 2)]
        judged += [(n, RANDOM, per[n], [random_flags(s, n, kind, pooling) for s in searches]) for n in names]
        pairs += [seed_pair(label, a, b, fa, fb) for a, b, fa, fb in judged]
    mark_holm(pairs, pairs)
    for n in names:
        table[n]["score"] = seed_entry([sc["score"] for sc in scores[n]])
        table[n]["over random init"] = seed_entry([sc["over_random_init"] for sc in scores[n]])
        runs = [s["results"][n]["run"] for s in searches]
        table[n]["steps"] = seed_entry([float(r["steps"]) for r in runs])
        table[n]["budget use %"] = seed_entry([100 * r["budget_use"] for r in runs])
    return {"candidates": names, "left_out": left_out, "table": table, "pairs": pairs}


def best_lines(combined: dict[str, Any]) -> list[str]:
    """One line per other candidate: on which metrics the best mean score is decided better, tied or neither."""
    names = combined["candidates"]
    best, lines = names[0], []
    for other in names[1:]:
        got: dict[str, list[str]] = {"decided better": [], "decided worse": [], "tie": [], "not decided": []}
        for p in combined["pairs"]:
            if {p["a"], p["b"]} != {best, other}:
                continue
            key = ("decided better" if p["winner"] == best else "decided worse" if p["winner"]
                   else "tie" if p["text"].startswith("tie") else "not decided")  # fmt: skip
            got[key].append(p["metric"])
        lines.append(f"- vs `{other}`: " + "; ".join(f"{k} on {', '.join(v)}" for k, v in got.items() if v))
    return lines


def summary_markdown(searches: list[dict[str, Any]], combined: dict[str, Any], command: str = "") -> str:
    """The report: what was read, the table (mean ± SD over seeds, then each seed), the best candidate
    against each other one, and every pair's verdict over seeds (how many are decided first)."""
    seeds = [s["seed"] for s in searches]
    o = searches[0]["settings"]["options"]
    table, names = combined["table"], combined["candidates"]
    columns = list(table[names[0]])
    lines = [
        f"# Recipe search over {len(searches)} seed{'s' if len(searches) > 1 else ''} ({', '.join(map(str, seeds))})",
        "", *([f"Command: `{command}`", ""] if command else []),
        "Searches read (one per seed, otherwise the same options; when each report was written, and its stages "
        "computed where recorded):", "",
        *[f"- `{s['folder']}`: seed {s['seed']}, {s['environment'].get('date', '?')}, commit "
          f"{s['environment'].get('git_commit', '?')}{computed_text(s)}, {s.get('hardware', '?')}"
          for s in searches],
        "",
        f"Each candidate trained for {o['budget_minutes']:g} min of training steps per seed (steps fixed by a "
        f"calibration of its img/s; budget use = training seconds actually used / budget), scored on {o['holdout']} "
        "held-out TRAINING images (the test set is never read). Cells: mean ± SD over seeds (each seed in "
        "brackets); accuracies are top-1 %; score = mean of k-NN and linear at the better pooling; over random "
        f"init = score minus the random init's of the same shape. {RULE}",
        "",
        markdown_table(["candidate", *columns],
                       [[n, *(seed_cell(table[n][c], 0 if c == "steps" else 2) for c in columns)] for n in names],
                       "l" + "r" * len(columns)),
        *([f"Left out (not searched in every seed): {', '.join(f'`{n}`' for n in combined['left_out'])}.", ""]
          if combined.get("left_out") else []),
        f"**Best mean score: `{names[0]}`.** Against each other candidate, per metric:", "",
        *best_lines(combined), "",
        "## Every pair, per metric", "", decided_line(combined["pairs"]), "",
        *[f"- {p['metric']}: {p['text']}" for p in combined["pairs"]],
        "",
    ]  # fmt: skip
    return "\n".join(lines)


def write_search_seeds(folders: Sequence[Path], out: Path, command: str = "") -> Path:
    """Read the searches, combine them, write ``out/summary.md`` and ``out/seeds.json``; returns summary.md."""
    searches = load_searches(folders)
    combined = combine(searches)
    return write_report(out, searches, combined, summary_markdown(searches, combined, command), command)

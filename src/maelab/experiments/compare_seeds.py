"""Several seeds of one MAE-vs-DINO comparison read together (``maelab seeds`` given ``maelab compare`` folders).

Each folder is one finished ``maelab compare`` with its own ``--seed`` and otherwise the same settings
(checked). Per protocol ("k-NN cls", ..., "linear probe mean", "fine-tune") and encoder (MAE, DINO, the
equal-time run, the random init of the same shape) the test accuracy per seed with its mean +- SD. The
pairs a single comparison judges (MAE vs DINO, each trained encoder vs random init, the equal-time run vs
the method it was timed against), and "what is learned" (one encoder's CLS vs mean pooling, linear probe),
are judged over seeds by :func:`maelab.experiments.seeds.seed_verdict`: the paired test within each seed
(same test images), the 95% t-interval of the difference over seeds and the paired bootstrap of the difference
pooled over seeds per image, decided only with >= 3 seeds when both exclude 0 on one side. Speed:
each method's img/s per seed and DINO's slowdown per image (MAE img/s / DINO img/s) with its interval.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from maelab.config import ConfigError
from maelab.eval.results import markdown_table
from maelab.eval.stats import unpack_correct
from maelab.experiments.compare_stats import Score, comparison_columns, tests
from maelab.experiments.compare_summary import across_calls
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

# The only settings the seeds of one comparison may differ in (``options.given`` lists the flags typed).
FREE_SETTINGS = ("config.train.seed", "config.train.out", "config.train.quiet", "config.data.data_dir", "options.given")
METHODS = ("mae", "dino")


def is_compare(folder: Path) -> bool:
    """Whether ``folder`` holds a ``maelab compare`` (its metrics.json has the DINO optimizer recipe)."""
    path = Path(folder) / "metrics.json"
    return path.is_file() and "dino_recipe" in metrics_json(path).get("settings", {})


def _report_line(folder: str, field: str) -> str:
    """The value of ``- <field>: ...`` in the comparison's own summary.md (date, commit, hardware), or "?"."""
    path = Path(folder) / "summary.md"
    text = path.read_text() if path.is_file() else ""
    found = re.search(rf"^- {field}: (.+)$", text, flags=re.MULTILINE)
    return found.group(1) if found else "?"


def load_compares(folders: Sequence[Path]) -> list[dict[str, Any]]:
    """Each folder's ``metrics.json`` (a finished comparison), checked to be seeds of one comparison: a
    ConfigError names the folder that is unfinished, given the same seed twice, or differs in a setting."""
    compares = [read_folder(f, ("settings", "stages"), "maelab compare") for f in folders]
    for c in compares:
        if "frozen" not in c["stages"]:
            raise ConfigError(
                f"{c['folder']}: no frozen evaluations in metrics.json (an unfinished maelab compare: "
                "run its command again to continue it)"
            )
    check_seeds_of_one(compares, lambda m: m["settings"]["config"]["train"]["seed"], FREE_SETTINGS, "comparison")
    for c in compares:
        _check_flags(c, compares[0])
    return compares


def _check_flags(compare: dict[str, Any], first: dict[str, Any]) -> None:
    """ConfigError naming the folder if a test has no per-image results (an older maelab wrote it) or was
    scored on a different number of test images than the first seed (the paired test needs the same images)."""
    n_first = {p: {lbl: s.correct and s.correct.get("n") for lbl, s in row.items()} for p, row in scores(first).items()}
    for protocol, row in scores(compare).items():
        for label, score in row.items():
            if score.correct is None:
                raise ConfigError(
                    f"{compare['folder']}: {protocol} of {label} has no per-image test results (written by an "
                    "older maelab; run its maelab compare again to pair it with other seeds)"
                )
            n, n0 = score.correct.get("n"), n_first.get(protocol, {}).get(label)
            if n0 is not None and n != n0:
                raise ConfigError(
                    f"{compare['folder']}: {protocol} of {label} was scored on {n} test images but "
                    f"{first['folder']} on {n0}: the seeds must use the same test images"
                )


def scores(compare: dict[str, Any]) -> dict[str, dict[str, Score]]:
    """{protocol: {encoder label: Score}} of one comparison (:func:`maelab.experiments.compare_stats.tests`)."""
    st = compare["stages"]
    finetuned = {k.split(":", 1)[1]: v for k, v in st.items() if k.startswith("finetune:")}
    return tests(st["frozen"], finetuned)


def _flags(score: Score) -> Any:
    assert score.correct is not None, "load_compares checks every test has per-image results"
    return unpack_correct(score.correct)


def _pair(metric: str, a: str, b: str, per_seed: list[tuple[Score, Score]]) -> dict[str, Any]:
    return seed_pair(metric, a, b, [_flags(x) for x, _ in per_seed], [_flags(y) for _, y in per_seed])


def combine(compares: list[dict[str, Any]]) -> dict[str, Any]:
    """{"table": {protocol: {encoder: entry}}, "pairs": [...], "learned": [...], "speed": {...}} over the seeds;
    an entry is {per_seed, spread}; a pair is one protocol's seed verdict of A vs B."""
    per_seed = [scores(c) for c in compares]
    equal_time = [c["stages"].get("equal_time") or {} for c in compares]
    reference = equal_time[0]["reference"].upper() if equal_time[0].get("label") else None
    table: dict[str, dict[str, Any]] = {}
    pairs: list[dict[str, Any]] = []
    for protocol in per_seed[0]:
        labels = [lbl for lbl in per_seed[0][protocol] if all(lbl in s.get(protocol, {}) for s in per_seed)]
        table[protocol] = {lbl: seed_entry([s[protocol][lbl].accuracy for s in per_seed]) for lbl in labels}
        for a, b in comparison_columns(labels, reference):
            pairs.append(_pair(protocol, a, b, [(s[protocol][a], s[protocol][b]) for s in per_seed]))
    learned = [
        _pair("linear probe", f"{m} cls", f"{m} mean",
              [(s["linear probe cls"][m], s["linear probe mean"][m]) for s in per_seed])
        for m in ("MAE", "DINO") if all(m in s["linear probe cls"] for s in per_seed)
    ]  # fmt: skip
    mark_holm(pairs + learned, pairs + learned)
    runs = {m: [c["stages"][f"pretrain:{m}"] for c in compares] for m in METHODS}
    speed: dict[str, Any] = {f"{m.upper()} img/s": seed_entry([r["img_per_s"] for r in runs[m]]) for m in METHODS}
    speed["DINO slowdown per image (MAE img/s / DINO img/s)"] = seed_entry(
        [a["img_per_s"] / b["img_per_s"] for a, b in zip(runs["mae"], runs["dino"], strict=True)]
    )
    if reference:
        speed["equal-time run steps"] = seed_entry([float(e.get("stop_after_steps") or 0) for e in equal_time])
    teacher = [r.get("teacher_init_left") for r in runs["dino"]]
    if all(t is not None for t in teacher):
        speed["DINO teacher: share of random init left"] = seed_entry([float(t) for t in teacher])
    split = [c["seed"] for c in compares if across_calls(*_pretrain_records(c))]
    return {
        "table": table,
        "pairs": pairs,
        "learned": learned,
        "speed": speed,
        **({"split_calls": split} if split else {}),
    }


def _pretrain_records(compare: dict[str, Any]) -> list[dict[str, Any]]:
    """The pretraining stages of one comparison whose speeds are compared: MAE, DINO and the equal-time run."""
    return [r for name, r in compare["stages"].items() if name.startswith("pretrain:") and isinstance(r, dict)]


def mae_vs_dino_pairs(combined: dict[str, Any]) -> list[dict[str, Any]]:
    """The MAE vs DINO pairs over seeds, one per protocol."""
    return [p for p in combined["pairs"] if (p["a"], p["b"]) == ("MAE", "DINO")]


def mae_vs_dino_lines(combined: dict[str, Any]) -> list[str]:
    """One line per protocol: the MAE vs DINO verdict over seeds."""
    return [f"- {p['metric']}: {p['text']}" for p in mae_vs_dino_pairs(combined)]


def summary_markdown(compares: list[dict[str, Any]], combined: dict[str, Any], command: str = "") -> str:
    """The report: what was read, accuracy per protocol and encoder (mean ± SD over seeds, then each seed),
    MAE vs DINO per protocol, what is learned, every other pair (each section's verdicts after its "Decided:" count),
    and speed."""
    seeds = [c["seed"] for c in compares]
    table = combined["table"]
    encoders = list(dict.fromkeys(e for row in table.values() for e in row))
    mae_dino = mae_vs_dino_pairs(combined)
    other = [p for p in combined["pairs"] if p not in mae_dino]
    lines = [
        f"# MAE vs DINO over {len(compares)} seed{'s' if len(compares) > 1 else ''} ({', '.join(map(str, seeds))})",
        "", *([f"Command: `{command}`", ""] if command else []),
        "Comparisons read (one per seed, otherwise the same settings; date, commit and hardware from each one's "
        "summary.md, when its stages were computed from its metrics.json where recorded):", "",
        *[f"- `{c['folder']}`: seed {c['seed']}, {_report_line(c['folder'], 'Date')}{computed_text(c)}; "
          f"{_report_line(c['folder'], 'Hardware')}" for c in compares],
        "",
        "Cells: mean ± SD [95% t-interval of the mean] over seeds (each seed in brackets); accuracies are test top-1 "
        f"% on the same test images in every seed. {RULE} Every comparison is at one pooling.",
        "",
        markdown_table(["protocol", *encoders],
                       [[t, *(seed_cell(row.get(e), interval=True) for e in encoders)] for t, row in table.items()],
                       "l" + "r" * len(encoders)),
        "## MAE vs DINO, per protocol", "", decided_line(mae_dino), "", *mae_vs_dino_lines(combined), "",
        "## What is learned (linear probe, CLS vs mean pooling of one encoder)", "",
        decided_line(combined["learned"]), "",
        *[f"- {p['text']}" for p in combined["learned"]], "",
        "## Each encoder vs random init, and the equal-time run", "", decided_line(other), "",
        *[f"- {p['metric']}: {p['text']}" for p in other], "",
        "## Training speed (pretraining, img/s of the logged windows' median)", "",
        markdown_table(["quantity", "over seeds"], [[k, seed_cell(v, interval=True)] for k, v in combined["speed"].items()], "lr"),
        *([f"Seed(s) {', '.join(map(str, combined['split_calls']))}: pretrained in more than one call of `maelab "
           "compare` (a run resumed, or the methods trained in different calls), so their speeds, speed ratio and "
           "equal-time steps carry the machine's drift between calls.", ""] if combined.get("split_calls") else []),
    ]  # fmt: skip
    return "\n".join(lines)


def write_compare_seeds(folders: Sequence[Path], out: Path, command: str = "") -> Path:
    """Read the comparisons, combine them, write ``out/summary.md`` and ``out/seeds.json``; returns summary.md."""
    compares = load_compares(folders)
    combined = combine(compares)
    return write_report(out, compares, combined, summary_markdown(compares, combined, command), command)

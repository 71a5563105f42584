"""Several seeds of one mask-ratio sweep read together: the seed spread of every accuracy, and verdicts
that need more than one seed (``maelab seeds``).

Each folder is one finished ``maelab sweep`` with its own ``--seed`` and otherwise the same settings
(checked: ratios, data, recipe, evaluation). For every view (equal epochs, equal time), ratio and metric
(linear probe and k-NN at each pooling, fine-tune) the accuracy per seed and its mean +- SD over seeds;
the equal-time fine-tune only when every sweep has it (sweeps of an older maelab have none: their
report is unchanged).
For every pair (ratio A vs ratio B, and each ratio vs the random-init encoder of the same seed and
pooling) the paired difference on the same test images within each seed
(:func:`maelab.eval.stats.compare_paired`) and a verdict over seeds. A mean difference over seeds carries
two kinds of noise, and "A beats B" is *decided* only when each is beaten by its own test, both on the same
side of 0, with at least :data:`MIN_SEEDS` seeds:

- training noise (another seed is another pretraining): the 95% t-interval over seeds of the per-seed
  differences (:func:`maelab.eval.stats.seed_spread`) excludes 0;
- test-image noise (every seed is scored on the SAME test images, so the seed interval says nothing about
  which images were drawn): the 95% paired bootstrap over images of the per-image difference averaged over
  seeds (:func:`maelab.eval.stats.pooled_paired_bootstrap`) excludes 0.

A seed interval that includes 0 is a tie; anything else is "not decided". The rule no longer asks every
seed's own paired test to be significant: with a real but modest effect the chance that all of n seeds are
each beyond noise falls as n grows, so more seeds made a claim harder to decide. How many seeds are beyond
noise on their own is still reported with each decided verdict.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, fields
from itertools import combinations
from pathlib import Path
from typing import Any

from maelab.checkpoint import atomic_write_text
from maelab.config import SECTIONS, ConfigError
from maelab.eval.knn import PAIRED_K
from maelab.eval.paired import RANDOM_LABEL
from maelab.eval.results import markdown_table, write_json
from maelab.eval.stats import (
    PairedComparison,
    SeedSpread,
    compare_paired,
    pooled_paired_bootstrap,
    seed_spread,
    unpack_correct,
)
from maelab.experiments.seeds_checks import (
    budget_lines,
    machine_warning,
    mixed_kind_notes,
    point_kinds,
    point_text,
    speed_lines,
)
from maelab.experiments.seeds_holm import decided_line, mark_holm
from maelab.experiments.stages import computed_span
from maelab.experiments.sweep_findings import packed_correct
from maelab.experiments.sweep_plan import RANDOM_INIT, VIEWS

MIN_SEEDS = 3  # issue 15: rankings that decide a claim use >= 3 seeds
# Settings that may differ between the seeds of one sweep (everything else must be equal).
FREE_SETTINGS = ("pretrain.train.seed", "pretrain.train.out", "pretrain.train.quiet", "pretrain.data.data_dir")
# The rule of the module docstring as the reports state it (sweeps, recipe searches and comparisons over seeds).
RULE = (
    f"Rule: A beats B is decided only with >= {MIN_SEEDS} seeds and when both sources of noise are beaten on the "
    "same side of 0: training noise (another seed is another pretraining) by the 95% t-interval over seeds of the "
    "per-seed paired differences, and test-image noise (every seed is scored on the same images) by a 95% paired "
    'bootstrap over images of the per-image difference averaged over seeds ("pooled over seeds"). A seed interval '
    "that includes 0 is a tie; anything else is not decided. A decided verdict also says how many seeds are beyond "
    "noise on their own (McNemar p < 0.05 and a 95% paired-bootstrap interval excluding 0): shown, not required, "
    "since with a modest real effect all of n seeds beyond noise gets rarer as n grows. Each pair is judged on its own "
    "at the 95% level, so among the many pairs a report tests a few weak ones are decided by chance; a decided "
    "verdict therefore also says whether its seed t-test holds after a Holm correction over all the distinct pairs "
    "of the report (Holm-adjusted p < 0.05): shown, not required, and one that does not hold is the weaker kind."
)


@dataclass(frozen=True)
class SeedVerdict:
    """A vs B over seeds: the per-seed paired comparisons, the spread of their differences (points), the
    winner's name when decided (else None), the sentence that says so, and the difference pooled over seeds
    per image with its 95% bootstrap interval ((difference, low, high) points; None without per-image flags)."""

    per_seed: tuple[PairedComparison, ...]
    spread: SeedSpread
    winner: str | None
    text: str
    pooled: tuple[float, float, float] | None = None


def seed_verdict(
    name_a: str,
    name_b: str,
    per_seed: Sequence[PairedComparison],
    min_seeds: int = MIN_SEEDS,
    pooled: tuple[float, float, float] | None = None,
) -> SeedVerdict:
    """Judge A vs B from one paired comparison per seed (same test images within a seed) and ``pooled``, the
    (difference, low, high) of :func:`~maelab.eval.stats.pooled_paired_bootstrap` over the same seeds, by the rule
    of the module docstring; without ``pooled`` nothing is decided (the seed interval alone misses the noise of
    the test images)."""
    spread = seed_spread([c.difference for c in per_seed])
    numbers = f"{name_a} - {name_b} {spread.mean:+.2f} points over {spread.n} seed{'s' if spread.n > 1 else ''}"
    if spread.sd is not None:
        numbers += f" (SD {spread.sd:.2f}, 95% t-interval [{spread.ci_low:+.2f}, {spread.ci_high:+.2f}])"
    numbers += " (per seed, paired: " + "; ".join(f"{c.difference:+.2f} p {c.p_value:.2g}" for c in per_seed) + ")"
    if pooled is not None and spread.n > 1:
        numbers += f", pooled over seeds {pooled[0]:+.2f} [{pooled[1]:+.2f}, {pooled[2]:+.2f}]"
    up = spread.mean > 0
    winner = None
    if spread.n < min_seeds:
        text = f"not decided: {numbers}; fewer than {min_seeds} seeds"
    elif not spread.excludes_zero():
        text = f"tie: {numbers}"
    elif pooled is None:
        text = f"not decided: {numbers}; no per-image flags to pool"
    elif not (pooled[1] > 0 if up else pooled[2] < 0):
        side = "includes 0" if pooled[1] <= 0 <= pooled[2] else "is on the other side of 0"
        text = f"not decided: {numbers}; within test-image noise (the pooled interval {side})"
    else:
        winner = name_a if up else name_b
        # The old every-seed criterion, shown but not required: how many seeds are beyond noise on their own.
        won = sum(c.significant() and (c.difference > 0) == up for c in per_seed)
        lost = sum(c.significant() and (c.difference > 0) != up for c in per_seed)
        own = f"{won} of {spread.n} seeds beyond noise on their own" + (f", {lost} the other way" if lost else "")
        text = f"{winner} beats {name_b if winner == name_a else name_a} (decided): {numbers}; {own}"
    return SeedVerdict(tuple(per_seed), spread, winner, text, pooled)


def seed_pair(metric: str, a: str, b: str, flags_a: Sequence[Any], flags_b: Sequence[Any]) -> dict[str, Any]:
    """A vs B on one metric over seeds, as the reports keep it: each seed's paired test on its (N,) per-image
    flags (:func:`compare_paired`, the same test images within a seed), the difference pooled over seeds per image
    (:func:`pooled_paired_bootstrap`, the same N images in every seed) and the :func:`seed_verdict`;
    {metric, a, b, winner, text, spread, pooled, per_seed}."""
    comps = [compare_paired(x, y) for x, y in zip(flags_a, flags_b, strict=True)]
    try:
        pooled = pooled_paired_bootstrap(flags_a, flags_b)
    except ValueError as e:  # seeds scored on different images: a user's mix-up, named, not a traceback
        raise ConfigError(f"{metric}, {a} vs {b}: {e}") from e
    v = seed_verdict(a, b, comps, pooled=pooled)
    return {"metric": metric, "a": a, "b": b, "winner": v.winner, "text": v.text, "spread": v.spread.to_dict(),
            "pooled": dict(zip(("difference", "ci_low", "ci_high"), pooled, strict=True)),
            "per_seed": [c.to_dict() for c in comps]}  # fmt: skip


# ------------------------------------------------------------------------------------ reading sweeps
def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def metrics_json(path: Path) -> dict[str, Any]:
    """The parsed ``path`` (a metrics.json); a ConfigError names the file when it is not valid JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid JSON ({e}): a damaged or partly copied file") from e


def read_folder(folder: Path, required: Sequence[str], what: str) -> dict[str, Any]:
    """``folder/metrics.json`` with ``folder`` added; a ConfigError names the folder when it is missing or holds
    none of ``required`` (``what``: the command that writes it, for the message)."""
    path = Path(folder) / "metrics.json"
    if not Path(folder).is_dir():
        raise ConfigError(f"{folder}: no such directory")
    if not path.is_file():
        raise ConfigError(f"{folder}: no metrics.json (not a finished {what})")
    m = metrics_json(path)
    if any(key not in m for key in required):
        raise ConfigError(f"{path}: no {' / '.join(required)} (not a finished {what})")
    return {**m, "folder": str(folder)}


def added_later(key: str, value: Any) -> bool:
    """Whether ``key`` (a flattened dotted name ending ``<section>.<field>`` of a run's config) is a config field
    whose default is ``value``: a setting that a later maelab added, missing from an older folder's settings. New
    fields default to the behaviour before them (e.g. ``train.fixed_warmup_steps`` 0: the warm-up from
    ``warmup_epochs``), so the older folder ran with that value."""
    parent, _, name = key.rpartition(".")
    section = parent.rpartition(".")[2]
    known = {f.name: f for f in fields(SECTIONS[section])} if section in SECTIONS else {}
    if name not in known:
        return False
    f = known[name]  # every config field has a default (``opt``): a plain value, or a factory for lists
    return (f.default if f.default is not MISSING else f.default_factory()) == value


def check_seeds_of_one(
    items: list[dict[str, Any]], seed_of: Callable[[dict[str, Any]], Any], free: Sequence[str], what: str
) -> None:
    """Each item (a read folder) gets its ``seed`` (``seed_of(item)``); a ConfigError names the folder given
    the same seed twice, or the setting (outside ``free``, flattened dotted names) in which two differ
    (``what``: "sweep" or "search", for the message). A config field one folder lacks matches the other's value
    when that is the field's default (:func:`added_later`)."""
    seeds: dict[Any, str] = {}
    for item in items:
        item["seed"] = seed_of(item)
        if item["seed"] in seeds:
            raise ConfigError(f"{item['folder']} and {seeds[item['seed']]} are both --seed {item['seed']}: "
                              "give each seed once")  # fmt: skip
        seeds[item["seed"]] = item["folder"]
    first = _flat(items[0]["settings"])
    for item in items[1:]:
        other = _flat(item["settings"])
        for key in sorted(set(first) | set(other)):
            if key in free or first.get(key) == other.get(key):
                continue
            if (key not in first and added_later(key, other[key])) or (
                key not in other and added_later(key, first[key])
            ):
                continue
            mine, theirs = (repr(d[key]) if key in d else "missing" for d in (other, first))
            raise ConfigError(
                f"{item['folder']}: setting {key} is {mine} but {theirs} in {items[0]['folder']}: "
                f"not seeds of the same {what}"
            )


def load_sweeps(folders: Sequence[Path]) -> list[dict[str, Any]]:
    """Each folder's ``metrics.json`` (a finished sweep), checked to be seeds of one sweep: a ConfigError
    names the folder and the setting that differs, or the seed given twice."""
    sweeps = [read_folder(f, ("rows", "evaluations"), "maelab sweep") for f in folders]
    check_seeds_of_one(sweeps, lambda m: m["settings"]["pretrain"]["train"]["seed"], FREE_SETTINGS, "sweep")
    return sweeps


def knn_k(sweep: dict[str, Any]) -> str:
    """The k of the k-NN rows: :data:`~maelab.eval.knn.PAIRED_K` (20) when the sweep evaluated it."""
    ks = sweep["settings"]["eval"]["ks"]
    return str(PAIRED_K if PAIRED_K in ks else ks[0])


def metrics(sweep: dict[str, Any], view: str = VIEWS[0]) -> list[tuple[str, str, str | None, str]]:
    """(row key, evaluation kind, pooling, label) of every accuracy a sweep holds in ``view``: linear and k-NN
    at each pooling (k=20 when evaluated), fine-tune when run: at equal epochs, and at equal time only when every
    row of that view carries it (a sweep of an older maelab fine-tuned no equal-time checkpoint)."""
    ev, k = sweep["settings"]["eval"], knn_k(sweep)
    out: list[tuple[str, str, str | None, str]] = [(f"linear_{p}", "linear", p, f"linear {p}") for p in ev["poolings"]]
    out += [(f"knn{k}_{p}", "knn", p, f"k-NN k={k} {p}") for p in ev["poolings"]]
    rows = [r for r in sweep["rows"] if r.get("view") == view]
    if ev.get("finetune_epochs") and (view == VIEWS[0] or (rows and all("finetune" in r for r in rows))):
        out.append(("finetune", "finetune", None, "fine-tune"))
    return out


def shared_metrics(sweeps: Sequence[dict[str, Any]], view: str) -> list[tuple[str, str, str | None, str]]:
    """The :func:`metrics` of ``view`` that every sweep holds (the equal-time fine-tune only if every seed has it)."""
    each = [metrics(s, view) for s in sweeps]
    return [m for m in each[0] if all(m in other for other in each[1:])]


def flags(sweep: dict[str, Any], point: str, kind: str, pooling: str | None) -> Any:
    """The (N,) per-image test flags of one evaluation (``point`` e.g. ``mr0.75``; k-NN at :func:`knn_k`), or
    None if not stored."""
    evals = sweep["evaluations"]
    if kind == "finetune":
        packed = (evals.get(point, {}).get("finetune") or {}).get("test_correct")
    else:
        packed = packed_correct(evals, point, kind, pooling or "", knn_k(sweep))
    return None if packed is None else unpack_correct(packed)


def _points(sweep: dict[str, Any], view: str) -> dict[str, str]:
    """{label: evaluation point} of one view's rows, with the random init last."""
    out = {f"mask {r['ratio']:g}": r["point"] for r in sweep["rows"] if r.get("view") == view and r.get("point")}
    return {**out, RANDOM_LABEL: RANDOM_INIT}


# ------------------------------------------------------------------------------------ combining
def combine(sweeps: list[dict[str, Any]]) -> dict[str, Any]:
    """{view: {"table": {label: {metric label: {per_seed, spread}}}, "pairs": [...]}} over the seeds. At equal time
    also "points" (:func:`~maelab.experiments.seeds_checks.point_kinds`: which checkpoint each label is in each seed)
    and each pair's "repeat": both its points are their equal-epoch checkpoints in every seed (e.g. a capped ratio
    or the budget ratio vs the random init), so its verdict is the equal-epoch pair's."""
    out: dict[str, Any] = {}
    epochs = [_points(s, VIEWS[0]) for s in sweeps]
    for view in VIEWS:
        points = [_points(s, view) for s in sweeps]
        labels = [lbl for lbl in points[0] if all(lbl in p for p in points)]
        same = {lbl for lbl in labels if all(p[lbl] == e.get(lbl) for p, e in zip(points, epochs, strict=True))}
        table: dict[str, dict[str, Any]] = {lbl: {} for lbl in labels}
        pairs: list[dict[str, Any]] = []
        for _, kind, pooling, mlabel in shared_metrics(sweeps, view):
            per = {
                lbl: [flags(s, p[lbl], kind, pooling) for s, p in zip(sweeps, points, strict=True)] for lbl in labels
            }
            have = [lbl for lbl in labels if all(f is not None for f in per[lbl])]
            for lbl in have:
                acc = [float(f.mean() * 100) for f in per[lbl]]
                table[lbl][mlabel] = seed_entry(acc)
            for a, b in combinations(have, 2):
                pairs.append(seed_pair(mlabel, a, b, per[a], per[b]))
                if view != VIEWS[0]:
                    pairs[-1]["repeat"] = a in same and b in same
        out[view] = {"table": table, "pairs": pairs}
        if view != VIEWS[0]:
            out[view]["points"] = point_kinds(sweeps, labels)
    every = [p for part in out.values() for p in part["pairs"]]
    mark_holm(every, [p for p in every if not p.get("repeat")])
    return out


def seed_entry(values: Sequence[float]) -> dict[str, Any]:
    """One quantity over seeds as stored in seeds.json: {"per_seed": values, "spread": :func:`seed_spread` dict}."""
    return {"per_seed": list(values), "spread": seed_spread(values).to_dict()}


def seed_cell(entry: dict[str, Any] | None, digits: int = 2, interval: bool = False) -> str:
    """A table cell of a :func:`seed_entry`: "mean ± SD [t-interval] (each seed)" ("-" for None; the interval
    only when asked and there are >= 2 seeds)."""
    if entry is None:
        return "-"
    s = entry["spread"]
    seeds = ", ".join(f"{v:.{digits}f}" for v in entry["per_seed"])
    ci = f" [{s['ci_low']:.{digits}f}, {s['ci_high']:.{digits}f}]" if interval and s["ci_low"] is not None else ""
    return f"{s['mean']:.{digits}f}" + (f" ± {s['sd']:.{digits}f}" if s["sd"] is not None else "") + f"{ci} ({seeds})"


def computed_text(item: dict[str, Any]) -> str:
    """``; stages computed <first> - <last> (git commit C)`` of a read folder (its metrics.json's ``stages_computed``:
    :func:`~maelab.experiments.stages.computed_span`, with its warning where they ran on several machines), for its
    line in a seeds report; "" where it has none (written by an older maelab)."""
    span = computed_span(item.get("stages_computed"))
    return f"; {span}" if span else ""


def _sweep_line(s: dict[str, Any]) -> str:
    """One sweep read: folder, seed, when and at which commit its report was written (and its stages computed,
    where recorded), and its CPU."""
    env = s["environment"]
    return (f"- `{s['folder']}`: seed {s['seed']}, report {env.get('date', '?')}, commit {env.get('git_commit', '?')}"
            f"{computed_text(s)}; {env.get('cpu_model', '?')}")  # fmt: skip


def summary_markdown(sweeps: list[dict[str, Any]], combined: dict[str, Any], command: str = "") -> str:
    """The report: what was read (and where the machines differ), each seed's training speed per ratio, the
    per-ratio table of each view (mean ± SD over seeds, then each seed; at equal time which checkpoint each ratio is,
    and each seed's budget) and every pair's verdict over seeds (at equal time the pairs that repeat an equal-epoch
    pair are marked and counted apart)."""
    seeds = [s["seed"] for s in sweeps]
    machines = machine_warning(sweeps)
    lines = [
        f"# Mask-ratio sweep over {len(sweeps)} seed{'s' if len(sweeps) > 1 else ''} ({', '.join(map(str, seeds))})", "",
        *([f"Command: `{command}`", ""] if command else []),
        "Sweeps read (one per seed, otherwise the same settings):", "",
        *[_sweep_line(s) for s in sweeps], "",
        *([machines, ""] if machines else []),
        *speed_lines(sweeps),
        f"Cells: mean ± SD over seeds (each seed's accuracy in brackets), top-1 % on the same test images. {RULE}",
        "",
    ]  # fmt: skip
    for view, part in combined.items():
        table, points = part["table"], part.get("points", {})
        names = list(dict.fromkeys(n for row in table.values() for n in row))
        lines += [f"## {view.capitalize()}", "", *(budget_lines(sweeps) if view != VIEWS[0] else []), markdown_table(
            ["encoder", *names],
            [[lbl + (f" ({point_text(points[lbl])})" if lbl in points else ""), *(seed_cell(row.get(n)) for n in names)]
             for lbl, row in table.items()],
            "l" + "r" * len(names),
        ), *(f"{note}\n" for note in mixed_kind_notes(points, seeds))]  # fmt: skip
        fresh = [p for p in part["pairs"] if not p.get("repeat")]
        repeats = len(part["pairs"]) - len(fresh)
        again = (f"; {repeats} more pairs repeat equal-epoch pairs (the same checkpoints in every seed, so the same "
                 "verdicts) and are not counted again") if repeats else ""  # fmt: skip
        lines += [decided_line(fresh, again), ""]
        lines += [f"- {p['metric']}: {p['text']}" + (" (repeats the equal-epoch pair)" if p.get("repeat") else "")
                  for p in part["pairs"]]  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def write_report(out: Path, items: list[dict[str, Any]], record: dict[str, Any], summary: str, command: str) -> Path:
    """Write ``out/seeds.json`` (the command, folders, seeds, :data:`MIN_SEEDS` and ``record``) and
    ``out/summary.md`` (``summary``) for the read folders ``items``; returns summary.md."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "seeds.json", {"command": command, "folders": [i["folder"] for i in items],
                                    "seeds": [i["seed"] for i in items], "min_seeds": MIN_SEEDS, **record})  # fmt: skip
    path = out / "summary.md"
    atomic_write_text(path, summary)
    return path


def write_seeds(folders: Sequence[Path], out: Path, command: str = "") -> Path:
    """Read the sweeps, combine them, write ``out/summary.md`` and ``out/seeds.json``; returns summary.md."""
    sweeps = load_sweeps(folders)
    combined = combine(sweeps)
    return write_report(out, sweeps, {"views": combined}, summary_markdown(sweeps, combined, command), command)

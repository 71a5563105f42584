"""What may differ between the seeds of one sweep beyond its settings, read from each sweep's own records for the
``maelab seeds`` report: the machine, the equal-time budget and the budget ratio's speed, and which checkpoint
each ratio's equal-time point is (a budget checkpoint, or a final one: the budget ratio's, or a capped ratio's
whose run ended before the budget). A sweep of an older maelab that lacks a record has that line left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from maelab.experiments.sweep_plan import SETS_BUDGET, VIEWS, budget_share, equal_time_kind

# The machine of each sweep (its metrics.json ``environment``): the speeds, so the equal-time points, depend on it.
MACHINE_KEYS = ("cpu_model", "cpu_capability", "cpu_native_bf16", "cpu_cores", "torch_threads", "gpu")
SPREAD_LIMIT = 0.10  # budgets or speeds further apart than this across seeds are warned about


def machine_warning(sweeps: Sequence[dict[str, Any]]) -> str | None:
    """A warning line naming each :data:`MACHINE_KEYS` entry that differs between the sweeps (among those that
    recorded it), or None when they agree."""
    differ = []
    for key in MACHINE_KEYS:
        seen = {s["seed"]: s.get("environment", {})[key] for s in sweeps if key in s.get("environment", {})}
        if len({str(v) for v in seen.values()}) > 1:
            differ.append(f"{key} " + ", ".join(f"{v} (seed {seed})" for seed, v in seen.items()))
    if not differ:
        return None
    return (
        f"**Warning: the sweeps ran on different machines** ({'; '.join(differ)}; as recorded in each metrics.json). "
        "Equal-time checkpoints follow each machine's relative speeds of the ratios, so an equal-time point is not "
        "the same training in every seed."
    )


def _seed_cell(seed: Any, budget: float | None, speed: float | None) -> str:
    """``seed 0 420.7 s (122.75 img/s)``: one seed's budget and the budget ratio's median speed."""
    text = f"seed {seed} " + ("?" if budget is None else f"{budget:.1f}") + " s"
    return text + ("" if speed is None else f" ({speed:g} img/s)")


def budget_lines(sweeps: Sequence[dict[str, Any]]) -> list[str]:
    """Each seed's equal-time budget (s) and the budget ratio's median img/s, and a warning line for each that
    differs across seeds by more than :data:`SPREAD_LIMIT`; [] where the sweeps recorded no budget."""
    ratio = sweeps[0]["settings"].get("budget_ratio")
    budget = {s["seed"]: s.get("budget_seconds") for s in sweeps}
    if ratio is None or all(v is None for v in budget.values()):
        return []
    speed = {s["seed"]: ((s.get("runs") or {}).get(f"{ratio:g}") or {}).get("median_img_per_s") for s in sweeps}
    cells = ", ".join(_seed_cell(seed, b, speed[seed]) for seed, b in budget.items())
    lines = [f"Budget per seed (mask {ratio:g}'s training time, and its median img/s): {cells}.", ""]
    for name, values in (("budget", budget), (f"median img/s of mask {ratio:g}", speed)):
        got = [v for v in values.values() if v]
        spread = max(got) / min(got) - 1 if len(got) > 1 else 0.0
        if spread > SPREAD_LIMIT:
            lines += [
                f"**Warning:** the {name} differs by {spread:.0%} across seeds (more than {SPREAD_LIMIT:.0%}): the "
                "equal-time points are not the same training time in each seed.", "",
            ]  # fmt: skip
    return lines


def _ratio_text(x: float) -> str:
    """A speed ratio as the reports write it, e.g. ``2.08x``."""
    return f"{x:.2f}x"


def speed_lines(sweeps: Sequence[dict[str, Any]]) -> list[str]:
    """Each seed's median training img/s per mask ratio with its speed over the budget ratio's, and the budget ratio's
    speed over the lowest ratio's per seed with their range (the paper's speed-up claim, seed by seed); [] where
    the sweeps recorded no budget ratio or speeds."""
    ratio = sweeps[0]["settings"].get("budget_ratio")
    speeds = {s["seed"]: {float(r): run.get("median_img_per_s") for r, run in (s.get("runs") or {}).items()}
              for s in sweeps}  # fmt: skip
    if ratio is None or not any(v for row in speeds.values() for v in row.values()):
        return []
    cells, over_lowest = [], []
    for seed, row in speeds.items():
        base = row.get(ratio)
        parts = [f"{r:g} {v:g}" + (f" ({_ratio_text(v / base)})" if base and r != ratio else "")
                 for r, v in sorted(row.items()) if v]  # fmt: skip
        cells.append(f"seed {seed}: " + ", ".join(parts))
        lowest = min(row)
        if base and row.get(lowest) and lowest != ratio:
            over_lowest.append(base / row[lowest])
    lines = [f"Training speed per seed (median img/s of each mask ratio; in brackets, over mask {ratio:g}'s): "
             + "; ".join(cells) + ".", ""]  # fmt: skip
    if over_lowest:
        lowest = min(min(row) for row in speeds.values())
        each = " / ".join(_ratio_text(x) for x in over_lowest)
        lines += [f"Mask {ratio:g} over mask {lowest:g}, per seed: {each} "
                  f"({_ratio_text(min(over_lowest))}-{_ratio_text(max(over_lowest))}).", ""]  # fmt: skip
    return lines


def point_kinds(sweeps: Sequence[dict[str, Any]], labels: Sequence[str]) -> dict[str, dict[str, list[Any]]]:
    """{label: {"kind": [per seed], "budget_share": [per seed]}} of each equal-time row of ``labels``: which
    checkpoint it is (:func:`~maelab.experiments.sweep_plan.equal_time_kind`) and the share of its sweep's budget
    that checkpoint's training used (None where not recorded)."""
    out: dict[str, dict[str, list[Any]]] = {}
    for s in sweeps:
        rows = {f"mask {r['ratio']:g}": r for r in s["rows"] if r.get("view") == VIEWS[1] and r.get("point")}
        for label in labels:
            if label in rows:
                r, entry = rows[label], out.setdefault(label, {"kind": [], "budget_share": []})
                entry["kind"].append(equal_time_kind(r["ratio"], r["point"], s["settings"].get("budget_ratio")))
                entry["budget_share"].append(budget_share(r.get("train_seconds"), s.get("budget_seconds")))
    return out


def point_text(entry: dict[str, list[Any]]) -> str:
    """A :func:`point_kinds` entry in words, e.g. ``final checkpoint, 63% of the budget`` (a range over seeds where
    they differ); each kind in turn where the seeds differ in it."""
    parts = []
    for kind in dict.fromkeys(entry["kind"]):
        shares = [x for k, x in zip(entry["kind"], entry["budget_share"], strict=True) if k == kind and x is not None]
        text = kind
        if shares and kind != SETS_BUDGET:
            lo, hi = round(100 * min(shares)), round(100 * max(shares))
            text += f", {hi if lo == hi else f'{lo}-{hi}'}% of the budget"
        parts.append(text)
    return "; ".join(parts)


def mixed_kind_notes(points: dict[str, dict[str, list[Any]]], seeds: Sequence[Any]) -> list[str]:
    """A note line for each label whose equal-time point is not the same kind of checkpoint in every seed."""
    notes = []
    for label, entry in points.items():
        if len(set(entry["kind"])) > 1:
            each = ", ".join(f"{kind} in seed {seed}" for seed, kind in zip(seeds, entry["kind"], strict=True))
            notes.append(f"Note: {label} is not the same kind of point in every seed ({each}): its equal-time "
                         "numbers over seeds mix them.")  # fmt: skip
    return notes

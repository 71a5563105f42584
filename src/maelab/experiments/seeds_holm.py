"""Holm's correction over the pairs one report over seeds tests.

A report judges each pair at the 95% level on its own (:func:`maelab.experiments.seeds.seed_verdict`), so among
the dozens of pairs of a sweep a few weak ones are decided by chance. These helpers add, for every pair, the p of
its seed t-test adjusted by Holm over all the distinct pairs of the report, and say in each decided verdict whether
it still holds: shown, not required, so the verdicts themselves do not change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from maelab.eval.stats import holm_adjust, t_test_p


def mark_holm(pairs: Sequence[dict[str, Any]], family: Sequence[dict[str, Any]]) -> None:
    """Add to each pair dict of ``pairs`` (:func:`~maelab.experiments.seeds.seed_pair`) "holm": {p, adjusted_p,
    family}: the p of its seed t-test over its per-seed differences, adjusted by Holm over the m distinct pairs of
    ``family`` (the pairs a report tests); append to a decided verdict's text whether it holds (adjusted p < 0.05).
    A pair outside ``family`` that repeats one in it (the same checkpoints, so the same p) gets the adjusted p of the
    family's pairs with p at most its own."""
    tested = [p for q in family if (p := t_test_p([c["difference"] for c in q["per_seed"]])) is not None]
    adjusted = sorted(zip(tested, holm_adjust(tested), strict=True))
    for q in pairs:
        p = t_test_p([c["difference"] for c in q["per_seed"]])
        if p is None:
            continue
        # Below every p of the family (only outside it): Bonferroni over the family, the first step of Holm.
        adj = max((a for x, a in adjusted if x <= p), default=min(1.0, p * max(1, len(adjusted))))
        q["holm"] = {"p": p, "adjusted_p": adj, "family": len(adjusted)}
        if q["winner"]:
            holds = "holds" if adj < 0.05 else "does not hold"
            q["text"] += f"; Holm over the report's {len(adjusted)} pairs: {holds} (adjusted p {adj:.2g})"


def holm_count(pairs: Sequence[dict[str, Any]]) -> str:
    """The tail of a report's "Decided:" line: how many decided pairs of ``pairs`` still hold after the Holm
    correction of :func:`mark_holm` (", N of them also after a Holm correction over the report's M pairs"; "" when
    none was marked)."""
    marked = [q["holm"] for q in pairs if q["winner"] and "holm" in q]
    if not marked:
        return ""
    held = sum(h["adjusted_p"] < 0.05 for h in marked)
    return f", {held} of them also after a Holm correction over the report's {marked[0]['family']} pairs"


def decided_line(pairs: Sequence[dict[str, Any]], more: str = "") -> str:
    """A section's "Decided:" line in a report over seeds: how many of ``pairs`` are decided (a winner), of how
    many, with :func:`holm_count`'s tail and ``more`` (a note of the report's own) before the full stop."""
    decided = sum(1 for q in pairs if q["winner"])
    return f"Decided: {decided} of {len(pairs)} pairs{holm_count(pairs)}{more}."

"""Like-for-like paired comparisons of frozen-evaluation rows with their random-init baseline.

Each trained encoder's row (one encoder, one pooling) is compared with the random-init row of the
SAME pooling, on the same test images, from the per-image flags the rows store (packed, see
``stats.pack_correct``). Never "the model's best pooling vs the baseline's best pooling": that
would credit the encoder with a choice of pooling made on the test set.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from maelab.eval.stats import compare_paired, unpack_correct

RANDOM_INIT_KIND = "random-init"  # Encoder.spec["kind"] of a random-init twin (eval.features)
RANDOM_LABEL = "random init"  # how reports and tables name the random-init encoder of the same shape
HEADER = "vs random init (paired)"


def is_random_init(row: dict[str, Any]) -> bool:
    """Whether a report row is a random-init encoder's."""
    return (row.get("spec") or {}).get("kind") == RANDOM_INIT_KIND


def add_vs_random_init(
    rows: list[dict[str, Any]], packed_of: Callable[[dict[str, Any]], dict[str, Any]], **extra: Any
) -> None:
    """Give every trained row a ``vs_random_init`` entry, in place, if the rows hold a random init.

    ``packed_of(row)`` is the row's packed (N,) test-image correctness. The entry is
    ``compare_paired(row, random-init row of the same pooling).to_dict()`` with the baseline's name,
    the pooling, ``extra`` (e.g. ``k=20``) and the verdict sentence. Rows of a pooling the random init
    was not evaluated with get no entry.
    """
    baselines: dict[str, dict[str, Any]] = {}
    for r in rows:
        if is_random_init(r):
            baselines.setdefault(r["pooling"], r)
    for r in rows:
        base = baselines.get(r["pooling"])
        if base is None or is_random_init(r):
            continue
        result = compare_paired(unpack_correct(packed_of(r)), unpack_correct(packed_of(base)))
        names = (f"{r['encoder']} [{r['pooling']}]", f"{base['encoder']} [{base['pooling']}]")
        r["vs_random_init"] = {
            "baseline": base["encoder"], "pooling": base["pooling"], **extra, **result.to_dict(),
            "verdict": result.verdict(*names),
        }  # fmt: skip


def has_paired(rows: list[dict[str, Any]]) -> bool:
    """Whether any row carries a ``vs_random_init`` entry (reports written before them do not)."""
    return any("vs_random_init" in r for r in rows)


def paired_cell(row: dict[str, Any]) -> str:
    """Markdown cell: difference in points, its 95% CI and McNemar p; '(baseline)' on random-init rows."""
    e = row.get("vs_random_init")
    if e is None:
        return "(baseline)" if is_random_init(row) else "n/a"
    return f"{e['difference']:+.2f} [{e['ci_low']:+.2f}, {e['ci_high']:+.2f}], p = {e['p_value']:.2g}"


def paired_lines(rows: list[dict[str, Any]], what: str) -> list[str]:
    """Markdown lines for below a report's table: one verdict sentence per compared row ([] if none)."""
    entries = [r["vs_random_init"] for r in rows if "vs_random_init" in r]
    if not entries:
        return []
    intro = (
        f"Paired comparisons ({what}) with the random init of the same pooling, on the same test images: "
        "difference in points, 95% paired-bootstrap CI, exact McNemar p; within noise is a tie."
    )
    return ["", intro, "", *(f"- {e['verdict']}" for e in entries)]

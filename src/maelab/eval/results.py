"""Results on disk and the numbers they carry: JSON, markdown tables, CSV, and the standard errors
that say whether an accuracy, or a difference between two, is beyond noise.

Evaluations write ``RUN/eval/<name>.json`` (everything) and ``<name>.md`` (a short table); the
experiments write ``summary.md``, ``summary.csv`` and ``metrics.json`` through the same helpers.
Accuracies are in % and measured on ``n`` test images, each right or wrong: their binomial standard
error is sqrt(p (1 - p) / n), and a difference of two has the standard error
sqrt(p1 (1 - p1) / n + p2 (1 - p2) / n) (exact for independent test sets; on the same images, a conservative
bound: the paired tests in ``eval.stats`` are sharper). A difference within twice that is reported as noise, never as
a win.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from maelab.checkpoint import atomic_write_text


# ------------------------------------------------------------------------------------ files
def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON to ``path`` (atomically); returns the path."""
    path = Path(path)
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    return path


def write_json_and_markdown(out_dir: str | Path, name: str, result: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """Write ``OUT/NAME.json`` (everything) and ``OUT/NAME.md`` (the table) atomically; returns both paths."""
    out = Path(out_dir)
    md_path = out / f"{name}.md"
    json_path = write_json(out / f"{name}.json", result)
    atomic_write_text(md_path, markdown)
    return json_path, md_path


def write_eval_report(run: str | Path, name: str, result: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """Write ``result`` as JSON and ``markdown`` under ``RUN/eval/`` (atomically); returns both paths."""
    return write_json_and_markdown(Path(run) / "eval", name, result, markdown)


def csv_text(rows: Sequence[dict[str, Any]]) -> str:
    """CSV of dict rows: one column per key in order of first appearance (a missing value is empty)."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_csv(path: str | Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Write :func:`csv_text` of ``rows`` to ``path`` (atomically); returns the path."""
    path = Path(path)
    atomic_write_text(path, csv_text(rows))
    return path


def write_summary_files(out: Path, metrics: dict[str, Any], rows: Sequence[dict[str, Any]], markdown: str) -> Path:
    """An experiment's three result files: ``OUT/metrics.json`` (everything), ``OUT/summary.csv`` (one line
    per row) and ``OUT/summary.md`` (the report); returns the summary.md path."""
    write_json(out / "metrics.json", metrics)
    write_csv(out / "summary.csv", rows)
    path = out / "summary.md"
    atomic_write_text(path, markdown)
    return path


# ------------------------------------------------------------------------------------ markdown
def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str = "l") -> str:
    """A GitHub markdown table; float cells are shown with 4 significant digits, strings as they are.

    ``align``: one letter per column (``l`` left, ``r`` right), or one letter for every column.
    """
    align = align * len(headers) if len(align) == 1 else align

    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "".join("---:|" if a == "r" else "---|" for a in align)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def fmt(value: Any, spec: str = ".1f") -> str:
    """A table cell: ``-`` for None, numbers with ``spec``, anything else as ``str``."""
    if value is None:
        return "-"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, spec)
    return str(value)


# ------------------------------------------------------------------------------------ standard errors
def accuracy_se(acc: float, n: int) -> float:
    """Binomial standard error (percentage points) of an accuracy ``acc`` (%) measured on ``n`` images."""
    p = acc / 100.0
    return 100.0 * math.sqrt(max(p * (1 - p), 0.0) / max(n, 1))


def difference_se(a: float, b: float, n: int) -> float:
    """Standard error (points) of the difference of accuracies ``a`` and ``b`` (%) on the same ``n`` images."""
    return math.hypot(accuracy_se(a, n), accuracy_se(b, n))


def two_se(a: float, b: float, n: int) -> float:
    """Twice :func:`difference_se`: the noise level a difference must exceed to count."""
    return 2.0 * difference_se(a, b, n)


def with_se(acc: float, n: int) -> str:
    """``"61.25 ± 1.09"``: an accuracy (%) and its standard error on ``n`` images."""
    return f"{acc:.2f} ± {accuracy_se(acc, n):.2f}"


def versus(name_a: str, a: float, name_b: str, b: float, n: int) -> tuple[str | None, str]:
    """(the better name, or None when the difference is within two standard errors; a sentence with
    both accuracies, in % on ``n`` images, and the noise level)."""
    noise = two_se(a, b, n)
    if abs(a - b) <= noise:
        return (
            None,
            f"{name_a} {a:.1f}% vs {name_b} {b:.1f}%: within noise (difference {abs(a - b):.1f} <= 2 SE {noise:.1f})",
        )
    win, lose, wa, wb = (name_a, name_b, a, b) if a > b else (name_b, name_a, b, a)
    return win, f"{win} {wa:.1f}% vs {lose} {wb:.1f}%: {win} better by {wa - wb:.1f} points (2 SE {noise:.1f})"

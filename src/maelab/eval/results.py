"""Evaluation results on disk: ``RUN/eval/<name>.json`` (everything) and ``<name>.md`` (a short table)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from maelab.checkpoint import atomic_write_text


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats are shown with 4 significant digits."""

    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_json_and_markdown(out_dir: str | Path, name: str, result: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """Write ``OUT/NAME.json`` (everything) and ``OUT/NAME.md`` (the table) atomically; returns both paths."""
    out = Path(out_dir)
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    atomic_write_text(json_path, json.dumps(result, indent=2) + "\n")
    atomic_write_text(md_path, markdown)
    return json_path, md_path


def write_eval_report(run: str | Path, name: str, result: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """Write ``result`` as JSON and ``markdown`` under ``RUN/eval/`` (atomically); returns both paths."""
    return write_json_and_markdown(Path(run) / "eval", name, result, markdown)

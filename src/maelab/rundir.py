"""The run directory: the one owner of its files and of the summary.json schema.

A run directory holds

- ``config.json``: the resolved :class:`~maelab.config.Config` the run was started with;
- ``metrics.jsonl``: one JSON record per logged window (step, epoch, loss, lr, img_per_s, wall_time, ...);
- ``summary.json``: a :class:`RunSummary`, written when training ends (finished, diverged, cut by a budget);
- ``checkpoints/``: see :mod:`maelab.checkpoint`.

Every read and write of these files goes through this module, so they have one format and one
reader each. Base layer: imports only config, checkpoint and runtime.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

import torch

from maelab import checkpoint as ckpt
from maelab.config import Config, ConfigError, config_from_dict, validate

CONFIG, METRICS, SUMMARY = "config.json", "metrics.jsonl", "summary.json"


class RunDirError(RuntimeError):
    """A run directory's file cannot be read; the message names the file."""


# ------------------------------------------------------------------------------------ config
def new_run_dir(cfg: Config) -> Path:
    """Create the directory of a new run: ``cfg.train.out``, or ``runs/<method>-<model>-<time>``.

    Refuses an ``--out`` that already holds a run (a checkpoint): that one is continued with ``--resume``.
    """
    if cfg.train.out:
        run = Path(cfg.train.out)
        if ckpt.latest_checkpoint(run) is not None:
            raise ConfigError(f"--out {run} already holds a run; continue it with --resume {run} or pick another --out")
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        run = Path("runs") / f"{cfg.train.method}-{cfg.model.name}-{stamp}"
    run.mkdir(parents=True, exist_ok=True)
    return run


def load_config(run: str | Path) -> Config:
    """The resolved config a run was started with (``RUN/config.json``), strictly validated.

    Raises ConfigError naming the file when it is missing, not JSON, or not a valid config.
    """
    path = Path(run) / CONFIG
    if not path.is_file():
        raise ConfigError(f"{run}: no {path}; is this a maelab run directory?")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from e
    cfg = config_from_dict(data, str(path))
    validate(cfg)
    return cfg


def read_config_dict(run: str | Path) -> dict[str, Any]:
    """``RUN/config.json`` as it is on disk, unvalidated, for display (reports); {} when missing or unreadable.

    Unlike :func:`load_config` it accepts configs of older versions and partial ones.
    """
    try:
        data = json.loads((Path(run) / CONFIG).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def save_config(run: Path, cfg: Config) -> None:
    """Write ``cfg`` to ``RUN/config.json`` (atomically)."""
    ckpt.atomic_write_text(Path(run) / CONFIG, json.dumps(cfg.to_dict(), indent=2) + "\n")


# ------------------------------------------------------------------------------------ metrics
class MetricsLog:
    """Append-only writer of ``RUN/metrics.jsonl``: one JSON record per line, flushed per record.

    ``enabled=False`` (processes other than rank 0) makes every call a no-op, so callers need no checks.
    """

    def __init__(self, run: Path, enabled: bool = True) -> None:
        self._file: TextIO | None = open(Path(run) / METRICS, "a") if enabled else None  # noqa: SIM115 - see close

    def append(self, record: dict[str, Any]) -> None:
        """Write one record as a line and flush it, so a crash loses at most the record being written."""
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def read_metrics(run: str | Path) -> list[dict[str, Any]]:
    """The records of ``RUN/metrics.jsonl`` in order; [] when the file is missing.

    A torn last line (the process was killed mid-write) is dropped; a bad line elsewhere is an error.
    """
    path = Path(run) / METRICS
    if not path.is_file():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:
                break
            raise RunDirError(f"{path}: line {i + 1} is not JSON ({e})") from e
    return records


def truncate_metrics(run: Path, last_step: int) -> None:
    """Drop the records after ``last_step`` (e.g. the checkpoint a run resumes from: they will be redone)."""
    path = Path(run) / METRICS
    if not path.is_file():
        return
    kept = [r for r in read_metrics(run) if r["step"] <= last_step]
    ckpt.atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


def training_seconds(records: list[dict[str, Any]], images_per_step: int, upto_step: int | None = None) -> float:
    """Seconds spent in training steps up to step ``upto_step`` (default: all records).

    Each record's ``img_per_s`` covers the steps since the previous record, timed from the first
    step after any (re)start, so process start, data loading and model building are left out and a
    run trained in several segments is timed like one trained in one go. ``images_per_step`` must
    be the images the rate counts per step (the loop counts every process: batch x accum x world).
    A window without a positive, finite rate adds nothing (rather than a huge time from dividing
    by ~0), and neither does one whose step did not advance.
    """
    total, prev = 0.0, 0
    for r in records:
        if upto_step is not None and r["step"] > upto_step:
            break
        rate = r.get("img_per_s") or 0.0
        if rate > 0 and math.isfinite(rate) and r["step"] > prev:
            total += (r["step"] - prev) * images_per_step / rate
        prev = max(prev, r["step"])
    return total


# ------------------------------------------------------------------------------------ summary
@dataclass
class RunSummary:
    """The one schema of ``summary.json``.

    ``total_steps`` and ``wall_time_s`` are None only in files written before this schema that lack
    them; text fields missing there read as "".
    """

    status: str  # "finished", "diverged", or why it stopped early (e.g. "stopped by the time budget")
    steps: int
    total_steps: int | None
    wall_time_s: float | None  # the run's wall time, start-up and every resumed segment included
    train_time_s: float | None  # time in training steps only (see training_seconds)
    first_loss: float | None
    final_loss: float | None
    median_img_per_s: float | None  # over the logged windows after the first (allocator warm-up)
    peak_memory_mb: float | None
    device: str
    precision: str  # "fp32" or "bf16"
    precision_reason: str
    torch: str
    python: str
    finished_at: str

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict in schema order."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = SUMMARY) -> RunSummary:
        """Read a summary dict, old ones included: missing fields are None, or "" for text; unknown keys are ignored."""
        if not isinstance(data.get("status"), str) or not isinstance(data.get("steps"), int):
            raise RunDirError(f"{where}: not a run summary (needs 'status' and 'steps')")
        values = {}
        for f in dataclasses.fields(cls):
            value = data.get(f.name)
            values[f.name] = "" if value is None and f.type == "str" else value
        return cls(**values)


def summarize(
    run: Path, status: str, steps: int, total_steps: int, wall_time_s: float, images_per_step: int,
    device: str, precision: str, precision_reason: str, peak_memory_mb: float | None,
) -> RunSummary:  # fmt: skip
    """The summary of ``run`` from its metrics (first/final loss, median img/s, training time) and these facts.

    ``images_per_step`` is what the logged ``img_per_s`` counts per step (see :func:`training_seconds`).
    """
    records = [r for r in read_metrics(run) if r["step"] <= steps]
    speeds = sorted(r["img_per_s"] for r in records[1:] or records)  # the first window holds warm-up
    return RunSummary(
        status=status, steps=steps, total_steps=total_steps, wall_time_s=round(wall_time_s, 2),
        train_time_s=round(training_seconds(records, images_per_step), 2) if records else None,
        first_loss=records[0]["loss"] if records else None, final_loss=records[-1]["loss"] if records else None,
        median_img_per_s=speeds[len(speeds) // 2] if speeds else None,
        peak_memory_mb=round(peak_memory_mb, 1) if peak_memory_mb is not None else None,
        device=str(device), precision=precision, precision_reason=precision_reason, torch=torch.__version__,
        python=sys.version.split()[0], finished_at=datetime.now().isoformat(timespec="seconds"),
    )  # fmt: skip


def write_summary(run: Path, summary: RunSummary) -> None:
    """Write ``RUN/summary.json`` atomically."""
    ckpt.atomic_write_text(Path(run) / SUMMARY, json.dumps(summary.to_dict(), indent=2) + "\n")


def read_summary(run: str | Path) -> RunSummary | None:
    """``RUN/summary.json`` as a RunSummary (older files too, see :meth:`RunSummary.from_dict`); None when missing."""
    path = Path(run) / SUMMARY
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RunDirError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise RunDirError(f"{path}: not a run summary (not a JSON object)")
    return RunSummary.from_dict(data, str(path))


def is_finished(run: str | Path) -> bool:
    """Whether ``run`` has trained all its steps (its summary.json says ``finished``)."""
    summary = read_summary(run)
    return summary is not None and summary.status == "finished"


# ------------------------------------------------------------------------------------ checkpoints
def latest_checkpoint(run: str | Path) -> Path | None:
    """The newest complete checkpoint of ``run``, or None (see :func:`maelab.checkpoint.latest_checkpoint`)."""
    return ckpt.latest_checkpoint(run)


def checkpoint_step(run: str | Path) -> int:
    """The step of ``run``'s newest checkpoint; 0 when it has none."""
    found = ckpt.latest_checkpoint(run)
    return int(ckpt.load_meta(found)["step"]) if found is not None else 0

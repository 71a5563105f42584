"""Pretraining in a fresh Python process: start, resume, or stop after N steps, for the sweep and compare.

Why a process of its own: on a CPU the peak memory a run's ``summary.json`` reports is the process's
peak RSS, which never goes down; runs trained one after the other in one process would each report
the largest so far. A fresh process also inherits no allocator state, caches or threads.

Why ``subprocess`` (``python -c``) rather than ``multiprocessing`` spawn: the child gets its task as
JSON on its command line and answers with an exit code, nothing is pickled, and the parent's
``__main__`` is not re-imported in the child (spawn runs it again, so a user's script without an
``if __name__ == "__main__"`` guard would start its experiment twice).

Exit codes of the child, and what the parent raises for them:

- 0: done (the run reached its end or ``stop_after_steps``);
- 2: bad input (config, data or checkpoint): ConfigError with the child's message;
- 130: stopped by a signal after saving its checkpoint: KeyboardInterrupt;
- anything else (1: training failed, or a crash with its traceback printed): TrainingError.

Signals: the child runs in its own session, so a Ctrl-C in the terminal reaches the parent only;
the parent forwards SIGINT and SIGTERM to the child once per signal it gets (and a hang-up, the
terminal closing, as SIGTERM). The training loop saves a checkpoint at its next step on the first
signal and stops at once on the second, so a single Ctrl-C must reach it once, not twice (terminal
and parent), and a ``kill`` of the parent must reach it at all. A parent killed outright (SIGKILL)
cannot forward anything: its child trains on to its stop step or its end, saving checkpoints as usual.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from maelab import checkpoint as ckpt
from maelab import rundir
from maelab.config import Config, ConfigError, config_from_dict, validate

EXIT_OK, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 2, 130
_CHILD_CODE = "import sys; from maelab.experiments.child import main; sys.exit(main(sys.argv[1]))"
# signal the parent gets -> signal it sends the child (SIGTERM, not SIGHUP: the loop saves a checkpoint on it)
_FORWARDED = {signal.SIGINT: signal.SIGINT, signal.SIGTERM: signal.SIGTERM, signal.SIGHUP: signal.SIGTERM}


# ------------------------------------------------------------------------------------ the parent side
def train_until(
    run: Path, cfg: Config, stop_after_steps: int | None = None, isolate: bool = True, end_status: str | None = None,
    budget_s: float | None = None,
) -> None:  # fmt: skip
    """Train ``run`` (config ``cfg``) to ``stop_after_steps`` optimizer steps in total, or to its end (None).

    A run with a checkpoint is resumed from it (nothing happens when it is already that far); a start
    that died before its first checkpoint is discarded and started again (its metrics would otherwise
    be appended to). ``isolate``: in a fresh process (see the module docstring), else in this one.
    ``end_status``: a run stopped at ``stop_after_steps`` is final, and its ``summary.json`` is written
    with this status (e.g. "stopped by the time budget"); otherwise a stopped run has no summary.
    ``budget_s``: a run started here re-fits its steps once, at the end of its warm-up, to end at ``budget_s``
    seconds of training (:func:`maelab.train.pretrain`'s ``budget_s``); a resumed one continues its own schedule.
    """
    step = rundir.checkpoint_step(run) if rundir.latest_checkpoint(run) is not None else None
    if step is None:
        if run.exists():
            shutil.rmtree(run)
        start: Config | None = cfg
    elif (not rundir.is_finished(run)) if stop_after_steps is None else step < stop_after_steps:
        start = None
    else:
        if end_status is not None and rundir.read_summary(run) is None:  # stopped there before writing it
            write_end_summary(run, end_status, peak_memory_mb=None)
        return
    budget_s = budget_s if start is not None else None
    (pretrain_process if isolate else pretrain_here)(run, start, stop_after_steps, end_status, budget_s)


def pretrain_process(
    run: Path, cfg: Config | None, stop_after_steps: int | None, end_status: str | None = None,
    budget_s: float | None = None,
) -> None:  # fmt: skip
    """Start (``cfg``) or resume (``cfg=None``) ``run`` in a fresh Python process and wait for it;
    its exit code is raised as an exception (see the module docstring)."""
    spec: dict[str, Any] = {
        "config": cfg.to_dict() if cfg is not None else None, "resume": None if cfg is not None else str(run),
        "stop_after_steps": stop_after_steps, "end_status": end_status, "budget_s": budget_s,
    }  # fmt: skip
    # Handlers can only be installed in the main thread; elsewhere the child stays in our session
    # so that a Ctrl-C in the terminal still reaches it.
    forward = threading.current_thread() is threading.main_thread()
    with tempfile.TemporaryDirectory(prefix="maelab-child-") as tmp:
        spec["error_file"] = str(Path(tmp) / "error.txt")
        proc = subprocess.Popen([sys.executable, "-c", _CHILD_CODE, json.dumps(spec)], start_new_session=forward)
        rc, signalled = _wait_forwarding(proc) if forward else (proc.wait(), False)
        error = Path(spec["error_file"]).read_text().strip() if Path(spec["error_file"]).is_file() else ""
    raise_for_exit_code(rc, run, error)
    if signalled:  # the run ended before it saw the signal; the user still asked us to stop
        raise KeyboardInterrupt


def _wait_forwarding(proc: subprocess.Popen) -> tuple[int, bool]:
    """Wait for ``proc``, forwarding each signal of :data:`_FORWARDED` we get to it; (exit code, whether one came)."""
    got: list[int] = []

    def forward(signum: int, frame: Any) -> None:
        got.append(signum)
        if proc.poll() is None:
            proc.send_signal(_FORWARDED[signum])

    old = {sig: signal.signal(sig, forward) for sig in _FORWARDED}
    try:
        return proc.wait(), bool(got)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def raise_for_exit_code(rc: int, run: Path, error: str = "") -> None:
    """Nothing for exit code 0; ConfigError (2), KeyboardInterrupt (130) or TrainingError (others)."""
    from maelab.train import TrainingError

    if rc == EXIT_OK:
        return
    if rc == EXIT_INTERRUPTED:
        raise KeyboardInterrupt
    if rc == EXIT_BAD_INPUT:
        raise ConfigError(f"pretraining {run}: {error or 'bad input (see above)'}")
    raise TrainingError(
        f"pretraining {run} failed in its child process (exit code {rc}): {error or 'see the error printed above'}; "
        "fix the cause and re-run the same command: it continues where it stopped"
    )


# ------------------------------------------------------------------------------------ the work
def pretrain_here(
    run: Path, cfg: Config | None, stop_after_steps: int | None, end_status: str | None = None,
    budget_s: float | None = None,
) -> None:  # fmt: skip
    """What the child does, in this process: start (``cfg``; with ``budget_s``, re-fitted once to it) or resume
    (``cfg=None``) ``run``.

    Raises KeyboardInterrupt when a signal (not ``stop_after_steps``) stopped it: its checkpoint is saved.
    """
    from maelab.train import pretrain

    if cfg is None:
        pretrain(resume=run, stop_after_steps=stop_after_steps)
    else:
        pretrain(cfg, stop_after_steps=stop_after_steps, budget_s=budget_s)
    meta = ckpt.load_meta(run)
    if meta.get("reason") == "interrupted" and meta["step"] != stop_after_steps:
        raise KeyboardInterrupt
    if end_status is not None and meta["step"] == stop_after_steps:
        from maelab.runtime import peak_memory_mb, resolve_device

        write_end_summary(run, end_status, peak_memory_mb(resolve_device(rundir.load_config(run).train.device)))


def write_end_summary(run: Path, status: str, peak_memory_mb: float | None) -> None:
    """``RUN/summary.json`` (the one schema, :func:`maelab.rundir.summarize`) of a run ended at its newest
    checkpoint before its schedule's end; the training loop writes none for a run it stopped."""
    from maelab.runtime import choose_precision, resolve_device

    cfg = rundir.load_config(run)
    meta = ckpt.load_meta(run)
    device = resolve_device(cfg.train.device)
    precision = choose_precision(cfg.train.precision, device)
    summary = rundir.summarize(
        run, status, meta["step"], meta["total_steps"], meta.get("wall_time", 0.0),
        cfg.train.images_per_step(meta.get("world_size", 1)), str(device),
        precision.name, precision.reason, peak_memory_mb,
    )  # fmt: skip
    rundir.write_summary(run, summary)


def main(spec_json: str) -> int:
    """Entry point of the child process: ``{"config": dict | None, "resume": str | None, "stop_after_steps":
    int | None, "end_status": str | None, "budget_s": float | None, "error_file": str}`` -> exit code (see the
    module docstring). The message of an error is written to ``error_file`` for the parent to raise."""
    from maelab.data import DataError
    from maelab.train import TrainingError

    spec = json.loads(spec_json)
    try:
        cfg = None
        if spec["config"] is not None:
            cfg = config_from_dict(spec["config"], "pretraining child")
            validate(cfg)
        run = Path(spec["resume"] or cfg.train.out)
        pretrain_here(run, cfg, spec["stop_after_steps"], spec.get("end_status"), spec.get("budget_s"))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except (ConfigError, DataError, ckpt.CheckpointError, TrainingError) as e:
        Path(spec["error_file"]).write_text(str(e))
        return 1 if isinstance(e, TrainingError) else EXIT_BAD_INPUT
    return EXIT_OK

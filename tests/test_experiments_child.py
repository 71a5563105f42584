"""The pieces both experiments share: pretraining in a child process (exit codes, signals, a run cut
by a budget) and the resumable-stage file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from maelab import rundir
from maelab.config import ConfigError, resolve_config
from maelab.experiments import child
from maelab.experiments.stages import Stages, computed_span
from maelab.train import TrainingError

from .conftest import TINY_MODEL, write_image_folder


def tiny_config(folder: Path, out: Path):  # noqa: ANN201 - a Config
    return resolve_config(
        None,
        {"model": {**TINY_MODEL, "img_size": 16}, "data": {"data_dir": str(folder)},
         "train": {"epochs": 2, "batch_size": 8, "log_every": 1, "quiet": True, "device": "cpu", "out": str(out)}},
        "test",
    )  # fmt: skip


def test_exit_codes_become_exceptions(tmp_path: Path) -> None:
    child.raise_for_exit_code(0, tmp_path)
    with pytest.raises(ConfigError, match="--data-dir nowhere"):
        child.raise_for_exit_code(2, tmp_path, "--data-dir nowhere: no such directory")
    with pytest.raises(KeyboardInterrupt):
        child.raise_for_exit_code(130, tmp_path)
    with pytest.raises(TrainingError, match=r"exit code 1\): loss is nan.*re-run the same command"):
        child.raise_for_exit_code(1, tmp_path, "loss is nan")
    with pytest.raises(TrainingError, match=r"exit code -9\): see the error printed above"):
        child.raise_for_exit_code(-9, tmp_path)  # killed (e.g. out of memory): no message of its own


def test_bad_input_in_the_child_reaches_the_parent(tmp_path: Path) -> None:
    folder = write_image_folder(tmp_path / "data", per_class=2, size=16)
    cfg = tiny_config(folder, tmp_path / "run")
    cfg.data.data_dir = str(tmp_path / "missing")
    spec = {"config": cfg.to_dict(), "resume": None, "stop_after_steps": None, "error_file": str(tmp_path / "e")}
    assert child.main(json.dumps(spec)) == child.EXIT_BAD_INPUT  # what the child process exits with
    assert "--data-dir" in (tmp_path / "e").read_text()
    with pytest.raises(ConfigError, match=r"pretraining .*run: --data-dir .*missing"):
        child.pretrain_process(tmp_path / "run", cfg, None)  # a real child process


def test_a_signal_to_the_parent_reaches_the_child_once(tmp_path: Path) -> None:
    """The child runs in its own session: a Ctrl-C reaches it through the parent only, once."""
    script = (
        "import signal, sys, time\n"
        "got = []\n"
        "signal.signal(signal.SIGINT, lambda *a: got.append(1))\n"
        "print('ready', flush=True)\n"
        "while not got: time.sleep(0.01)\n"
        "time.sleep(0.3)\n"  # time for a second signal to arrive, if one were sent
        "sys.exit(100 + len(got))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"

    def interrupt() -> None:  # once the parent waits with its forwarding handler
        while signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt).start()
    rc, signalled = child._wait_forwarding(proc)
    assert (rc, signalled) == (101, True)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_a_run_cut_by_a_budget_gets_a_full_summary(tmp_path: Path) -> None:
    folder = write_image_folder(tmp_path / "data", per_class=10, size=16)
    run = tmp_path / "run"
    cfg = tiny_config(folder, run)
    child.train_until(run, cfg, 2, isolate=False, end_status="stopped by the time budget")
    summary = rundir.read_summary(run)
    assert summary is not None and summary.status == "stopped by the time budget"
    assert (summary.steps, summary.total_steps, summary.device, summary.precision) == (2, 4, "cpu", "fp32")
    assert summary.peak_memory_mb and summary.train_time_s is not None and summary.final_loss is not None
    # Stopped there before the summary was written: a re-run writes it without training again.
    (run / rundir.SUMMARY).unlink()
    child.train_until(run, cfg, 2, isolate=False, end_status="stopped by the time budget")
    again = rundir.read_summary(run)
    assert again is not None and (again.steps, again.total_steps, again.peak_memory_mb) == (2, 4, None)
    # Without end_status a run stopped mid-way has no summary; to its end it finishes.
    child.train_until(run, cfg, None, isolate=False)
    assert rundir.is_finished(run) and rundir.checkpoint_step(run) == 4


def test_stages_are_kept_and_settings_checked(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    stages = Stages(path, {"options": {"a": 1}}, "a test", option_defaults={"options": {"a": 1, "b": 2}})
    assert stages.once("first", lambda: {"x": 1}) == {"x": 1}
    assert stages.once("first", lambda: pytest.fail("ran twice")) == {"x": 1}
    assert json.loads(path.read_text())["stages"] == {"first": {"x": 1}}
    again = Stages(path, {"options": {"a": 1, "b": 2}}, "a test", option_defaults={"options": {"a": 1, "b": 2}})
    assert again.get("first") == {"x": 1}  # "b" added since: it takes its default
    with pytest.raises(ConfigError, match=r"holds a test with other settings \(options\.b: 2 before, 3 now"):
        Stages(path, {"options": {"a": 1, "b": 3}}, "a test", option_defaults={"options": {"a": 1, "b": 2}})
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        Stages(path, {}, "a test")


def test_stages_record_when_and_at_which_commit_each_was_computed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each stage keeps the call that computed it, when it finished and the git commit, so a report can say when its
    numbers were computed (not only when it was written); a stage of an older maelab has no such record."""
    monkeypatch.setattr("maelab.runtime.git_commit", lambda: "abc123")
    path = tmp_path / "state.json"
    stages = Stages(path, {}, "a test")
    stages.put("first", 1)
    state = json.loads(path.read_text())
    record = state["computed"]["first"]
    assert state["stages"] == {"first": 1} and record["call"] == stages.call and record["git_commit"] == "abc123"
    state["stages"]["older"] = 2  # recorded by a maelab that kept no "computed"
    path.write_text(json.dumps(state))
    again = Stages(path, {}, "a test")
    assert again.computed() == {"first": record, "older": None}
    span = f"stages computed {record['finished']} - {record['finished']} (git commit abc123)"
    assert computed_span(again.computed()) == span + "; 1 of 2 stages older, undated"
    assert computed_span({"older": None}) is None and computed_span(None) is None


def test_stages_keep_their_records_under_the_key_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The compare's state file is its metrics.json: its records go under ``stages_computed`` (the key of the sweep's
    metrics.json), and those an older maelab kept under ``computed`` are moved there, not lost."""
    monkeypatch.setattr("maelab.runtime.git_commit", lambda: "abc123")
    path = tmp_path / "metrics.json"
    Stages(path, {}, "a test").put("first", 1)  # kept under "computed"
    stages = Stages(path, {}, "a test", computed_key="stages_computed")
    first = stages.computed()["first"]
    assert first is not None and first["git_commit"] == "abc123"
    stages.put("second", 2)
    state = json.loads(path.read_text())
    assert "computed" not in state and state["stages_computed"]["first"] == first
    assert set(state["stages_computed"]) == {"first", "second"} and state["stages"] == {"first": 1, "second": 2}

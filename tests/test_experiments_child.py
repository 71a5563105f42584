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
from maelab.experiments.seeds import computed_text
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


AMD, INTEL = "AMD EPYC 7763 64-Core Processor family 25 model 1", "Intel(R) Xeon(R) Platinum 8480+ family 6 model 143"


def test_stages_record_their_machine_and_the_span_warns_where_several(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each stage records the machine it ran on (for the experiment's device): stages resumed on another machine are
    flagged by the span, since their timings are not comparable; stages of one machine add nothing to it."""
    monkeypatch.setattr("maelab.runtime.git_commit", lambda: "abc123")
    devices: list[str] = []

    def run_on(machine: str) -> None:  # a fake machine_text: no dependence on this machine's CPU
        monkeypatch.setattr("maelab.runtime.machine_text", lambda device: devices.append(device) or machine)

    path = tmp_path / "state.json"
    run_on(AMD)
    stages = Stages(path, {}, "a test", device="cuda:1")
    for name in ("pretrain:a", "pretrain:b", "eval:a", "eval:b"):
        stages.put(name, 1)
    assert json.loads(path.read_text())["computed"]["eval:b"]["machine"] == AMD and set(devices) == {"cuda:1"}
    span = computed_span(stages.computed())
    assert span is not None and span.endswith("(git commit abc123)")  # one machine: nothing more

    run_on(INTEL)  # resumed on another machine
    again = Stages(path, {}, "a test")
    again.put("probe:a", 2)
    stored = json.loads(path.read_text())["computed"]
    assert stored["pretrain:a"]["machine"] == AMD and stored["probe:a"]["machine"] == INTEL
    computed = again.computed()
    times = sorted(c["finished"] for c in computed.values() if c)
    assert computed_span(computed) == (
        f"stages computed {times[0]} - {times[-1]} (git commit abc123); **stages ran on 2 machines: {AMD} (stages "
        f"pretrain:a, pretrain:b, eval:a and 1 more), {INTEL} (stage probe:a)**: timings across them are not "
        "comparable"
    )


def test_the_span_reads_records_without_a_machine() -> None:
    """Records of an older maelab (no machine; None: undated) read as before; where some name a machine and other dated
    ones do not, the span says how many name one (and which, where one); the seeds reports' text has the same."""

    def record(hour: int, machine: str = "") -> dict[str, str]:
        done = {"call": "2026-12-01T08:00:00", "finished": f"2026-12-01T{hour:02d}:00:00", "git_commit": "c9"}
        return {**done, "machine": machine} if machine else done

    span = "stages computed 2026-12-01T09:00:00 - 2026-12-01T12:00:00 (git commit c9)"
    undated = "; 1 of 3 stages older, undated"
    assert computed_span({"a": record(9), "b": record(12), "c": None}) == span + undated
    assert computed_span({"a": record(9, AMD), "b": record(12, AMD), "c": None}) == span + undated
    partly = {"a": record(9), "b": record(12, AMD)}
    assert computed_span(partly) == f"{span}; machine recorded for 1 of 2 stages only: {AMD}"
    several = {"a": record(9, AMD), "b": record(10, INTEL), "c": record(11, AMD), "d": record(12, "Apple M2"),
               "e": record(11)}  # fmt: skip
    warning = (
        f"{span}; **stages ran on 3 machines: {AMD} (stages a, c), {INTEL} (stage b), Apple M2 (stage d)**: timings "
        "across them are not comparable; machine recorded for 4 of 5 stages only"
    )
    assert computed_span(several) == warning
    assert computed_text({"stages_computed": several}) == f"; {warning}"

"""maelab.rundir: the one reader/writer of a run's config.json, metrics.jsonl and summary.json."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from maelab import rundir
from maelab.checkpoint import save_checkpoint
from maelab.config import Config, ConfigError

FIXTURE_RUN = Path(__file__).parent / "fixtures" / "pre_layout" / "mae"


def write_metrics(run: Path, records: list[dict]) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / rundir.METRICS).write_text("".join(json.dumps(r) + "\n" for r in records))


def record(step: int, loss: float, img_per_s: float) -> dict:
    return {"step": step, "epoch": step / 10, "loss": loss, "lr": 1e-3, "img_per_s": img_per_s, "wall_time": step}


# ------------------------------------------------------------------------------------ config
def test_config_round_trips_and_a_missing_one_names_the_file(tmp_path: Path) -> None:
    cfg = Config()
    cfg.train.lr = 0.0123
    rundir.save_config(tmp_path, cfg)
    assert rundir.load_config(tmp_path).to_dict() == cfg.to_dict()
    with pytest.raises(ConfigError, match="config.json"):
        rundir.load_config(tmp_path / "nothing")
    (tmp_path / rundir.CONFIG).write_text("{not json")
    with pytest.raises(ConfigError, match="config.json"):
        rundir.load_config(tmp_path)


def test_new_run_dir_refuses_an_out_that_holds_a_run(tmp_path: Path) -> None:
    cfg = Config()
    cfg.train.out = str(tmp_path / "run")
    assert rundir.new_run_dir(cfg) == tmp_path / "run" and (tmp_path / "run").is_dir()
    assert rundir.latest_checkpoint(tmp_path / "run") is None and rundir.checkpoint_step(tmp_path / "run") == 0
    save_checkpoint(tmp_path / "run", "step_00000007", {"w": torch.zeros(1)}, {"step": 7}, {})
    assert rundir.checkpoint_step(tmp_path / "run") == 7
    assert rundir.latest_checkpoint(tmp_path / "run") == tmp_path / "run" / "checkpoints" / "step_00000007"
    with pytest.raises(ConfigError, match="--resume"):
        rundir.new_run_dir(cfg)


# ------------------------------------------------------------------------------------ metrics
def test_metrics_log_appends_flushed_records_and_read_metrics_of_a_missing_file(tmp_path: Path) -> None:
    assert rundir.read_metrics(tmp_path) == []
    with rundir.MetricsLog(tmp_path) as log:
        log.append(record(1, 2.0, 10.0))
        assert [r["step"] for r in rundir.read_metrics(tmp_path)] == [1]  # flushed, before close
        log.append(record(2, 1.5, 10.0))
    log = rundir.MetricsLog(tmp_path)  # a resumed run appends to the same file
    log.append(record(3, 1.2, 10.0))
    log.close()
    log.close()  # idempotent
    assert [r["step"] for r in rundir.read_metrics(tmp_path)] == [1, 2, 3]
    off = rundir.MetricsLog(tmp_path / "other", enabled=False)  # e.g. a DDP process other than rank 0
    off.append(record(1, 2.0, 10.0))
    off.close()
    assert not (tmp_path / "other").exists()


def test_read_metrics_drops_a_torn_last_line_only(tmp_path: Path) -> None:
    write_metrics(tmp_path, [record(1, 2.0, 10.0)])
    with open(tmp_path / rundir.METRICS, "a") as f:
        f.write('{"step": 2, "lo')  # killed mid-write
    assert [r["step"] for r in rundir.read_metrics(tmp_path)] == [1]
    (tmp_path / rundir.METRICS).write_text('{"step": 1, "lo\n' + json.dumps(record(2, 1.0, 1.0)) + "\n")
    with pytest.raises(rundir.RunDirError, match="line 1"):
        rundir.read_metrics(tmp_path)


def test_truncate_keeps_records_up_to_the_step(tmp_path: Path) -> None:
    rundir.truncate_metrics(tmp_path, 3)  # no file: nothing to do, nothing created
    assert not (tmp_path / rundir.METRICS).exists()
    write_metrics(tmp_path, [record(s, 1.0 / s, 10.0) for s in range(1, 6)])
    rundir.truncate_metrics(tmp_path, 3)
    assert [r["step"] for r in rundir.read_metrics(tmp_path)] == [1, 2, 3]
    rundir.truncate_metrics(tmp_path, 0)
    assert rundir.read_metrics(tmp_path) == []


def test_training_seconds_hand_computed() -> None:
    # windows: steps 0-2 at 10 img/s, 2-5 at 30 img/s, 5-6 without a rate; 4 images per step
    records = [record(2, 1.0, 10.0), record(5, 1.0, 30.0), record(6, 1.0, 0.0)]
    assert rundir.training_seconds(records, 4) == pytest.approx(2 * 4 / 10 + 3 * 4 / 30)  # 0.8 + 0.4
    assert rundir.training_seconds(records, 4, upto_step=2) == pytest.approx(0.8)
    assert rundir.training_seconds(records, 4, upto_step=4) == pytest.approx(0.8)
    assert rundir.training_seconds([], 4) == 0.0
    # a step that does not advance (resumed with another world size, at an earlier step) adds nothing
    assert rundir.training_seconds([record(4, 1.0, 8.0), record(4, 1.0, 8.0)], 2) == pytest.approx(1.0)


# ------------------------------------------------------------------------------------ summary
def summary_of(run: Path) -> rundir.RunSummary:
    write_metrics(run, [record(2, 3.0, 100.0), record(4, 2.0, 40.0), record(6, 1.5, 20.0), record(8, 1.0, 30.0)])
    return rundir.summarize(
        run, "finished", 8, 8, 12.345, 4, "cpu", "fp32", "auto: no native bf16", peak_memory_mb=100.04
    )


def test_summarize_from_metrics_and_the_schema_round_trips(tmp_path: Path) -> None:
    summary = summary_of(tmp_path)
    assert (summary.first_loss, summary.final_loss) == (3.0, 1.0)
    assert summary.median_img_per_s == 30.0  # of 40, 20, 30: the first window (100 img/s) is left out
    assert summary.train_time_s == pytest.approx(round(2 * 4 / 100 + 2 * 4 / 40 + 2 * 4 / 20 + 2 * 4 / 30, 2))
    assert (summary.wall_time_s, summary.peak_memory_mb, summary.total_steps) == (12.35, 100.0, 8)
    assert rundir.read_summary(tmp_path) is None and not rundir.is_finished(tmp_path)
    rundir.write_summary(tmp_path, summary)
    on_disk = json.loads((tmp_path / rundir.SUMMARY).read_text())
    assert list(on_disk) == [f.name for f in dataclasses.fields(rundir.RunSummary)]
    assert rundir.read_summary(tmp_path) == summary
    assert rundir.is_finished(tmp_path)
    rundir.write_summary(tmp_path, dataclasses.replace(summary, status="diverged"))
    assert not rundir.is_finished(tmp_path)


def test_summary_of_a_run_without_metrics(tmp_path: Path) -> None:
    summary = rundir.summarize(tmp_path, "diverged", 0, 10, 1.0, 4, "cpu", "fp32", "", None)
    assert summary.first_loss is summary.train_time_s is summary.median_img_per_s is summary.peak_memory_mb is None


def test_summaries_written_before_this_schema_still_read(tmp_path: Path) -> None:
    old = rundir.read_summary(FIXTURE_RUN)  # the committed pre-layout run
    assert old is not None and old.status == "finished" and old.total_steps == 6 and old.precision == "fp32"
    assert old.train_time_s is None and old.precision_reason == ""
    # the old loop's summary, by hand
    loop = {"status": "finished", "steps": 6, "total_steps": 6, "wall_time_s": 0.23, "final_loss": 1.37,
            "first_loss": 1.48, "median_img_per_s": 289.43, "peak_memory_mb": 953.6, "device": "cpu",
            "precision": "fp32", "torch": "2.5.1", "python": "3.11.7", "finished_at": "2026-11-30T03:23:45"}  # fmt: skip
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / rundir.SUMMARY).write_text(json.dumps(loop))
    a = rundir.read_summary(tmp_path / "a")
    assert a is not None and (a.wall_time_s, a.final_loss, a.train_time_s, a.precision_reason) == (0.23, 1.37, None, "")
    assert rundir.is_finished(tmp_path / "a")
    # the old compare cut-summary: no total_steps, device null
    cut = {"status": "stopped by the time budget", "steps": 4, "wall_time_s": 2.0, "first_loss": 2.0,
           "final_loss": 1.0, "median_img_per_s": 50.0, "peak_memory_mb": None, "device": None}  # fmt: skip
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / rundir.SUMMARY).write_text(json.dumps(cut))
    b = rundir.read_summary(tmp_path / "b")
    assert b is not None and (b.total_steps, b.device, b.torch, b.steps) == (None, "", "", 4)
    assert not rundir.is_finished(tmp_path / "b")


def test_a_file_that_is_no_summary_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / rundir.SUMMARY).write_text(json.dumps({"loss": 1.0}))
    with pytest.raises(rundir.RunDirError, match="summary.json"):
        rundir.read_summary(tmp_path)
    (tmp_path / rundir.SUMMARY).write_text("{")
    with pytest.raises(rundir.RunDirError, match="summary.json"):
        rundir.read_summary(tmp_path)

"""Time budgets: steps fitted to a budget from the training loop's measured speed, and ``--minutes``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from maelab import budget
from maelab.budget import Refit, calibration_length, loop_speed, planned_steps, refit_steps
from maelab.config import ConfigError
from maelab.rundir import load_config, read_metrics, read_summary

from .conftest import train_tiny_run


def test_planned_steps_fill_the_budget() -> None:
    assert planned_steps(240.0, 140.0, 128) == 262  # 240 s x 140 img/s / 128 images a step
    assert planned_steps(240.0, 140.0, 128, overhead_s=8.0) == 254  # the run's slower first steps count too
    assert planned_steps(1.0, 10.0, 256) == 1  # at least one step
    with pytest.raises(ValueError):
        planned_steps(240.0, 0.0, 128)


def test_loop_speed_times_the_windows_after_the_warm_up() -> None:
    # A log record every 5 steps of 64 images: the first window (cold start, 3.2 s) is the warm-up.
    records = [{"step": 5, "img_per_s": 100.0}] + [{"step": s, "img_per_s": 160.0} for s in (10, 15, 20)]
    speed = loop_speed(records, 64, skip_steps=2)
    assert (speed["skipped_steps"], speed["timed_steps"], speed["timed_seconds"]) == (5, 15, 6.0)
    assert speed["img_per_s"] == 160.0
    assert speed["start_overhead_s"] == pytest.approx(1.2)  # 3.2 s for 5 steps that take 2.0 s at 160 img/s
    # The fake measured speed fixes the plan: 180 s, less the start overhead, at 160 img/s.
    assert planned_steps(180.0, speed["img_per_s"], 64, speed["start_overhead_s"]) == round(178.8 * 160 / 64)
    assert loop_speed([{"step": 1, "img_per_s": 50.0}], 64)["img_per_s"] == 0.0  # nothing after the warm-up
    # The next calibration run: warm-up + a window + the steps of min_seconds at the last speed, a tenth to spare.
    assert calibration_length({}, 5, 5.0, 5) == 2 + 5 + 5
    assert calibration_length(speed, 5, 10.0, 5) == 2 + 5 + 28  # 2.5 steps/s x 10 s x 1.1 = 27.5


def test_minutes_fits_the_steps_from_a_calibration_of_the_same_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(budget, "MIN_CALIBRATION_SECONDS", 0.3)  # a 6 s budget times 0.3 s (5% is less)
    calibrations: list[dict] = []
    real_measure = budget.measure_speed

    def spy(cfg, scratch, min_steps, min_seconds, train):  # type: ignore[no-untyped-def]
        calibrations.append({"cfg": cfg, "scratch": scratch, "min_seconds": min_seconds})
        return real_measure(cfg, scratch, min_steps, min_seconds, train)

    monkeypatch.setattr(budget, "measure_speed", spy)
    run = train_tiny_run(tmp_path, per_class=20, minutes=0.1, epochs=100)
    (calib,) = calibrations
    assert calib["min_seconds"] == pytest.approx(0.3) and calib["cfg"].train.minutes == 0.0 and calib["cfg"].train.quiet
    assert not calib["scratch"].exists()  # the calibration run is not kept
    plan = json.loads((run / "budget.json").read_text())
    # The run trains exactly the planned steps (not --epochs 100), planned from the measured speed and batch 4.
    assert plan["budget_s"] == 6.0 and plan["steps_run"] >= 5 and plan["img_per_s"] > 0
    assert plan["planned_steps"] == planned_steps(6.0, plan["img_per_s"], 4, plan["start_overhead_s"])
    config = json.loads((run / "config.json").read_text())["train"]
    assert config["steps"] == plan["planned_steps"] and config["minutes"] == 0.1
    summary = read_summary(run)
    assert summary is not None and summary.steps == plan["planned_steps"]
    assert read_metrics(run)[0]["step"] == 1  # a run of its own, from step 1, not the calibration's continuation
    assert f"-> {plan['planned_steps']} steps" in capsys.readouterr().out


def test_refit_ends_the_run_at_the_budget_from_its_own_speed() -> None:
    # 18 s trained by step 30, 2 steps/s since: the other 82 s of a 100 s budget hold 164 steps more.
    assert refit_steps(100.0, 18.0, 30, 2.0) == 194
    assert refit_steps(100.0, 150.0, 30, 2.0) == 31  # over budget already: stop at the next step
    with pytest.raises(ValueError):
        refit_steps(100.0, 18.0, 30, 0.0)
    refit = Refit(100.0, at_step=30, start=0.0)
    assert refit.watch(1, now=0.5) is None and refit.watch(2, now=4.0) is None  # the clock starts at step 2
    fit = refit.watch(30, now=18.0)  # 28 steps in 14 s
    assert fit == {"at_step": 30, "trained_s": 18.0, "timed_seconds": 14.0, "steps_per_s": 2.0, "planned_steps": 194}
    short = Refit(100.0, at_step=30, start=0.0)
    short.watch(2, now=4.0)
    fit = short.watch(30, now=9.0)
    assert fit is not None and fit["planned_steps"] is None  # 5 s timed (< MIN_REFIT_SECONDS): the plan stands


@pytest.mark.parametrize(
    ("planned", "warmup"),
    # A calibration that plans 4,000 steps for 3 s (a tiny step takes ~10 ms); one that plans 32 and so caps the
    # warm-up at a quarter of them, 8 steps.
    [(4000, 15), (32, 8)],
    ids=["shorten", "lengthen-capped-warmup"],
)
def test_minutes_refits_the_steps_at_the_end_of_warm_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, planned: int, warmup: int
) -> None:
    monkeypatch.setattr(budget, "MIN_CALIBRATION_SECONDS", 0.3)
    monkeypatch.setattr(budget, "MIN_REFIT_SECONDS", 0.0)
    real_measure = budget.measure_speed

    def wrong(*args, **kwargs):  # type: ignore[no-untyped-def]
        speed = real_measure(*args, **kwargs)
        return {**speed, "img_per_s": planned * 4 / 3.0, "start_overhead_s": 0.0}  # batch 4, 3 s

    monkeypatch.setattr(budget, "measure_speed", wrong)
    # 40 images of batch 4: 10 steps an epoch; 1.5 warm-up epochs = 15 steps, so the re-fit comes mid-epoch.
    run = train_tiny_run(tmp_path, per_class=20, minutes=0.05, epochs=100, warmup_epochs=1.5)
    plan = json.loads((run / "budget.json").read_text())
    fit = plan["refit"]
    assert plan["planned_steps"] == planned and fit["at_step"] == warmup
    assert fit["planned_steps"] == pytest.approx(refit_steps(3.0, fit["trained_s"], warmup, fit["steps_per_s"]), abs=1)
    assert (fit["planned_steps"] > planned) == (planned == 32)
    steps = fit["planned_steps"]
    summary = read_summary(run)
    assert summary is not None and summary.steps == summary.total_steps == steps
    resumed = load_config(run).train  # what --resume would continue: the re-fitted schedule, the same warm-up
    assert resumed.steps == steps and resumed.warmup_steps(10, steps) == warmup
    # Step for step the run is the one a plain --steps run of that length and warm-up trains: lr, data, loss.
    plain = train_tiny_run(tmp_path, out=tmp_path / "plain", steps=steps, fixed_warmup_steps=warmup, warmup_epochs=1.5)
    got, want = read_metrics(run), read_metrics(plain)
    assert [(r["step"], r["lr"]) for r in got] == [(r["step"], r["lr"]) for r in want]
    assert [r["loss"] for r in got] == pytest.approx([r["loss"] for r in want], rel=1e-5)


def test_minutes_with_steps_or_a_negative_value_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--steps 7 was given too"):
        train_tiny_run(tmp_path, minutes=1.0, steps=7)
    with pytest.raises(ConfigError, match="--minutes must be >= 0, got -1"):
        train_tiny_run(tmp_path, minutes=-1.0)
    with pytest.raises(ConfigError, match="--fixed-warmup-steps must be >= 0, got -3"):
        train_tiny_run(tmp_path, fixed_warmup_steps=-3)
    assert not (tmp_path / "run").exists()  # refused before anything was written

"""The recipe search's one re-fit: a candidate's run, given the budget, re-fits its calibrated steps at the end
of its lr warm-up from its own speed (as ``pretrain --minutes``), records it in ``RUN/budget.json`` and in its
stage record, reports it, and resumes on the re-fitted schedule without the "delete it" refusal."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from maelab import budget, rundir
from maelab.config import ConfigError, RecipeCandidate
from maelab.experiments import child, recipe
from maelab.experiments.recipe_summary import refit_lines, refit_note
from maelab.optim import lr_schedule

from .conftest import write_image_folder
from .test_recipe import HOLDOUT, PER_CLASS, tiny_plan

# 32 pretraining images of batch 4: 8 steps an epoch, so a 1-epoch warm-up is 8 steps (of a run of >= 32).
WARM = RecipeCandidate("w", "batch 4, lr 1e-3, 1-epoch warm-up", {"train": {"batch_size": 4, "lr": 1e-3,
                                                                             "warmup_epochs": 1.0}})  # fmt: skip
WARMUP = 8


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_image_folder(tmp_path / "data", per_class=PER_CLASS, size=16)


def calibration(plan: recipe.RecipePlan, planned: int) -> dict:
    """The fields of a calibration stage that the pretraining stage reads."""
    return {"budget_s": plan.budget_s, "planned_steps": planned, "train_images": 2 * PER_CLASS - HOLDOUT}


def test_a_candidates_run_refits_its_steps_at_the_end_of_its_warm_up(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(budget, "MIN_REFIT_SECONDS", 0.0)  # the tiny warm-up takes a fraction of a second
    plan = tiny_plan(folder, tmp_path / "out", (WARM,))
    # A calibration far off: 2,000 steps for the 0.6 s budget (a tiny step takes milliseconds, not 0.3 ms).
    record = recipe.pretrain(plan, WARM, calibration(plan, 2000))
    run = plan.run_dir(WARM)
    given = budget.read_budget(run)
    assert given is not None and (given["budget_s"], given["planned_steps"]) == (plan.budget_s, 2000)
    fit = given["refit"]
    steps = fit["planned_steps"]  # the re-fit from the run's own speed
    assert fit["at_step"] == WARMUP and steps is not None and WARMUP < steps < 2000
    summary = rundir.read_summary(run)
    assert summary is not None and summary.steps == summary.total_steps == steps
    own = rundir.load_config(run).train  # what a resume continues: the re-fitted steps, the warm-up it trained
    assert (own.steps, own.fixed_warmup_steps) == (steps, WARMUP)
    # The stage record: the steps done, the run's own warm-up, and the re-fit (planned before, steps after, where).
    assert (record["steps"], record["warmup_steps"]) == (steps, WARMUP)
    assert record["refit"] == {"at_step": WARMUP, "planned_steps": 2000, "steps": steps, "too_short": False,
                               "steps_per_s": fit["steps_per_s"], "timed_seconds": fit["timed_seconds"]}  # fmt: skip
    note = refit_note(record)
    assert note == f"planned 2000 -> {steps} at step {WARMUP}"
    (line,) = refit_lines([{"candidate": "w", "refit": note}])
    assert line.startswith("Steps re-fitted once, at the end of the warm-up") and f"`w` {note}." in line
    # A finished re-fitted run is read back, not refused as "a run of other steps than calibrated".
    assert recipe.pretrain(plan, WARM, calibration(plan, 2000)) == record

    # Without a warm-up to time the plan stands; a stage record of an older search (no "refit") reports as before.
    assert refit_note({"refit": None, "warmup_steps": 0}) == "none (a warm-up of 0 steps: the plan stood)"
    assert refit_note({k: v for k, v in record.items() if k != "refit"}) is None
    assert refit_lines([{"candidate": "old", "refit": None}]) == []
    # --no-refit: the calibrated steps, no budget.json, a record as before.
    old = dataclasses.replace(plan, options=dataclasses.replace(plan.options, refit=False, out=str(tmp_path / "old")))
    record = recipe.pretrain(old, WARM, calibration(old, 12))
    assert record["steps"] == 12 and "refit" not in record and budget.read_budget(old.run_dir(WARM)) is None


def test_a_refitted_run_resumes_on_its_refitted_schedule(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(budget, "MIN_REFIT_SECONDS", 0.0)
    monkeypatch.setattr(budget, "refit_steps", lambda budget_s, trained_s, step, steps_per_s: 20)  # its own speed
    plan = tiny_plan(folder, tmp_path / "out", (WARM,))
    calib, run = calibration(plan, 40), plan.run_dir(WARM)
    # Stopped after the re-fit (40 planned -> 20), as an interrupted search would be.
    child.train_until(run, plan.config(WARM, 40), 12, isolate=False, budget_s=calib["budget_s"])
    assert rundir.checkpoint_step(run) == 12 and not rundir.is_finished(run)
    assert rundir.load_config(run).train.steps == 20
    # Another plan is still refused: the run is not of the steps calibrated now.
    with pytest.raises(ConfigError, match=r"holds a run of 20 steps \(re-fitted from 40\), not the 30 calibrated"):
        recipe.pretrain(plan, WARM, calibration(plan, 30))
    record = recipe.pretrain(plan, WARM, calib)  # its own plan: resumed to the end of the re-fitted schedule
    assert record["steps"] == 20 and record["refit"]["planned_steps"] == 40 and record["refit"]["steps"] == 20
    records = rundir.read_metrics(run)
    assert [r["step"] for r in records] == list(range(1, 21))
    t = rundir.load_config(run).train
    lrs = lr_schedule(t.peak_lr(), t.min_lr, 20, WARMUP).tolist()  # the warm-up trained, then the cosine over 20
    assert [r["lr"] for r in records] == pytest.approx(lrs)

    # budget_s is for a new run given its steps, in one process: anything else is refused.
    cfg = plan.config(WARM, 40)
    for bad, match in ((0.0, "must be > 0"), (float("nan"), "must be > 0")):
        with pytest.raises(ConfigError, match=match):
            budget.given_budget(cfg, bad)
    with pytest.raises(ConfigError, match="resume continues"):
        budget.given_budget(cfg, 1.0, resumed=True)
    with pytest.raises(ConfigError, match="set train.steps"):
        budget.given_budget(plan.config(WARM), 1.0)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="one process"):
        budget.given_budget(cfg, 1.0)

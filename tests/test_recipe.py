"""The recipe search: its candidate table and plan, the equal-budget step rule and its calibration (the
training loop of the run itself, timed as the budget is counted), the budget flag, the ranking and margin
on hand-made numbers, and a tiny end-to-end search (two tiny candidates) that scores the held-out
validation images, never the test set, and continues from its stages without redoing any."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from maelab import budget, methods, train
from maelab import data as data_module
from maelab.budget import CALIBRATION_RUNS, planned_steps
from maelab.cli import main
from maelab.config import (
    METHOD_TRAIN_DEFAULTS,
    RECIPE_CANDIDATES,
    ConfigError,
    DinoConfig,
    RecipeCandidate,
    RecipeOptions,
)
from maelab.eval.stats import pack_correct
from maelab.experiments import child, compare_plan, recipe, recipe_plan, recipe_summary
from maelab.experiments.compare_plan import teacher_left, teacher_momentum
from maelab.experiments.recipe_plan import baseline_config, budget_flag, make_plan
from maelab.experiments.recipe_summary import budget_cell, budget_lines, candidate_flags, margin, rank, score

from .conftest import TINY_DINO, TINY_MODEL, write_image_folder

# 2 classes x 20 images of 16x16 per split: 40 train (8 held out -> 32 pretraining), 40 test.
HOLDOUT, PER_CLASS = 8, 20
TINY_BASE = {
    "model": {**TINY_MODEL, "img_size": 16, "patch_size": 4, "mask_ratio": 0.75},
    "train": {"method": "mae", "log_every": 1, "keep_checkpoints": 1},
}
TINY_CANDIDATES = (
    RecipeCandidate("a", "batch 8, lr 1e-3", {"train": {"batch_size": 8, "lr": 1e-3, "warmup_epochs": 0.0}}),
    RecipeCandidate(
        "b", "batch 4, norm_pix_loss", {"train": {"batch_size": 4, "lr": 1e-3}, "model": {"norm_pix_loss": True}}
    ),
)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_image_folder(tmp_path / "data", per_class=PER_CLASS, size=16)


def tiny_plan(folder: Path, out: Path, table: tuple[RecipeCandidate, ...] = TINY_CANDIDATES) -> recipe.RecipePlan:
    opts = RecipeOptions(
        data_dir=str(folder), out=str(out), budget_minutes=0.01, holdout=HOLDOUT, eval_subset=16, device="cpu",
        precision="fp32", probe_epochs=2, calibration_steps=2, quiet=True, isolate=False,
    )  # fmt: skip
    return make_plan(opts, table, TINY_BASE)


# ------------------------------------------------------------------------------------ plan
def test_every_candidate_resolves_and_baselines_share_an_encoder_shape(folder: Path, tmp_path: Path) -> None:
    plan = make_plan(RecipeOptions(data_dir=str(folder), out=str(tmp_path / "out")))
    # Without --candidates: the MAE recipes (DINO's candidates train only when named).
    assert [c.name for c in plan.candidates] == [c.name for c in RECIPE_CANDIDATES if c.default]
    assert {plan.config(c).train.method for c in plan.candidates} == {"mae"}
    assert len({c.name for c in RECIPE_CANDIDATES}) == len(RECIPE_CANDIDATES)
    cfgs = {c.name: plan.config(c) for c in plan.candidates}
    assert cfgs["defaults"].train.batch_size == 256 and cfgs["defaults"].train.blr == 1.5e-4
    assert not cfgs["defaults"].model.norm_pix_loss and cfgs["defaults"].data.holdout == 5000
    g = cfgs["guess"]
    assert (g.train.batch_size, g.train.lr, g.train.warmup_epochs, g.model.norm_pix_loss) == (128, 1e-3, 1.0, True)
    assert (g.model.embed_dim, g.model.patch_size, g.model.mask_ratio, g.model.img_size) == (256, 4, 0.75, 32)
    assert cfgs["narrow"].model.embed_dim == 192 and cfgs["subset-10k"].data.subset == 10000
    # The random-init twin depends on the encoder only: one cached baseline for every ref-shaped candidate.
    base = plan.base_config()
    twins = {n: json.dumps(baseline_config(c, base).model.__dict__, sort_keys=True) for n, c in cfgs.items()}
    assert len({twins[n] for n in cfgs if n != "narrow"}) == 1 and twins["narrow"] != twins["guess"]
    assert candidate_flags(RECIPE_CANDIDATES[1].overrides) == (
        "--batch-size 128 --blr 0.00015 --lr 0.001 --warmup-epochs 1 --norm-pix-loss"
    )
    with pytest.raises(ConfigError, match="unknown"):
        make_plan(RecipeOptions(data_dir=str(folder), candidates=("guess", "bogus")))
    with pytest.raises(ConfigError, match="--holdout"):
        make_plan(RecipeOptions(data_dir=str(folder), holdout=0))


def test_pass_two_candidates_change_one_thing_of_bs64_each(folder: Path, tmp_path: Path) -> None:
    names = ("bs64", "bs32", "bs64-raw-pixels", "bs64-narrow", "bs64-light-decoder")
    plan = make_plan(RecipeOptions(data_dir=str(folder), out=str(tmp_path / "out"), candidates=names))
    assert not any(c.default for c in plan.candidates[1:])  # named only: the pass-1 command is unchanged
    cfgs = {c.name: _flat(plan.config(c)) for c in plan.candidates}
    changed = {n: {k for k in cfgs["bs64"] if cfgs["bs64"][k] != cfgs[n][k]} - {"train.out"} for n in names[1:]}
    assert changed == {
        "bs32": {"train.batch_size"},
        "bs64-raw-pixels": {"model.norm_pix_loss"},
        "bs64-narrow": {"model.embed_dim", "model.encoder_heads"},
        "bs64-light-decoder": {"model.decoder_embed_dim", "model.decoder_depth"},
    }
    assert cfgs["bs64"]["train.batch_size"] == 64 and cfgs["bs32"]["train.batch_size"] == 32


def test_pass_three_candidates_change_one_thing_of_bs64_each(folder: Path, tmp_path: Path) -> None:
    names = ("bs64", "bs64-patch8", "bs64-deep-narrow", "bs64-deep-decoder", "bs64-crop0.35")
    plan = make_plan(RecipeOptions(data_dir=str(folder), out=str(tmp_path / "out"), candidates=names))
    assert not any(c.default for c in plan.candidates[1:])
    cfgs = {c.name: _flat(plan.config(c)) for c in plan.candidates}
    changed = {n: {k for k in cfgs["bs64"] if cfgs["bs64"][k] != cfgs[n][k]} - {"train.out"} for n in names[1:]}
    assert changed == {
        "bs64-patch8": {"model.patch_size"},
        "bs64-deep-narrow": {"model.embed_dim", "model.encoder_depth", "model.encoder_heads"},
        "bs64-deep-decoder": {"model.decoder_depth"},
        "bs64-crop0.35": {"data.crop_min_scale"},
    }
    assert (cfgs["bs64-patch8"]["model.patch_size"], cfgs["bs64-deep-narrow"]["model.encoder_depth"]) == (8, 6)


DINO_BLUR = ("dino-blur", "dino-light-blur", "dino-no-blur")


def _flat(cfg: Any) -> dict[str, Any]:
    return {f"{section}.{key}": v for section, values in cfg.to_dict().items() for key, v in values.items()}


def test_dino_blur_candidates_differ_only_in_the_blur(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compare_plan, "steps_per_epoch", lambda cfg: 781)  # planning only: no data read
    plan = make_plan(RecipeOptions(data_dir=str(folder), out=str(tmp_path / "out"), candidates=DINO_BLUR))
    assert [c.name for c in plan.candidates] == list(DINO_BLUR) and not any(c.default for c in plan.candidates)
    for steps in (0, 140):  # as resolved, and with the planned steps (and the momentum fitted to them)
        cfgs = {c.name: plan.config(c, steps) for c in plan.candidates}
        for cfg in cfgs.values():  # DINO at batch 64 with its paper's optimizer recipe, not the MAE guess
            t = cfg.train
            assert (t.method, t.batch_size, t.recipe, t.lr, t.steps) == ("dino", 64, "paper", 0.0, steps)
            assert {k: getattr(t, k) for k in METHOD_TRAIN_DEFAULTS["dino"]} == METHOD_TRAIN_DEFAULTS["dino"]
        ref = _flat(cfgs["dino-blur"])
        for name, changed in (("dino-light-blur", {"dino.blur_sigma"}), ("dino-no-blur", {"dino.blur_prob"})):
            other = _flat(cfgs[name])
            assert {k for k in ref if ref[k] != other[k]} == {"train.out", *changed}  # the run folder and the blur
    blur, light, none = (cfgs[n].dino for n in DINO_BLUR)
    defaults = DinoConfig()
    assert (blur.blur_prob, blur.blur_sigma) == (defaults.blur_prob, defaults.blur_sigma)  # DINO's current defaults
    assert light.blur_prob == defaults.blur_prob
    assert light.blur_sigma == pytest.approx((0.1 * 32 / 224, 2.0 * 32 / 224), abs=0.005)  # DINO's 0.1-2.0 px at 224
    assert none.blur_prob == (0.0, 0.0, 0.0)
    assert candidate_flags(plan.candidates[2].overrides).endswith("--blur-prob 0 0 0 --blur-sigma 0.1 1")


def test_a_dino_candidates_teacher_momentum_is_fitted_to_its_planned_steps(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compare_plan, "steps_per_epoch", lambda cfg: 781)  # planning only: no data read
    plan = make_plan(RecipeOptions(data_dir=str(folder), out=str(tmp_path / "out"), candidates=("dino-blur", "bs64")))
    dino, mae = plan.candidates
    assert plan.config(dino).dino.momentum_teacher == DinoConfig().momentum_teacher  # steps not known yet
    for steps in (12, 140, 1000):
        m0 = plan.config(dino, steps).dino.momentum_teacher
        assert m0 == pytest.approx(teacher_momentum(steps)) and teacher_left(m0, steps) <= 0.05
    assert plan.config(mae, 140).dino.momentum_teacher == DinoConfig().momentum_teacher  # MAE is left alone
    # A momentum the candidate sets is kept, as the compare keeps a given one.
    fixed = RecipeCandidate("dino-m", "DINO with its own momentum", {"train": {"method": "dino"},
                            "dino": {"momentum_teacher": 0.99}})  # fmt: skip
    own = make_plan(RecipeOptions(data_dir=str(folder), out=str(tmp_path / "own")), (fixed,))
    assert own.config(fixed, 140).dino.momentum_teacher == 0.99


def test_a_candidate_off_its_budget_is_flagged() -> None:
    assert [budget_flag(u) for u in (1.2333, 1.1, 1.0, 0.9, 0.85)] == ["over budget", "", "", "", "under budget"]
    rows = [{"candidate": c, "train_seconds": t, "budget_s": 180.0, "budget_use": t / 180,
             "budget_flag": budget_flag(t / 180)} for c, t in (("bs64", 222.0), ("guess", 185.0), ("slow", 150.0))]  # fmt: skip
    assert budget_cell(rows[0]) == "222 (123%) **over budget**" and budget_cell(rows[1]) == "185 (103%)"
    (line,) = budget_lines(rows)
    assert line.startswith("**Unequal budget:**") and "`bs64` 222 s of 180 s (123%, over budget)" in line
    assert "`slow` 150 s of 180 s (83%, under budget)" in line and "guess" not in line
    assert budget_lines(rows[1:2])[0].startswith("Equal budget")


# ------------------------------------------------------------------------------------ ranking
def val_result(knn: dict[str, float], linear: dict[str, float], n: int = 1000, seed: int = 0) -> dict:
    """A validation result with per-image flags of exactly these accuracies (random which images)."""
    rng = np.random.default_rng(seed)

    def flags(acc: float) -> dict:
        right = np.zeros(n, dtype=bool)
        right[rng.permutation(n)[: round(acc * n / 100)]] = True
        return pack_correct(right)

    return {
        "knn": knn, "linear": linear, "random_init": {"knn": {"cls": 20.0, "mean": 25.0}, "linear": {"cls": 30.0,
        "mean": 31.0}}, "correct": {"knn": {p: flags(a) for p, a in knn.items()},
        "linear": {p: flags(a) for p, a in linear.items()}}, "val_images": n,
    }  # fmt: skip


def test_score_rank_and_margin_on_hand_made_numbers() -> None:
    a = val_result({"cls": 40.0, "mean": 60.0}, {"cls": 55.0, "mean": 70.0}, seed=1)
    b = val_result({"cls": 45.0, "mean": 44.0}, {"cls": 50.0, "mean": 49.0}, seed=2)
    c = val_result({"cls": 40.0, "mean": 59.5}, {"cls": 50.0, "mean": 69.5}, seed=3)
    s = score(a)
    assert (s["knn_pooling"], s["linear_pooling"], s["score"]) == ("mean", "mean", 65.0)  # better pooling each
    assert s["random_init_score"] == 28.0 and s["over_random_init"] == 37.0  # random init at the same poolings
    assert rank({"b": b, "c": c, "a": a}) == ["a", "c", "b"]
    far = margin(("a", "b"), a, b)
    assert far["score_difference"] == 65.0 - 47.5 and far["a_better_on"] == ["k-NN (k=20)", "linear probe"]
    assert far["verdict"].startswith("a beats b beyond noise")
    near = margin(("a", "c"), a, c)  # 0.5 points on 1000 images: a tie, not a win
    assert near["a_better_on"] == [] and near["verdict"].startswith("a tie")


# ------------------------------------------------------------------------------------ end to end
def _without_length(cfg: Any) -> dict:
    """A config as a dict without what a calibration run and the run may differ in: steps and out."""
    d = cfg.to_dict()
    del d["train"]["steps"], d["train"]["out"]
    return d


def test_calibration_runs_the_training_loop_of_the_run(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Spies: every pretraining (calibration or run) and every training step's loss (augmentation + model).
    configs: list[Any] = []
    real_pretrain, mae = train.pretrain, methods.METHODS["mae"]
    monkeypatch.setattr(train, "pretrain", lambda cfg=None, **k: (configs.append(cfg), real_pretrain(cfg, **k))[1])
    losses: list[int] = []
    monkeypatch.setitem(methods.METHODS, "mae", dataclasses.replace(
        mae, loss=lambda model, batch, cfg: (losses.append(batch.shape[0]), mae.loss(model, batch, cfg))[1]))  # fmt: skip
    monkeypatch.setattr(recipe_plan, "MIN_CALIBRATION_SECONDS", 0.5)  # time >= 0.5 s
    # The first calibration run reports at most 0.1 s timed (whatever this machine's speed), so it is too short
    # and must be repeated, longer.
    real_speed, speeds = budget.loop_speed, []

    def first_too_short(records: list[dict], per_step: int) -> dict:
        speeds.append(real_speed(records, per_step))
        return speeds[-1] if len(speeds) > 1 else {**speeds[0], "timed_seconds": min(speeds[0]["timed_seconds"], 0.1)}

    monkeypatch.setattr(budget, "loop_speed", first_too_short)
    plan = tiny_plan(folder, tmp_path / "out")
    cand = plan.candidates[0]
    assert len(recipe._train_images(plan.config(cand))) == 2 * PER_CLASS - HOLDOUT

    calib = recipe.calibrate(plan, cand)
    assert 2 <= calib["runs"] <= CALIBRATION_RUNS and len(configs) == calib["runs"]
    assert calib["timed_seconds"] >= 0.5 or calib["runs"] == CALIBRATION_RUNS
    assert calib["timed_steps"] >= 2 and calib["img_per_s"] > 0 and calib["precision"] == "fp32"
    assert calib["steps_run"] == configs[-1].train.steps == calib["skipped_steps"] + calib["timed_steps"]
    # Every step of every calibration run went through the method's loss, with the candidate's batch.
    assert losses == [8] * sum(c.train.steps for c in configs)
    assert calib["planned_steps"] == planned_steps(plan.budget_s, calib["img_per_s"], 8, calib["start_overhead_s"])
    assert not (plan.out / "calibration").exists()  # the scratch run is deleted

    # The run trains through the same function with the same config, but for its planned steps into its own folder.
    recipe.pretrain(plan, cand, {**calib, "planned_steps": 3})
    run_cfg = configs[-1]
    assert run_cfg.train.steps == 3 and run_cfg.train.out == str(plan.run_dir(cand))
    assert all(_without_length(c) == _without_length(run_cfg) for c in configs[:-1])
    assert {c.train.out for c in configs[:-1]} == {str(plan.out / "calibration" / cand.name)}


def test_tiny_search_scores_val_images_and_resumes(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAELAB_CACHE", str(tmp_path / "cache"))
    # A fixed speed (40 img/s) makes the step counts known: 0.6 s x 40 / 8 = 3 steps (a), / 4 = 6 steps (b).
    monkeypatch.setattr(recipe, "measure_speed", lambda cfg, scratch, n, s, isolate=True: {
        "img_per_s": 40.0, "timed_steps": n, "timed_seconds": 1.0, "skipped_steps": 2, "start_overhead_s": 0.0,
        "precision": "fp32", "precision_reason": "forced", "device": "cpu"})  # fmt: skip
    splits: list[str] = []
    real_load_split = data_module.load_split
    monkeypatch.setattr(data_module, "load_split", lambda root, split, *a, **k: (
        splits.append(split), real_load_split(root, split, *a, **k))[1])  # fmt: skip
    out = tmp_path / "out"
    summary = recipe.run_recipe(tiny_plan(folder, out), "maelab recipe (test)")

    assert "test" not in splits  # the test set is never read
    for name in ("summary.md", "summary.csv", "metrics.json", "recipe.json", "plots/loss_vs_time.png",
                 "plots/scores.png", "evals/a/knn.json", "evals/b/linear.md"):  # fmt: skip
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    for name, steps in (("a", 3), ("b", 6)):
        r = metrics["results"][name]
        assert r["calibration"]["planned_steps"] == steps == r["run"]["steps"]
        assert r["calibration"]["train_images"] == 2 * PER_CLASS - HOLDOUT
        assert r["val"]["val_images"] == HOLDOUT and r["val"]["probe_train_images"] == 16  # val, not the 40 test
        knn = json.loads((out / "evals" / name / "knn.json").read_text())
        assert knn["data"]["test_images"] == HOLDOUT and knn["results"][0]["test_correct"]["20"]["n"] == HOLDOUT
        assert {r["role"] for r in knn["results"]} == {"evaluated", "baseline"}
    assert metrics["winner"] == metrics["ranking"][0] and set(metrics["ranking"]) == {"a", "b"}
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [r["candidate"] for r in rows] == metrics["ranking"] and rows[0]["vs_winner"] == "winner"
    for row in metrics["rows"]:  # per candidate: the budget, the seconds it trained, their ratio and its flag
        assert row["budget_s"] == 0.6 and row["budget_use"] == pytest.approx(row["train_seconds"] / 0.6, abs=0.01)
        assert row["budget_flag"] == budget_flag(row["budget_use"])
    assert set(metrics["off_budget"]) == {r["candidate"] for r in metrics["rows"] if r["budget_flag"]}
    text = summary.read_text()
    assert "Winner" in text and "wall-clock on THIS machine" in text and "test set is never read" in text
    assert "`a` none (a warm-up of 0 steps: the plan stood)" in text  # no warm-up to time: no re-fit
    state = json.loads((out / "recipe.json").read_text())
    stages = state["stages"]
    assert {f"{s}:{n}" for s in ("calibrate", "pretrain", "eval") for n in "ab"} <= set(stages)
    # when and at which commit each stage was computed (recipe.json), in metrics.json and beside the report's date
    assert metrics["stages_computed"] == {name: state["computed"][name] for name in stages}
    finished = sorted(c["finished"] for c in metrics["stages_computed"].values())
    assert f"; stages computed {finished[0]} - {finished[-1]} (git commit " in text

    # Re-running continues: every stage is read back, nothing is calibrated, trained or evaluated again.
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished stage was redone")

    for target, name in ((child, "train_until"), (recipe, "measure_speed"), (recipe, "evaluate")):
        monkeypatch.setattr(target, name, fail)
    before = json.loads((out / "metrics.json").read_text())["rows"]
    recipe.run_recipe(tiny_plan(folder, out))
    again = json.loads((out / "metrics.json").read_text())
    assert again["rows"] == before and again["stages_computed"] == metrics["stages_computed"]  # none re-dated

    # The writers flag a candidate over its budget in summary.md, summary.csv and metrics.json.
    results = metrics["results"]
    results["a"]["run"].update(train_seconds=0.75, budget_use=1.25)
    results["b"]["run"].update(train_seconds=0.6, budget_use=1.0)
    text = recipe_summary.write_results(tiny_plan(folder, out), results).read_text()
    assert "**Unequal budget:** `a` 1 s of 1 s (125%, over budget)" in text and "(125%) **over budget**" in text
    assert {r["candidate"]: r["budget_flag"] for r in csv.DictReader((out / "summary.csv").open())} == {
        "a": "over budget", "b": ""}  # fmt: skip
    assert json.loads((out / "metrics.json").read_text())["off_budget"] == {"a": 1.25}
    assert "stages computed" not in text and json.loads((out / "metrics.json").read_text())["stages_computed"] == {}
    # hand-made records: the span of the dated stages, those older counted; none dated (an older search): no span
    computed = {"pretrain:a": {"call": "2026-11-29T08:00:00", "finished": "2026-11-29T08:05:00", "git_commit": "c9"},
                "eval:a": {"call": "2026-11-29T09:00:00", "finished": "2026-11-29T09:30:00", "git_commit": "c9"},
                "eval:b": None}  # fmt: skip
    text = recipe_summary.write_results(tiny_plan(folder, out), results, computed=computed).read_text()
    assert ("; stages computed 2026-11-29T08:05:00 - 2026-11-29T09:30:00 (git commit c9); 1 of 3 stages older, "
            "undated; torch ") in text  # fmt: skip
    assert json.loads((out / "metrics.json").read_text())["stages_computed"] == computed
    text = recipe_summary.write_results(tiny_plan(folder, out), results, computed={"eval:b": None}).read_text()
    assert "stages computed" not in text

    # A candidate changed since its stages ran is refused, not mixed with them.
    changed = (TINY_CANDIDATES[0], RecipeCandidate("b", "changed", {"train": {"batch_size": 8}}))
    with pytest.raises(ConfigError, match="candidate b changed"):
        recipe.run_recipe(tiny_plan(folder, out, changed))


TINY_DINO_CANDIDATE = RecipeCandidate("d", "tiny DINO, batch 8", {
    "train": {"method": "dino", "batch_size": 8, "warmup_epochs": 0.0},
    "dino": {**TINY_DINO, "global_crop_size": 16, "local_crop_size": 8},
})  # fmt: skip


@pytest.mark.slow
def test_a_dino_candidate_calibrates_trains_and_scores_on_val(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAELAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(recipe_plan, "MIN_CALIBRATION_SECONDS", 0.5)
    configs: list[Any] = []  # every pretraining: the calibration run(s), then the run
    real_pretrain = train.pretrain
    monkeypatch.setattr(train, "pretrain", lambda cfg=None, **k: (configs.append(cfg), real_pretrain(cfg, **k))[1])
    splits: list[str] = []
    real_load_split = data_module.load_split
    monkeypatch.setattr(data_module, "load_split", lambda root, split, *a, **k: (
        splits.append(split), real_load_split(root, split, *a, **k))[1])  # fmt: skip
    out = tmp_path / "out"
    summary = recipe.run_recipe(tiny_plan(folder, out, (TINY_DINO_CANDIDATE,)), "maelab recipe (test)")

    assert "test" not in splits  # scored on the held-out training images only
    r = json.loads((out / "metrics.json").read_text())["results"]["d"]
    steps = r["calibration"]["planned_steps"]
    assert r["run"]["steps"] == steps and r["calibration"]["train_images"] == 2 * PER_CLASS - HOLDOUT
    # The calibration ran DINO in the training loop; every run's teacher momentum was fitted to its own length.
    assert [c.train.method for c in configs] == ["dino"] * len(configs) and configs[-1].train.steps == steps
    for cfg in configs:
        assert cfg.dino.momentum_teacher == pytest.approx(teacher_momentum(cfg.train.steps))
    assert r["run"]["momentum_teacher"] == pytest.approx(teacher_momentum(steps), abs=1e-6)
    assert r["run"]["momentum_rule"] == "fitted to the run length" and r["run"]["teacher_init_left"] <= 0.05
    assert r["val"]["val_images"] == HOLDOUT and r["val"]["probe_train_images"] == 16
    knn = json.loads((out / "evals" / "d" / "knn.json").read_text())
    assert knn["data"]["test_images"] == HOLDOUT and {x["role"] for x in knn["results"]} == {"evaluated", "baseline"}
    text = summary.read_text()
    assert "DINO teacher momentum m0" in text and "- (DINO)" in text and "--method dino" in text
    assert (out / "plots" / "loss_vs_time.png").is_file()


def test_cli_rejects_unknown_candidates(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recipe", "--data-dir", str(folder), "--candidates", "nope"]) == 2
    assert "unknown" in capsys.readouterr().err

"""``maelab compare``: the time budget, the DINO teacher momentum rule, paired like-for-like wording, and a
tiny end-to-end run that resumes."""

from __future__ import annotations

import argparse
import copy
import csv
import json
from pathlib import Path

import numpy as np
import pytest

from maelab.cli import build_parser, main
from maelab.config import (
    COMPARE_PRETRAIN_DEFAULTS,
    METHOD_TRAIN_DEFAULTS,
    CompareOptions,
    ConfigError,
    TrainConfig,
    compare_base_config,
    method_config,
    resolve_config,
)
from maelab.eval.results import two_se, versus
from maelab.eval.stats import pack_correct
from maelab.experiments import child, compare_plan
from maelab.experiments.compare import run_compare
from maelab.experiments.compare_plan import (
    MOMENTUM_RULE,
    check_steps,
    compare_settings,
    given_momentum,
    momentum_record,
    teacher_left,
    teacher_momentum,
    time_budget_epochs,
    with_teacher_momentum,
)
from maelab.experiments.compare_summary import answer, optimizer_text, split_calls_note, verdict
from maelab.models.dino import suggest_momentum

from .conftest import TINY_MODEL, write_image_folder

CLASSES = tuple(f"c{i}" for i in range(10))


def test_time_budget_whole_epochs_or_a_cut_first_epoch() -> None:
    assert time_budget_epochs(100.0, 30.0, 10) == (3, None)  # full schedules only
    assert time_budget_epochs(90.0, 30.0, 10) == (3, None)
    assert time_budget_epochs(12.0, 30.0, 10) == (1, 4)  # 0.4 epoch of 10 steps
    assert time_budget_epochs(0.1, 30.0, 10) == (1, 1)


def test_differences_within_two_standard_errors_are_not_wins() -> None:
    assert two_se(50.0, 50.0, 100) == pytest.approx(200 * (0.5 / 100) ** 0.5)  # 14.1 points
    assert versus("A", 55.0, "B", 50.0, 100)[0] is None
    winner, text = versus("A", 55.0, "B", 50.0, 100_000)
    assert winner == "A" and "better by 5.0" in text


def test_check_steps_are_evenly_spaced_and_end_at_the_last_step() -> None:
    assert check_steps(10, 4) == [2, 5, 8, 10]
    assert check_steps(3, 4) == [1, 2, 3]
    assert check_steps(10, 0) == [10]


def test_each_method_gets_its_recipe_and_keeps_the_rest() -> None:
    base = resolve_config(None, {"train": {"blr": 1e-3, "epochs": 3}, "model": {"embed_dim": 64}}, "test")
    mae, dino = method_config(base, "mae", "runs/m"), method_config(base, "dino", "runs/d", epochs=2)
    assert (mae.train.method, mae.train.out, mae.train.blr, mae.train.epochs) == ("mae", "runs/m", 1e-3, 3)
    assert (dino.train.method, dino.train.epochs, dino.model.embed_dim) == ("dino", 2, 64)
    assert {k: getattr(dino.train, k) for k in METHOD_TRAIN_DEFAULTS["dino"]} == METHOD_TRAIN_DEFAULTS["dino"]
    assert base.train.method == "mae" and base.train.out == ""  # the base is not changed


def test_the_mae_recipe_is_maes_alone_and_dino_keeps_its_paper_recipe() -> None:
    base = resolve_config(None, {"train": {"recipe": "short", "epochs": 2}, "model": {"embed_dim": 64}}, "test")
    mae, dino = method_config(base, "mae", "runs/m"), method_config(base, "dino", "runs/d")
    # MAE keeps the short recipe: batch 64, absolute lr 1e-3, one warm-up epoch, norm_pix_loss.
    assert (mae.train.recipe, mae.train.batch_size, mae.train.lr, mae.train.warmup_epochs) == ("short", 64, 1e-3, 1.0)
    assert mae.model.norm_pix_loss and mae.train.blr == TrainConfig().blr
    # DINO: its paper's recipe (blr scaled by the batch, no absolute lr), none of the short recipe's values but the
    # batch every comparison shares; the rest of the base (epochs, encoder) as given.
    assert dino.train.recipe == "paper" and dino.train.method == "dino"
    assert {k: getattr(dino.train, k) for k in METHOD_TRAIN_DEFAULTS["dino"]} == METHOD_TRAIN_DEFAULTS["dino"]
    assert (dino.train.lr, dino.model.norm_pix_loss) == (0.0, False)
    assert dino.train.warmup_epochs == TrainConfig().warmup_epochs
    assert (dino.train.batch_size, dino.train.epochs, dino.model.embed_dim) == (64, 2, 64)
    # A value named as given applies to both methods, even one equal to the recipe's (lr 1e-3).
    given = ("train.lr", "train.warmup_epochs", "model.norm_pix_loss", "train.recipe")
    dino = method_config(base, "dino", given=given)
    assert (dino.train.lr, dino.train.warmup_epochs, dino.model.norm_pix_loss, dino.train.recipe) == (
        1e-3, 1.0, True, "paper")  # fmt: skip
    assert base.train.recipe == "short" and base.train.method == "mae"  # the base is not changed


def test_compare_defaults_resolve_and_a_given_lr_reaches_both_methods() -> None:
    flags: dict[str, dict] = {"model": {}, "data": {}, "train": {}, "dino": {}}  # what cli_values gives for no flag
    base, given = compare_base_config(None, flags, "defaults")  # no ConfigError
    assert (base.train.recipe, base.train.batch_size, base.train.epochs, base.data.subset) == ("short", 64, 1, 0)
    assert {f"{s}.{k}" for s, values in COMPARE_PRETRAIN_DEFAULTS.items() for k in values} == set(given)
    opts = CompareOptions(given=given)
    opts.validate()
    assert (opts.eval_subset, opts.eval_test_subset, opts.finetune_subset) == (10000, 0, 10000)
    mae, dino = (method_config(base, m, given=opts.given) for m in ("mae", "dino"))
    assert (mae.train.recipe, mae.train.lr, mae.model.norm_pix_loss) == ("short", 1e-3, True)
    assert (dino.train.recipe, dino.train.lr, dino.model.norm_pix_loss) == ("paper", 0.0, False)
    assert dino.train.blr * dino.train.batch_size / 256 == pytest.approx(1.25e-4)  # DINO's blr 5e-4 at batch 64
    assert mae.train.batch_size == dino.train.batch_size == 64 and mae.train.epochs == dino.train.epochs == 1
    assert 50_000 // mae.train.batch_size == 781  # the default's steps per epoch on all of CIFAR-10, both methods
    # The summary reports each method's optimizer as it trained.
    text = optimizer_text(json.loads(json.dumps(compare_settings(base, opts))))
    assert "MAE (recipe short): lr 0.001, warm-up 1 epoch " in text
    assert "DINO (recipe paper): lr 0.000125 (blr 0.0005 x 64 / 256)" in text and "0.04 -> 0.4 (cosine)" in text
    # A user's --lr (even the recipe's own value) reaches both methods; so does a --config file value, which
    # sits above the compare's defaults and below the flags.
    for lr in (2e-3, 1e-3):
        base, given = compare_base_config(None, {**flags, "train": {"lr": lr}}, "defaults")
        assert [method_config(base, m, given=given).train.lr for m in ("mae", "dino")] == [lr, lr]
    file_values = {"train": {"epochs": 3, "warmup_epochs": 0.5, "batch_size": 32}}
    base, given = compare_base_config(file_values, {**flags, "train": {"batch_size": 16}}, "compare.toml")
    dino = method_config(base, "dino", given=given)
    assert (base.train.epochs, base.train.batch_size) == (3, 16)  # file over the defaults, flag over the file
    assert (dino.train.warmup_epochs, dino.train.batch_size) == (0.5, 16)
    with pytest.raises(ConfigError, match="compare trains both methods"):
        compare_base_config({"train": {"method": "dino"}}, flags, "compare.toml")


def test_compare_help_states_the_default_budget() -> None:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    text = " ".join(sub.choices["compare"].format_help().split())
    assert "--recipe short" in text and "781 steps" in text and "~62 min" in text and "~6 min" in text
    assert "~2 h 10 min in all (measured: results/mae_vs_dino_cpu)" in text


def test_teacher_momentum_rule_matches_hand_computed_values() -> None:
    # The rule's numbers in results/mae_vs_dino_cpu: a full 781-step run (1 epoch at batch 64) gets
    # m0 = 1 - 2 ln(20) / 781 = 1 - 5.991465 / 781 = 0.992328 (by hand); the equal-time DINO row, cut at step 76 of
    # that schedule, needs sum_{t<76} (1 - m_t) = (1 - m0) * S = ln 20 with S = sum_{t<76} (1 + cos(pi t / 781)) / 2
    # ~= 75.4 (every term within 0.023 of 1), so m0 ~= 1 - 2.995732 / 75.4 = 0.9603, and the teacher keeps ~4.7%.
    assert teacher_momentum(781) == pytest.approx(0.992328, abs=1e-6)
    assert teacher_left(teacher_momentum(781), 781) == pytest.approx(0.05, abs=0.005)
    cut = teacher_momentum(781, 76)
    assert cut == pytest.approx(0.9603, abs=1e-4)
    assert teacher_left(cut, 781, 76) == pytest.approx(0.047, abs=0.001)
    assert teacher_momentum(781, 781) == teacher_momentum(781)  # a run not cut is the full rule


def test_teacher_momentum_is_fitted_to_each_run_length_unless_given(monkeypatch: pytest.MonkeyPatch) -> None:
    # A full run of T steps: suggest_momentum(T), the teacher keeps <= 5% of its init; a short run gets a lower m0.
    for steps in (4, 31, 120, 1000):
        assert teacher_momentum(steps) == suggest_momentum(steps, 0.05)
        assert teacher_left(teacher_momentum(steps), steps) <= 0.05
    assert teacher_momentum(31) < teacher_momentum(120) < teacher_momentum(1000) < 0.996
    # A run cut at step 31 of a 100-step schedule: <= 5% at the cut, with a higher m0 than a full 31-step run.
    cut = teacher_momentum(100, 31)
    assert teacher_left(cut, 100, 31) <= 0.05 and teacher_momentum(31) < cut < teacher_momentum(100)
    assert teacher_left(0.996, 100, 31) > 0.5  # what DINO's default would have left: a near-random teacher

    monkeypatch.setattr(compare_plan, "steps_per_epoch", lambda cfg: 781)  # no data read

    def dino(**given: object):  # --steps fixes the schedule length
        cfg = resolve_config(None, {"train": {"method": "dino", "steps": 31}, "dino": given}, "test")
        return cfg, CompareOptions()

    cfg, opts = dino()
    assert given_momentum(cfg, opts) is None
    fitted = with_teacher_momentum(copy.deepcopy(cfg), None).dino
    assert fitted.momentum_teacher == pytest.approx(teacher_momentum(31))
    rec = momentum_record(fitted, cfg, 31)
    assert rec["momentum_rule"] == "fitted to the run length" and rec["teacher_init_left"] <= 0.05
    # A value the user gave wins (flag / config file, or the option), and the record says so.
    cfg, opts = dino(momentum_teacher=0.99)
    assert given_momentum(cfg, opts) == 0.99
    assert with_teacher_momentum(cfg, given_momentum(cfg, opts)).dino.momentum_teacher == 0.99
    assert momentum_record(cfg.dino, cfg, 31)["momentum_rule"] == "given"
    cfg, _ = dino()
    assert given_momentum(cfg, CompareOptions(momentum_teacher=0.996)) == 0.996
    mae = resolve_config(None, {"train": {"steps": 31}}, "test")
    assert with_teacher_momentum(mae, None).dino.momentum_teacher == 0.996  # MAE runs are left alone


def test_short_run_warmups(monkeypatch: pytest.MonkeyPatch) -> None:
    """DINO's 1-epoch last-layer freeze and 10-epoch teacher-temperature warm-up shrink with the run: a
    1-epoch run freezes the last layer 1% of its steps (not all of them), as DINO's 100-epoch schedule does;
    values the user gave are kept, and the record says what the run used."""
    monkeypatch.setattr(compare_plan, "steps_per_epoch", lambda cfg: 781)  # 50,000 // 64, without reading data

    def dino(**given: object):
        return resolve_config(None, {"train": {"method": "dino", "steps": 781}, "dino": given}, "test")

    fitted = with_teacher_momentum(dino(), None).dino  # 781 steps = 1 epoch
    assert fitted.freeze_last_layer == pytest.approx(0.01) and fitted.warmup_teacher_temp_epochs == pytest.approx(0.1)
    rec = momentum_record(fitted, dino(), 781)
    assert rec["freeze_last_layer"] == pytest.approx(0.01) and rec["warmup_teacher_temp_epochs"] == pytest.approx(0.1)
    kept = with_teacher_momentum(dino(freeze_last_layer=0.5), None).dino
    assert kept.freeze_last_layer == 0.5 and kept.warmup_teacher_temp_epochs == pytest.approx(0.1)
    typed = with_teacher_momentum(dino(), None, given_values={"dino.freeze_last_layer"}).dino  # typed = the default
    assert typed.freeze_last_layer == 1.0 and typed.warmup_teacher_temp_epochs == pytest.approx(0.1)
    long = resolve_config(None, {"train": {"method": "dino", "steps": 781 * 200}}, "test")
    assert with_teacher_momentum(long, None).dino.freeze_last_layer == 1.0  # a run as long as DINO's: untouched
    # What the model makes of it: the freeze lasts round(0.01 * 781) = 8 of the 781 steps.
    assert round(fitted.freeze_last_layer * 781) == 8


def _flags(n: int, right: int, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros(n, dtype=bool)
    out[rng.choice(n, right, replace=False)] = True
    return out


def test_summary_compares_like_for_like_with_paired_statistics() -> None:
    """Random init's best pooling (cls, 52%) is above MAE's best (50%), yet at mean pooling MAE leads the
    random init by 4 points on the same images: the report must say so, and call a balanced 1-point gap a tie."""
    n, rng = 1000, np.random.default_rng(0)
    mae_mean = _flags(n, 500, rng)
    rand_mean = mae_mean.copy()
    rand_mean[np.flatnonzero(mae_mean)[:40]] = False  # 40 images only MAE gets right: +4.0 points
    mae_cls = _flags(n, 500, rng)
    dino_cls = mae_cls.copy()  # 30 images each way plus 10 more for DINO: +1.0 point, within noise
    dino_cls[np.flatnonzero(mae_cls)[:30]] = False
    dino_cls[np.flatnonzero(~mae_cls)[:40]] = True
    flags = {"MAE": {"cls": mae_cls, "mean": mae_mean}, "DINO": {"cls": dino_cls, "mean": mae_mean},
             "random init": {"cls": _flags(n, 520, rng), "mean": rand_mean}}  # fmt: skip
    accs = {m: {p: 100.0 * f.mean() for p, f in by.items()} for m, by in flags.items()}
    packed = {m: {p: pack_correct(f) for p, f in by.items()} for m, by in flags.items()}
    frozen = {"knn": accs, "linear": accs, "knn_correct": packed, "linear_correct": packed}
    trained: dict = {"mae": {}, "dino": {}}
    rows = answer(trained, None, frozen, {}, n)
    knn_mean = next(r for r in rows if r.startswith("| k-NN mean |"))
    assert "MAE beats random init: MAE - random init +4.00 points" in knn_mean and "McNemar" in knn_mean
    knn_cls = next(r for r in rows if r.startswith("| k-NN cls |"))
    assert "tie: MAE vs DINO -1.00 points, 95% CI [" in knn_cls
    text = verdict(frozen, {}, n)
    assert "a tie (within noise) at k-NN cls (MAE - DINO -1.00 [" in text and "paired on the same 1000" in text
    # Results of an older maelab (no per-image flags): the old unpaired wording, and it says so.
    old = answer(trained, None, {"knn": accs, "linear": accs}, {}, n)
    assert "within noise" in old[0] and "unpaired 2-SE rule: no per-image results stored" in old[0]
    assert "unpaired 2-SE rule" in verdict({"knn": accs, "linear": accs}, {}, n)


def test_speeds_from_more_than_one_call_are_flagged() -> None:
    one_call = {"call": "2026-12-01T00:00:00", "resumed": False}
    assert split_calls_note(one_call, dict(one_call)) == ""
    assert split_calls_note({"img_per_s": 1.0}, one_call) == ""  # a record from before calls were stamped
    assert "more than one call" in split_calls_note(one_call, {**one_call, "call": "2026-12-01T02:00:00"})
    assert "more than one call" in split_calls_note(one_call, {**one_call, "resumed": True})


def test_compare_rejects_method_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", "--method", "dino"]) == 2
    assert "compare trains both methods" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_compare_end_to_end_and_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = write_image_folder(tmp_path / "data", per_class=20, size=32, classes=CLASSES)  # 200 train, 200 test
    cfg = resolve_config(
        None,
        {"model": dict(TINY_MODEL), "data": {"data_dir": str(data)},
         "train": {"epochs": 1, "batch_size": 50, "warmup_epochs": 0.5, "log_every": 1, "quiet": True},
         "dino": {"out_dim": 64, "head_hidden_dim": 32, "bottleneck_dim": 16, "local_crops": 2}},
        "test",
    )  # fmt: skip
    opts = CompareOptions(
        points=2, eval_subset=100, eval_test_subset=50, linear_epochs=2, finetune_epochs=1, finetune_subset=100,
        finetune_batch_size=50, isolate=False,
    )  # fmt: skip
    out = run_compare(cfg, opts, tmp_path / "cmp", command="maelab compare --subset 200")
    for name in ("summary.md", "summary.csv", "metrics.json", "plots/loss_curves.png", "plots/trajectory.png",
                 "plots/accuracy_bars.png"):  # fmt: skip
        assert (out / name).is_file(), name
    summary = (out / "summary.md").read_text()
    assert "Which is better for transfer" in summary and "| MAE |" in summary and "| random init |" in summary
    assert "Command: `maelab compare --subset 200`" in summary and "git commit" in summary and "Hardware:" in summary
    assert MOMENTUM_RULE in summary and "## Paired comparisons (same pooling, same test images)" in summary
    assert "McNemar" in summary and "no mixup, CutMix, RandAugment or random erasing" in summary
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [r["encoder"] for r in rows][:2] == ["MAE", "DINO"] and rows[-1]["encoder"] == "random init"
    assert all(r["knn_cls"] and r["linear_mean"] and r["finetune"] for r in rows)
    stages = json.loads((out / "metrics.json").read_text())["stages"]
    dino = stages["pretrain:dino"]
    assert dino["epochs"] == 1 and dino["img_per_s"] > 0 and dino["seconds_per_epoch"] > 0
    assert [p["target"] for p in dino["trajectory"]] == [2, 4]  # 4 steps, checked at 2 and 4
    assert "entropy" in dino["trajectory"][-1]["teacher"] and "teacher" not in stages["pretrain:mae"]["trajectory"][0]
    assert "equal_time" in stages
    # One call trained every run: the speeds are comparable, and the report says nothing about calls.
    assert stages["pretrain:mae"]["call"] == dino["call"] and not dino["resumed"] and "one call" not in summary
    # The teacher momentum was fitted to the 4-step run and recorded; the from-scratch fine-tune had no layer decay.
    assert dino["momentum_teacher"] == pytest.approx(teacher_momentum(4), abs=1e-6)
    assert dino["momentum_rule"] == "fitted to the run length" and dino["teacher_init_left"] <= 0.05
    assert "momentum_teacher" not in stages["pretrain:mae"]
    assert stages["finetune:random init"]["layer_decay"] == 1.0 and stages["finetune:MAE"]["layer_decay"] == 0.75
    assert set(stages["frozen"]["knn_correct"]["MAE"]) == {"cls", "mean"} and "test_correct" in stages["finetune:DINO"]
    assert rows[0]["finetune_layer_decay"] == "0.75" and rows[-1]["finetune_layer_decay"] == "1.0"
    # When and at which commit each stage was computed: under the sweep's key (only), and said under the date.
    stored = json.loads((out / "metrics.json").read_text())
    computed = stored["stages_computed"]
    assert "computed" not in stored and set(computed) == set(stages)
    assert all(c and c["git_commit"] and c["call"] <= c["finished"] for c in computed.values())
    first, last = min(c["finished"] for c in computed.values()), max(c["finished"] for c in computed.values())
    assert f"\n- Stages computed {first} - {last} (git commit " in summary

    # A re-run with the same settings trains and evaluates nothing again: it only rewrites the report.
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished stage ran again")

    monkeypatch.setattr(child, "train_until", fail)
    monkeypatch.setattr("maelab.eval.finetune.finetune", fail)
    (out / "summary.md").unlink()
    run_compare(cfg, opts, out)
    body = summary[summary.index("Encoder:") :]  # the header has this call's date and wall time
    assert (out / "summary.md").read_text().endswith(body)
    assert json.loads((out / "metrics.json").read_text())["stages_computed"] == computed  # none re-dated
    assert f"- Stages computed {first} - {last} (git commit " in (out / "summary.md").read_text()
    # A metrics.json written before an option existed resumes: the option takes its default.
    stored = json.loads((out / "metrics.json").read_text())
    del stored["settings"]["config"]["train"]["weight_decay_end"], stored["settings"]["options"]["equal_time"]
    del stored["stages_computed"]  # nor when its stages were computed: no such line
    (out / "metrics.json").write_text(json.dumps(stored))
    run_compare(cfg, opts, out)
    assert (out / "summary.md").read_text().endswith(body) and "Stages computed" not in (out / "summary.md").read_text()
    assert set(json.loads((out / "metrics.json").read_text())["stages_computed"].values()) == {None}
    # Other settings are refused, and the error names what differs.
    with pytest.raises(ConfigError, match=r"other settings \(options.linear_epochs: \d+ before, 3 now"):
        run_compare(cfg, CompareOptions(**{**opts.__dict__, "linear_epochs": 3}), out)

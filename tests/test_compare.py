"""``maelab compare``: the time budget, noise-aware wording, and a tiny end-to-end run that resumes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from maelab.cli import main
from maelab.config import METHOD_TRAIN_DEFAULTS, CompareOptions, ConfigError, method_config, resolve_config
from maelab.eval.results import two_se, versus
from maelab.experiments import child
from maelab.experiments.compare import run_compare
from maelab.experiments.compare_plan import check_steps, time_budget_epochs

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
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [r["encoder"] for r in rows][:2] == ["MAE", "DINO"] and rows[-1]["encoder"] == "random init"
    assert all(r["knn_cls"] and r["linear_mean"] and r["finetune"] for r in rows)
    stages = json.loads((out / "metrics.json").read_text())["stages"]
    dino = stages["pretrain:dino"]
    assert dino["epochs"] == 1 and dino["img_per_s"] > 0 and dino["seconds_per_epoch"] > 0
    assert [p["target"] for p in dino["trajectory"]] == [2, 4]  # 4 steps, checked at 2 and 4
    assert "entropy" in dino["trajectory"][-1]["teacher"] and "teacher" not in stages["pretrain:mae"]["trajectory"][0]
    assert "equal_time" in stages

    # A re-run with the same settings trains and evaluates nothing again: it only rewrites the report.
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished stage ran again")

    monkeypatch.setattr(child, "train_until", fail)
    monkeypatch.setattr("maelab.eval.finetune.finetune", fail)
    (out / "summary.md").unlink()
    run_compare(cfg, opts, out)
    body = summary[summary.index("Encoder:") :]  # the header has this call's date and wall time
    assert (out / "summary.md").read_text().endswith(body)
    # A metrics.json written before an option existed resumes: the option takes its default.
    stored = json.loads((out / "metrics.json").read_text())
    del stored["settings"]["config"]["train"]["weight_decay_end"], stored["settings"]["options"]["equal_time"]
    (out / "metrics.json").write_text(json.dumps(stored))
    run_compare(cfg, opts, out)
    assert (out / "summary.md").read_text().endswith(body)
    # Other settings are refused, and the error names what differs.
    with pytest.raises(ConfigError, match=r"other settings \(options.linear_epochs: \d+ before, 3 now"):
        run_compare(cfg, CompareOptions(**{**opts.__dict__, "linear_epochs": 3}), out)

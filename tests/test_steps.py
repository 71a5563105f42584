"""--steps: a run of a fixed number of optimizer steps (what a time budget is turned into)."""

from __future__ import annotations

from pathlib import Path

from maelab import rundir
from maelab.checkpoint import load_meta

from .conftest import train_tiny_run


def test_steps_end_a_run_part_way_through_an_epoch_with_a_full_schedule(tmp_path: Path) -> None:
    # 40 images, batch 4: 10 steps an epoch; 13 steps end 3 steps into the second epoch.
    run = train_tiny_run(tmp_path, per_class=20, epochs=100, steps=13, warmup_epochs=1.0, log_every=5)
    assert load_meta(run)["step"] == 13 and load_meta(run)["total_steps"] == 13
    records = rundir.read_metrics(run)
    assert [r["step"] for r in records] == [5, 10, 13]  # the last step is logged and saved
    summary = rundir.read_summary(run)
    assert summary is not None and summary.status == "finished" and summary.steps == 13
    # warm-up is capped at a quarter of the 13 steps (3), not the 10 steps of one epoch; the cosine ends at 0
    assert records[0]["lr"] < records[1]["lr"] or records[-1]["lr"] < records[0]["lr"]
    assert records[-1]["lr"] < 0.05 * max(r["lr"] for r in records)


def test_pretraining_never_sees_the_held_out_images(tmp_path: Path) -> None:
    from maelab.train import pretrain

    from .conftest import tiny_config, write_image_folder

    data = write_image_folder(tmp_path / "data", per_class=20, size=32)  # 40 training images
    cfg = tiny_config(data, tmp_path / "run", subset=0, epochs=1, batch_size=4, warmup_epochs=0, device="cpu")
    cfg.data.holdout = 8  # the last 4 of each class
    run = pretrain(cfg)
    assert load_meta(run)["steps_per_epoch"] == (40 - 8) // 4


def test_eval_split_val_scores_the_held_out_training_images(tmp_path: Path, capsys) -> None:
    import json

    from maelab.cli import main
    from maelab.train import pretrain

    from .conftest import tiny_config, write_image_folder

    data = write_image_folder(tmp_path / "data", per_class=20, size=32)  # 40 train and 40 test images
    cfg = tiny_config(data, tmp_path / "run", subset=0, epochs=1, batch_size=4, warmup_epochs=0, device="cpu")
    cfg.data.holdout = 8
    run = pretrain(cfg)
    common = ["--quiet", "--no-cache", "--device", "cpu", "--k", "3"]
    assert main(["eval", "knn", str(run), *common, "--split", "val"]) == 0
    report = json.loads((run / "eval" / "knn.json").read_text())
    assert report["data"]["test_split"] == "val"
    assert (report["data"]["train_images"], report["data"]["test_images"]) == (32, 8)  # never the test images
    assert "held-out training (val) images" in capsys.readouterr().out
    assert main(["eval", "knn", str(run), *common]) == 0
    assert json.loads((run / "eval" / "knn.json").read_text())["data"]["test_images"] == 40

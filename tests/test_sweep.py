"""The mask-ratio sweep: presets, settings checks, budget timing, the generated findings (paired accuracy
comparisons, fine-tuning vs from scratch and across 40-80%, which effect the reconstruction numbers show), and
a tiny sweep that is interrupted after its first pretraining run and again during fine-tuning, then continued
without redoing what was finished; fine-tuning at equal time (the budget checkpoint fine-tuned, a capped ratio
reusing its equal-epoch result, an older sweep run again with and without its budget weights, `maelab seeds` on
both)."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from maelab import rundir
from maelab.checkpoint import load_meta
from maelab.cli import build_parser, main
from maelab.cli.flags import given_values
from maelab.config import ConfigError, SweepOptions
from maelab.eval import finetune as finetune_module
from maelab.eval.paired import RANDOM_LABEL
from maelab.eval.stats import pack_correct
from maelab.experiments import child, sweep
from maelab.experiments.sweep_findings import (
    accuracy_sentence,
    capped_tag,
    finetune_spread_sentence,
    finetune_vs_scratch_sentence,
    reconstruction_sentences,
)
from maelab.experiments.sweep_plan import budget_step, make_plan, open_stages, run_config

from .conftest import TINY_MODEL, write_image_folder

TINY_FLAGS = [f"--{k.replace('_', '-')}={v}" for k, v in TINY_MODEL.items()]


def sweep_args(folder: Path, out: Path) -> list[str]:
    """A 2-ratio sweep of a tiny model: 40 training images of 16x16, batch 8, 2 epochs = 10 steps; one epoch of
    fine-tuning on all 40 images."""
    return [
        "sweep", "--mask-ratios", "0.25", "0.75", "--eval-subset", "0", "--eval-test-subset", "0",
        "--probe-epochs", "2", "--recon-images", "0", "--finetune-epochs", "1", "--finetune-subset", "0",
        "--data-dir", str(folder), "--subset", "0",
        "--img-size", "16", "--patch-size", "4", *TINY_FLAGS, "--epochs", "2", "--batch-size", "8",
        "--warmup-epochs", "0.5", "--log-every", "1", "--device", "cpu", "--quiet", "--out", str(out),
    ]  # fmt: skip


def snapshot(run: Path) -> dict[str, tuple[str, int]]:
    """{relative path: (sha256, mtime_ns)} of a run's training files (not RUN/eval, which evaluations add to)."""
    return {
        str(p.relative_to(run)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(run.rglob("*"))
        if p.is_file() and p.relative_to(run).parts[0] != "eval"
    }


class Stop(Exception):
    """Injected to interrupt the sweep between stages."""


def fake_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training time = steps x 2 s for mask 0.25 and steps x 1 s for 0.75 (the logged img/s of batch 8
    rewritten as it is read), so the budget step is known (10 s of budget / 2 s per step = step 5)
    whatever the load of the machine running the test."""
    real_read = rundir.read_metrics

    def read_metrics(run: str | Path) -> list[dict]:
        seconds_per_step = 2.0 if Path(run).name == "mr0.25" else 1.0
        return [dict(r, img_per_s=8 / seconds_per_step) for r in real_read(run)]

    monkeypatch.setattr(rundir, "read_metrics", read_metrics)


def tiny_plan(folder: Path, out: Path, ratios: tuple[float, ...] = (0.75,), **train: object) -> sweep.SweepPlan:
    return make_plan(SweepOptions(mask_ratios=ratios), cli_values=tiny_cli(folder, out, **train))


def test_pretraining_runs_in_a_fresh_process(tmp_path: Path) -> None:
    folder = write_image_folder(tmp_path / "data", per_class=20, size=16)
    cfg = run_config(tiny_plan(folder, tmp_path / "sweep", log_every=1), 0.75)
    run = Path(cfg.train.out)
    child.pretrain_process(run, cfg, stop_after_steps=2)
    assert load_meta(run)["step"] == 2 and not (run / "summary.json").exists()
    child.train_until(run, cfg, stop_after_steps=2)  # already that far: nothing to do (no process started)
    assert load_meta(run)["step"] == 2


def test_sweep_resumes_after_interruption_and_writes_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAELAB_CACHE", str(tmp_path / "cache"))  # feature caches of this test only
    monkeypatch.setattr(child, "pretrain_process", child.pretrain_here)  # no seconds of imports per segment
    folder = write_image_folder(tmp_path / "data", per_class=20, size=16)
    out = tmp_path / "sweep"
    args = sweep_args(folder, out)
    monkeypatch.setattr(sys, "argv", ["maelab", *args])
    fake_clock(monkeypatch)

    real_pretrained = sweep.ensure_pretrained

    def stop_after_first(plan: sweep.SweepPlan, ratio: float) -> Path:
        real_pretrained(plan, ratio)
        raise Stop

    monkeypatch.setattr(sweep, "ensure_pretrained", stop_after_first)
    with pytest.raises(Stop):
        main(args)
    first = out / "runs" / "mr0.75"  # the budget ratio trains first
    assert json.loads((first / "summary.json").read_text())["status"] == "finished"
    assert not (out / "runs" / "mr0.25").exists() and not (out / "summary.md").exists()
    before = snapshot(first)

    monkeypatch.setattr(sweep, "ensure_pretrained", real_pretrained)
    # Interrupted again in the last fine-tuning (the from-scratch baseline, after both ratios' final checkpoints and
    # the equal wall-clock checkpoint of 0.25).
    real_finetune, tuned = finetune_module.finetune, []

    def finetune(mae: object, cfg: object, ft: object, train: object, test: object, label: str, precision: str) -> dict:
        tuned.append(label)
        if mae is None and len(tuned) == 4:
            raise Stop
        return real_finetune(mae, cfg, ft, train, test, label, precision)

    monkeypatch.setattr(finetune_module, "finetune", finetune)
    with pytest.raises(Stop):
        main(args)
    assert snapshot(first) == before  # not retrained, not rewritten
    assert set(json.loads((out / "sweep.json").read_text())["stages"]) >= {
        "finetune:mr0.25", "finetune:mr0.25-budget", "finetune:mr0.75"}  # fmt: skip
    assert main(args) == 0
    # 0.75 sets the budget: its final checkpoint serves both views and is fine-tuned once.
    assert tuned == ["fine-tune (mr0.25)", "fine-tune (mr0.25-budget)", "fine-tune (mr0.75)", "fine-tune (random-init)",
                     "fine-tune (random-init)"]  # fmt: skip

    # mask 0.25 stopped at its speed probe (step 2) and at the budget (step 5), then ran to the end.
    stages = json.loads((out / "sweep.json").read_text())["stages"]
    assert set(stages) == {"pretrain:mr0.75", "budget:mr0.25", "pretrain:mr0.25", "eval:mr0.25", "eval:mr0.25-budget",
                           "eval:mr0.75", "eval:random-init", "finetune:mr0.25", "finetune:mr0.25-budget",
                           "finetune:mr0.75", "finetune:random-init"}  # fmt: skip
    # Each ratio's final checkpoint, the budget checkpoint and one random init, same images; layer decay only for the
    # pretrained ones.
    tuned_points = ("mr0.25", "mr0.25-budget", "mr0.75", "random-init")
    assert [stages[f"finetune:{p}"]["layer_decay"] for p in tuned_points] == [0.75, 0.75, 0.75, 1.0]
    assert {stages[f"finetune:{p}"]["test_correct"]["n"] for p in tuned_points} == {40}
    assert (out / "evals" / "mr0.25-budget" / "finetune.json").is_file()
    assert (out / "evals" / "random-init" / "finetune.json").is_file()
    plan = stages["budget:mr0.25"]
    assert (plan["probe_steps"], plan["step"], plan["capped"], plan["train_seconds"]) == (2, 5, False, 10.0)
    assert load_meta(out / "budget" / "mr0.25" / "checkpoint")["step"] == 5
    second = out / "runs" / "mr0.25"
    steps = [json.loads(line)["step"] for line in (second / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 11))  # resumed twice: no step lost, none logged twice
    assert json.loads((second / "summary.json").read_text())["steps"] == 10

    rows = list(csv.DictReader((out / "summary.csv").open()))
    baseline = rows.pop()  # the random init: frozen floor and from-scratch fine-tune
    assert (baseline["view"], baseline["ratio"], baseline["point"]) == ("baseline", "", "random-init")
    assert float(baseline["finetune"]) == stages["finetune:random-init"]["top1"]
    assert [(r["view"], r["ratio"], r["step"]) for r in rows] == [
        ("equal epochs", "0.25", "10"), ("equal time", "0.25", "5"),
        ("equal epochs", "0.75", "10"), ("equal time", "0.75", "10"),
    ]  # fmt: skip
    for r in rows:  # equal time: the budget checkpoint of 0.25, the final checkpoint of 0.75 (its equal-epoch result)
        assert float(r["finetune"]) == stages[f"finetune:{r['point']}"]["top1"]
    for r in rows:
        for key in ("linear_cls", "linear_mean", "knn20_cls", "knn20_mean"):
            assert 0.0 <= float(r[key]) <= 100.0
        assert float(r["psnr_common"]) > 0 and r["test_images"] == "40"
    assert float(rows[0]["median_img_per_s"]) > 0 and float(rows[0]["peak_memory_mb"]) > 0

    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["evaluations"]) == {"mr0.25", "mr0.25-budget", "mr0.75", "random-init"}
    assert metrics["evaluations"]["mr0.75"]["finetune"] == stages["finetune:mr0.75"]
    assert metrics["random_init"]["finetune"] == stages["finetune:random-init"]["top1"]
    assert metrics["rows"][-1]["point"] == "random-init"
    assert metrics["rows"][1]["finetune"] == float(rows[1]["finetune"])  # the budget checkpoint's fine-tune
    assert metrics["settings"]["ratios"] == [0.25, 0.75] and metrics["settings"]["budget_ratio"] == 0.75
    text = (out / "summary.md").read_text()
    assert "maelab " + " ".join(args[:3]) in text and "Equal wall-clock budget" in text
    assert [r["point"] for r in rows] == ["mr0.25", "mr0.25-budget", "mr0.75", "mr0.75"]
    assert "McNemar p" in text and "Against the random-init encoder (linear probe (mean)" in text  # paired, per pooling
    assert "Under the same masks (ratio 0.75, the same images)" in text
    assert "| fine-tune (%) |" in text and "| random init |" in text and "Fine-tuning (reduced recipe" in text
    assert "(0.1 warm-up epochs, then cosine)" in text  # what a 1-epoch fine-tune used: a tenth, not the default 1
    assert stages["finetune:mr0.75"]["warmup_steps"] == 0  # a tenth of its one step (40 images, batch 40), rounded
    # the baseline is the same fine-tuning recipe from scratch, not the same wall-clock budget
    assert "Fine-tuning against the same fine-tuning recipe (1 epoch) from scratch (random init without layer" in text
    assert "same budget from scratch" not in text
    assert "40%-80% (the MAE paper: insensitive to the ratio): not tested, 1 fine-tuned ratio" in text  # 0.25 is out
    equal_time = text.split("## Equal wall-clock budget")[1].split("## What it shows")[0]
    assert "| fine-tune (%) |" in equal_time and "| random init |" in equal_time  # one baseline, both views
    assert "and of each equal wall-clock checkpoint" in text
    assert "Equal time: fine-tuning against the same fine-tuning recipe (1 epoch) from scratch (random init" in text
    # every ratio but the budget ratio measures its speed first, not only a slower one
    assert "Every other ratio first trains 10% of its steps" in text and "A slower ratio first trains" not in text
    # when and at which commit each stage was computed (over three calls), beside when the report was written
    computed = json.loads((out / "sweep.json").read_text())["computed"]
    assert metrics["stages_computed"] == {name: computed[name] for name in stages}
    assert all(c["git_commit"] and c["call"] <= c["finished"] for c in computed.values())
    first, last = min(c["finished"] for c in computed.values()), max(c["finished"] for c in computed.values())
    assert "- Report written " in text and f"; stages computed {first} - {last} (git commit" in text
    assert metrics["environment"]["torch"] in text and "preset `cpu`" in text
    for name in ("accuracy_vs_ratio", "psnr_vs_ratio", "speed_vs_ratio", "loss_curves", "reconstruction_mr0.25",
                 "reconstruction_mr0.75", "reconstruction_mr0.25_at_mr0.75", "reconstruction_mr0.25-budget"):  # fmt: skip
        assert (out / "figures" / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name
        if not name.endswith("-budget"):
            assert f"figures/{name}.png" in text or "_at_" in name

    # A finished sweep run again trains and evaluates nothing; it only rewrites the report.
    def forbidden(*a: object, **k: object) -> None:
        raise AssertionError("redone")

    monkeypatch.setattr(child, "pretrain_process", forbidden)
    monkeypatch.setattr(child, "pretrain_here", forbidden)
    monkeypatch.setattr("maelab.eval.commands.reconstruct_run", forbidden)
    monkeypatch.setattr("maelab.eval.frozen.evaluate_knn", forbidden)
    monkeypatch.setattr("maelab.eval.frozen.evaluate_linear", forbidden)
    monkeypatch.setattr(finetune_module, "finetune", forbidden)
    assert main(args) == 0

    # A sweep finished by an older maelab fine-tuned no equal-time checkpoint. Run again, it fine-tunes the budget
    # checkpoint alone; where that checkpoint's weights are gone it warns, leaves the cell empty and says why.
    complete = json.loads((out / "metrics.json").read_text())

    def as_older_sweep() -> None:
        state = json.loads((out / "sweep.json").read_text())
        del state["stages"]["finetune:mr0.25-budget"]
        (out / "sweep.json").write_text(json.dumps(state))
        (out / "evals" / "mr0.25-budget" / "finetune.json").unlink()

    as_older_sweep()
    tuned.clear()
    monkeypatch.setattr(finetune_module, "finetune", finetune)
    assert main(args) == 0 and tuned == ["fine-tune (mr0.25-budget)"]
    as_older_sweep()
    (out / "budget" / "mr0.25" / "checkpoint" / "model.safetensors").unlink()
    monkeypatch.setattr(finetune_module, "finetune", forbidden)
    with pytest.warns(RuntimeWarning, match=r"no complete checkpoint .*mr0\.25-budget is not fine-tuned"):
        assert main(args) == 0
    gone = json.loads((out / "metrics.json").read_text())
    row = gone["rows"][1]
    assert row["point"] == "mr0.25-budget" and "finetune" not in row and "its weights were gone" in row["note"]
    assert gone["rows"][3]["finetune"] == complete["rows"][3]["finetune"]  # 0.75: its final checkpoint's, as before

    # maelab seeds: the equal-time fine-tune over seeds when every sweep has it; none when one lacks it.
    def as_seed(metrics: dict, seed: int, name: str) -> str:
        copy = json.loads(json.dumps(metrics))
        copy["settings"]["pretrain"]["train"]["seed"] = seed
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(copy))
        return str(tmp_path / name)

    def seed_views(folders: list[str], name: str) -> dict:
        assert main(["seeds", *folders, "--out", str(tmp_path / name)]) == 0
        return json.loads((tmp_path / name / "seeds.json").read_text())["views"]

    views = seed_views([as_seed(complete, 0, "s0"), as_seed(complete, 1, "s1")], "both")
    for label in ("mask 0.25", "mask 0.75", RANDOM_LABEL):
        assert "fine-tune" in views["equal time"]["table"][label], label
    assert any(p["metric"] == "fine-tune" for p in views["equal time"]["pairs"])
    views = seed_views([str(tmp_path / "s0"), as_seed(gone, 1, "g1")], "mixed")
    assert all("fine-tune" not in row for row in views["equal time"]["table"].values())
    assert "fine-tune" in views["equal epochs"]["table"]["mask 0.25"]


def test_a_capped_ratio_reuses_its_equal_epoch_fine_tune(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Mask 0.5 trains as fast as 0.75 (the fake clock), so its run ends within the budget: its final checkpoint
    stands in at equal time with its evaluations and its fine-tune, which runs once."""
    monkeypatch.setenv("MAELAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(child, "pretrain_process", child.pretrain_here)
    fake_clock(monkeypatch)
    folder = write_image_folder(tmp_path / "data", per_class=20, size=16)
    out = tmp_path / "sweep"
    args = sweep_args(folder, out)
    args[args.index("0.25")] = "0.5"
    args[args.index("--epochs") + 1] = "1"  # 5 steps: the budget (5 s at 1 s per step) is the whole run
    real_finetune, tuned = finetune_module.finetune, []

    def finetune(mae: object, cfg: object, ft: object, train: object, test: object, label: str, precision: str) -> dict:
        tuned.append(label)
        return real_finetune(mae, cfg, ft, train, test, label, precision)

    monkeypatch.setattr(finetune_module, "finetune", finetune)
    assert main(args) == 0
    assert tuned == ["fine-tune (mr0.5)", "fine-tune (mr0.75)", "fine-tune (random-init)"]
    stages = json.loads((out / "sweep.json").read_text())["stages"]
    assert stages["budget:mr0.5"]["capped"] and not (out / "budget" / "mr0.5").exists()
    rows = list(csv.DictReader((out / "summary.csv").open()))
    top1 = {p: stages[f"finetune:{p}"]["top1"] for p in ("mr0.5", "mr0.75")}
    assert [(r["view"], r["point"], float(r["finetune"])) for r in rows[:4]] == [
        ("equal epochs", "mr0.5", top1["mr0.5"]), ("equal time", "mr0.5", top1["mr0.5"]),
        ("equal epochs", "mr0.75", top1["mr0.75"]), ("equal time", "mr0.75", top1["mr0.75"]),
    ]  # fmt: skip
    text = (out / "summary.md").read_text()
    assert "| fine-tune (%) |" in text.split("## Equal wall-clock budget")[1]
    assert "Equal time: fine-tuning" not in text  # the same checkpoints as at equal epochs: no repeated sentences
    assert "0.5 (final checkpoint, 100% of the budget)" in text  # capped: its equal-time accuracy sentences say so


def tiny_cli(folder: Path, out: Path, **train: object) -> dict[str, dict[str, object]]:
    return {
        "model": {**TINY_MODEL, "img_size": 16}, "data": {"data_dir": str(folder), "subset": 0},
        "train": {"epochs": 2, "batch_size": 8, "quiet": True, "out": str(out), **train},
    }  # fmt: skip


def test_changed_settings_are_refused(tmp_path: Path) -> None:
    folder = write_image_folder(tmp_path / "data", per_class=2, size=16)
    out = tmp_path / "sweep"
    open_stages(tiny_plan(folder, out, (0.5, 0.75)))
    # --quiet may change between runs; nothing else may.
    open_stages(tiny_plan(folder, out, (0.5, 0.75), quiet=False))
    with pytest.raises(ConfigError, match=r"pretrain\.train\.epochs: 2 before, 3 now"):
        open_stages(tiny_plan(folder, out, (0.5, 0.75), epochs=3))
    with pytest.raises(ConfigError, match=r"ratios"):
        open_stages(tiny_plan(folder, out, (0.5, 0.9)))


def test_a_sweep_json_of_an_older_maelab_resumes(tmp_path: Path) -> None:
    """sweep.json once held the settings alone, and options added since take their defaults."""
    folder = write_image_folder(tmp_path / "data", per_class=2, size=16)
    plan = tiny_plan(folder, tmp_path / "sweep", (0.5, 0.75))
    old = plan.to_dict()
    del old["pretrain"]["train"]["quiet"], old["pretrain"]["train"]["weight_decay_end"], old["eval"]["figure_images"]
    plan.out.mkdir(parents=True)
    (plan.out / "sweep.json").write_text(json.dumps(old))
    stages = open_stages(plan)
    assert stages.get("pretrain:mr0.5") is None
    stages.put("pretrain:mr0.5", {"steps": 10})
    assert json.loads((plan.out / "sweep.json").read_text())["stages"] == {"pretrain:mr0.5": {"steps": 10}}
    changed = dataclasses.replace(plan, eval=dataclasses.replace(plan.eval, figure_images=4))
    with pytest.raises(ConfigError, match=r"eval\.figure_images: 8 before, 4 now"):
        open_stages(changed)


def test_bad_sweep_options_name_the_option(tmp_path: Path) -> None:
    folder = write_image_folder(tmp_path / "data", per_class=2, size=16)
    cli = tiny_cli(folder, tmp_path / "out")
    with pytest.raises(ConfigError, match="--mask-ratios"):
        make_plan(SweepOptions(), cli_values={**cli, "model": {**cli["model"], "mask_ratio": 0.5}})
    with pytest.raises(ConfigError, match="--budget-ratio 0.9"):
        make_plan(SweepOptions(mask_ratios=(0.5, 0.75), budget_ratio=0.9), cli_values=cli)
    with pytest.raises(ConfigError, match="each ratio once"):
        make_plan(SweepOptions(mask_ratios=(0.5, 0.5)), cli_values=cli)
    with pytest.raises(ConfigError, match="--mask-ratio must be in"):
        make_plan(SweepOptions(mask_ratios=(0.5, 1.0)), cli_values=cli)
    with pytest.raises(ConfigError, match="--preset 'tpu'"):
        make_plan(SweepOptions(preset="tpu"), cli_values=cli)
    with pytest.raises(ConfigError, match="--probe-epochs"):
        make_plan(cli_values=cli, eval_values={"probe_epochs": 0})
    with pytest.raises(ConfigError, match="--finetune-epochs must be >= 0, got -1"):
        make_plan(cli_values=cli, eval_values={"finetune_epochs": -1})
    with pytest.raises(ConfigError, match="--finetune-subset must be >= 0, got -5"):
        make_plan(cli_values=cli, eval_values={"finetune_subset": -5})
    assert main(["sweep", "--data-dir", str(folder), "--mask-ratio", "0.5", "--out", str(tmp_path / "o")]) == 2


def test_presets(tmp_path: Path) -> None:
    folder = write_image_folder(tmp_path / "data", per_class=2, size=32)
    data = {"data": {"data_dir": str(folder)}}
    cpu = make_plan(cli_values=data)
    assert cpu.ratios == (0.25, 0.5, 0.75, 0.9) and cpu.budget_ratio == 0.75 and cpu.out == Path("runs/sweep-cpu")
    assert (cpu.base.model.name, cpu.base.train.precision, cpu.base.train.device) == ("ref", "auto", "cpu")
    assert cpu.base.data.subset == 0 and cpu.base.train.epochs == 1 and cpu.eval.train_subset == 10000
    assert cpu.eval.test_subset == 0  # every claim on the full test set
    # The CPU presets train with the short recipe (results/recipe_cpu); a flag beside it still wins.
    assert (cpu.base.train.recipe, cpu.base.train.batch_size, cpu.base.train.lr) == ("short", 64, 1e-3)
    assert cpu.base.model.norm_pix_loss
    # Flags win over the preset; without 0.75 the fastest (highest) ratio sets the budget.
    plan = make_plan(SweepOptions(mask_ratios=(0.25, 0.5)), cli_values={**data, "train": {"epochs": 3}},
                     eval_values={"train_subset": 100})  # fmt: skip
    assert plan.base.train.epochs == 3 and plan.budget_ratio == 0.5 and plan.eval.train_subset == 100
    assert make_plan(SweepOptions(budget=False), cli_values=data).budget_ratio is None
    recon = make_plan(SweepOptions(preset="recon-50ep"), cli_values=data)
    assert recon.ratios == (0.75,) and recon.budget_ratio is None
    assert (recon.base.data.subset, recon.base.train.epochs, recon.base.train.recipe) == (5000, 50, "short")
    gpu = make_plan(SweepOptions(preset="gpu"), cli_values=data)
    assert gpu.base.data.subset == 0 and gpu.base.train.epochs >= 100 and gpu.base.model.name == "vit-tiny"
    # Fine-tuning per ratio: (epochs, class-balanced train images; 0 = all), and none in the reconstruction study.
    tuning = [(p.eval.finetune_epochs, p.eval.finetune_subset) for p in (cpu, gpu, recon)]
    assert tuning == [(1, 5000), (50, 0), (0, 0)]


def test_budget_step_uses_the_rate_after_the_first_window() -> None:
    # 8 images per step: the first window (2 steps at 2 img/s) took 8 s, then 1 s per step.
    records = [{"step": 2, "img_per_s": 2.0}, {"step": 4, "img_per_s": 8.0}, {"step": 6, "img_per_s": 8.0}]
    sps, step = budget_step(records, 8, probe=6, budget_seconds=20.0)
    assert sps == pytest.approx(1.0) and step == 2 + 12
    sps, step = budget_step(records[:1], 8, probe=2, budget_seconds=20.0)  # one window: its mean rate
    assert sps == pytest.approx(4.0) and step == 5


def test_reconstruction_study_preset_runs_one_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAELAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(child, "pretrain_process", child.pretrain_here)
    folder = write_image_folder(tmp_path / "data", per_class=10, size=16)
    cli = tiny_cli(folder, tmp_path / "study", epochs=1, log_every=1)
    cli["data"]["subset"] = 20  # the preset's 5,000 images, scaled down
    # --finetune-epochs 0 (the preset's value too) skips fine-tuning; its subset is then moot.
    flags = given_values(build_parser().parse_args(["sweep", "--finetune-epochs", "0", "--finetune-subset", "30"]),
                         "eval")  # fmt: skip
    assert flags == {"finetune_epochs": 0, "finetune_subset": 30}
    evals = {"train_subset": 0, "test_subset": 0, "probe_epochs": 1, **flags}
    plan = make_plan(SweepOptions(preset="recon-50ep"), cli_values=cli, eval_values=evals)
    assert (plan.eval.finetune_epochs, plan.eval.finetune_subset) == (0, 0)
    monkeypatch.setattr(finetune_module, "finetune", lambda *a, **k: pytest.fail("fine-tuned"))
    summary = sweep.run_sweep(plan, "maelab sweep --preset recon-50ep")
    text = summary.read_text()
    assert text.startswith("# Reconstruction study (preset `recon-50ep`)") and "Equal wall-clock" not in text
    assert "fine-tune" not in text.lower() and "Fine-tuning" not in text
    assert not any(name.startswith("finetune:") for name in json.loads((plan.out / "sweep.json").read_text())["stages"])
    rows = list(csv.DictReader((plan.out / "summary.csv").open()))
    assert [(r["view"], r["ratio"]) for r in rows] == [("equal epochs", "0.75")] and "finetune" not in rows[0]
    assert f"PSNR {float(rows[0]['psnr_common']):.2f} dB" in text  # the study's headline numbers
    assert (plan.out / "figures" / "reconstruction_mr0.75.png").is_file()


def _recon(own: list[float], common: list[float]) -> list[dict[str, float]]:
    return [
        {"ratio": r, "psnr_own": o, "psnr_common": c}
        for r, o, c in zip((0.25, 0.5, 0.75, 0.9), own, common, strict=True)
    ]


def test_reconstruction_sentence_names_the_effect_from_the_numbers() -> None:
    # The 0.9 model is last at its own ratio, but under the same 0.75 masks it beats the 0.25 model, and the
    # ranking follows the distance from 0.75: a harder task plus a train/test mismatch, not a worse model.
    text = " ".join(reconstruction_sentences(_recon([30, 27, 24, 21], [20, 22, 24, 22.5]), 0.75))
    assert "30.00 dB at 0.25" in text and "22.50 dB for the 0.9 model" in text
    assert "the 0.9 model's low PSNR at its own ratio is its harder task, not a worse model" in text
    assert "above the 0.25 model (20.00 dB)" in text and "a train/test mask-ratio mismatch effect" in text
    # The same own-ratio numbers, but the 0.9 model is also last under the same masks and the order ignores the
    # distance from 0.75: a worse model, not a mismatch.
    text = " ".join(reconstruction_sentences(_recon([30, 27, 24, 21], [25, 24.5, 24, 19]), 0.75))
    assert "The 0.9 model is lowest under the same masks too (19.00 dB)" in text
    assert "not a train/test mismatch effect" in text and "harder task, not a worse model" not in text


def test_accuracy_sentence_is_paired_on_the_same_images() -> None:
    n, rng = 1000, np.random.default_rng(0)
    a = np.zeros(n, dtype=bool)
    a[rng.choice(n, 600, replace=False)] = True
    b = a.copy()
    b[np.flatnonzero(a)[:50]] = False  # 50 images only the 0.75 model gets right: +5 points, far beyond noise
    c = a.copy()
    c[np.flatnonzero(a)[:5]] = False  # 5 images: +0.5 points, a tie
    flags = {"mr0.75": a, "mr0.25": b, "mr0.5": c}
    evals = {
        p: {"linear": {"results": [{"pooling": "cls", "test_correct": pack_correct(f)}]}} for p, f in flags.items()
    }
    rows = [
        {"ratio": float(p[2:]), "point": p, "linear_cls": 100.0 * f.mean(), "test_images": n} for p, f in flags.items()
    ]
    metric = ("linear_cls", "linear", "cls", "linear probe (cls)")
    tie = accuracy_sentence(rows, evals, metric, "20")
    assert "best at mask ratio 0.75 (60.00%)" in tie and "tie: mask 0.75 vs mask 0.5 +0.50 points, 95% CI [" in tie
    beats = accuracy_sentence([rows[0], rows[1]], evals, metric, "20")
    assert "mask 0.75 beats mask 0.25: mask 0.75 - mask 0.25 +5.00 points" in beats and "McNemar p" in beats
    old = accuracy_sentence([rows[0], rows[1]], {}, metric, "20")  # evaluations of an older maelab
    assert "unpaired 2-SE rule" in old


def _finetuned(flags: dict[str, np.ndarray]) -> tuple[list[dict], dict]:
    """(equal-epoch rows, evaluations) holding only fine-tuning results, one per point (``mr<R>`` or random-init)."""
    evals = {p: {"finetune": {"top1": 100.0 * f.mean(), "test_correct": pack_correct(f)}} for p, f in flags.items()}
    rows = [{"ratio": float(p[2:]), "point": p, "test_images": len(f)} for p, f in flags.items() if p.startswith("mr")]
    return rows, evals


def test_finetune_sentences_claim_only_what_the_paired_statistics_show() -> None:
    n, rng = 2000, np.random.default_rng(1)
    a = np.zeros(n, dtype=bool)
    a[rng.choice(n, 1200, replace=False)] = True  # 60%
    worse = a.copy()
    worse[np.flatnonzero(a)[:120]] = False  # 120 images only the 0.75 model gets right: +6 points
    scratch = a.copy()
    scratch[np.flatnonzero(a)[:300]] = False  # 45%

    # Identical correctness at 0.5 and 0.75: within noise, so (and only so) "insensitive", with its interval.
    rows, evals = _finetuned({"mr0.25": worse, "mr0.5": a, "mr0.75": a.copy(), "random-init": scratch})
    same = finetune_spread_sentence(rows, evals)
    assert same is not None and "40%-80% (the MAE paper: insensitive to the ratio): no difference detected" in same
    assert "among 0.5 (60.00%), 0.75 (60.00%)" in same
    assert "mask 0.5 - mask 0.75 = +0.00 points (95% CI [+0.00, +0.00], McNemar p = 1, n = 2000)" in same
    assert "one seed" in same and "0.25" not in same.split("among")[1]  # 0.25 is outside 40-80%
    vs = finetune_vs_scratch_sentence(rows, evals)
    assert vs is not None and "from scratch (random init without layer decay, 45.00%)" in vs
    assert "above it at 0.25 (+9.00 [" in vs and "0.5 (+15.00 [" in vs and "tie" not in vs and "one seed" in vs

    # A clear difference inside the range: claimed, and "insensitive" is not.
    rows, evals = _finetuned({"mr0.5": worse, "mr0.75": a, "random-init": worse.copy()})
    differs = finetune_spread_sentence(rows, evals)
    assert differs is not None and "not insensitive at this budget" in differs and "within noise" not in differs
    assert "mask 0.75 beats mask 0.5: mask 0.75 - mask 0.5 +6.00 points, 95% CI [" in differs
    vs = finetune_vs_scratch_sentence(rows, evals)
    assert vs is not None and "above it at 0.75" in vs and "a tie with it at 0.5 (+0.00 [" in vs

    # One ratio in the range cannot test the claim; nothing fine-tuned: no sentence at all.
    rows, evals = _finetuned({"mr0.25": worse, "mr0.75": a})
    assert "not tested, 1 fine-tuned ratio in that range" in (finetune_spread_sentence(rows, evals) or "")
    assert finetune_vs_scratch_sentence(rows, evals) is None  # no from-scratch baseline
    assert finetune_spread_sentence(rows, {}) is None and finetune_vs_scratch_sentence(rows, {}) is None


def test_equal_time_sentences_tag_a_capped_ratio(tmp_path: Path) -> None:
    """At equal time a capped ratio stands in with its final checkpoint, which used only part of the budget: the
    sentences say so after its ratio; a budget checkpoint and the budget ratio get no tag."""
    folder = write_image_folder(tmp_path / "data", per_class=2, size=16)
    plan = tiny_plan(folder, tmp_path / "sweep", (0.5, 0.75, 0.9))
    n, rng = 2000, np.random.default_rng(2)
    a = np.zeros(n, dtype=bool)
    a[rng.choice(n, 1200, replace=False)] = True  # 60%
    scratch = a.copy()
    scratch[np.flatnonzero(a)[:300]] = False  # 45%
    flags = {"mr0.5-budget": a, "mr0.75": a.copy(), "mr0.9": a.copy(), "random-init": scratch}
    evals = {p: {"finetune": {"top1": 100.0 * f.mean(), "test_correct": pack_correct(f), "recipe": {"epochs": 3}}}
             for p, f in flags.items()}  # fmt: skip
    rows = [{"ratio": r, "point": p, "train_seconds": s, "test_images": n}
            for r, p, s in ((0.5, "mr0.5-budget", 104.0), (0.75, "mr0.75", 100.0), (0.9, "mr0.9", 63.0))]  # fmt: skip
    assert plan.budget_ratio == 0.75
    tag = capped_tag(plan, rows)
    vs = finetune_vs_scratch_sentence(rows, evals, tag=tag)
    assert vs is not None and "against the same fine-tuning recipe (3 epochs) from scratch (random init" in vs
    assert "0.9 (final checkpoint, 63% of the budget) (+15.00 [" in vs
    assert "0.5 (+15.00 [" in vs and "0.75 (+15.00 [" in vs  # a budget checkpoint, the budget ratio: no tag
    assert "final checkpoint" not in (finetune_vs_scratch_sentence(rows, evals) or "")  # equal epochs: untagged

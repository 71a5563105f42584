"""``maelab seeds`` given ``maelab compare`` folders: MAE vs DINO over seeds, decided only with >= 3 seeds."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from maelab.cli import main
from maelab.config import ConfigError
from maelab.eval.stats import pack_correct
from maelab.experiments.compare_seeds import load_compares, write_compare_seeds

N = 1000  # test images of the fake comparisons
LABELS = ("MAE", "DINO", "DINO (equal time)", "random init")


def _fake_compare(folder: Path, seed: int, right: dict[str, int], mae_img_s: float = 100.0,
                  dino_img_s: float = 10.0, epochs: int = 1, finished: bool = True) -> Path:  # fmt: skip
    """A finished comparison's metrics.json: ``right[label]`` test images right (nested: a model right on more
    images is right on these too), the same at both poolings and every protocol, except MAE's mean pooling
    (50 more images right than its CLS token)."""

    def right_at(label: str, pooling: str) -> int:
        return right[label] + (50 if (label, pooling) == ("MAE", "mean") else 0)

    def packed(n: int) -> dict:
        return pack_correct(np.arange(N) < n)

    accs = {lbl: {p: right_at(lbl, p) / N * 100 for p in ("cls", "mean")} for lbl in LABELS}
    flags = {lbl: {p: packed(right_at(lbl, p)) for p in ("cls", "mean")} for lbl in LABELS}
    frozen = {"data": {"test_images": N}, "knn": accs, "linear": accs, "knn_correct": flags, "linear_correct": flags}
    stages: dict = {
        "pretrain:mae": {"img_per_s": mae_img_s},
        "pretrain:dino": {"img_per_s": dino_img_s, "teacher_init_left": 0.05},
        "equal_time": {"label": "DINO (equal time)", "reference": "mae", "stop_after_steps": 76},
        **{f"finetune:{lbl}": {"top1": right[lbl] / N * 100, "test_correct": packed(right[lbl])} for lbl in LABELS},
    }
    if finished:
        stages["frozen"] = frozen
    metrics = {
        "settings": {"config": {"train": {"seed": seed, "out": "", "epochs": epochs}, "data": {"data_dir": "d"}},
                     "options": {"given": ["train.seed"] if seed else []}, "dino_recipe": {"blr": 5e-4}},
        "stages": stages,
    }  # fmt: skip
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "summary.md").write_text(
        f"# MAE vs DINO\n\n- Date: 2026-11-3{seed}; git commit c{seed}\n- Hardware: test\n"
    )
    return folder


def test_comparisons_over_seeds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    right = [{"MAE": 600 + d, "DINO": 500 + d, "DINO (equal time)": 450, "random init": 400} for d in (0, 10, -10)]
    speeds = [(100.0, 10.0), (110.0, 10.0), (120.0, 12.0)]
    folders = [_fake_compare(tmp_path / f"s{i}", i, r, *s) for i, (r, s) in enumerate(zip(right, speeds, strict=True))]
    assert main(["seeds", *map(str, folders), "--out", str(tmp_path / "out")]) == 0
    summary = capsys.readouterr().out
    assert "# MAE vs DINO over 3 seeds (0, 1, 2)" in summary and "seed 1, 2026-11-31; git commit c1; test" in summary
    # MAE - DINO = +10 points in every seed and protocol: decided.
    assert "- fine-tune: MAE beats DINO (decided): MAE - DINO +10.00 points over 3 seeds (SD 0.00" in summary
    record = json.loads((tmp_path / "out" / "seeds.json").read_text())
    assert record["table"]["k-NN mean"]["MAE"]["per_seed"] == [65.0, 66.0, 64.0]
    pairs = {(p["metric"], p["a"], p["b"]): p for p in record["pairs"]}
    assert set(pairs) >= {("linear probe cls", "MAE", "DINO"), ("fine-tune", "DINO", "random init"),
                          ("k-NN cls", "DINO (equal time)", "MAE")}  # fmt: skip
    # The equal-time DINO run against MAE, whose time it was given: 45 - 60 / 61 / 59 points.
    assert pairs[("k-NN cls", "DINO (equal time)", "MAE")]["spread"]["mean"] == pytest.approx(-15.0)
    assert pairs[("k-NN cls", "DINO (equal time)", "MAE")]["winner"] == "MAE"
    learned = {p["a"]: p for p in record["learned"]}
    assert learned["MAE cls"]["winner"] == "MAE mean" and learned["MAE cls"]["spread"]["mean"] == pytest.approx(-5.0)
    assert learned["DINO cls"]["winner"] is None and learned["DINO cls"]["text"].startswith("tie")  # identical flags
    # MAE img/s / DINO img/s per seed: 10, 11, 10.
    slowdown = record["speed"]["DINO slowdown per image (MAE img/s / DINO img/s)"]
    assert slowdown["per_seed"] == pytest.approx([10.0, 11.0, 10.0])
    two = write_compare_seeds(folders[:2], tmp_path / "two").read_text()
    assert "(decided)" not in two and "fewer than 3 seeds" in two
    assert "split_calls" not in record and "more than one call" not in summary  # no call stamps: nothing to say
    # Seed 2's DINO resumed a run begun by an earlier call: its speeds are flagged, the others' are not.
    metrics = json.loads((folders[2] / "metrics.json").read_text())
    stamps = {"pretrain:mae": {"call": "t1", "resumed": False}, "pretrain:dino": {"call": "t1", "resumed": True}}
    for i, folder in enumerate(folders):
        m = json.loads((folder / "metrics.json").read_text()) if i < 2 else metrics
        for name, stamp in stamps.items():
            m["stages"][name].update({**stamp, "resumed": stamp["resumed"] and i == 2})
        (folder / "metrics.json").write_text(json.dumps(m))
    flagged = write_compare_seeds(folders, tmp_path / "flagged").read_text()
    assert "Seed(s) 2: pretrained in more than one call of `maelab compare`" in flagged
    assert json.loads((tmp_path / "flagged" / "seeds.json").read_text())["split_calls"] == [2]


def test_comparison_seeds_refuse_what_is_not_one_comparison(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    right = {"MAE": 600, "DINO": 500, "DINO (equal time)": 450, "random init": 400}
    first = _fake_compare(tmp_path / "s0", 0, right)
    with pytest.raises(ConfigError, match=r"s1: setting config\.train\.epochs is 2 but 1"):
        load_compares([first, _fake_compare(tmp_path / "s1", 1, right, epochs=2)])
    with pytest.raises(ConfigError, match=r"s2: no frozen evaluations .*run its command again"):
        load_compares([first, _fake_compare(tmp_path / "s2", 2, right, finished=False)])
    with pytest.raises(ConfigError, match="both --seed 0"):
        load_compares([first, _fake_compare(tmp_path / "again", 0, right)])
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "metrics.json").write_text(json.dumps({"settings": {}, "rows": [], "evaluations": {}}))
    assert main(["seeds", str(first), str(tmp_path / "sweep"), "--out", str(tmp_path / "mixed")]) == 2
    assert "sweep is not a comparison but" in capsys.readouterr().err
    assert main(["seeds", str(first), str(tmp_path / "gone"), "--out", str(tmp_path / "mixed")]) == 2
    assert f"{tmp_path / 'gone'}: no such directory" in capsys.readouterr().err  # not "gone is not a comparison"


def _edit_metrics(folder: Path, edit: Callable[[dict], object]) -> Path:
    """``edit`` applied to the stages of the fake comparison in ``folder``."""
    path = folder / "metrics.json"
    metrics = json.loads(path.read_text())
    edit(metrics["stages"])
    path.write_text(json.dumps(metrics))
    return folder


def test_comparison_seeds_need_per_image_results_on_the_same_test_images(tmp_path: Path) -> None:
    right = {"MAE": 600, "DINO": 500, "DINO (equal time)": 450, "random init": 400}
    first = _fake_compare(tmp_path / "s0", 0, right)
    older = _edit_metrics(
        _fake_compare(tmp_path / "older", 1, right), lambda st: st["finetune:DINO"].pop("test_correct")
    )
    with pytest.raises(ConfigError, match=r"older: fine-tune of DINO has no per-image test results .*older maelab"):
        load_compares([first, older])

    def fewer_images(stages: dict) -> None:
        stages["frozen"]["knn_correct"]["MAE"]["cls"] = pack_correct(np.arange(N // 2) < 300)

    fewer = _edit_metrics(_fake_compare(tmp_path / "fewer", 2, right), fewer_images)
    with pytest.raises(ConfigError, match=r"fewer: k-NN cls of MAE was scored on 500 test images but .*s0 on 1000"):
        load_compares([first, fewer])


def test_each_comparison_read_says_when_its_stages_were_computed(tmp_path: Path) -> None:
    """A comparison whose metrics.json records when its stages were computed (``stages_computed``, as a sweep's) shows
    that span on its line, with the stages that predate the record counted; one of an older maelab shows none."""
    right = {"MAE": 600, "DINO": 500, "DINO (equal time)": 450, "random init": 400}
    old, dated = _fake_compare(tmp_path / "s0", 0, right), _fake_compare(tmp_path / "s1", 1, right)
    metrics = json.loads((dated / "metrics.json").read_text())
    metrics["stages_computed"] = {
        "pretrain:mae": {"call": "2026-11-30T09:00:00", "finished": "2026-11-30T10:00:00", "git_commit": "c9"},
        "pretrain:dino": {"call": "2026-11-30T09:00:00", "finished": "2026-11-30T12:00:00", "git_commit": "c9"},
        "frozen": None,  # recorded before the record was kept
    }
    (dated / "metrics.json").write_text(json.dumps(metrics))
    summary = write_compare_seeds([old, dated], tmp_path / "out").read_text()
    assert (f"- `{dated}`: seed 1, 2026-11-31; git commit c1; stages computed 2026-11-30T10:00:00 - "
            "2026-11-30T12:00:00 (git commit c9); 1 of 3 stages older, undated; test\n") in summary  # fmt: skip
    assert f"- `{old}`: seed 0, 2026-11-30; git commit c0; test\n" in summary


def test_each_section_of_verdicts_counts_its_decided_pairs(tmp_path: Path) -> None:
    """Each section of verdicts opens with "Decided: D of N pairs, H of them also after a Holm correction over the
    report's 27 pairs" (5 pairs in each of 5 protocols, and 2 of what is learned), as the sweep's report does."""
    # Only DINO varies with the seed: a pair without DINO has the same difference in every seed (t-test p 0, so it
    # holds after Holm); MAE - DINO is +10 +7 +13 points (+15 +12 +18 at mean pooling, MAE's 50 more images there)
    # and DINO - random init +10 +13 +7: decided (t 5.8 and 8.7 > 4.30 on 2 df) with p 0.029 and 0.013, which Holm
    # takes above 0.05 (16 pairs have p 0, so the smallest of the other 11 is multiplied by 11: adjusted p 0.14, and
    # the adjusted p of the larger ones are at least that).
    right = [{"MAE": 600, "DINO": 500 + d, "DINO (equal time)": 450, "random init": 400} for d in (0, 30, -30)]
    folders = [_fake_compare(tmp_path / f"s{i}", i, r) for i, r in enumerate(right)]
    summary = write_compare_seeds(folders, tmp_path / "out").read_text()
    holm = "also after a Holm correction over the report's 27 pairs."
    assert f"## MAE vs DINO, per protocol\n\nDecided: 5 of 5 pairs, 0 of them {holm}\n\n- k-NN cls: MAE" in summary
    # CLS vs mean pooling: MAE's -5 points in every seed is decided (and holds); DINO's identical flags are a tie.
    assert f"of one encoder)\n\nDecided: 1 of 2 pairs, 1 of them {holm}\n\n- MAE mean beats MAE cls" in summary
    # MAE and the equal-time run vs random init, and the equal-time run vs MAE, hold (15); DINO vs random init (5) not.
    assert f"the equal-time run\n\nDecided: 20 of 20 pairs, 15 of them {holm}\n\n- k-NN cls: MAE beats" in summary
    two = write_compare_seeds(folders[:2], tmp_path / "two").read_text()  # nothing decided: no Holm tail
    assert all(f"\n\nDecided: 0 of {n} pairs.\n\n" in two for n in (5, 2, 20))


def test_a_setting_added_by_a_later_maelab_matches_its_default(tmp_path: Path) -> None:
    """An older comparison lacks ``train.fixed_warmup_steps``: it ran with the field's default (0), so a newer one
    at 0 is the same comparison, and a newer one at 5 is refused by name."""
    right = {"MAE": 600, "DINO": 500, "DINO (equal time)": 450, "random init": 400}
    old = _fake_compare(tmp_path / "s0", 0, right)
    newer = [_fake_compare(tmp_path / f"s{i}", i, right) for i in (1, 2)]
    for folder, steps in zip(newer, (0, 5), strict=True):
        m = json.loads((folder / "metrics.json").read_text())
        m["settings"]["config"]["train"]["fixed_warmup_steps"] = steps
        (folder / "metrics.json").write_text(json.dumps(m))
    assert [c["seed"] for c in load_compares([old, newer[0]])] == [0, 1]
    assert [c["seed"] for c in load_compares([newer[0], old])] == [1, 0]
    with pytest.raises(ConfigError, match=r"s2: setting config\.train\.fixed_warmup_steps is 5 but missing in"):
        load_compares([old, newer[1]])
    with pytest.raises(ConfigError, match=r"s2: setting config\.train\.fixed_warmup_steps is 5 but 0 in"):
        load_compares([newer[0], newer[1]])

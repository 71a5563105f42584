"""``maelab seeds``: several seeds of one sweep (or recipe search) read together; a ranking is decided only with
>= 3 seeds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from maelab.cli import main
from maelab.config import ConfigError
from maelab.eval.stats import PairedComparison, pack_correct
from maelab.experiments.recipe_seeds import RANDOM, load_searches, write_search_seeds
from maelab.experiments.seeds import RULE, load_sweeps, seed_verdict, shared_metrics, write_seeds
from maelab.experiments.seeds_checks import budget_lines, machine_warning, point_kinds, point_text, speed_lines
from maelab.experiments.sweep_plan import VIEWS

N = 1000  # test images of the fake sweeps
RESULTS = Path(__file__).resolve().parents[1] / "results" / "mask_ratio_cpu"  # a committed sweep over 3 seeds


def _comparison(difference: float, p: float) -> PairedComparison:
    low, high = (difference - 1, difference + 1) if p < 0.05 else (difference - 5, difference + 5)
    return PairedComparison(N, 50 + difference, 50, difference, low, high, 0, 0, p)


def test_seed_verdict_rule() -> None:
    # pooled: (difference, low, high) of the paired bootstrap pooled over seeds, here beyond test-image noise.
    decided = seed_verdict("A", "B", [_comparison(d, 1e-4) for d in (4.0, 5.0, 6.0)], pooled=(5.0, 4.0, 6.0))
    assert decided.winner == "A" and decided.pooled == (5.0, 4.0, 6.0)
    # t-interval 5 +- 4.303 * 1 / sqrt(3) = [2.52, 7.48]
    assert decided.text == (
        "A beats B (decided): A - B +5.00 points over 3 seeds (SD 1.00, 95% t-interval [+2.52, +7.48]) (per seed, "
        "paired: +4.00 p 0.0001; +5.00 p 0.0001; +6.00 p 0.0001), pooled over seeds +5.00 [+4.00, +6.00]; 3 of 3 "
        "seeds beyond noise on their own"
    )
    down = seed_verdict("A", "B", [_comparison(d, 1e-4) for d in (-4.0, -5.0, -6.0)], pooled=(-5.0, -6.0, -4.0))
    assert down.winner == "B" and down.text.startswith("B beats A (decided)")
    two = seed_verdict("A", "B", [_comparison(d, 1e-4) for d in (4.0, 5.0)], pooled=(4.5, 3.5, 5.5))
    assert two.winner is None and two.text.startswith("not decided") and two.text.endswith("; fewer than 3 seeds")
    assert "pooled over seeds +4.50 [+3.50, +5.50]" in two.text
    # The seed interval includes 0: a tie, whatever the pooled test says (it covers test-image noise only).
    tie = seed_verdict("A", "B", [_comparison(d, 1e-4) for d in (5.0, -5.0, 1.0)], pooled=(0.33, 0.1, 0.6))
    assert tie.winner is None and tie.text.startswith("tie") and "pooled over seeds +0.33 [+0.10, +0.60]" in tie.text
    # One seed's own paired test is a tie, but the seed interval (4.5 +- 4.303 * 0.5 / sqrt(3) = [3.26, 5.74]) and
    # the pooled interval exclude 0: decided, and the seeds beyond noise on their own are counted.
    split = [_comparison(4.0, 1e-4), _comparison(5.0, 1e-4), _comparison(4.5, 0.3)]
    mixed = seed_verdict("A", "B", split, pooled=(4.5, 3.0, 6.0))
    assert mixed.winner == "A" and mixed.text.startswith("A beats B (decided)")
    assert mixed.text.endswith("; 2 of 3 seeds beyond noise on their own")
    # A seed beyond noise the other way is said so: five seeds at +4 and one at -1.5, mean 3.08, t-interval
    # 3.08 +- 2.571 * 2.245 / sqrt(6) = [0.73, 5.44].
    against = seed_verdict("A", "B", [_comparison(d, 1e-4) for d in (4.0,) * 5 + (-1.5,)], pooled=(3.08, 2.0, 4.1))
    assert against.winner == "A" and against.text.endswith("; 5 of 6 seeds beyond noise on their own, 1 the other way")
    # The split seeds again, but the pooled interval includes 0 (or lies on the other side): within test-image noise.
    noisy = seed_verdict("A", "B", split, pooled=(4.5, -0.2, 9.2))
    assert noisy.winner is None and noisy.text.startswith("not decided: A - B +4.50 points over 3 seeds")
    assert noisy.text.endswith("; within test-image noise (the pooled interval includes 0)")
    other = seed_verdict("A", "B", split, pooled=(4.5, -3.0, -1.0))
    assert other.winner is None and other.text.endswith("(the pooled interval is on the other side of 0)")
    # No per-image flags to pool: never decided, however far the seed interval is from 0.
    bare = seed_verdict("A", "B", [_comparison(d, 1e-4) for d in (4.0, 5.0, 6.0)])
    assert bare.winner is None and bare.pooled is None
    assert bare.text.startswith("not decided") and bare.text.endswith("; no per-image flags to pool")
    assert "pooled over seeds" not in bare.text


def _flags(right: int) -> dict:
    return pack_correct(np.arange(N) < right)  # nested: a model right on more images is right on these too


def _fake_sweep(folder: Path, seed: int, right: dict[str, int], epochs: int = 1) -> Path:
    """A finished sweep's metrics.json: ratios 0.5 / 0.75 and the random init, ``right`` images per point."""

    def evals(n: int) -> dict:
        return {"linear": {"results": [{"pooling": "cls", "test_correct": _flags(n)}]},
                "knn": {"results": [{"pooling": "cls", "test_correct": {"20": _flags(n)}}]},
                "finetune": {"test_correct": _flags(n)}}  # fmt: skip

    rows = [{"view": v, "ratio": r, "point": f"mr{r}"} for v in ("equal epochs", "equal time") for r in (0.5, 0.75)]
    metrics = {
        "settings": {"ratios": [0.5, 0.75], "pretrain": {"train": {"seed": seed, "out": "", "epochs": epochs}},
                     "eval": {"ks": [10, 20], "poolings": ["cls"], "finetune_epochs": 1}},
        "environment": {"date": "2026-11-30", "git_commit": "abc", "cpu_model": "test"},
        "rows": rows, "evaluations": {p: evals(n) for p, n in right.items()},
    }  # fmt: skip
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_three_seeds_decide_and_two_do_not(tmp_path: Path) -> None:
    right = [{"mr0.5": 500 + d, "mr0.75": 600 + d, "random-init": 400} for d in (0, 10, -10)]
    folders = [_fake_sweep(tmp_path / f"s{i}", i, r) for i, r in enumerate(right)]
    summary = write_seeds(folders, tmp_path / "out", "maelab seeds ...").read_text()
    assert "mask 0.75 beats mask 0.5 (decided)" in summary
    record = json.loads((tmp_path / "out" / "seeds.json").read_text())
    table = record["views"]["equal epochs"]["table"]
    assert table["mask 0.75"]["linear cls"]["per_seed"] == [60.0, 61.0, 59.0]
    assert table["mask 0.75"]["linear cls"]["spread"]["mean"] == pytest.approx(60.0)
    assert table["mask 0.75"]["linear cls"]["spread"]["sd"] == pytest.approx(1.0)
    assert set(table["mask 0.75"]) == {"linear cls", "k-NN k=20 cls", "fine-tune"}
    # no equal-time row carries a fine-tune (a sweep of an older maelab): that view has no fine-tune column
    assert set(record["views"]["equal time"]["table"]["mask 0.75"]) == {"linear cls", "k-NN k=20 cls"}
    pair = next(p for p in record["views"]["equal epochs"]["pairs"]
                if (p["metric"], p["a"], p["b"]) == ("fine-tune", "mask 0.5", "mask 0.75"))  # fmt: skip
    assert pair["winner"] == "mask 0.75" and pair["spread"]["mean"] == pytest.approx(-10.0)
    assert [c["difference"] for c in pair["per_seed"]] == pytest.approx([-10.0, -10.0, -10.0])
    # pooled over seeds per image: the mean of the per-seed differences, its interval below 0 (the reports keep it)
    assert (
        pair["pooled"]["difference"] == pytest.approx(-10.0)
        and pair["pooled"]["ci_low"] < pair["pooled"]["ci_high"] < 0
    )
    assert pair["holm"]["adjusted_p"] == 0.0  # every seed -10: no spread, so p 0 (before and after Holm)
    assert "of them also after a Holm correction over the report's" in summary
    assert "(decided): mask 0.5 - mask 0.75 -10.00" in summary and "Holm over the report's" in summary
    two = write_seeds(folders[:2], tmp_path / "out2").read_text()
    assert "(decided)" not in two and "fewer than 3 seeds" in two
    # no budget, speed or machine records in these sweeps: those lines are left out
    assert "Budget per seed" not in summary and "Warning" not in summary and "Note:" not in summary


def _committed_folders() -> list[Path]:
    """The folders the committed seeds report read (its seeds.json), in its order; each committed seeds/seedN folder
    must be among them, so a seed added without re-running ``maelab seeds`` fails here."""
    recorded = json.loads((RESULTS / "seeds" / "seeds.json").read_text())["folders"]
    folders = [RESULTS.parents[1] / f for f in recorded]
    assert set((RESULTS / "seeds").glob("seed[0-9]*")) <= set(folders)
    return folders


def test_committed_sweeps_read_back_with_the_recorded_columns() -> None:
    """results/mask_ratio_cpu and its seeds (swept with the equal-time fine-tune): read now, both views have the
    fine-tune column and exactly the columns of the committed report (seeds/seeds.json)."""
    folders = _committed_folders()
    if not all((f / "metrics.json").is_file() for f in folders):
        pytest.skip("the committed results are not in this checkout")
    sweeps = load_sweeps(folders)
    recorded = json.loads((RESULTS / "seeds" / "seeds.json").read_text())["views"]
    for view in VIEWS:
        labels = [m[3] for m in shared_metrics(sweeps, view)]
        assert "fine-tune" in labels
        assert set(labels) == {name for row in recorded[view]["table"].values() for name in row}


def _timed_sweep(
    folder: Path, seed: int, capped: bool = True, budget: float = 100.0, speed: float = 120.0, cpu: str = "test CPU"
) -> Path:
    """A finished sweep of ratios 0.5 / 0.75 / 0.9 with its equal-time records: 0.75 sets the budget (``budget`` s at
    ``speed`` img/s on ``cpu``), 0.5 has a budget checkpoint (102% of the budget), 0.9 is capped (its final
    checkpoint, 63% of the budget) or, not ``capped``, has a budget checkpoint too (101%)."""
    right = {"mr0.5": 500, "mr0.5-budget": 480, "mr0.75": 600, "mr0.9": 550, "mr0.9-budget": 560, "random-init": 400}
    _fake_sweep(folder, seed, {p: n + seed for p, n in right.items()})
    m = json.loads((folder / "metrics.json").read_text())
    m["settings"].update(ratios=[0.5, 0.75, 0.9], budget_ratio=0.75)
    m["environment"]["cpu_model"] = cpu
    m["budget_seconds"], m["runs"] = budget, {"0.75": {"median_img_per_s": speed}}
    nine = ("mr0.9", 0.63) if capped else ("mr0.9-budget", 1.01)
    m["rows"] = [{"view": "equal epochs", "ratio": r, "point": f"mr{r}"} for r in (0.5, 0.75, 0.9)] + [
        {"view": "equal time", "ratio": r, "point": p, "train_seconds": share * budget}
        for r, (p, share) in ((0.5, ("mr0.5-budget", 1.02)), (0.75, ("mr0.75", 1.0)), (0.9, nine))
    ]  # fmt: skip
    (folder / "metrics.json").write_text(json.dumps(m))
    return folder


def test_equal_time_names_each_point_and_counts_repeated_pairs_once(tmp_path: Path) -> None:
    """At equal time 0.75 (sets the budget), capped 0.9 and the random init are their equal-epoch checkpoints: their
    pairs repeat equal-epoch pairs, are marked so and left out of the count; each row says which point it is."""
    folders = [_timed_sweep(tmp_path / f"s{i}", i) for i in range(3)]
    summary = write_seeds(folders, tmp_path / "out").read_text()
    equal_time = summary.split("## Equal time")[1]
    assert "| mask 0.9 (final checkpoint, 63% of the budget) |" in equal_time
    assert "| mask 0.5 (budget checkpoint, 102% of the budget) |" in equal_time
    assert "| mask 0.75 (final checkpoint, sets the budget) |" in equal_time and "| random init |" in equal_time
    # linear and k-NN (no equal-time fine-tune here) x 6 pairs, of which 3 repeat
    assert " of 6 pairs" in equal_time and "; 6 more pairs repeat equal-epoch pairs" in equal_time
    # Holm runs over the 18 equal-epoch pairs and the 6 fresh equal-time ones; a repeat carries its twin's result
    assert "Holm correction over the report's 24 pairs" in summary
    assert equal_time.count("(repeats the equal-epoch pair)") == 6
    assert "Budget per seed (mask 0.75's training time, and its median img/s): seed 0 100.0 s (120 img/s)" in summary
    assert "Warning" not in summary and "Note:" not in summary
    record = json.loads((tmp_path / "out" / "seeds.json").read_text())["views"]["equal time"]
    assert {(p["a"], p["b"]) for p in record["pairs"] if p["repeat"]} == {
        ("mask 0.75", "mask 0.9"), ("mask 0.75", "random init"), ("mask 0.9", "random init")}  # fmt: skip
    assert record["points"]["mask 0.9"]["kind"] == ["final checkpoint"] * 3
    epochs = {(p["metric"], p["a"], p["b"]): p for p in json.loads((tmp_path / "out" / "seeds.json").read_text())[
        "views"]["equal epochs"]["pairs"]}  # fmt: skip
    for p in record["pairs"]:
        if p["repeat"]:
            assert p["holm"] == epochs[(p["metric"], p["a"], p["b"])]["holm"]


def test_seeds_report_says_where_the_seeds_differ_beyond_settings(tmp_path: Path) -> None:
    """Another machine, a budget and a speed 20% apart, and a ratio capped in two seeds but not the third: each is
    said, and that ratio's pairs are no repeats."""
    folders = [_timed_sweep(tmp_path / "s0", 0), _timed_sweep(tmp_path / "s2", 2),
               _timed_sweep(tmp_path / "s1", 1, capped=False, budget=120.0, speed=100.0, cpu="other CPU")]  # fmt: skip
    summary = write_seeds(folders, tmp_path / "out").read_text()
    assert ("**Warning: the sweeps ran on different machines** (cpu_model test CPU (seed 0), test CPU (seed 2), "
            "other CPU (seed 1);") in summary  # fmt: skip
    assert "**Warning:** the budget differs by 20% across seeds" in summary
    assert "**Warning:** the median img/s of mask 0.75 differs by 20% across seeds" in summary
    assert ("Note: mask 0.9 is not the same kind of point in every seed (final checkpoint in seed 0, final checkpoint "
            "in seed 2, budget checkpoint in seed 1)") in summary  # fmt: skip
    assert "| mask 0.9 (final checkpoint, 63% of the budget; budget checkpoint, 101% of the budget) |" in summary
    record = json.loads((tmp_path / "out" / "seeds.json").read_text())["views"]["equal time"]
    assert {(p["a"], p["b"]) for p in record["pairs"] if p["repeat"]} == {("mask 0.75", "random init")}


def test_speed_lines_give_each_ratio_over_the_budget_ratio_and_the_speed_up_per_seed() -> None:
    """Hand-computed: seed 0 runs 0.5 / 0.75 / 0.9 at 100 / 150 / 300 img/s, seed 1 at 80 / 200 / 250: over 0.75
    that is 0.67x / 2.00x and 0.40x / 1.25x, and 0.75 over 0.5 is 1.50x and 2.50x."""
    sweeps = [{"seed": seed, "settings": {"budget_ratio": 0.75},
               "runs": {r: {"median_img_per_s": v} for r, v in zip(("0.5", "0.75", "0.9"), speeds, strict=True)}}
              for seed, speeds in ((0, (100, 150, 300)), (1, (80, 200, 250)))]  # fmt: skip
    lines = speed_lines(sweeps)
    assert lines[0] == ("Training speed per seed (median img/s of each mask ratio; in brackets, over mask 0.75's): "
                        "seed 0: 0.5 100 (0.67x), 0.75 150, 0.9 300 (2.00x); "
                        "seed 1: 0.5 80 (0.40x), 0.75 200, 0.9 250 (1.25x).")  # fmt: skip
    assert lines[2] == "Mask 0.75 over mask 0.5, per seed: 1.50x / 2.50x (1.50x-2.50x)."
    assert speed_lines([{**s, "runs": {}} for s in sweeps]) == []  # nothing recorded: no line


def test_committed_sweeps_show_their_equal_time_points_and_budgets() -> None:
    """The committed sweeps of seeds 0-2 (one Intel Xeon, its speed drifting between seeds): the same machine, budgets
    24% apart and mask 0.75's speed 27% apart (both warned), 0.25 a budget checkpoint and 0.9 capped in every seed."""
    folders = [RESULTS, RESULTS / "seeds" / "seed1", RESULTS / "seeds" / "seed2"]
    if not all((f / "metrics.json").is_file() for f in folders):
        pytest.skip("the committed results are not in this checkout")
    sweeps = load_sweeps(folders)
    assert machine_warning(sweeps) is None
    lines = budget_lines(sweeps)
    assert "seed 0 205.7 s (240.13 img/s), seed 1 176.5 s (288 img/s), seed 2 165.6 s (304.84 img/s)" in lines[0]
    assert any("the budget differs by 24% across seeds" in line for line in lines)
    assert any("img/s of mask 0.75 differs by 27%" in line for line in lines)
    assert "Mask 0.75 over mask 0.25, per seed: 2.08x / 1.98x / 1.80x (1.80x-2.08x)." in speed_lines(sweeps)
    points = point_kinds(sweeps, ["mask 0.25", "mask 0.9"])
    assert point_text(points["mask 0.9"]) == "final checkpoint, 62-83% of the budget"
    assert points["mask 0.25"]["kind"] == ["budget checkpoint"] * 3


def test_only_seeds_of_one_sweep_are_combined(tmp_path: Path) -> None:
    right = {"mr0.5": 500, "mr0.75": 600, "random-init": 400}
    a, b = _fake_sweep(tmp_path / "a", 0, right), _fake_sweep(tmp_path / "b", 0, right)
    with pytest.raises(ConfigError, match="both --seed 0"):
        load_sweeps([a, b])
    c = _fake_sweep(tmp_path / "c", 1, right, epochs=2)
    with pytest.raises(ConfigError, match=r"c: setting pretrain\.train\.epochs is 2 but 1"):
        load_sweeps([a, c])
    with pytest.raises(ConfigError, match="no metrics.json"):
        load_sweeps([a, tmp_path])


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    right = {"mr0.5": 500, "mr0.75": 600, "random-init": 400}
    folders = [str(_fake_sweep(tmp_path / f"s{i}", i, right)) for i in range(3)]
    assert main(["seeds", *folders, "--out", str(tmp_path / "out")]) == 0
    assert "Mask-ratio sweep over 3 seeds (0, 1, 2)" in capsys.readouterr().out
    assert main(["seeds", str(tmp_path / "nope")]) == 2
    assert f"maelab seeds: error: {tmp_path / 'nope'}: no such directory" in capsys.readouterr().err
    (tmp_path / "s1" / "metrics.json").write_text('{"rows": [')  # a partly copied file: an error naming it
    assert main(["seeds", *folders, "--out", str(tmp_path / "out")]) == 2
    assert f"{tmp_path / 's1' / 'metrics.json'}: not valid JSON" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ recipe searches
def _fake_search(folder: Path, seed: int, right: dict[str, int], random_right: int = 400, holdout: int = N) -> Path:
    """A finished recipe search: ``right`` validation images per candidate (nested flags, as above), and the
    random init of every candidate right on ``random_right``, in metrics.json and evals/<candidate>/."""
    results = {}
    for name, n in right.items():
        acc = {p: 100 * n / N for p in ("cls", "mean")}
        rnd = {p: 100 * random_right / N for p in ("cls", "mean")}
        results[name] = {
            "run": {"steps": 100 + seed, "budget_use": 1.0},
            "val": {"knn": acc, "linear": acc, "random_init": {"knn": rnd, "linear": rnd},
                    "correct": {m: {p: _flags(n) for p in ("cls", "mean")} for m in ("knn", "linear")}},
        }  # fmt: skip
        evals = folder / "evals" / name
        evals.mkdir(parents=True)
        for kind in ("knn", "linear"):
            flags = _flags(random_right)
            rows = [{"role": "baseline", "pooling": p, "test_correct": {"20": flags} if kind == "knn" else flags}
                    for p in ("cls", "mean")]  # fmt: skip
            (evals / f"{kind}.json").write_text(json.dumps({"results": rows}))
    metrics = {
        "settings": {"options": {"seed": seed, "data_dir": "d", "budget_minutes": 5.0, "holdout": holdout}, "ks": [20]},
        "environment": {"date": "2026-11-30", "git_commit": "abc"}, "hardware": "test CPU",
        "ranking": list(right), "results": results,
    }  # fmt: skip
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_recipe_searches_over_seeds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    right = [{"b": 500 + d, "a": 600 + d} for d in (0, 10, -10)]
    right[1]["c"] = 700  # searched in one seed only: left out, and said so
    folders = [_fake_search(tmp_path / f"s{i}", i, r) for i, r in enumerate(right)]
    assert main(["seeds", *map(str, folders), "--out", str(tmp_path / "out")]) == 0
    summary = capsys.readouterr().out
    assert "Recipe search over 3 seeds (0, 1, 2)" in summary and "**Best mean score: `a`.**" in summary
    assert "- vs `b`: decided better on k-NN k=20 cls, k-NN k=20 mean, linear cls, linear mean" in summary
    assert "Left out (not searched in every seed): `c`." in summary
    record = json.loads((tmp_path / "out" / "seeds.json").read_text())
    assert record["candidates"] == ["a", "b"]
    assert record["table"]["a"]["linear cls"]["per_seed"] == [60.0, 61.0, 59.0]
    # score = mean of k-NN and linear = 60 / 61 / 59; over random init = score - 40
    assert record["table"]["a"]["over random init"]["spread"]["mean"] == pytest.approx(20.0)
    assert record["table"]["a"]["steps"]["per_seed"] == [100, 101, 102]
    vs_random = next(p for p in record["pairs"] if (p["metric"], p["a"], p["b"]) == ("k-NN k=20 mean", "b", RANDOM))
    # b - random init per seed: 50 - 40, 51 - 40, 49 - 40
    assert vs_random["winner"] == "b" and vs_random["spread"]["mean"] == pytest.approx(10.0)
    two = write_search_seeds(folders[:2], tmp_path / "two").read_text()
    assert "(decided)" not in two and "fewer than 3 seeds" in two
    with pytest.raises(ConfigError, match=r"s3: setting options\.holdout is 999 but 1000"):
        load_searches([folders[0], _fake_search(tmp_path / "s3", 3, right[0], holdout=999)])
    sweep = _fake_sweep(tmp_path / "sweep", 5, {"mr0.5": 500, "mr0.75": 600, "random-init": 400})
    assert main(["seeds", str(folders[0]), str(sweep), "--out", str(tmp_path / "mixed")]) == 2
    assert "is not a recipe search but" in capsys.readouterr().err


def test_recipe_seeds_report_counts_its_decided_pairs(tmp_path: Path) -> None:
    """The recipe report's list of every pair opens with "Decided: D of N pairs, H of them also after a Holm
    correction over the report's N pairs", as the sweep's report does."""
    # a and b right on 600 and 500 images in every seed, the random init on 400, 460, 340; per metric (4 of them):
    # a - b +10 in every seed (t-test p 0: holds after Holm), a - random init +20 +14 +26 (decided: t 5.8 > 4.30 on
    # 2 df, p 0.029, times Holm's factor of at least 5 above 0.05), b - random init +10 +4 +16 (a tie: t 2.9).
    folders = [_fake_search(tmp_path / f"s{i}", i, {"b": 500, "a": 600}, r) for i, r in enumerate((400, 460, 340))]
    summary = write_search_seeds(folders, tmp_path / "out").read_text()
    decided = "Decided: 8 of 12 pairs, 4 of them also after a Holm correction over the report's 12 pairs."
    assert f"## Every pair, per metric\n\n{decided}\n\n- k-NN k=20 cls: a beats b" in summary
    two = write_search_seeds(folders[:2], tmp_path / "two").read_text()
    assert "## Every pair, per metric\n\nDecided: 0 of 12 pairs.\n\n" in two  # nothing decided: no Holm tail


def _dated(folder: Path, computed: dict) -> Path:
    """The fake sweep or search in ``folder`` with ``computed`` as its metrics.json's ``stages_computed``."""
    path = folder / "metrics.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "stages_computed": computed}))
    return folder


def test_each_folder_read_says_when_its_stages_were_computed(tmp_path: Path) -> None:
    """A sweep or search whose metrics.json records when its stages were computed shows that span (first - last
    finished, every commit) on its line; one of an older maelab (no ``stages_computed``, or none dated) shows none."""
    computed = {
        "pretrain:a": {"call": "2026-11-29T08:00:00", "finished": "2026-11-29T08:05:00", "git_commit": "abc"},
        "eval:a": {"call": "2026-11-29T09:00:00", "finished": "2026-11-29T09:30:00", "git_commit": "def"},
    }
    span = "; stages computed 2026-11-29T08:05:00 - 2026-11-29T09:30:00 (git commits abc, def)"
    right = {"mr0.5": 500, "mr0.75": 600, "random-init": 400}
    sweeps = [_fake_sweep(tmp_path / "w0", 0, right), _dated(_fake_sweep(tmp_path / "w1", 1, right), computed),
              _dated(_fake_sweep(tmp_path / "w2", 2, right), {"eval:a": None})]  # fmt: skip
    summary = write_seeds(sweeps, tmp_path / "sweeps").read_text()
    assert f"- `{sweeps[1]}`: seed 1, report 2026-11-30, commit abc{span}; test\n" in summary
    assert f"- `{sweeps[0]}`: seed 0, report 2026-11-30, commit abc; test\n" in summary
    assert f"- `{sweeps[2]}`: seed 2, report 2026-11-30, commit abc; test\n" in summary
    searches = [_fake_search(tmp_path / f"r{i}", i, {"b": 500 + d, "a": 600 + d}) for i, d in enumerate((0, 10))]
    _dated(searches[1], computed)
    summary = write_search_seeds(searches, tmp_path / "searches").read_text()
    assert f"- `{searches[1]}`: seed 1, 2026-11-30, commit abc{span}, test CPU\n" in summary
    assert f"- `{searches[0]}`: seed 0, 2026-11-30, commit abc, test CPU\n" in summary


def test_committed_sweeps_on_two_machines_are_warned() -> None:
    """Seeds 3 and 4 ran on an AMD EPYC (AVX2) after seeds 0-2 on the Intel Xeon (AVX-512): read together, the
    warning names each seed's CPU and capability, and the committed seeds report carries it."""
    folders = _committed_folders()
    if not all((f / "metrics.json").is_file() for f in folders):
        pytest.skip("the committed results are not in this checkout")
    assert len(folders) >= 5
    warning = machine_warning(load_sweeps(folders))
    assert warning is not None and "Warning: the sweeps ran on different machines" in warning
    assert "Intel(R) Xeon(R) Processor (seed 0)" in warning and "AMD EPYC (seed 3), AMD EPYC (seed 4)" in warning
    assert "cpu_capability AVX512 (seed 0)" in warning and "AVX2 (seed 4)" in warning
    assert warning in (RESULTS / "seeds" / "summary.md").read_text()


def test_committed_seed_reports_state_the_current_rule() -> None:
    """Every committed report over seeds was generated under today's rule: a change of the rule without re-running
    ``maelab seeds`` over the committed folders fails here."""
    root = RESULTS.parents[1] / "results"
    reports = sorted(root.glob("**/seeds.json"))
    if not reports:
        pytest.skip("the committed results are not in this checkout")
    assert len(reports) >= 5
    for report in reports:
        assert RULE in (report.parent / "summary.md").read_text(), f"{report.parent}: re-run maelab seeds"

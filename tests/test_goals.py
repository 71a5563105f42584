"""benchmarks/goals.py --pair and --seeds: A against B paired on the same images, and recipes over seeds, read from
eval reports."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from maelab.eval.stats import pack_correct

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import goals  # noqa: E402


def _eval_dir(root: Path, flags: list[bool], accuracy: float | None = None, margin: float = 0.0) -> Path:
    """A folder with knn.json and linear.json whose evaluated encoder has ``flags`` at both poolings (and
    ``accuracy``, ``margin`` over random init, when given, as its reported numbers)."""
    root.mkdir(parents=True)
    accuracy = 100.0 * sum(flags) / len(flags) if accuracy is None else accuracy
    for protocol in ("knn", "linear"):
        packed = pack_correct(flags)
        rows = [
            {"role": "evaluated", "pooling": pooling, "vs_random_init": {"accuracy_a": accuracy, "difference": margin},
             "test_correct": {"20": packed} if protocol == "knn" else packed}
            for pooling in ("cls", "mean")
        ]  # fmt: skip
        (root / f"{protocol}.json").write_text(json.dumps({"results": rows}))
    return root


def test_pair_by_hand(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A is right on 3 of 4 images, B on 1 (A alone right on 2, B alone on none): +50 points; the exact
    # McNemar p of 2 discordant pairs all one way is 2 * 0.5**2 = 0.5.
    a = _eval_dir(tmp_path / "a", [True, True, True, False])
    b = _eval_dir(tmp_path / "b", [True, False, False, False])
    assert goals.main(["--pair", str(a), str(b)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4  # k-NN and linear, cls and mean; no goals table without FOLDER:MINUTES
    assert all(": 75.00 vs 25.00, +50.00 [" in line and line.endswith("McNemar p 5e-01") for line in lines)
    assert lines[0].startswith(f"- {a} - {b}, knn (cls)")


def test_pair_refuses_different_image_sets(tmp_path: Path) -> None:
    a = _eval_dir(tmp_path / "a", [True, True, False])
    b = _eval_dir(tmp_path / "b", [True, False])
    with pytest.raises(SystemExit, match="not the same set"):
        goals.main(["--pair", str(a), str(b)])
    with pytest.raises(SystemExit, match="--pair needs two folders"):
        goals.main(["--pair", str(a)])


def test_seeds_by_hand(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Three seeds at 50, 52, 54 (margins +14, +15, +16): mean 52, SD 2, 95% t-interval 52 +- 4.303 * 2 / sqrt(3)
    # = [47.03, 56.97]; margins 15 +- 2.484 = [12.52, 17.48]. The 15-minute k-NN goal (>= 50 and >= +15): seeds 2, 3.
    folders = [
        _eval_dir(tmp_path / f"a{i}" / "eval", [True, True, True, False], accuracy, margin).parent
        for i, (accuracy, margin) in enumerate([(50.0, 14.0), (52.0, 15.0), (54.0, 16.0)])
    ]
    b_folders = [_eval_dir(tmp_path / f"b{i}" / "eval", [True, False, False, False]).parent for i in range(3)]
    spec_a = "A:15:" + ",".join(map(str, folders))
    spec_b = "B:15:" + ",".join(map(str, b_folders))
    assert goals.main(["--seeds", spec_a, "--seeds", spec_b, "--seed-pair", "A", "B"]) == 0
    out = capsys.readouterr().out
    assert (
        "| A | 15 min | 3 | k-NN k=20 | cls | 52.00 ± 2.00 [47.03, 56.97] | 15.00 ± 1.00 [12.52, 17.48] | 2 of 3 |"
        in out
    )
    # The linear goal (>= 62) is missed by every seed.
    assert (
        "| A | 15 min | 3 | linear | mean | 52.00 ± 2.00 [47.03, 56.97] | 15.00 ± 1.00 [12.52, 17.48] | 0 of 3 |" in out
    )
    # Each seed: +50 points on 4 images, exact McNemar p 0.5 (not beyond noise). The seeds agree exactly (t-interval
    # [+50, +50]), but they share the same 4 test images: per image d = [0, 1, 1, 0] in every seed, and 1/16 of the
    # resampled image sets hold neither image 1 nor 2 (mean 0), more than 2.5%: the pooled interval reaches 0, so
    # the difference is within test-image noise: not decided.
    pair = [line for line in out.splitlines() if line.startswith("- ")]
    assert len(pair) == 4
    assert all("not decided" in line and "A - B +50.00 points over 3 seeds" in line for line in pair)
    assert all("pooled over seeds +50.00 [" in line and line.endswith("within test-image noise (the pooled interval "
               "includes 0)") for line in pair)  # fmt: skip


def test_seeds_refuse_bad_input(tmp_path: Path) -> None:
    a = _eval_dir(tmp_path / "a" / "eval", [True, False]).parent
    with pytest.raises(SystemExit):  # argparse: MINUTES must be a goal's budget
        goals.main(["--seeds", f"A:20:{a}"])
    with pytest.raises(SystemExit, match="needs knn.json and linear.json"):
        goals.main(["--pair", str(tmp_path / "missing"), str(a / "eval")])
    with pytest.raises(SystemExit, match="each must be a --seeds label"):
        goals.main(["--seeds", f"A:15:{a}", "--seed-pair", "A", "C"])
    with pytest.raises(SystemExit, match="1 vs 2 seeds"):
        goals.main(["--seeds", f"A:15:{a}", "--seeds", f"B:15:{a},{a}", "--seed-pair", "A", "B"])

"""benchmarks/goals.py --pair: A against B, paired on the same images, read from eval reports."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from maelab.eval.stats import pack_correct

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import goals  # noqa: E402


def _eval_dir(root: Path, flags: list[bool]) -> Path:
    """A folder with knn.json and linear.json whose evaluated encoder has ``flags`` at both poolings."""
    root.mkdir()
    accuracy = 100.0 * sum(flags) / len(flags)
    for protocol in ("knn", "linear"):
        packed = pack_correct(flags)
        rows = [
            {"role": "evaluated", "pooling": pooling, "vs_random_init": {"accuracy_a": accuracy},
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

"""The scripts in examples/ run end to end on a tiny subset (a toy model, one epoch)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import timm
from safetensors.torch import load_file

from .conftest import write_image_folder

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
pytestmark = pytest.mark.slow


def run_example(name: str, *args: str, cwd: Path) -> str:
    """Run ``examples/<name>`` with ``args`` in ``cwd``; fail with its output if it exits non-zero."""
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], cwd=cwd, env=os.environ.copy(), capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, f"{name} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def example_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A toy run of examples/pretrain.py on $MAELAB_DATA, or (unset) on a small folder of random 32x32
    images that $MAELAB_DATA then names for every example of this module."""
    cwd = tmp_path_factory.mktemp("examples")
    with pytest.MonkeyPatch.context() as mp:
        if not os.environ.get("MAELAB_DATA"):
            mp.setenv("MAELAB_DATA", str(write_image_folder(cwd / "data", per_class=50, size=32)))
        out = run_example("pretrain.py", "--tiny", "--subset", "100", "--epochs", "1", "--batch-size", "20",
                          "--out", "run", cwd=cwd)  # fmt: skip
        assert "run directory: run" in out
        yield cwd / "run"


def test_pretrain_example_writes_a_run(example_run: Path) -> None:
    assert (example_run / "summary.json").is_file() and (example_run / "checkpoints" / "latest").is_file()


def test_features_and_probes_example(example_run: Path) -> None:
    out = run_example("features_and_probes.py", str(example_run), "--train", "100", "--test", "50",
                      "--probe-epochs", "2", cwd=example_run.parent)  # fmt: skip
    assert "features: train (100, 32), test (50, 32)" in out
    assert "k-NN top-1 (%): k=10:" in out and "linear probe top-1 (%):" in out


def test_export_and_figure_example(example_run: Path) -> None:
    out = run_example("export_and_figure.py", str(example_run), "--out-dir", "exported", cwd=example_run.parent)
    exported = example_run.parent / "exported"
    assert "CLS features (4, 32)" in out
    assert (exported / "reconstruction.png").stat().st_size > 0
    spec = json.loads((exported / "encoder.json").read_text())
    vit = timm.create_model(spec["model_name"], pretrained=False, **spec["kwargs"])
    vit.load_state_dict(load_file(str(exported / "encoder.safetensors")), strict=True)

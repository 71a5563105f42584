"""Checkpoints: atomic directory writes, safe loading, clear errors on mismatch and disk-full."""

from __future__ import annotations

import errno
import pickle
from pathlib import Path

import pytest
import torch

from maelab import MAE, checkpoint
from maelab.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_state_strict,
    load_train_state,
    load_weights,
    save_checkpoint,
)

from .conftest import TINY_MODEL


def _save(run: Path, step: int, model: torch.nn.Module) -> Path:
    return save_checkpoint(run, f"step_{step:08d}", model.state_dict(), {"step": step}, {"rng": torch.get_rng_state()})


def test_round_trip_and_pointer(tmp_path: Path) -> None:
    m = MAE(**TINY_MODEL)
    path = _save(tmp_path, 3, m)
    assert sorted(p.name for p in path.iterdir()) == ["meta.json", "model.safetensors", "state.pt"]
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step_00000003"
    weights = load_weights(tmp_path)
    assert all(torch.equal(weights[k], v) for k, v in m.state_dict().items())
    assert torch.equal(load_train_state(tmp_path)["rng"], torch.get_rng_state())


def test_failed_write_keeps_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m = MAE(**TINY_MODEL)
    good = _save(tmp_path, 1, m)

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", disk_full)
    with pytest.raises(CheckpointError, match="No space left.*previous checkpoint is untouched"):
        _save(tmp_path, 2, m)
    assert latest_checkpoint(tmp_path) == good
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))
    load_weights(tmp_path)


def test_half_written_checkpoint_is_ignored(tmp_path: Path) -> None:
    m = MAE(**TINY_MODEL)
    good = _save(tmp_path, 1, m)
    # A writer killed mid-way leaves an incomplete directory and maybe a stale pointer.
    broken = tmp_path / "checkpoints" / "step_00000002"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(b"\x00" * 10)
    (tmp_path / "checkpoints" / "latest").write_text("step_00000002\n")
    assert latest_checkpoint(tmp_path) == good


def test_mismatched_model_lists_tensors(tmp_path: Path) -> None:
    _save(tmp_path, 1, MAE(**TINY_MODEL))
    other = MAE(**{**TINY_MODEL, "embed_dim": 64})
    with pytest.raises(
        CheckpointError, match="shape mismatch: cls_token: checkpoint \\(1, 1, 32\\) vs model \\(1, 1, 64\\)"
    ):
        load_state_strict(other, load_weights(tmp_path), "ckpt")


def test_pickled_code_is_refused(tmp_path: Path) -> None:
    path = _save(tmp_path, 1, MAE(**TINY_MODEL))
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):  # noqa: ANN204
            return (Path.touch, (marker,))

    with open(path / "state.pt", "wb") as f:
        pickle.dump({"optimizer": Evil()}, f)
    with pytest.raises(CheckpointError, match="refused or unreadable"):
        load_train_state(tmp_path)
    assert not marker.exists()


def test_missing_run_is_clear(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such run"):
        load_weights(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        load_weights(tmp_path / "empty")

"""Checkpoints that are safe to load and survive crashes.

A checkpoint is a directory ``RUN/checkpoints/step_XXXXXXXX/`` holding

- ``model.safetensors``: the weights (no pickle);
- ``meta.json``: config, method, epoch, step and other plain metadata;
- ``state.pt``: optimizer and RNG state, read back with ``torch.load(weights_only=True)``.

It is written in full to a temporary directory and then renamed into place, and the pointer file
``RUN/checkpoints/latest`` is replaced atomically afterwards, so a crash at any moment leaves the
previous checkpoint complete and loadable. Nothing here ever unpickles arbitrary objects.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

FILES = ("model.safetensors", "meta.json", "state.pt")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written, found or loaded; the message names the path."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers see the old or the new file, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """Atomically replace ``path`` with ``text``."""
    atomic_write(path, lambda p: p.write_text(text))


def save_checkpoint(
    run_dir: str | Path,
    name: str,
    model_state: dict[str, torch.Tensor],
    meta: dict[str, Any],
    train_state: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write checkpoint ``name`` under ``run_dir/checkpoints`` atomically and keep the newest ``keep``."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    tmp = root / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        save_file({k: v.detach().contiguous().cpu() for k, v in model_state.items()}, str(tmp / FILES[0]))
        (tmp / FILES[1]).write_text(json.dumps(meta, indent=2) + "\n")
        torch.save(train_state, tmp / FILES[2])
        for f in FILES:
            with open(tmp / f, "rb+") as fh:
                os.fsync(fh.fileno())
        if final.exists():  # re-saving the same step (e.g. after resume): move the old one aside first
            old = root / f".old-{name}-{os.getpid()}"
            final.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        tmp.rename(final)
        _fsync_dir(root)
        atomic_write_text(root / "latest", name + "\n")
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(
            f"could not write checkpoint {final}: {e}. The previous checkpoint is untouched; free disk space "
            f"and resume with `maelab pretrain --resume {run_dir}`."
        ) from e
    _prune(root, keep)
    return final


def _complete(path: Path) -> bool:
    return path.is_dir() and all((path / f).is_file() for f in FILES)


def _prune(root: Path, keep: int) -> None:
    done = sorted(p for p in root.glob("step_*") if _complete(p))
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-*"):  # left behind by a killed writer
        shutil.rmtree(stale, ignore_errors=True)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run (following ``latest``), or None if there is none."""
    root = Path(run_dir) / "checkpoints"
    pointer = root / "latest"
    if pointer.is_file():
        candidate = root / pointer.read_text().strip()
        if _complete(candidate):
            return candidate
    done = sorted(p for p in root.glob("step_*") if _complete(p))
    return done[-1] if done else None


def resolve_checkpoint(path: str | Path) -> Path:
    """Accept a run directory or a checkpoint directory; return the checkpoint directory."""
    p = Path(path)
    if _complete(p):
        return p
    if not p.exists():
        raise CheckpointError(f"no such run or checkpoint: {p}")
    found = latest_checkpoint(p)
    if found is None:
        raise CheckpointError(
            f"{p} holds no complete checkpoint (expected {p}/checkpoints/step_*/{{{','.join(FILES)}}})"
        )
    return found


def load_meta(ckpt: str | Path) -> dict[str, Any]:
    """Read a checkpoint's ``meta.json``."""
    path = resolve_checkpoint(ckpt) / FILES[1]
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: corrupt metadata ({e})") from e


def load_weights(ckpt: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint's weights (safetensors: no code can run while loading)."""
    path = resolve_checkpoint(ckpt) / FILES[0]
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e


def load_train_state(ckpt: str | Path) -> dict[str, Any]:
    """Read optimizer and RNG state with ``torch.load(weights_only=True)``: pickled code is refused."""
    path = resolve_checkpoint(ckpt) / FILES[2]
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: refused or unreadable training state ({type(e).__name__}: {e})") from e


def load_state_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``module``; on any missing, unexpected or mis-shaped tensor list them all."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if own[k].shape != state[k].shape
    ]
    if missing or unexpected or shapes:
        lines = [f"{source} does not match the model:"]
        lines += [f"  missing: {k}" for k in missing] + [f"  unexpected: {k}" for k in unexpected]
        lines += [f"  shape mismatch: {s}" for s in shapes]
        raise CheckpointError("\n".join(lines))
    module.load_state_dict(state, strict=True)

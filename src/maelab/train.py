"""One training loop for every method: device-resident data, schedules per step, safe checkpoints.

images (uint8, on the device) -> randperm batches -> method loss (augmentation + model) under
autocast -> backward (with accumulation) -> AdamW with lr[step] -> metrics (host sync only at log
steps) -> atomic checkpoints. ``pretrain(cfg, resume=RUN)`` continues exactly where a run stopped.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from maelab import budget, rundir
from maelab import checkpoint as ckpt
from maelab.config import Config, ConfigError, validate
from maelab.data import DataError, load_data
from maelab.distributed import DistInfo, all_reduce_mean, any_process, barrier, init_distributed, shutdown
from maelab.methods import get_method
from maelab.optim import adamw, lr_schedule, param_groups
from maelab.runtime import autocast, choose_precision, peak_memory_mb, resolve_device
from maelab.tblog import TensorBoardLogger


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the message says what to do."""


# ------------------------------------------------------------------------------------ setup helpers
class _StopRequest:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint at the next step and exits cleanly."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopRequest:
        if hasattr(signal, "SIGTERM"):
            with contextlib.suppress(ValueError):  # not the main thread: no handlers
                for sig in (signal.SIGINT, signal.SIGTERM):
                    self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None:  # second signal: stop now
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def _rng_state(device: torch.device, perm_state: torch.Tensor) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state(), "perm_epoch_start": perm_state}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _batches(perm: torch.Tensor, start: int, steps: int, batch_size: int, accum: int) -> Iterator[list[torch.Tensor]]:
    for s in range(start, steps):
        yield [perm[(s * accum + a) * batch_size : (s * accum + a + 1) * batch_size] for a in range(accum)]


# ------------------------------------------------------------------------------------ the loop
def pretrain(
    cfg: Config | None = None,
    resume: str | Path | None = None,
    stop_after_steps: int | None = None,
    overrides: dict[str, Any] | None = None,
    budget_s: float | None = None,
) -> Path:
    """Pretrain ``cfg.train.method`` and return the run directory.

    ``resume=RUN`` continues RUN from its newest checkpoint (``overrides`` may change epochs,
    quiet, device, log_every). ``stop_after_steps`` saves a checkpoint and returns after that
    many optimizer steps in total, as an interruption would (used by tests and time budgets).
    A new run with ``train.minutes`` set gets the steps that fill those minutes on this machine
    (:func:`maelab.budget.fit_to_minutes`), re-fitted once from its own speed at the end of the warm-up
    (:class:`maelab.budget.Refit`); both go to ``RUN/budget.json``. ``budget_s`` (float, seconds of training as
    :func:`maelab.rundir.training_seconds` counts them): a new run given its steps (``train.steps``, e.g. a recipe
    candidate's planned ones) re-fits them that same once to end at ``budget_s`` (none with a warm-up of at most
    :data:`maelab.budget.WARMUP_STEPS` steps); ``RUN/budget.json``: {budget_s, planned_steps, refit}.
    Under torchrun every process trains on its shard of the data with DDP; rank 0 writes files.
    """
    if resume is not None:
        cfg = rundir.load_config(resume)
        for key, value in (overrides or {}).items():
            setattr(cfg.train, key, value)
        validate(cfg)
    elif cfg is None:
        raise ConfigError("pretrain needs a config or resume=RUN")
    calibration = None
    if budget_s is not None:  # the steps are given: only the re-fit of a --minutes run
        calibration = budget.given_budget(cfg, budget_s, resumed=resume is not None)
    elif resume is None and cfg.train.minutes > 0:
        cfg, calibration = _fit_minutes(cfg)
    info, device = init_distributed(resolve_device(cfg.train.device))
    try:
        run = _train(cfg, Path(resume) if resume is not None else None, info, device, stop_after_steps, calibration)
    finally:
        shutdown(info)
    return run


def _fit_minutes(cfg: Config) -> tuple[Config, dict[str, Any]]:
    """``cfg`` with the steps of its ``--minutes`` and the calibration (:func:`maelab.budget.fit_to_minutes`),
    announced on stdout."""
    t = cfg.train
    if t.steps > 0:
        raise ConfigError(f"--minutes {t.minutes:g} fits the step count, but --steps {t.steps} was given too; keep one")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(
            "--minutes calibrates in one process; under torchrun give --steps and --fixed-warmup-steps (the train.steps "
            "and train.fixed_warmup_steps in the config.json of a --minutes run)"
        )
    print(f"--minutes {t.minutes:g}: timing the training loop for {t.batch_size}-image steps ...", flush=True)
    fitted, calibration = budget.fit_to_minutes(cfg, pretrain)
    print(
        f"--minutes {t.minutes:g}: {calibration['img_per_s']:.0f} img/s over {calibration['timed_seconds']:.0f} s "
        f"-> {calibration['planned_steps']} steps ({calibration['precision']})",
        flush=True,
    )
    return fitted, calibration


def _load_shard(cfg: Config, info: DistInfo, device: torch.device) -> torch.Tensor:
    """This process's training images as one uint8 tensor (N_shard, C, H, W) on ``device``."""
    # All training images but the --holdout ones (never pretrained on), then the class-balanced --subset.
    images = load_data(cfg.data, "train", cfg.model.img_size).images
    if info.enabled:  # equal shards (every process must run the same number of steps)
        images = images[info.rank :: info.world_size][: len(images) // info.world_size]
    return images.to(device)  # the whole shard lives on the device as one uint8 tensor


def _train(
    cfg: Config, resume: Path | None, info: DistInfo, device: torch.device, stop_after_steps: int | None,
    calibration: dict[str, Any] | None = None,
) -> Path:  # fmt: skip
    start_time = time.perf_counter()
    t = cfg.train
    method = get_method(t.method)
    precision = choose_precision(t.precision, device)
    if info.is_main:  # once, also under --quiet: a bf16/fp32 surprise changes speed and results
        print(precision.describe(), flush=True)
    images = _load_shard(cfg, info, device)
    n_images = images.shape[0]
    steps_per_epoch = n_images // (t.batch_size * t.accum_steps)
    if steps_per_epoch < 1:
        raise DataError(
            f"--batch-size {t.batch_size} x --accum-steps {t.accum_steps} = {t.batch_size * t.accum_steps} images per "
            f"optimizer step{' per process' if info.enabled else ''}, but the training set has only {n_images}"
            f"{' per process' if info.enabled else ''}; lower them"
        )
    total_steps = t.steps or t.epochs * steps_per_epoch
    eff_batch = t.images_per_step(info.world_size)
    peak_lr = t.peak_lr(info.world_size)
    warmup_steps = t.warmup_steps(steps_per_epoch, total_steps)
    lrs = lr_schedule(peak_lr, t.min_lr, total_steps, warmup_steps).tolist()
    # Weight decay of the decayed group (param_groups()[0]): constant, or cosine to weight_decay_end (DINO).
    wds = lr_schedule(t.weight_decay, t.weight_decay_end, total_steps, 0).tolist() if t.weight_decay_end >= 0 else None

    torch.manual_seed(t.seed)  # the same initial weights in every process
    model = method.build(cfg).to(device)
    if hasattr(model, "set_fused_attention"):
        model.set_fused_attention(device.type == "cuda")
    optimizer = adamw(param_groups(model, t.weight_decay), device, lr=peak_lr, betas=t.betas)
    perm_gen = torch.Generator().manual_seed(t.seed)
    step, elapsed_before = 0, 0.0
    if resume is not None:
        run = resume
        step, elapsed_before = _restore(run, model, optimizer, perm_gen, device, info, steps_per_epoch)
    else:
        run = rundir.new_run_dir(cfg) if info.is_main else Path(cfg.train.out or "runs")
    if method.setup is not None:  # the method's per-step schedules (e.g. DINO's teacher momentum)
        method.setup(model, steps_per_epoch, total_steps, step)
    if info.enabled:  # different masks and crops per process, reproducible from the seed
        torch.manual_seed(t.seed + 1 + info.rank + 100_003 * step)
    train_model: nn.Module = nn.parallel.DistributedDataParallel(model) if info.enabled else model
    forward_model = torch.compile(train_model) if t.compile else train_model

    write = info.is_main

    def write_budget(refit: dict[str, Any] | None = None) -> None:  # RUN/budget.json: the calibration, the re-fit
        budget_record = {**(calibration or {}), **({"refit": refit} if refit else {})}
        ckpt.atomic_write_text(run / budget.BUDGET_FILE, json.dumps(budget_record, indent=2) + "\n")

    if write:
        rundir.save_config(run, cfg)
        if calibration is not None:
            write_budget()
    metrics = rundir.MetricsLog(run, enabled=write)  # closed in finally
    tb = TensorBoardLogger(run, cfg, purge_step=step) if t.tensorboard and write else None
    bar = tqdm(
        total=total_steps, initial=step, disable=t.quiet or not write, unit="step", dynamic_ncols=True,
        desc=f"{t.method} {cfg.model.name}" + (f" mr={cfg.model.mask_ratio}" if t.method == "mae" else ""),
    )  # fmt: skip
    perm_state = perm_gen.get_state()
    last_loss, img_s = float("nan"), 0.0

    def save(reason: str) -> Path | None:
        if write:
            meta = {
                "method": t.method, "step": step, "epoch": step / steps_per_epoch, "steps_per_epoch": steps_per_epoch,
                "total_steps": total_steps, "loss": last_loss, "world_size": info.world_size,
                "wall_time": elapsed_before + time.perf_counter() - start_time, "config": cfg.to_dict(),
                "reason": reason, "maelab_format": 1,
            }  # fmt: skip
            # At an epoch's end this epoch's order is drawn already: keep the state the next epoch starts from,
            # or a resume there would replay the finished epoch's order.
            epoch_start = perm_gen.get_state() if step % steps_per_epoch == 0 else perm_state
            state = {"optimizer": optimizer.state_dict(), "rng": _rng_state(device, epoch_start)}
            path = ckpt.save_checkpoint(run, f"step_{step:08d}", model.state_dict(), meta, state, t.keep_checkpoints)
        barrier(info)
        return path if write else None

    # A --minutes run (or one given budget_s) re-fits its steps once, at the end of the warm-up (budget.Refit).
    refit = None
    if calibration is not None and step == 0 and warmup_steps > budget.WARMUP_STEPS:
        refit = budget.Refit(calibration["budget_s"], warmup_steps, time.perf_counter())

    def apply_refit(fit: dict[str, Any], budget_s: float) -> None:
        nonlocal total_steps, lrs, wds
        if fit["planned_steps"] is not None and fit["planned_steps"] != total_steps:
            t.fixed_warmup_steps = warmup_steps  # the warm-up trained stays the warm-up, whatever the new length
            total_steps = t.steps = fit["planned_steps"]
            lrs = lr_schedule(peak_lr, t.min_lr, total_steps, warmup_steps).tolist()
            if wds is not None:
                wds = lr_schedule(t.weight_decay, t.weight_decay_end, total_steps, 0).tolist()
            if method.setup is not None:
                method.setup(model, steps_per_epoch, total_steps, step)
            bar.total = total_steps
            rundir.save_config(run, cfg)  # a resume continues the re-fitted schedule
        write_budget(fit)
        why = f"{fit['steps_per_s']:.2f} steps/s" if fit["planned_steps"] else "too short to time, the plan stands"
        who = f"--minutes {t.minutes:g}" if t.minutes > 0 else f"budget {budget_s:g} s"
        tqdm.write(f"{who}: re-fit at the end of the warm-up ({why}) -> {total_steps} steps")

    model.train()
    status = "failed"  # until the loop ends: an error, or a second Ctrl-C, must not leave a "finished" summary
    window_loss = torch.zeros((), device=device)
    window_steps, window_start = 0, time.perf_counter()
    try:
        with _StopRequest() as stop:
            while step < total_steps:
                epoch, first = divmod(step, steps_per_epoch)
                if first == 0:
                    perm_state = perm_gen.get_state()
                else:  # resumed mid-epoch: replay this epoch's permutation
                    perm_gen.set_state(perm_state)
                perm = torch.randperm(n_images, generator=perm_gen).to(device)
                # The last epoch of a --steps run stops part-way, at total_steps.
                last = min(steps_per_epoch, first + total_steps - step)
                for micro_batches in _batches(perm, first, last, t.batch_size, t.accum_steps):
                    if step >= total_steps:  # a re-fit shortened the run
                        break
                    for group in optimizer.param_groups:
                        group["lr"] = lrs[step]
                    if wds is not None:
                        optimizer.param_groups[0]["weight_decay"] = wds[step]
                    for i, idx in enumerate(micro_batches):
                        # DDP averages gradients once per optimizer step, on the last micro-batch.
                        sync = not info.enabled or i == len(micro_batches) - 1
                        with (
                            contextlib.nullcontext() if sync else train_model.no_sync(),
                            autocast(device, precision.dtype),
                        ):
                            loss = method.loss(forward_model, images[idx], cfg)
                        (loss / t.accum_steps).backward()
                        window_loss += loss.detach() / t.accum_steps
                    if method.before_step is not None:  # e.g. DINO's per-parameter clip, frozen last layer
                        method.before_step(model, step)
                    if t.grad_clip > 0:
                        nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    if method.after_step is not None:
                        method.after_step(model, step)
                    step += 1
                    window_steps += 1
                    bar.update(1)
                    if refit is not None and (fit := refit.watch(step)) is not None:
                        apply_refit(fit, refit.budget_s)
                        refit = None
                    end_of_epoch = step % steps_per_epoch == 0 or step == total_steps
                    log_now = step % t.log_every == 0 or end_of_epoch or step == stop_after_steps
                    # In DDP every process must agree on stopping; they compare flags at log steps.
                    stopping = any_process(bool(stop.signal), info, device) if (log_now or not info.enabled) else False
                    if log_now or stopping:
                        last_loss = all_reduce_mean(window_loss, info).item() / window_steps  # the only host sync
                        now = time.perf_counter()
                        img_s = window_steps * eff_batch / (now - window_start)
                        if not math.isfinite(last_loss):
                            status = "diverged"
                            raise TrainingError(
                                f"loss became {last_loss} at step {step} (epoch {epoch + 1}); stopped. The last good "
                                f"checkpoint is kept in {run}/checkpoints; lower --lr/--blr or set --grad-clip"
                            )
                        record = {
                            "step": step, "epoch": round(step / steps_per_epoch, 4), "loss": last_loss,
                            "lr": lrs[step - 1], "img_per_s": round(img_s, 2),
                            "wall_time": round(elapsed_before + now - start_time, 3),
                        }  # fmt: skip
                        if wds is not None:
                            record["weight_decay"] = round(wds[step - 1], 6)
                        if method.metrics is not None:  # e.g. DINO's teacher entropy
                            record.update(method.metrics(model))
                        metrics.append(record)
                        if tb is not None:
                            tb.log_scalars(step, record)
                        bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{lrs[step - 1]:.2e}", img_s=f"{img_s:.0f}")
                        window_loss.zero_()
                        window_steps, window_start = 0, time.perf_counter()
                    if end_of_epoch:
                        if t.quiet and write:
                            print(
                                f"epoch {epoch + 1}/{math.ceil(total_steps / steps_per_epoch)} step {step}/{total_steps} loss {last_loss:.4f} "
                                f"lr {lrs[step - 1]:.2e} img/s {img_s:.0f}",
                                flush=True,
                            )
                        if tb is not None and ((epoch + 1) % t.tensorboard_every == 0 or step == total_steps):
                            tb.log_reconstructions(step, model)
                        if (epoch + 1) % t.save_every == 0 or step == total_steps:
                            save("epoch")
                    if stopping or step == stop_after_steps:
                        status = "interrupted"
                        path = save("interrupted")
                        bar.close()
                        if write:
                            print(
                                f"stopped at step {step}: checkpoint {path}; continue with `maelab pretrain --resume {run}`"
                            )
                        return run
        status = "finished"
    finally:
        bar.close()
        metrics.close()
        if tb is not None:
            tb.close()
        if write and status != "interrupted":
            wall = elapsed_before + time.perf_counter() - start_time
            summary = rundir.summarize(run, status, step, total_steps, wall, eff_batch, str(device), precision.name,
                                       precision.reason, peak_memory_mb(device))  # fmt: skip
            rundir.write_summary(run, summary)
    return run


def _restore(
    run: Path, model: nn.Module, optimizer: torch.optim.Optimizer, perm_gen: torch.Generator,
    device: torch.device, info: DistInfo, steps_per_epoch: int,
) -> tuple[int, float]:  # fmt: skip
    """Load RUN's newest checkpoint into model/optimizer/RNGs; returns (step, wall time so far).

    With the same number of processes the run continues exactly; with another world size the
    step is mapped by epoch progress (the global batch, and so the steps per epoch, changed).
    """
    found = rundir.latest_checkpoint(run)
    if found is None:
        raise ckpt.CheckpointError(f"--resume {run}: no complete checkpoint in {run}/checkpoints")
    ckpt.load_state_strict(model, ckpt.load_weights(found), str(found))
    state = ckpt.load_train_state(found)
    optimizer.load_state_dict(state["optimizer"])
    meta = ckpt.load_meta(found)
    if meta.get("world_size", 1) == info.world_size and meta["steps_per_epoch"] == steps_per_epoch:
        torch.set_rng_state(state["rng"]["cpu"])
        if device.type == "cuda" and "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"], device)
        perm_gen.set_state(state["rng"]["perm_epoch_start"])
        step = meta["step"]
    else:
        epoch = math.floor(meta["epoch"] + 1e-9)
        step = epoch * steps_per_epoch  # restart the interrupted epoch with the new layout
        perm_gen.manual_seed(int(meta["config"]["train"]["seed"]) + epoch)
        if info.is_main:
            print(
                f"resuming {run} with {info.world_size} process(es) (checkpoint: {meta.get('world_size', 1)}): "
                f"continuing at the start of epoch {epoch + 1} (step {step})"
            )
    if info.is_main:
        rundir.truncate_metrics(run, meta["step"])
    return step, meta.get("wall_time", 0.0)

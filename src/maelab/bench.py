"""Throughput of MAE training and inference: img/s, peak memory and achieved FLOP/s.

A *contender* is anything with ``loss(imgs) -> scalar`` and ``encode(imgs) -> features``: maelab's
MAE here, the peers in ``benchmarks/peers.py``. :func:`measure_rounds` times several contenders
interleaved (round-robin, several rounds, median), so that load from other processes on a shared
machine hits all of them alike and their *ratios* stay meaningful. Warm-up steps (allocator,
``torch.compile``) are never timed, and there is no host sync inside a timed block.

:func:`gemm_peaks` measures this machine's fp32 and bf16 matmul throughput, so that a training and
an inference step can be stated as a share of what the hardware's GEMMs reach in the same precision.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from maelab.config import BenchOptions
from maelab.eval.stats import seed_spread
from maelab.models.mae import MAE
from maelab.runtime import (
    autocast,
    bf16_support,
    choose_precision,
    cpu_has_native_bf16,
    hardware_line,
    matmul_gflops,
    peak_memory_mb,
    resolve_device,
    synchronize,
)

Batch = torch.Tensor  # (B, 3, H, W) float images, already normalised


# ------------------------------------------------------------------------------------ contenders
@dataclass
class Contender:
    """A model under test: one training step = loss -> backward -> optimizer step -> zero grads."""

    name: str
    module: nn.Module
    loss: Callable[[Batch], torch.Tensor]  # imgs -> scalar loss (masking inside)
    encode: Callable[[Batch], torch.Tensor]  # imgs -> (B, 1 + N, D) features, no masking
    optimizer: torch.optim.Optimizer
    amp_dtype: torch.dtype | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision_reason: str = ""

    @property
    def precision(self) -> str:
        return "fp32" if self.amp_dtype is None else "bf16"

    def num_params(self) -> int:
        """All parameters, trainable or not (fixed sin-cos tables count too)."""
        return sum(p.numel() for p in self.module.parameters())

    def train_step(self, imgs: Batch) -> None:
        """Forward + backward + optimizer step; no host sync."""
        with autocast(self.device, self.amp_dtype):
            loss = self.loss(imgs)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    @torch.no_grad()
    def infer_step(self, imgs: Batch) -> None:
        """Encoder forward over all patches (eval mode is the caller's business)."""
        with autocast(self.device, self.amp_dtype):
            self.encode(imgs)


def adamw(model: nn.Module, device: torch.device, lr: float = 1.5e-4) -> torch.optim.AdamW:
    """AdamW exactly as ``maelab.train.pretrain`` builds it (:func:`maelab.optim.adamw`: fused where it can be)."""
    from maelab.optim import adamw as build_adamw
    from maelab.optim import param_groups

    return build_adamw(param_groups(model, 0.05), device, lr=lr, betas=(0.9, 0.95))


def maelab_contender(
    preset: str = "ref",
    mask_ratio: float = 0.75,
    precision: str = "auto",
    device: str | torch.device = "auto",
    compile: bool = False,
    attention: str = "auto",
    patch_size: int = 4,
) -> Contender:
    """maelab's MAE with the training loop's defaults (attention per device, fused AdamW, precision).

    ``attention``: ``auto`` (explicit on CPU, SDPA on CUDA, as ``pretrain``), ``sdpa`` or ``explicit``.
    """
    dev = resolve_device(str(device)) if not isinstance(device, torch.device) else device
    if attention not in ("auto", "sdpa", "explicit"):
        raise ValueError(f"attention must be auto, sdpa or explicit, got {attention!r}")
    model = MAE.from_preset(preset, patch_size=patch_size, mask_ratio=mask_ratio).to(dev).train()
    model.set_fused_attention(dev.type == "cuda" if attention == "auto" else attention == "sdpa")
    fwd = torch.compile(model) if compile else model

    def loss(imgs: Batch) -> torch.Tensor:
        return fwd(imgs)[0]

    name = "maelab" + ("+compile" if compile else "") + ("" if attention == "auto" else f"+{attention}")
    choice = choose_precision(precision, dev)
    return Contender(name, model, loss, model.forward_features, adamw(model, dev), choice.dtype, dev, choice.reason)


def module_contender(name: str, module: nn.Module, device: torch.device, amp_dtype: torch.dtype | None) -> Contender:
    """A peer module with ``forward(imgs) -> loss`` and ``encode(imgs)``, with PyTorch's default AdamW."""
    module = module.to(device).train()
    opt = torch.optim.AdamW(module.parameters(), lr=1.5e-4, betas=(0.9, 0.95), weight_decay=0.05)
    return Contender(name, module, module, module.encode, opt, amp_dtype, device)


# ------------------------------------------------------------------------------------ measuring
def _register_cpu_sdpa_flops() -> None:
    """PyTorch's FLOP counter knows the CUDA SDPA kernels but not the CPU one: count it the same way,
    so explicit and SDPA attention (maelab vs peers) are counted alike."""
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten
    fwd = aten._scaled_dot_product_flash_attention_for_cpu
    bwd = aten._scaled_dot_product_flash_attention_for_cpu_backward
    if fwd in fc.flop_registry or fwd.default in fc.flop_registry:
        return

    @fc.register_flop_formula(fwd, get_raw=True)
    def _fwd(query, key, value, *args, out_val=None, **kwargs) -> int:  # noqa: ANN001
        return fc.sdpa_flop_count(query.shape, key.shape, value.shape)

    @fc.register_flop_formula(bwd, get_raw=True)
    def _bwd(grad_out, query, key, value, *args, out_val=None, **kwargs) -> int:  # noqa: ANN001
        return fc.sdpa_backward_flop_count(grad_out.shape, query.shape, key.shape, value.shape)


_register_cpu_sdpa_flops()


def train_flops_per_image(c: Contender, imgs: Batch) -> float:
    """FLOPs of one training step's forward + backward per image (matmuls, convs, attention)."""
    with FlopCounterMode(display=False) as counter:
        with autocast(c.device, c.amp_dtype):
            loss = c.loss(imgs)
        loss.backward()
    c.optimizer.zero_grad(set_to_none=True)
    return counter.get_total_flops() / imgs.shape[0]


def infer_flops_per_image(c: Contender, imgs: Batch) -> float:
    """FLOPs of one encoder forward over all patches, per image."""
    with FlopCounterMode(display=False) as counter, torch.no_grad(), autocast(c.device, c.amp_dtype):
        c.encode(imgs)
    return counter.get_total_flops() / imgs.shape[0]


def time_steps(step: Callable[[Batch], None], imgs: Batch, n: int, device: torch.device) -> float:
    """Seconds for ``n`` calls of ``step(imgs)``, one device sync at the end only."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(n):
        step(imgs)
    synchronize(device)
    return time.perf_counter() - start


def measure_rounds(
    contenders: Sequence[Contender],
    imgs: Batch,
    rounds: int = 3,
    steps: int = 3,
    warmup: int = 2,
    kind: str = "train",
    log: Callable[[str], None] | None = None,
) -> dict[str, list[float]]:
    """img/s per round of each contender, interleaved round-robin; warm-up steps are not timed.

    ``kind`` is ``train`` (forward + backward + optimizer) or ``infer`` (encoder, no grad, eval mode).
    """
    if kind not in ("train", "infer"):
        raise ValueError(f"kind must be train or infer, got {kind!r}")
    steps_of = {c.name: (c.train_step if kind == "train" else c.infer_step) for c in contenders}
    for c in contenders:
        c.module.train(kind == "train")
        time_steps(steps_of[c.name], imgs, warmup, c.device)
        if log:
            log(f"  warmed up {c.name} ({c.precision}, {kind})")
    out: dict[str, list[float]] = {c.name: [] for c in contenders}
    for _ in range(rounds):
        for c in contenders:
            seconds = time_steps(steps_of[c.name], imgs, steps, c.device)
            out[c.name].append(steps * imgs.shape[0] / seconds)
    for c in contenders:
        c.module.train()
    return out


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence."""
    return statistics.median(values)


# ------------------------------------------------------------------------------------ GEMM peak
@functools.cache
def gemm_peaks(device: str, size: int = 0, seconds: float = 0.5, bf16: bool = False) -> dict[str, float | None]:
    """This machine's measured matmul GFLOP/s: ``{"fp32": ..., "bf16": ... or None}`` (cached per process).

    ``size`` 0 picks 2048 on CPUs and 8192 on GPUs (large enough to reach the GEMM peak). bf16 is None
    on a CPU without native bf16 (emulated: timing it at that size would take minutes) unless ``bf16``
    asks for it anyway, and then it is timed at 512, enough to show how slow the emulation is.
    """
    dev = torch.device(device)
    size = size or (8192 if dev.type == "cuda" else 2048)
    native = dev.type == "cuda" or cpu_has_native_bf16()
    peaks: dict[str, float | None] = {"fp32": matmul_gflops(torch.float32, dev, size, seconds), "bf16": None}
    if native or bf16:
        peaks["bf16"] = matmul_gflops(torch.bfloat16, dev, size if native else 512, seconds)
    return peaks


def gemm_peak_text(peaks: dict[str, float | None], native_bf16: bool = True) -> str:
    """``GEMM peak fp32 161 GFLOP/s, bf16 322 GFLOP/s`` (bf16 marked emulated / not measured)."""
    parts = [f"fp32 {peaks['fp32']:.0f} GFLOP/s" if peaks.get("fp32") else "fp32 not measured"]
    bf16 = peaks.get("bf16")
    if bf16 is None:
        parts.append("bf16 emulated (not measured)" if not native_bf16 else "bf16 not measured")
    else:
        parts.append(f"bf16 {bf16:.0f} GFLOP/s" + ("" if native_bf16 else " (emulated)"))
    return "GEMM peak " + ", ".join(parts)


# ------------------------------------------------------------------------------------ results
@dataclass
class BenchResult:
    """What ``maelab bench`` prints for one configuration."""

    name: str
    precision: str
    batch_size: int
    mask_ratio: float
    params: int
    train_img_s: float
    infer_img_s: float
    train_gflop_per_img: float
    infer_gflop_per_img: float
    peak_memory_mb: float
    precision_reason: str = ""
    gemm_peak_gflops: dict[str, float | None] = field(default_factory=dict)  # {"fp32": .., "bf16": .. | None}

    def share_of_peak(self, kind: str) -> float | None:
        """Achieved train / infer GFLOP/s over this machine's GEMM peak in the run's precision (None if unmeasured)."""
        peak = self.gemm_peak_gflops.get(self.precision)
        if not peak:
            return None
        if kind == "train":
            return self.train_img_s * self.train_gflop_per_img / peak
        return self.infer_img_s * self.infer_gflop_per_img / peak

    def line(self) -> str:
        """One human-readable line."""
        train_tflops = self.train_img_s * self.train_gflop_per_img / 1e3
        infer_tflops = self.infer_img_s * self.infer_gflop_per_img / 1e3
        line = (
            f"{self.name:16s} {self.precision:4s} batch {self.batch_size:4d} mask {self.mask_ratio:.2f} | "
            f"train {self.train_img_s:8.1f} img/s {train_tflops * 1e3:7.1f} GFLOP/s "
            f"({self.train_gflop_per_img:.3f} GFLOP/img) | infer {self.infer_img_s:8.1f} img/s "
            f"{infer_tflops * 1e3:7.1f} GFLOP/s | peak mem {self.peak_memory_mb:.0f} MiB"
        )
        train, infer = self.share_of_peak("train"), self.share_of_peak("infer")
        if train is not None and infer is not None:
            peak = self.gemm_peak_gflops[self.precision]
            line += f" | {train:.0%} train, {infer:.0%} infer of the {self.precision} GEMM peak ({peak:.0f} GFLOP/s)"
        elif self.gemm_peak_gflops:
            line += f" | {self.precision} GEMM peak not measured (emulated bf16)"
        return line


@dataclass(frozen=True)
class Speedup:
    """Training speed-up of the MAE at ``mask_ratio`` over ``reference_ratio``: ``per_round`` (R,) is img/s over
    img/s in the same interleaved round, so load that hits one round hits both sides of its ratio."""

    mask_ratio: float
    reference_ratio: float
    per_round: tuple[float, ...]

    def line(self) -> str:
        """Median, min-max and the 95% t-interval of the mean over rounds."""
        r, s = self.per_round, seed_spread(self.per_round)  # a mean with its t-interval; the rounds stand in for seeds
        interval = "" if s.ci_low is None else f", mean {s.mean:.2f}x [95% t-interval {s.ci_low:.2f}, {s.ci_high:.2f}]"
        return (
            f"training speed-up, mask {self.mask_ratio:.2f} over mask {self.reference_ratio:.2f}, {len(r)} interleaved "
            f"rounds: median {statistics.median(r):.2f}x (min {min(r):.2f}, max {max(r):.2f}){interval}"
        )


def train_speedups(
    preset: str,
    batch_size: int,
    mask_ratios: Sequence[float],
    precision: str = "auto",
    device: str = "auto",
    attention: str = "auto",
    patch_size: int = 4,
    rounds: int = 3,
    steps: int = 3,
    warmup: int = 2,
) -> list[Speedup]:
    """Time the training step at every ratio of ``mask_ratios`` interleaved (:func:`measure_rounds`) and give
    each ratio's per-round speed-up over the LAST ratio (e.g. ``(0.75, 0.0)``: MAE over an encoder that sees
    every patch, as the paper measures it)."""
    if len(mask_ratios) < 2:
        raise ValueError("a speed-up needs at least two mask ratios")
    dev = resolve_device(device)
    contenders = []
    for ratio in mask_ratios:
        torch.manual_seed(0)
        c = maelab_contender(preset, ratio, precision, dev, False, attention, patch_size)
        c.name = f"mask {ratio!r}"  # a key of measure_rounds' result: the ratios are distinct (validated)
        contenders.append(c)
    img_s = measure_rounds(contenders, random_batch(batch_size, 32, dev), rounds, steps, warmup, "train")
    reference = img_s[contenders[-1].name]
    return [
        Speedup(ratio, mask_ratios[-1], tuple(a / b for a, b in zip(img_s[c.name], reference, strict=True)))
        for ratio, c in zip(mask_ratios[:-1], contenders[:-1], strict=True)
    ]


def random_batch(batch_size: int, img_size: int, device: torch.device, seed: int = 0) -> Batch:
    """A fixed normalised-looking float batch (B, 3, img, img); the step time does not depend on content."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, 3, img_size, img_size, generator=g).to(device)


def bench_maelab(
    preset: str = "ref",
    batch_size: int = 256,
    mask_ratio: float = 0.75,
    precision: str = "auto",
    device: str = "auto",
    compile: bool = False,
    attention: str = "auto",
    patch_size: int = 4,
    rounds: int = 3,
    steps: int = 3,
    warmup: int = 2,
    peak: bool = True,
) -> BenchResult:
    """Train and inference throughput of maelab's MAE at one configuration (medians over rounds), and,
    with ``peak``, the machine's GEMM peak (:func:`gemm_peaks`, measured once per process) to compare against."""
    dev = resolve_device(device)
    torch.manual_seed(0)
    c = maelab_contender(preset, mask_ratio, precision, dev, compile, attention, patch_size)
    imgs = random_batch(batch_size, 32, dev)
    train_flops = train_flops_per_image(c, imgs)
    infer_flops = infer_flops_per_image(c, imgs)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    train = measure_rounds([c], imgs, rounds, steps, warmup, "train")[c.name]
    infer = measure_rounds([c], imgs, rounds, steps, warmup, "infer")[c.name]
    memory = peak_memory_mb(dev)  # before the GEMM timing allocates its own matrices
    peaks = gemm_peaks(str(dev), bf16=c.precision == "bf16") if peak else {}
    return BenchResult(
        c.name, c.precision, batch_size, mask_ratio, c.num_params(), median(train), median(infer),
        train_flops / 1e9, infer_flops / 1e9, memory, c.precision_reason, dict(peaks),
    )  # fmt: skip


# ------------------------------------------------------------------------------------ the command
def bench_command(opts: BenchOptions) -> Iterator[str]:
    """``maelab bench``: the hardware line, then one result line per ``opts.mask_ratio`` as it is measured, and with
    ``opts.speedup`` the interleaved training speed-up of each ratio over the last."""
    opts.validate()
    device = resolve_device(opts.device)
    yield hardware_line(device)
    yield choose_precision(opts.precision, device).describe()
    peaks: dict[str, float | None] = {}
    for ratio in opts.mask_ratio:
        r = bench_maelab(
            opts.model, opts.batch_size, ratio, opts.precision, opts.device, opts.compile, opts.attention,
            opts.patch_size, opts.rounds, opts.steps, opts.warmup,
        )  # fmt: skip
        peaks = r.gemm_peak_gflops or peaks
        yield r.line()
    if peaks:  # measured once per process by bench itself; the shares above are of these
        yield gemm_peak_text(peaks, bf16_support(device)[0]) + " (this machine, measured by bench)"
    if opts.speedup:
        for speedup in train_speedups(
            opts.model, opts.batch_size, opts.mask_ratio, opts.precision, opts.device, opts.attention,
            opts.patch_size, opts.rounds, opts.steps, opts.warmup,
        ):  # fmt: skip
            yield speedup.line()

"""Where and how tensors run: device, precision and autocast, peak memory, and the machine's description.

Every command resolves ``--device`` and ``--precision`` here, so a run, an evaluation and a benchmark
make the same choice on the same machine.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import resource
import subprocess
import time
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from maelab.config import ConfigError


# ------------------------------------------------------------------------------------ device, precision
def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available else cpu; errors name the option."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"--device {name!r}: {e}") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return device


PRECISIONS = ("auto", "fp32", "bf16")
# /proc/cpuinfo flags that mean bf16 matrix multiplies run in hardware (AVX-512 BF16 dot products, AMX tiles)
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile")


@dataclass(frozen=True)
class PrecisionChoice:
    """The resolved precision of a run: autocast dtype (None = fp32, no autocast), its name and why."""

    dtype: torch.dtype | None
    name: str  # "fp32" | "bf16"
    reason: str

    def describe(self) -> str:
        """One line for the log, e.g. ``precision: bf16 (auto: CUDA GPU with native bf16)``."""
        return f"precision: {self.name} ({self.reason})"

    def as_dict(self) -> dict[str, str]:
        """``{"precision": ..., "precision_reason": ...}`` for a run's summary and eval reports."""
        return {"precision": self.name, "precision_reason": self.reason}


def choose_precision(requested: str, device: torch.device) -> PrecisionChoice:
    """Resolve ``--precision`` (auto | fp32 | bf16) on ``device``.

    ``auto`` is bf16 autocast on CUDA GPUs with bf16 and on CPUs with native bf16 matrix units
    (AVX-512 BF16 / AMX), fp32 elsewhere: without those units PyTorch emulates bf16 and a training step is
    slower than in fp32 (2.9x on an AVX-512 Xeon, results/cpu60_fp32_avx512; a matmul 16-126x on an AVX2-only EPYC,
    benchmarks/README.md). An explicit ``bf16`` is honoured everywhere, with a warning where emulated.
    """
    if requested not in PRECISIONS:
        raise ConfigError(f"--precision {requested!r}: expected one of {', '.join(PRECISIONS)}")
    if requested == "fp32":
        return PrecisionChoice(None, "fp32", "forced by --precision fp32")
    native, why = bf16_support(device)
    if requested == "bf16":
        if not native:
            cost = ("slower than fp32: a training step 2.9x on an AVX-512 CPU, more on AVX2-only ones"
                    if device.type == "cpu" else "slower than fp32")  # fmt: skip
            warnings.warn(f"--precision bf16: {why}, so bf16 is emulated ({cost})", RuntimeWarning, stacklevel=2)
            return PrecisionChoice(torch.bfloat16, "bf16", f"forced by --precision bf16 (emulated: {why})")
        return PrecisionChoice(torch.bfloat16, "bf16", f"forced by --precision bf16 ({why})")
    if native:
        return PrecisionChoice(torch.bfloat16, "bf16", f"auto: {why}")
    emulated = "; bf16 would be emulated" if device.type in ("cpu", "cuda") else ""
    return PrecisionChoice(None, "fp32", f"auto: {why}{emulated}")


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype (None = fp32) of :func:`choose_precision`; kept for older callers."""
    return choose_precision(precision, device).dtype


def bf16_support(device: torch.device) -> tuple[bool, str]:
    """(bf16 matmuls run in hardware on ``device``, a short phrase saying why): CUDA from compute
    capability 8.0 (Ampere), CPUs per :func:`cpu_bf16_support`, other devices never (fp32 there)."""
    if device.type == "cuda":
        if cuda_has_native_bf16(device):
            return True, "CUDA GPU with native bf16"
        return False, "CUDA GPU without native bf16 (pre-Ampere)"
    if device.type != "cpu":
        return False, f"{device.type} device (bf16 autocast not used there)"
    return cpu_bf16_support()


def cuda_has_native_bf16(device: torch.device) -> bool:
    """Whether the GPU does bf16 in hardware (compute capability >= 8.0)."""
    return torch.cuda.is_available() and torch.cuda.get_device_capability(device) >= (8, 0)


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for the device, or a no-op for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


# ------------------------------------------------------------------------------------ hardware
def first_processor(cpuinfo: str | Path = "/proc/cpuinfo") -> dict[str, str]:
    """{field: value} of the first processor's block of ``cpuinfo`` (``model name``, ``flags``, ``cpu family``...);
    {} where it cannot be read (not Linux)."""
    fields: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path(cpuinfo).read_text().splitlines():
            key, sep, value = line.partition(":")
            if not sep and fields:  # a blank line ends the first processor's block
                break
            if sep:
                fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str] | None:
    """The x86 feature flags of this CPU (first ``flags`` line of ``cpuinfo``); None where there is none
    (not Linux, or ARM, whose ``Features`` line does not say whether PyTorch's bf16 GEMMs are fast)."""
    flags = first_processor(cpuinfo).get("flags")
    return None if flags is None else frozenset(flags.split())


def cpu_bf16_support() -> tuple[bool, str]:
    """(this CPU multiplies bf16 matrices in hardware, a short phrase saying why).

    The CPU flags decide where there are any (cheap, no measurement). Elsewhere a one-off micro-benchmark
    decides -- bf16 GEMM at least 1.2x as fast as fp32 counts as native -- cached per machine in
    ``~/.cache/maelab`` so that it runs once.
    """
    flags = cpu_flags()
    if flags is not None:
        found = [f for f in NATIVE_BF16_FLAGS if f in flags]
        if found:
            return True, f"CPU has native bf16 ({', '.join(found)})"
        return False, f"no native bf16 on this CPU ({torch.backends.cpu.get_cpu_capability()})"
    speedup = _cached_bf16_speedup()
    verdict = speedup >= 1.2
    return verdict, f"CPU bf16 matmul measured at {speedup:.2f}x fp32 ({'native' if verdict else 'no native'} bf16)"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AVX-512 BF16 or AMX), see :func:`cpu_bf16_support`.

    Without it PyTorch emulates bf16 matmuls and they are far slower than fp32.
    """
    return cpu_bf16_support()[0]


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "maelab"


def _cached_bf16_speedup() -> float:
    """bf16 / fp32 GEMM throughput on this CPU, measured once per (machine, CPU, torch) and cached."""
    key = f"{platform.node()}|{platform.machine()}|{platform.processor()}|{torch.__version__}"
    path = _cache_dir() / "cpu_bf16.json"
    cache: dict[str, float] = {}
    with contextlib.suppress(OSError, ValueError):
        stored = json.loads(path.read_text())
        cache = stored if isinstance(stored, dict) else {}  # a damaged cache costs one measurement, never an error
        if isinstance(cache.get(key), (int, float)):
            return float(cache[key])
    cpu = torch.device("cpu")
    speedup = matmul_gflops(torch.bfloat16, cpu, 256, 0.1) / matmul_gflops(torch.float32, cpu, 256, 0.1)
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**cache, key: round(speedup, 3)}))
    return speedup


def matmul_gflops(dtype: torch.dtype, device: torch.device, size: int = 512, seconds: float = 0.3) -> float:
    """Measured GFLOP/s of one (size x size) @ (size x size) matmul in ``dtype`` on ``device``.

    Matmuls are issued in growing bursts between device syncs, so that on a GPU the sync does not
    dominate small sizes.
    """
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    a @ b  # warm-up
    synchronize(device)
    n, burst, start = 0, 1, time.perf_counter()
    while True:
        for _ in range(burst):
            a @ b
        synchronize(device)
        n += burst
        elapsed = time.perf_counter() - start
        if elapsed > seconds:
            return 2 * size**3 * n / elapsed / 1e9
        burst = min(2 * burst, 64)


def hardware_line(device: torch.device) -> str:
    """One line naming the processor / GPU, threads and torch version."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = first_processor().get("model name", "unknown CPU")
        name += f", {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}"
        name += ", native bf16" if cpu_has_native_bf16() else ", no native bf16"
    return f"{name}; torch {torch.__version__}"


# /proc/cpuinfo fields that tell CPUs of one model name apart (x86 family/model; ARM implementer/part), and their words
CPU_ID_FIELDS = (("cpu family", "family"), ("model", "model"), ("CPU implementer", "implementer"), ("CPU part", "part"))


@functools.cache
def cpu_text(cpuinfo: str = "/proc/cpuinfo") -> str:
    """This CPU in a few words: the model name of the first processor in ``cpuinfo`` and its
    family/model numbers where listed (e.g. ``AMD EPYC 7763 64-Core Processor family 25 model 1``); read once."""
    fields = first_processor(cpuinfo)
    name = fields.get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    return " ".join([name, *(f"{word} {fields[key]}" for key, word in CPU_ID_FIELDS if fields.get(key))])


@functools.cache
def machine_text(device: str = "cpu") -> str:
    """The machine a stage of an experiment ran on, to tell apart stages timed on different machines: :func:`cpu_text`,
    after the GPU's name where ``device`` (a ``--device`` value) is CUDA, e.g. ``NVIDIA H200 on <CPU>``. Cheap: the
    CPU is read once per process, and CUDA is asked only where the experiment uses it."""
    cuda = device.startswith("cuda") or device == "auto"
    if cuda and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(torch.device('cuda' if device == 'auto' else device))} on {cpu_text()}"
    return cpu_text()


def synchronize(device: torch.device) -> None:
    """Wait for ``device``'s queued kernels (CUDA); a no-op on the CPU, whose ops run synchronously."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated GPU memory since the last reset (CUDA) or the process's peak RSS (CPU), MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# ------------------------------------------------------------------------------------ environment
def _lscpu() -> dict[str, str]:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines()) if v}


def _git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], capture_output=True, text=True, timeout=10, cwd=Path(__file__).resolve().parent
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def git_commit() -> str:
    """The git commit of this maelab checkout, " (with uncommitted changes)" when its tracked files differ, or
    "unknown" outside a checkout."""
    commit = _git("rev-parse", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    return (commit + (" (with uncommitted changes)" if dirty else "")) if commit else "unknown"


def environment(device: str) -> dict[str, Any]:
    """Date, git commit, torch / Python versions, CPU (lscpu model name, cores) and GPU of this machine."""
    cpu = _lscpu()
    env = {
        "date": datetime.now().isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "torch": torch.__version__, "python": platform.python_version(),
        "cpu_model": cpu.get("Model name", platform.processor() or "unknown"),
        "cpu_cores": int(cpu.get("CPU(s)", os.cpu_count() or 0)), "torch_threads": torch.get_num_threads(),
        "device": device,
        # What decides CPU speed here: the vector ISA torch uses, and whether bf16 is native (else fp32 is used).
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_native_bf16": cpu_has_native_bf16(),
    }  # fmt: skip
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env


def hardware_text(env: dict[str, Any]) -> str:
    """The machine of an :func:`environment` record in one phrase: CPU model, cores, threads, ISA, bf16, GPU."""
    text = f"{env['cpu_model']}, {env['cpu_cores']} cores ({env['torch_threads']} torch threads)"
    if "cpu_capability" in env:  # records written before these fields existed lack them
        text += f", {env['cpu_capability']}, {'native' if env.get('cpu_native_bf16') else 'no native'} bf16"
    return f"{env['gpu']}; CPU {text}" if "gpu" in env else text

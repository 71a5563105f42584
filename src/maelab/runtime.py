"""Where and how tensors run: device, precision and autocast, peak memory, and the machine's description.

Every command resolves ``--device`` and ``--precision`` here, so a run, an evaluation and a benchmark
make the same choice on the same machine.
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import subprocess
import time
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


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype (None = fp32). ``auto`` is bf16 on CUDA and fp32 on CPU.

    On CPUs bf16 is only fast with native bf16 matrix units (AVX-512 BF16 / AMX); without them
    PyTorch emulates it and a step is slower than fp32 by orders of magnitude.
    """
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    return torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for the device, or a no-op for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


# ------------------------------------------------------------------------------------ hardware
def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AVX-512 BF16 or AMX); Linux flags only.

    Without it PyTorch emulates bf16 matmuls and they are far slower than fp32.
    """
    with contextlib.suppress(OSError):
        flags = Path("/proc/cpuinfo").read_text()
        return "avx512_bf16" in flags or "amx_bf16" in flags
    return False


def matmul_gflops(dtype: torch.dtype, device: torch.device, size: int = 512, seconds: float = 0.3) -> float:
    """Measured GFLOP/s of one (size x size) @ (size x size) matmul in ``dtype`` on ``device``."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    a @ b  # warm-up
    n, start = 0, time.perf_counter()
    while True:
        a @ b
        n += 1
        synchronize(device)
        elapsed = time.perf_counter() - start
        if elapsed > seconds:
            return 2 * size**3 * n / elapsed / 1e9


def hardware_line(device: torch.device) -> str:
    """One line naming the processor / GPU, threads and torch version."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = "unknown CPU"
        with contextlib.suppress(OSError):
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
        name += f", {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}"
        name += ", native bf16" if cpu_has_native_bf16() else ", no native bf16"
    return f"{name}; torch {torch.__version__}"


def synchronize(device: torch.device) -> None:
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


def environment(device: str) -> dict[str, Any]:
    """Date, git commit, torch / Python versions, CPU (lscpu model name, cores) and GPU of this machine."""
    cpu = _lscpu()
    commit = _git("rev-parse", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    env = {
        "date": datetime.now().isoformat(timespec="seconds"),
        "git_commit": (commit + (" (with uncommitted changes)" if dirty else "")) if commit else "unknown",
        "torch": torch.__version__, "python": platform.python_version(),
        "cpu_model": cpu.get("Model name", platform.processor() or "unknown"),
        "cpu_cores": int(cpu.get("CPU(s)", os.cpu_count() or 0)), "torch_threads": torch.get_num_threads(),
        "device": device,
    }  # fmt: skip
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env



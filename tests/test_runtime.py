"""Precision choice (issue 14): auto = bf16 where bf16 is native (CUDA >= Ampere, AVX-512 BF16 / AMX), else fp32.

Flags and CUDA are mocked, so every combination is pinned on any machine; the numerical checks run a
tiny MAE in bf16 autocast on the CPU, where emulation costs nothing at that size.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from maelab import runtime
from maelab.config import ConfigError, resolve_config
from maelab.models.mae import MAE

from .conftest import TINY_MODEL, write_image_folder

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny matmuls: threads only cost time

# The real parser, kept before any fixture (here or in conftest) replaces runtime.cpu_flags with a mock.
REAL_CPU_FLAGS = runtime.cpu_flags
NATIVE = frozenset({"avx2", "avx512f", "avx512_bf16"})
NONE = frozenset({"avx2", "fma"})
CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture
def mock_hardware(monkeypatch: pytest.MonkeyPatch):
    """mock(native) sets both the CPU flags and the GPU's bf16 support; no measurement may run."""

    def mock(native: bool) -> None:
        monkeypatch.setattr(runtime, "cpu_flags", lambda: NATIVE if native else NONE)
        monkeypatch.setattr(runtime, "cuda_has_native_bf16", lambda device: native)
        monkeypatch.setattr(runtime, "_cached_bf16_speedup", lambda: pytest.fail("flags decide, no benchmark"))

    return mock


# (requested, native) -> (expected name, reason starts with)
EXPECTED = {
    ("auto", True): ("bf16", "auto:"),
    ("auto", False): ("fp32", "auto:"),
    ("fp32", True): ("fp32", "forced by --precision fp32"),
    ("fp32", False): ("fp32", "forced by --precision fp32"),
    ("bf16", True): ("bf16", "forced by --precision bf16"),
    ("bf16", False): ("bf16", "forced by --precision bf16 (emulated"),
}


@pytest.mark.parametrize("device", [CPU, CUDA], ids=["cpu", "cuda"])
@pytest.mark.parametrize("native", [True, False], ids=["native", "no-native"])
@pytest.mark.parametrize("requested", ["auto", "fp32", "bf16"])
def test_choice_for_every_combination(mock_hardware, requested: str, device: torch.device, native: bool) -> None:
    mock_hardware(native)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        choice = runtime.choose_precision(requested, device)
    name, reason = EXPECTED[(requested, native)]
    assert choice.name == name and choice.reason.startswith(reason), choice
    assert choice.dtype == (torch.bfloat16 if name == "bf16" else None)
    assert runtime.resolve_precision(requested, device) == choice.dtype  # the old API agrees
    assert choice.as_dict() == {"precision": name, "precision_reason": choice.reason}
    assert choice.describe() == f"precision: {name} ({choice.reason})"
    # Only an explicit bf16 where it is emulated warns (it is slower than fp32: 2.9x on an AVX-512 Xeon, far more on AVX2).
    emulated = [w for w in caught if "emulated" in str(w.message)]
    assert len(emulated) == (requested == "bf16" and not native)


def test_reasons_name_the_hardware(mock_hardware, monkeypatch: pytest.MonkeyPatch) -> None:
    mock_hardware(False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert runtime.choose_precision("auto", CPU).reason == (
        "auto: no native bf16 on this CPU (AVX2); bf16 would be emulated"
    )
    mock_hardware(True)
    assert runtime.choose_precision("auto", CPU).reason == "auto: CPU has native bf16 (avx512_bf16)"
    assert runtime.choose_precision("auto", CUDA).reason == "auto: CUDA GPU with native bf16"
    # Other devices (mps, ...) stay fp32 under auto.
    assert runtime.choose_precision("auto", torch.device("meta")).name == "fp32"


@pytest.mark.parametrize("flags", [{"amx_bf16"}, {"amx_tile"}, {"avx512_bf16"}, {"amx_bf16", "amx_tile"}])
def test_each_native_flag_counts(monkeypatch: pytest.MonkeyPatch, flags: set[str]) -> None:
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset(flags | {"avx2"}))
    assert runtime.cpu_has_native_bf16()
    assert runtime.choose_precision("auto", CPU).name == "bf16"


def test_fp32_and_bad_values(mock_hardware) -> None:
    mock_hardware(True)
    for device in (CPU, CUDA):
        assert runtime.choose_precision("fp32", device).dtype is None  # --precision fp32 always wins
    with pytest.raises(ConfigError, match="--precision 'fp16'"):
        runtime.choose_precision("fp16", CPU)


def test_cpu_flags_reads_the_x86_flags_line(tmp_path: Path) -> None:
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: Some Xeon\nflags\t\t: fpu avx2 amx_bf16 amx_tile\n\nflags : other\n")
    assert REAL_CPU_FLAGS(x86) == frozenset({"fpu", "avx2", "amx_bf16", "amx_tile"})
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16\n")
    assert REAL_CPU_FLAGS(arm) is None  # no x86 flags line: the flags cannot decide
    assert REAL_CPU_FLAGS(tmp_path / "missing") is None
    assert isinstance(REAL_CPU_FLAGS(), frozenset | None)  # this machine, whatever it is


def test_without_flags_a_cached_micro_benchmark_decides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[torch.dtype] = []

    def fake_gflops(dtype: torch.dtype, device: torch.device, size: int = 512, seconds: float = 0.3) -> float:
        calls.append(dtype)
        return 300.0 if dtype == torch.bfloat16 else 100.0

    monkeypatch.setattr(runtime, "cpu_flags", lambda: None)
    monkeypatch.setattr(runtime, "matmul_gflops", fake_gflops)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    choice = runtime.choose_precision("auto", CPU)
    assert choice.name == "bf16" and "measured at 3.00x fp32" in choice.reason
    assert len(calls) == 2
    assert runtime.choose_precision("auto", CPU).name == "bf16"
    assert len(calls) == 2  # the second choice read the cache, measured nothing
    assert list(json.loads((tmp_path / "maelab" / "cpu_bf16.json").read_text()).values()) == [3.0]

    # A slow (emulated) bf16 on another machine: fp32.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "other"))
    monkeypatch.setattr(runtime, "matmul_gflops", lambda dtype, *a, **k: 2.0 if dtype == torch.bfloat16 else 100.0)
    assert runtime.choose_precision("auto", CPU).name == "fp32"


def test_hardware_line_and_flags_of_this_machine() -> None:
    assert isinstance(runtime.cpu_has_native_bf16(), bool)
    line = runtime.hardware_line(CPU)
    assert torch.__version__ in line and "native bf16" in line


def test_cpu_text_names_the_model_and_its_numbers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine a stage records: the first processor's model name, family and model (x86) or implementer and part
    (ARM, with no model name: the platform's), read from a given cpuinfo (not this machine's)."""
    monkeypatch.setattr(runtime.platform, "processor", lambda: "")
    monkeypatch.setattr(runtime.platform, "machine", lambda: "aarch64")
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\n"
                   "model name\t: AMD EPYC 7763 64-Core Processor\nflags\t\t: fpu avx2\n\n"
                   "processor\t: 1\nmodel name\t: Other\n")  # fmt: skip
    assert runtime.cpu_text(str(x86)) == "AMD EPYC 7763 64-Core Processor family 25 model 1"
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd\nCPU implementer\t: 0x41\nCPU architecture: 8\n"
                   "CPU part\t: 0xd0c\n")  # fmt: skip
    assert runtime.cpu_text(str(arm)) == "aarch64 implementer 0x41 part 0xd0c"
    assert runtime.cpu_text(str(tmp_path / "missing")) == "aarch64"


def test_machine_text_names_the_gpu_where_the_device_is_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    machine = runtime.machine_text.__wrapped__  # uncached: what it reads is faked here
    monkeypatch.setattr(runtime, "cpu_text", lambda: "Some Xeon family 6 model 143")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: f"GPU {device}")
    assert machine("cpu") == "Some Xeon family 6 model 143"
    assert machine("cuda:1") == "GPU cuda:1 on Some Xeon family 6 model 143"
    assert machine("auto") == "GPU cuda on Some Xeon family 6 model 143"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert machine("auto") == machine("cuda") == "Some Xeon family 6 model 143"


# ------------------------------------------------------------------------------------ numerics
def tiny_mae() -> MAE:
    torch.manual_seed(0)
    return MAE(**TINY_MODEL)


def test_bf16_forward_matches_fp32_at_tiny_size() -> None:
    """One MAE forward: bf16 autocast gives the fp32 loss within 1% (bf16 keeps 8 mantissa bits: ~0.4% per op;
    measured here: 0.02%)."""
    model = tiny_mae()
    imgs = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    noise = torch.rand(8, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        fp32 = model(imgs, noise=noise)[0]
        with runtime.autocast(CPU, torch.bfloat16):
            loss, pred, _ = model(imgs, noise=noise)
    assert pred.dtype == torch.bfloat16  # autocast really ran the matmuls in bf16
    assert loss.float().item() == pytest.approx(fp32.item(), rel=1e-2)


def test_a_few_bf16_steps_track_fp32() -> None:
    """Five AdamW steps from the same init on the same batch and masks: per-step losses within 1%
    (measured on an AVX2 CPU, bf16 emulated: 0.03% at most)."""
    imgs = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    noise = torch.rand(8, 64, generator=torch.Generator().manual_seed(2))
    curves = {}
    for dtype in (None, torch.bfloat16):
        model = tiny_mae()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        curves[dtype] = []
        for _ in range(5):
            with runtime.autocast(CPU, dtype):
                loss = model(imgs, noise=noise)[0]
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            curves[dtype].append(loss.float().item())
    assert curves[None][-1] < curves[None][0]  # it learns, so the comparison means something
    assert curves[torch.bfloat16] == pytest.approx(curves[None], rel=1e-2)


# ------------------------------------------------------------------------------------ the run's summary
@pytest.mark.parametrize(("native", "requested", "expected"), [(True, "auto", "bf16"), (True, "fp32", "fp32")])
def test_summary_records_the_choice(
    mock_hardware, tmp_path: Path, native: bool, requested: str, expected: str, capsys: pytest.CaptureFixture
) -> None:
    """A tiny pretraining run on a CPU mocked to have native bf16: auto trains in bf16, --precision fp32 in
    fp32, and summary.json says which and why (the choice is also printed once)."""
    from maelab.train import pretrain

    mock_hardware(native)
    data = write_image_folder(tmp_path / "data", per_class=4, size=32)
    train = dict(epochs=1, batch_size=4, warmup_epochs=0, log_every=1, quiet=True, out=str(tmp_path / "run"),
                 device="cpu", precision=requested)  # fmt: skip
    cfg = resolve_config(None, {"model": dict(TINY_MODEL), "data": {"data_dir": str(data)}, "train": train}, "test")
    run = pretrain(cfg)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["precision"] == expected
    assert summary["precision_reason"] == runtime.choose_precision(requested, CPU).reason
    assert capsys.readouterr().out.count(f"precision: {expected}") == 1


# ------------------------------------------------------------------------------------ eval paths
def uint8_split(n: int = 8, seed: int = 0):
    from maelab.data import ImageData

    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    return ImageData(images, torch.arange(n) % 2, ["a", "b"])


def test_features_run_in_the_chosen_precision_and_cache_it_apart(
    mock_hardware, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from maelab.eval.features import cached_features, feature_cache_path, random_init_encoder

    monkeypatch.setenv("MAELAB_CACHE", str(tmp_path / "cache"))
    enc = random_init_encoder(resolve_config(None, {"model": dict(TINY_MODEL)}, "test"))
    data = uint8_split()
    args = (enc, data.images, data.labels, "train")
    # fp32 keeps the key it had before precision was a choice; bf16 features get their own file.
    assert feature_cache_path(*args) == feature_cache_path(*args, "fp32") != feature_cache_path(*args, "bf16")
    mock_hardware(True)
    bf16 = cached_features(*args, progress=False)  # auto on a (mocked) native-bf16 CPU
    fp32 = cached_features(*args, progress=False, precision="fp32")
    assert (bf16.precision, fp32.precision) == ("bf16", "fp32") and not fp32.from_cache
    assert bf16.precision_reason.startswith("auto: CPU has native bf16")
    assert bf16.get("cls").dtype == torch.float32  # stored in fp32 either way
    assert not torch.equal(bf16.get("cls"), fp32.get("cls"))
    torch.testing.assert_close(bf16.get("cls"), fp32.get("cls"), rtol=0.05, atol=0.05)
    again = cached_features(*args, progress=False)
    assert again.from_cache and again.precision == "bf16" and torch.equal(again.get("cls"), bf16.get("cls"))


def test_frozen_reports_record_the_precision(mock_hardware, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from maelab.eval.features import random_init_encoder
    from maelab.eval.frozen import EvalData, evaluate_knn, knn_markdown

    monkeypatch.setenv("MAELAB_CACHE", str(tmp_path / "cache"))
    mock_hardware(False)
    enc = random_init_encoder(resolve_config(None, {"model": dict(TINY_MODEL)}, "test"))
    info = {"data_dir": "", "classes": 2, "train_images": 8, "test_images": 4, "train_subset": "all",
            "test_subset": "all"}  # fmt: skip
    data = EvalData(uint8_split(8), uint8_split(4, seed=1), info)
    report = evaluate_knn([enc], data, ks=(1,), progress=False)
    assert report["settings"]["precision"] == "fp32"
    assert report["settings"]["precision_reason"].startswith("auto: no native bf16")
    assert "features in fp32 (auto: no native bf16" in knn_markdown(report)


def test_reconstruction_scores_record_the_precision(mock_hardware) -> None:
    from maelab.eval.reconstruction import evaluate_reconstruction

    model, imgs = tiny_mae().eval(), uint8_split(4).images
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    mock_hardware(True)
    bf16 = evaluate_reconstruction(model, imgs, mean, std, seed=0)
    fp32 = evaluate_reconstruction(model, imgs, mean, std, seed=0, precision="fp32")
    assert (bf16["precision"], fp32["precision"]) == ("bf16", "fp32")
    assert fp32["precision_reason"] == "forced by --precision fp32"
    assert bf16["psnr"] == pytest.approx(fp32["psnr"], rel=1e-2) and bf16["psnr"] != fp32["psnr"]


def test_finetune_records_the_precision(mock_hardware) -> None:
    from maelab.eval.finetune import FinetuneConfig, finetune

    cfg = resolve_config(None, {"model": dict(TINY_MODEL)}, "test")
    ft = FinetuneConfig(epochs=1, batch_size=8, device="cpu", quiet=True)
    mock_hardware(True)
    result = finetune(None, cfg, ft, uint8_split(8), uint8_split(4, seed=1))
    assert result["precision"] == "bf16" and result["precision_reason"].startswith("auto: CPU has native bf16")
    assert finetune(None, cfg, ft, uint8_split(8), uint8_split(4, seed=1), precision="fp32")["precision"] == "fp32"


def test_hardware_text_names_the_isa_and_bf16() -> None:
    env = {"cpu_model": "AMD EPYC", "cpu_cores": 2, "torch_threads": 2}
    assert runtime.hardware_text(env) == "AMD EPYC, 2 cores (2 torch threads)"  # an older record: no flags stored
    env |= {"cpu_capability": "AVX2", "cpu_native_bf16": False}
    assert runtime.hardware_text(env) == "AMD EPYC, 2 cores (2 torch threads), AVX2, no native bf16"
    assert runtime.hardware_text({**env, "cpu_native_bf16": True, "gpu": "H200"}).startswith("H200; CPU AMD EPYC")
    assert runtime.hardware_text({**env, "cpu_native_bf16": True}).endswith("AVX2, native bf16")
    record = runtime.environment("cpu")  # this machine: the fields the text needs are recorded
    assert {"cpu_capability", "cpu_native_bf16"} <= set(record)

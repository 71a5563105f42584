"""Benchmark harness: correctness only (tiny models, a few steps); speed lives in benchmarks/."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from maelab import bench, runtime
from maelab.cli import main
from maelab.models.mae import MAE

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from peers import PEERS, Sizes  # noqa: E402

TINY = dict(embed_dim=32, encoder_depth=1, encoder_heads=2, decoder_embed_dim=16, decoder_depth=1, decoder_heads=2)


def tiny_contender(name: str = "tiny") -> bench.Contender:
    torch.manual_seed(0)
    model = MAE(**TINY)
    dev = torch.device("cpu")
    return bench.Contender(name, model, lambda x: model(x)[0], model.forward_features, bench.adamw(model, dev))


def test_train_step_updates_weights_and_inference_does_not():
    c = tiny_contender()
    imgs = bench.random_batch(4, 32, torch.device("cpu"))
    before = c.module.decoder_pred.weight.detach().clone()
    c.infer_step(imgs)
    assert torch.equal(before, c.module.decoder_pred.weight)
    c.train_step(imgs)
    assert not torch.equal(before, c.module.decoder_pred.weight)
    assert all(p.grad is None for p in c.module.parameters())  # grads cleared after the step


def test_measure_rounds_interleaves_every_contender():
    a, b = tiny_contender("a"), tiny_contender("b")
    imgs = bench.random_batch(2, 32, torch.device("cpu"))
    out = bench.measure_rounds([a, b], imgs, rounds=2, steps=1, warmup=0, kind="infer")
    assert set(out) == {"a", "b"} and all(len(v) == 2 and min(v) > 0 for v in out.values())
    assert a.module.training  # restored to train mode after timing inference
    with pytest.raises(ValueError, match="kind"):
        bench.measure_rounds([a], imgs, kind="eval")


def test_flop_count_matches_the_linear_layers_by_hand():
    """Forward FLOPs of the encoder = 2 * tokens * (sum of linear in*out) + attention + patch embed."""
    c = tiny_contender()
    imgs = bench.random_batch(2, 32, torch.device("cpu"))
    d, n, t = 32, 64, 65  # width, patches, tokens (CLS + all patches)
    linears = d * 3 * d + d * d + 2 * d * 4 * d  # qkv, proj, mlp
    attention = 2 * 2 * t * t * d  # q @ k^T and attn @ v
    patch_embed = 2 * n * (4 * 4 * 3) * d
    for fused in (False, True):  # the CPU SDPA kernel is counted like explicit attention
        c.module.set_fused_attention(fused)
        assert bench.infer_flops_per_image(c, imgs) == 2 * t * linears + attention + patch_embed
    assert bench.train_flops_per_image(c, imgs) > 0


def test_sdpa_and_explicit_attention_give_the_same_loss_and_grads():
    torch.manual_seed(0)
    model = MAE(**TINY)
    imgs = torch.randn(3, 3, 32, 32)
    noise = torch.rand(3, 64)
    results = []
    for fused in (False, True):
        model.set_fused_attention(fused)
        model.zero_grad()
        loss = model(imgs, noise=noise)[0]
        loss.backward()
        results.append((loss.detach(), model.blocks[0].attn.qkv.weight.grad.clone()))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-4, atol=1e-6)


def test_maelab_contender_picks_explicit_attention_on_cpu(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx2"}))  # a CPU without native bf16
    c = bench.maelab_contender("ref", device="cpu")
    assert c.precision == "fp32"  # auto precision on a CPU without native bf16
    assert not c.module.blocks[0].attn.fused_attn
    assert bench.maelab_contender("ref", device="cpu", attention="sdpa").module.blocks[0].attn.fused_attn
    with pytest.raises(ValueError, match="attention"):
        bench.maelab_contender("ref", device="cpu", attention="flash")


# The peers come with the optional `bench` extra (pip install -e ".[bench]"); without it they skip, saying so.
PEER_PACKAGES = {"hf": "transformers", "lightly": "lightly", "textbook": "einops"}


@pytest.mark.parametrize("name", sorted(PEERS))
def test_peers_have_the_same_parameter_count_within_2_percent(name):
    pytest.importorskip(PEER_PACKAGES[name], reason=f"peer {name!r} needs {PEER_PACKAGES[name]} (the bench extra)")
    ref = sum(p.numel() for p in MAE.from_preset("ref").parameters())
    n = sum(p.numel() for p in PEERS[name](Sizes.from_preset("ref")).parameters())
    assert abs(n - ref) <= 0.02 * ref, (name, n, ref)


@pytest.mark.parametrize("name", sorted(PEERS))
def test_peer_loss_and_features(name):
    pytest.importorskip(PEER_PACKAGES[name], reason=f"peer {name!r} needs {PEER_PACKAGES[name]} (the bench extra)")
    sizes = Sizes(32, 4, 32, 1, 2, 16, 1, 2, 4.0, 0.75)
    torch.manual_seed(0)
    peer = PEERS[name](sizes)
    imgs = torch.randn(2, 3, 32, 32)
    loss = peer(imgs)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert peer.encode(imgs).shape == (2, 65, 32)


def test_cpu_bf16_probe_and_hardware_line():
    assert isinstance(runtime.cpu_has_native_bf16(), bool)
    assert torch.__version__ in runtime.hardware_line(torch.device("cpu"))


def test_cli_bench_rejects_bad_values(capsys):
    assert main(["bench", "--mask-ratio", "1.5"]) == 2
    assert "--mask-ratio 1.5" in capsys.readouterr().err
    assert main(["bench", "--model", "vit-huge"]) == 2
    assert "unknown model preset" in capsys.readouterr().err


def test_cli_bench_prints_a_line_per_mask_ratio(capsys, monkeypatch):
    def fake(preset, batch, ratio, *args):
        return bench.BenchResult("maelab", "fp32", batch, ratio, 1, 10.0, 20.0, 0.5, 0.2, 100.0)

    monkeypatch.setattr(bench, "bench_maelab", fake)
    assert main(["bench", "--device", "cpu", "--batch-size", "8", "--mask-ratio", "0.5", "0.9"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "torch" in out[0]
    assert out[1].startswith("precision: fp32 (")  # the choice and its reason, once
    assert "mask 0.50" in out[2] and "mask 0.90" in out[3] and "5.0 GFLOP/s" in out[2]
    assert len(out) == 4  # no GEMM peak line: the fake results measured none


def test_cli_bench_ends_with_the_gemm_peak_it_measured(capsys, monkeypatch):
    def fake(preset, batch, ratio, *args):
        peaks = {"fp32": 100.0, "bf16": None}
        return bench.BenchResult("maelab", "fp32", batch, ratio, 1, 10.0, 20.0, 0.5, 0.2, 100.0, gemm_peak_gflops=peaks)

    monkeypatch.setattr(bench, "bench_maelab", fake)
    assert main(["bench", "--device", "cpu", "--mask-ratio", "0.75"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "of the fp32 GEMM peak (100 GFLOP/s)" in out[2]
    assert out[-1].startswith("GEMM peak fp32 100 GFLOP/s, bf16 emulated") and "measured by bench" in out[-1]


# ------------------------------------------------------------------------------------ GEMM peak (issue 14)
@pytest.fixture
def fake_gemm(monkeypatch):
    """matmul_gflops -> 100 (fp32) / 300 (bf16) GFLOP/s, recording the sizes it was asked for."""
    sizes: list[tuple[torch.dtype, int]] = []

    def fake(dtype, device, size=512, seconds=0.3):
        sizes.append((dtype, size))
        return 300.0 if dtype == torch.bfloat16 else 100.0

    monkeypatch.setattr(bench, "matmul_gflops", fake)
    bench.gemm_peaks.cache_clear()
    yield sizes
    bench.gemm_peaks.cache_clear()


def test_gemm_peaks_skip_emulated_bf16(fake_gemm, monkeypatch):
    monkeypatch.setattr(bench, "cpu_has_native_bf16", lambda: False)
    assert bench.gemm_peaks("cpu") == {"fp32": 100.0, "bf16": None}
    assert fake_gemm == [(torch.float32, 2048)]  # a large GEMM; emulated bf16 at that size would take minutes
    assert bench.gemm_peaks("cpu", bf16=True)["bf16"] == 300.0 and fake_gemm[-1] == (torch.bfloat16, 512)
    assert "bf16 emulated (not measured)" in bench.gemm_peak_text({"fp32": 100.0, "bf16": None}, native_bf16=False)


def test_gemm_peaks_measure_native_bf16_once(fake_gemm, monkeypatch):
    monkeypatch.setattr(bench, "cpu_has_native_bf16", lambda: True)
    assert bench.gemm_peaks("cpu") == {"fp32": 100.0, "bf16": 300.0}
    bench.gemm_peaks("cpu")
    assert fake_gemm == [(torch.float32, 2048), (torch.bfloat16, 2048)]  # cached for the next mask ratio
    assert bench.gemm_peak_text(bench.gemm_peaks("cpu")) == "GEMM peak fp32 100 GFLOP/s, bf16 300 GFLOP/s"


def test_bench_line_gives_the_share_of_the_peak_in_the_runs_precision():
    args = ("maelab", "fp32", 8, 0.75, 1, 10.0, 20.0, 0.5, 0.2, 100.0)  # train 5 GFLOP/s, infer 4 GFLOP/s
    r = bench.BenchResult(*args, "forced", {"fp32": 50.0, "bf16": 500.0})
    assert r.share_of_peak("train") == pytest.approx(0.1) and r.share_of_peak("infer") == pytest.approx(0.08)
    assert r.line().startswith(bench.BenchResult(*args).line())  # the old line, then the share
    assert r.line().endswith("| 10% train, 8% infer of the fp32 GEMM peak (50 GFLOP/s)")
    bf16 = bench.BenchResult("maelab", "bf16", *args[2:], "auto", {"fp32": 50.0, "bf16": 500.0})
    assert "1% train, 1% infer of the bf16 GEMM peak (500 GFLOP/s)" in bf16.line()
    emulated = bench.BenchResult("maelab", "bf16", *args[2:], "forced", {"fp32": 50.0, "bf16": None})
    assert emulated.share_of_peak("train") is None and "not measured" in emulated.line()


def test_bench_maelab_reports_precision_and_peak(fake_gemm, monkeypatch, one_thread):
    monkeypatch.setattr(bench, "cpu_has_native_bf16", lambda: False)
    r = bench.bench_maelab("ref", batch_size=2, precision="fp32", device="cpu", rounds=1, steps=1, warmup=0)
    assert r.precision == "fp32" and r.precision_reason == "forced by --precision fp32"
    assert r.gemm_peak_gflops == {"fp32": 100.0, "bf16": None}
    assert r.share_of_peak("train") == pytest.approx(r.train_img_s * r.train_gflop_per_img / 100.0)


def test_maelab_contender_follows_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    c = bench.maelab_contender("ref", device="cpu")
    assert c.precision == "bf16" and c.precision_reason.startswith("auto: CPU has native bf16")
    monkeypatch.setattr(runtime, "cpu_flags", lambda: frozenset({"avx2"}))
    assert bench.maelab_contender("ref", device="cpu").precision == "fp32"


# ------------------------------------------------------------------------------------ mask speed-up
def test_train_speedups_divide_each_round_by_the_last_ratio(monkeypatch):
    seen = {}

    def fake_rounds(contenders, imgs, rounds, steps, warmup, kind):
        seen["names"], seen["kind"] = [c.name for c in contenders], kind
        return {"mask 0.75": [30.0, 24.0, 33.0], "mask 0.5": [20.0, 20.0, 20.0], "mask 0.0": [10.0, 12.0, 11.0]}

    monkeypatch.setattr(bench, "measure_rounds", fake_rounds)
    out = bench.train_speedups("ref", 2, (0.75, 0.5, 0.0), "fp32", "cpu", rounds=3, steps=1, warmup=0)
    assert seen == {"names": ["mask 0.75", "mask 0.5", "mask 0.0"], "kind": "train"}  # one interleaved call
    assert [s.mask_ratio for s in out] == [0.75, 0.5] and {s.reference_ratio for s in out} == {0.0}
    assert out[0].per_round == (3.0, 2.0, 3.0)  # round by round, not median over median (33/11 = 3)
    line = out[0].line()
    # mean 8/3, SD 0.5774, t(2) 4.303: half-width 4.303 * 0.5774 / sqrt 3 = 1.434
    assert "median 3.00x (min 2.00, max 3.00)" in line and "mean 2.67x [95% t-interval 1.23, 4.10]" in line
    with pytest.raises(ValueError, match="two mask ratios"):
        bench.train_speedups("ref", 2, (0.75,))


def test_cli_bench_speedup_needs_two_ratios_and_prints_a_line(capsys, monkeypatch):
    assert main(["bench", "--speedup", "--mask-ratio", "0.75"]) == 2
    assert "--speedup needs at least two --mask-ratio" in capsys.readouterr().err
    assert main(["bench", "--mask-ratio", "0.75", "0.75"]) == 2
    assert "give each ratio once" in capsys.readouterr().err

    def fake(preset, batch, ratio, *args):
        return bench.BenchResult("maelab", "fp32", batch, ratio, 1, 10.0, 20.0, 0.5, 0.2, 100.0)

    monkeypatch.setattr(bench, "bench_maelab", fake)
    monkeypatch.setattr(bench, "train_speedups", lambda *a: [bench.Speedup(0.75, 0.0, (2.5, 2.6))])
    assert main(["bench", "--device", "cpu", "--speedup", "--mask-ratio", "0.75", "0.0"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("training speed-up, mask 0.75 over mask 0.00, 2 ")

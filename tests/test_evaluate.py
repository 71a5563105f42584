"""k-NN vote, linear probe (lr chosen on held-out train data only), and the `maelab eval` commands."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from maelab.cli import main
from maelab.data import ImageData
from maelab.eval.features import FeatureSet
from maelab.eval.frozen import EvalData, evaluate_knn, evaluate_linear, knn_markdown, linear_markdown
from maelab.eval.knn import knn_accuracy, knn_class_scores, knn_correct
from maelab.eval.linear_probe import ProbeConfig, holdout_split, linear_probe, probe_accuracy, select_lr, train_probe
from maelab.eval.stats import unpack_correct
from tests.conftest import TINY_MODEL, write_image_folder
from tests.test_features import DINO_KWARGS, DINO_NAME

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------ k-NN
def test_knn_vote_matches_hand_computation():
    # Five training points; cosine similarity to the test point (1, 0) is 1, .8, .6, 0, -1. Lengths
    # differ on purpose: only directions may matter.
    train = torch.tensor([[2.0, 0.0], [4.0, 3.0], [0.6, 0.8], [0.0, 3.0], [-1.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 1, 0])
    test = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = 0.5
    scores = knn_class_scores(train, labels, test, num_classes=2, ks=(1, 3, 10), temperature=t)
    e = lambda s: math.exp(s / t)  # noqa: E731
    # Test point 0: k=1 -> only (1, 0) of class 0; k=3 adds .8 and .6 of class 1, which now wins.
    assert scores[1][0].tolist() == pytest.approx([e(1.0), 0.0], rel=1e-5)
    assert scores[3][0].tolist() == pytest.approx([e(1.0), e(0.8) + e(0.6)], rel=1e-5)
    # k=10 > 5 training points: every point votes.
    assert scores[10][0].tolist() == pytest.approx([e(1.0) + e(-1.0), e(0.8) + e(0.6) + e(0.0)], rel=1e-5)
    # Test point 1 = (0, 1): similarities 0, .6, .8, 1, 0 -> nearest three are all class 1.
    assert scores[3][1].tolist() == pytest.approx([0.0, e(1.0) + e(0.8) + e(0.6)], rel=1e-5)
    assert scores[1][0].argmax() == 0 and scores[3][0].argmax() == 1
    # Chunking over test rows changes nothing.
    chunked = knn_class_scores(train, labels, test, 2, (1, 3, 10), t, chunk_size=1)
    for k in (1, 3, 10):
        torch.testing.assert_close(chunked[k], scores[k])
    acc = knn_accuracy(train, labels, test, torch.tensor([1, 1]), ks=(1, 3), temperature=t)
    assert acc == {1: pytest.approx(50.0), 3: pytest.approx(100.0)}


def test_knn_chunked_matches_unchunked_on_random_features():
    g = torch.Generator().manual_seed(0)
    train, test = torch.randn(300, 8, generator=g), torch.randn(50, 8, generator=g)
    labels = torch.randint(0, 5, (300,), generator=g)
    full = knn_class_scores(train, labels, test, 5, (1, 7, 20))
    parts = knn_class_scores(train, labels, test, 5, (1, 7, 20), chunk_size=7)
    for k in full:  # scores reach exp(1 / 0.07) ~ 1.6e6: compare relatively
        torch.testing.assert_close(parts[k], full[k], rtol=1e-5, atol=0.0)


# ------------------------------------------------------------------------------------ linear probe
def separable(n: int, num_classes: int = 4, dim: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian blobs around well-separated class means: linearly separable with margin."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(99)) * 4
    y = torch.arange(n) % num_classes
    return means[y] + torch.randn(n, dim, generator=g), y


FAST = ProbeConfig(lrs=(1e-6, 0.01, 0.1, 1.0), epochs=8, batch_size=64)


def test_linear_probe_separates_separable_features():
    (x, y), (xt, yt) = separable(800), separable(400, seed=1)
    result = linear_probe(x, y, xt, yt, FAST)
    assert result.test_accuracy > 95.0
    assert result.train_accuracy > 95.0
    assert set(result.val_accuracy) == set(FAST.lrs)
    assert result.val_accuracy[result.best_lr] == max(result.val_accuracy.values())
    assert (result.num_fit, result.num_val) == (720, 80)


def test_lr_is_chosen_on_heldout_train_data_not_on_test():
    (x, y), (xt, yt) = separable(800), separable(400, seed=1)
    clean = linear_probe(x, y, xt, yt, FAST)
    # Garbage test labels: every class shifted by one. A trained head now scores ~0 %, the nearly
    # untrained lr=1e-6 head far more; selecting on test would pick 1e-6.
    garbage = linear_probe(x, y, xt, (yt + 1) % 4, FAST)
    assert garbage.best_lr == clean.best_lr != 1e-6
    assert garbage.val_accuracy == clean.val_accuracy
    assert garbage.test_accuracy < 10.0 < 95.0 < clean.test_accuracy
    probe = train_probe(x, y, 4, FAST.lrs, FAST)
    per_lr = dict(zip(FAST.lrs, probe_accuracy(probe, xt, (yt + 1) % 4), strict=True))
    assert max(per_lr, key=per_lr.get) == 1e-6  # ...as this shows


def test_heldout_split_is_seeded_and_disjoint():
    fit, val = holdout_split(100, 0.1, seed=3)
    assert len(val) == 10 and len(fit) == 90
    assert set(fit.tolist()).isdisjoint(val.tolist()) and set(fit.tolist()) | set(val.tolist()) == set(range(100))
    torch.testing.assert_close(holdout_split(100, 0.1, seed=3)[1], val)
    assert not torch.equal(holdout_split(100, 0.1, seed=4)[1], val)
    with pytest.raises(ValueError):
        holdout_split(100, 1.5, 0)


def test_heads_trained_together_equal_heads_trained_alone():
    x, y = separable(300)
    cfg = ProbeConfig(epochs=3, batch_size=50)
    together = train_probe(x, y, 4, [0.01, 0.3], cfg)
    alone = train_probe(x, y, 4, [0.3], cfg)
    torch.testing.assert_close(together.weight[:, 1], alone.weight[:, 0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(together.bias[1], alone.bias[0], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(together.weight[:, 0], together.weight[:, 1])


def test_probe_restores_the_thread_count():
    torch.set_num_threads(2)  # the autouse fixture restores the original afterwards
    x, y = separable(100)
    train_probe(x, y, 4, [0.1], ProbeConfig(epochs=1, batch_size=50))
    assert torch.get_num_threads() == 2


def test_select_lr_sees_only_training_data():
    x, y = separable(400)
    by_lr, best, n_fit, n_val = select_lr(x, y, 4, FAST)
    assert (n_fit, n_val) == (360, 40) and best in FAST.lrs and by_lr[1e-6] < by_lr[best]


# ------------------------------------------------------------------------------------ CLI
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import os

    data = os.environ.get("MAELAB_DATA")
    if not data:
        pytest.skip("MAELAB_DATA is not set (export MAELAB_DATA=../shared/data/cifar10)")
    run = tmp_path_factory.mktemp("eval") / "run"
    sizes = [f"--{k.replace('_', '-')}={v}" for k, v in TINY_MODEL.items()]
    argv = ["pretrain", "--data-dir", data, "--subset", "200", "--epochs", "1", "--batch-size", "50"]
    assert main([*argv, *sizes, "--out", str(run), "--quiet"]) == 0
    return run


@pytest.mark.slow
def test_cli_eval_knn_and_linear_on_a_tiny_run(tiny_run: Path, capsys: pytest.CaptureFixture):
    common = ["--subset", "100", "--test-subset", "50", "--quiet", "--no-cache", "--device", "cpu"]
    assert main(["eval", "knn", str(tiny_run), *common, "--pooling", "cls", "mean", "--k", "1", "5"]) == 0
    printed = capsys.readouterr().out
    knn = json.loads((tiny_run / "eval" / "knn.json").read_text())
    assert [(r["role"], r["pooling"]) for r in knn["results"]] == [
        ("evaluated", "cls"), ("evaluated", "mean"), ("baseline", "cls"), ("baseline", "mean"),
    ]  # fmt: skip
    assert knn["data"]["train_images"] == 100 and knn["data"]["test_images"] == 50
    assert all(set(r["top1"]) == {"1", "5"} and 0 <= r["top1"]["5"] <= 100 for r in knn["results"])
    assert "random init (seed 0)" in printed and "| k=5 |" in printed
    assert (tiny_run / "eval" / "knn.md").read_text() in printed

    assert main(["eval", "linear", str(tiny_run), *common, "--epochs", "2", "--lrs", "0.01", "0.1"]) == 0
    linear = json.loads((tiny_run / "eval" / "linear.json").read_text())
    assert [r["role"] for r in linear["results"]] == ["evaluated", "baseline"]
    for r in linear["results"]:
        assert set(r["heldout_accuracy"]) == {"0.01", "0.1"} and r["best_lr"] in (0.01, 0.1)
        assert 0 <= r["test_top1"] <= 100 and r["eval_seconds"] >= 0
    assert linear["settings"]["heldout_images"] == 10
    md = (tiny_run / "eval" / "linear.md").read_text()
    assert "random init (seed 0)" in md and "test top-1" in md


def test_cli_eval_external_timm_backbone(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch):
    import timm

    monkeypatch.setenv("MAELAB_CACHE", str(tmp_path / "cache"))
    data = write_image_folder(tmp_path / "folder", per_class=6, size=8)
    torch.manual_seed(0)
    model = timm.create_model(DINO_NAME, pretrained=False, num_classes=0, img_size=8, **DINO_KWARGS)
    weights = tmp_path / "dino.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    args = [f"--backbone-arg={k}={v}" for k, v in DINO_KWARGS.items()]
    base = ["eval", "knn", "--data-dir", str(data), "--backbone", f"timm:{DINO_NAME}", "--quiet", *args]

    assert main([*base, "--weights", str(weights)]) == 2  # no run directory and no --out
    assert "pass --out DIR" in capsys.readouterr().err
    assert main([*base, "--weights", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "o")]) == 2
    assert "missing.pth: no such file" in capsys.readouterr().err

    out = tmp_path / "report"
    assert main([*base, "--weights", str(weights), "--out", str(out), "--k", "3", "--pooling", "mean"]) == 0
    report = json.loads((out / "knn.json").read_text())
    assert [r["encoder"] for r in report["results"]] == [f"timm:{DINO_NAME}", "random init (seed 0)"]
    assert report["source"]["weights"] == str(weights) and report["results"][0]["pooling"] == "mean"
    assert (out / "knn.md").is_file()


def test_cli_eval_needs_a_run_or_a_backbone(capsys: pytest.CaptureFixture, tmp_path: Path):
    assert main(["eval", "knn", "--out", str(tmp_path)]) == 2
    assert "give either RUN" in capsys.readouterr().err
    assert main(["eval", "linear", str(tmp_path / "no-run")]) == 2
    assert "no such run" in capsys.readouterr().err
    assert main(["eval", "knn", str(tmp_path), "--weights", "w.pth"]) == 2
    assert "apply to --backbone only" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ paired comparisons
def test_knn_correct_flags_give_knn_accuracy():
    g = torch.Generator().manual_seed(0)
    train, test = torch.randn(200, 8, generator=g), torch.randn(40, 8, generator=g)
    labels, test_labels = torch.randint(0, 3, (200,), generator=g), torch.randint(0, 3, (40,), generator=g)
    flags = knn_correct(train, labels, test, test_labels, ks=(1, 5))
    acc = knn_accuracy(train, labels, test, test_labels, ks=(1, 5))
    scores = knn_class_scores(train, labels, test, 3, (1, 5))
    for k in (1, 5):
        assert flags[k].dtype == torch.bool and flags[k].shape == (40,)
        assert torch.equal(flags[k], scores[k].argmax(dim=1) == test_labels)
        assert 100.0 * flags[k].float().mean().item() == pytest.approx(acc[k])


def test_linear_probe_reports_which_test_images_it_got_right():
    (x, y), (xt, yt) = separable(400), separable(200, seed=1)
    yt = yt.clone()
    yt[:30] = (yt[:30] + 1) % 4  # 30 test images the head must get wrong
    result = linear_probe(x, y, xt, yt, FAST)
    assert result.test_correct.dtype == torch.bool and result.test_correct.shape == (200,)
    assert not result.test_correct[:30].any() and result.test_correct[30:].float().mean() > 0.95
    assert 100.0 * result.test_correct.float().mean().item() == pytest.approx(result.test_accuracy)


def _synthetic_eval(monkeypatch: pytest.MonkeyPatch) -> tuple[list, EvalData]:
    """A trained encoder whose 'mean' pooling is perfect and 'cls' poor, and a random init the other way round.

    Like for like (same pooling) the trained encoder wins on mean and loses on cls; best pooling vs best
    pooling (trained mean vs random-init cls) would be a tie, and crossed poolings far apart.
    """
    (x, y), (xt, yt) = separable(240, dim=8), separable(120, dim=8, seed=1)
    noise = lambda n, seed: torch.randn(n, 8, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    blurred = lambda f, seed: f + 6 * noise(f.shape[0], seed)  # noqa: E731  # class signal mostly drowned
    sets = {
        "trained": ({"cls": blurred(x, 1), "mean": x}, {"cls": blurred(xt, 2), "mean": xt}),
        "random init (seed 0)": ({"cls": x, "mean": noise(240, 3)}, {"cls": xt, "mean": noise(120, 4)}),
    }

    def features(encoder, *args):
        train, test = sets[encoder.name]
        return FeatureSet(train, y, False, 0.0), FeatureSet(test, yt, False, 0.0)

    monkeypatch.setattr("maelab.eval.frozen._features", features)
    encoders = [
        SimpleNamespace(name="trained", spec={"kind": "run"}),
        SimpleNamespace(name="random init (seed 0)", spec={"kind": "random-init", "seed": 0}),
    ]
    split = lambda labels: ImageData(torch.zeros(len(labels), 1, 1, 1, dtype=torch.uint8), labels, list("abcd"))  # noqa: E731
    info = {"data_dir": "", "classes": 4, "train_images": 240, "test_images": 120, "train_subset": "all",
            "test_subset": "all"}  # fmt: skip
    return encoders, EvalData(split(y), split(yt), info)


def _check_like_for_like(rows: list[dict], top1) -> None:
    by = {(r["encoder"], r["pooling"]): r for r in rows}
    base = {p: by[("random init (seed 0)", p)] for p in ("cls", "mean")}
    assert abs(top1(base["cls"]) - top1(base["mean"])) > 30  # crossed poolings would be visibly wrong
    assert all("vs_random_init" not in r for r in base.values())
    for pooling in ("cls", "mean"):
        row, entry = by[("trained", pooling)], by[("trained", pooling)]["vs_random_init"]
        assert entry["pooling"] == pooling and entry["baseline"] == "random init (seed 0)" and entry["n"] == 120
        assert entry["accuracy_a"] == pytest.approx(top1(row), abs=0.01)
        assert entry["accuracy_b"] == pytest.approx(top1(base[pooling]), abs=0.01)  # same pooling's baseline
        assert entry["difference"] == pytest.approx(top1(row) - top1(base[pooling]), abs=0.02)
        assert entry["ci_low"] <= entry["difference"] <= entry["ci_high"]
    # Trained wins with mean pooling, loses with cls: neither is a best-vs-best tie.
    assert by[("trained", "mean")]["vs_random_init"]["verdict"].startswith("trained [mean] beats random init")
    assert by[("trained", "cls")]["vs_random_init"]["verdict"].startswith("random init (seed 0) [cls] beats trained")


def test_knn_report_stores_per_image_flags_and_pairs_like_with_like(monkeypatch: pytest.MonkeyPatch):
    encoders, data = _synthetic_eval(monkeypatch)
    report = evaluate_knn(encoders, data, ("cls", "mean"), ks=(5, 20), progress=False, cache=False, precision="fp32")
    rows = report["results"]
    for r in rows:
        for k in ("5", "20"):
            flags = unpack_correct(r["test_correct"][k])
            assert flags.shape == (120,) and 100.0 * flags.mean() == pytest.approx(r["top1"][k], abs=0.005)
    assert report["settings"]["paired_k"] == 20 and all(r["vs_random_init"]["k"] == 20 for r in rows[:2])
    _check_like_for_like(rows, lambda r: r["top1"]["20"])
    md = knn_markdown(json.loads(json.dumps(report)))  # as read back from knn.json
    assert "| vs random init (paired), k=20 |" in md and "(baseline)" in md
    assert "- trained [mean] beats random init (seed 0) [mean]" in md
    assert md.count("McNemar p") >= 2


def test_linear_report_stores_per_image_flags_and_pairs_like_with_like(monkeypatch: pytest.MonkeyPatch):
    encoders, data = _synthetic_eval(monkeypatch)
    cfg = ProbeConfig(lrs=(0.01, 0.1), epochs=4, batch_size=60)
    report = evaluate_linear(encoders, data, ("cls", "mean"), cfg, progress=False, cache=False, precision="fp32")
    for r in report["results"]:
        flags = unpack_correct(r["test_correct"])
        assert flags.shape == (120,) and 100.0 * flags.mean() == pytest.approx(r["test_top1"], abs=0.005)
    _check_like_for_like(report["results"], lambda r: r["test_top1"])
    md = linear_markdown(report)
    assert "| vs random init (paired) |" in md and "- random init (seed 0) [cls] beats trained [cls]" in md


def test_no_random_init_no_paired_column(monkeypatch: pytest.MonkeyPatch):
    encoders, data = _synthetic_eval(monkeypatch)
    report = evaluate_knn(encoders[:1], data, ("cls",), ks=(3,), progress=False, cache=False, precision="fp32")
    assert report["settings"]["paired_k"] == 3 and "vs_random_init" not in report["results"][0]
    md = knn_markdown(report)
    assert "vs random init" not in md and "Paired comparisons" not in md

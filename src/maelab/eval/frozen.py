"""Frozen-feature evaluations of an encoder beside its random-init baseline: k-NN and linear probe.

checkpoint (or timm backbone) -> encoders [evaluated, random init of the same shape] -> cached
features of the train and test images -> k-NN / linear probe per encoder and pooling -> a report
(JSON + markdown table with the wall time of each evaluation) in the run's ``eval/`` directory.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from maelab.config import Config, ConfigError, DataConfig
from maelab.data import ImageData, load_data
from maelab.eval.features import (
    Encoder,
    FeatureSet,
    cached_features,
    random_init_encoder,
    random_timm_encoder,
    run_encoder,
    timm_encoder,
)
from maelab.eval.knn import DEFAULT_TEMPERATURE, PAIRED_K, knn_correct
from maelab.eval.linear_probe import ProbeConfig, holdout_split, linear_probe
from maelab.eval.paired import HEADER as PAIRED_HEADER
from maelab.eval.paired import add_vs_random_init, has_paired, paired_cell, paired_lines
from maelab.eval.stats import pack_correct
from maelab.runtime import choose_precision


@dataclass
class EvalData:
    """The images an evaluation uses: train/test splits (uint8, CPU) and where they came from."""

    train: ImageData
    test: ImageData
    info: dict[str, Any]


def build_encoders(
    run: str | None = None,
    backbone: str | None = None,
    weights: str | None = None,
    img_size: int = 32,
    backbone_kwargs: dict[str, Any] | None = None,
    baseline: bool = True,
    seed: int = 0,
) -> tuple[list[Encoder], Config | None]:
    """[evaluated encoder, its random-init twin (if ``baseline``)] and the run's config (None for timm).

    ``run`` is a maelab run or checkpoint directory; ``backbone`` is ``timm:NAME`` with a local
    ``weights`` file, created for ``img_size`` inputs with ``backbone_kwargs``.
    """
    if bool(run) == bool(backbone):
        raise ConfigError("give either RUN (a maelab run directory) or --backbone timm:NAME --weights FILE")
    if run:
        encoder, cfg = run_encoder(run)
        encoders = [encoder] + ([random_init_encoder(cfg, seed)] if baseline else [])
        return encoders, cfg
    assert backbone is not None
    if not backbone.startswith("timm:") or len(backbone) <= len("timm:"):
        raise ConfigError(f"--backbone must look like timm:NAME (e.g. timm:vit_small_patch14_dinov2), got {backbone!r}")
    if not weights:
        raise ConfigError(f"--backbone {backbone} needs --weights FILE (.safetensors or .pth); nothing is downloaded")
    name = backbone[len("timm:") :]
    encoder = timm_encoder(name, weights, img_size, backbone_kwargs)
    encoders = [encoder] + ([random_timm_encoder(name, img_size, backbone_kwargs, seed)] if baseline else [])
    return encoders, None


def load_eval_data(
    data_dir: str | None, cfg: Config | None, subset: int = 0, test_subset: int = 0, test_split: str = "test"
) -> EvalData:
    """Train and test splits, each optionally a class-balanced subset (first n/classes per class).

    The training images exclude the run's ``--holdout`` images; ``test_split="val"`` scores on those
    held-out training images instead of the test set (for choosing a recipe without touching test).
    """
    if subset < 0 or test_subset < 0:
        raise ConfigError(f"--subset and --test-subset must be >= 0, got {subset} and {test_subset}")
    d = cfg.data if cfg is not None else DataConfig()
    d = dataclasses.replace(d, data_dir=data_dir or d.data_dir)
    img_size = cfg.model.img_size if cfg is not None else None  # None: the data's own size (timm backbones)
    train = load_data(d, "train", img_size, subset=subset)
    test = load_data(d, test_split, img_size, subset=test_subset)
    if train.classes != test.classes:
        raise ConfigError(f"train and {test_split} classes differ: {train.classes} vs {test.classes}")
    data_dir = d.data_dir
    info = {
        "data_dir": str(data_dir or ""), "classes": len(train.classes), "train_images": len(train),
        "test_images": len(test), "train_subset": subset or "all", "test_subset": test_subset or "all",
        "test_split": test_split,
    }  # fmt: skip
    return EvalData(train, test, info)


def _features(
    encoder: Encoder, data: EvalData, batch_size: int, device: torch.device, progress: bool, cache: bool, precision: str
) -> tuple[FeatureSet, FeatureSet]:
    args = (batch_size, device, progress, cache, precision)
    train = cached_features(encoder, data.train.images, data.train.labels, "train", *args)
    test = cached_features(encoder, data.test.images, data.test.labels, "test", *args)
    return train, test


def _row(encoder: Encoder, role: str, pooling: str, feats: tuple[FeatureSet, FeatureSet], first: bool) -> dict:
    return {
        "encoder": encoder.name, "role": role, "pooling": pooling, "spec": encoder.spec,
        # Features are extracted once per encoder and shared by its poolings: time them on the first row.
        "feature_seconds": round(sum(f.seconds for f in feats), 2) if first else None,
        "features_cached": all(f.from_cache for f in feats),
    }  # fmt: skip


def evaluate_knn(
    encoders: Sequence[Encoder],
    data: EvalData,
    poolings: Sequence[str] = ("cls",),
    ks: Sequence[int] = (10, 20, 200),
    temperature: float = DEFAULT_TEMPERATURE,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    progress: bool = True,
    cache: bool = True,
    precision: str = "auto",
) -> dict[str, Any]:
    """Weighted k-NN top-1 (%) of every encoder and pooling; the first encoder is the evaluated one.
    Features are extracted under ``precision`` (auto | fp32 | bf16, see ``runtime.choose_precision``)."""
    device = torch.device(device)
    choice = choose_precision(precision, device)
    start = time.perf_counter()
    rows = []
    for i, encoder in enumerate(encoders):
        feats = _features(encoder, data, batch_size, device, progress, cache, choice.name)
        for j, pooling in enumerate(poolings):
            t0 = time.perf_counter()
            correct = knn_correct(  # {k: (N_test,) bool}
                feats[0].get(pooling).to(device), feats[0].labels.to(device), feats[1].get(pooling).to(device),
                feats[1].labels.to(device), ks, temperature, num_classes=len(data.train.classes),
            )  # fmt: skip
            row = _row(encoder, "evaluated" if i == 0 else "baseline", pooling, feats, j == 0)
            row.update(
                top1={str(k): round(100.0 * c.float().mean().item(), 2) for k, c in correct.items()},
                test_correct={str(k): pack_correct(c) for k, c in correct.items()},  # which test images, per k
                eval_seconds=round(time.perf_counter() - t0, 2),
            )  # fmt: skip
            rows.append(row)
    # "A beats B" needs a paired test on the same images: every trained row vs the random init's row of its pooling.
    paired_k = PAIRED_K if PAIRED_K in ks else ks[0]
    add_vs_random_init(rows, lambda r: r["test_correct"][str(paired_k)], k=paired_k)
    settings = {"ks": list(ks), "temperature": temperature, "poolings": list(poolings), "device": str(device),
                "paired_k": paired_k, **choice.as_dict()}  # fmt: skip
    return {"evaluation": "knn", "source": encoders[0].spec, "data": data.info, "settings": settings, "results": rows,
            "wall_time_s": round(time.perf_counter() - start, 2)}  # fmt: skip


def evaluate_linear(
    encoders: Sequence[Encoder],
    data: EvalData,
    poolings: Sequence[str] = ("cls",),
    probe: ProbeConfig | None = None,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    progress: bool = True,
    cache: bool = True,
    precision: str = "auto",
) -> dict[str, Any]:
    """Linear-probe accuracies (%) of every encoder and pooling, lr chosen on held-out train features.
    Features are extracted under ``precision`` (auto | fp32 | bf16, see ``runtime.choose_precision``)."""
    device = torch.device(device)
    choice = choose_precision(precision, device)
    probe = probe or ProbeConfig()
    start = time.perf_counter()
    rows = []
    for i, encoder in enumerate(encoders):
        feats = _features(encoder, data, batch_size, device, progress, cache, choice.name)
        for j, pooling in enumerate(poolings):
            t0 = time.perf_counter()
            result = linear_probe(
                feats[0].get(pooling).to(device), feats[0].labels.to(device), feats[1].get(pooling).to(device),
                feats[1].labels.to(device), probe, num_classes=len(data.train.classes), progress=progress,
            )  # fmt: skip
            row = _row(encoder, "evaluated" if i == 0 else "baseline", pooling, feats, j == 0)
            row.update(
                heldout_accuracy={f"{lr:g}": round(a, 2) for lr, a in result.val_accuracy.items()},
                best_lr=result.best_lr, train_top1=round(result.train_accuracy, 2),
                test_top1=round(result.test_accuracy, 2), test_correct=pack_correct(result.test_correct),
                eval_seconds=round(time.perf_counter() - t0, 2),
            )  # fmt: skip
            rows.append(row)
    add_vs_random_init(rows, lambda r: r["test_correct"])  # paired, like for like: same pooling, same test images
    heldout = len(holdout_split(len(data.train), probe.val_fraction, probe.seed)[1])
    settings = {**asdict(probe), "lrs": list(probe.lrs), "poolings": list(poolings), "device": str(device),
                "heldout_images": heldout, "feature_batch_size": batch_size, **choice.as_dict()}  # fmt: skip
    return {"evaluation": "linear", "source": encoders[0].spec, "data": data.info, "settings": settings, "results": rows,
            "wall_time_s": round(time.perf_counter() - start, 2)}  # fmt: skip


# ------------------------------------------------------------------------------------ reports
def _data_line(info: dict[str, Any]) -> str:
    return (
        f"{info['train_images']} train images (subset: {info['train_subset']}), {info['test_images']} "
        + ("held-out training (val) images" if info.get("test_split") == "val" else "test images")
        + f" (subset: {info['test_subset']}), {info['classes']} classes, from {info['data_dir'] or '$MAELAB_DATA'}"
    )


def _precision(settings: dict[str, Any]) -> str:
    # Reports written before precision was a choice have no such key (their features were fp32).
    return f", features in {settings['precision']} ({settings['precision_reason']})" if "precision" in settings else ""


def _seconds(row: dict[str, Any]) -> str:
    if row["feature_seconds"] is None:
        return "(same)"  # this encoder's features were timed on its first pooling's row
    return "cached" if row["features_cached"] else f"{row['feature_seconds']:.1f}"


def knn_markdown(report: dict[str, Any]) -> str:
    """The k-NN report as a markdown table: top-1 (%) per k, with pooling and wall times, and (when the
    random init was evaluated) each row's paired comparison with the random init of its pooling."""
    s = report["settings"]
    ks = [str(k) for k in s["ks"]]
    paired = has_paired(report["results"])
    lines = [
        f"## k-NN top-1 accuracy (%), T = {s['temperature']}, cosine similarity",
        "",
        _data_line(report["data"]),
        "",
        "| encoder | pooling | " + " | ".join(f"k={k}" for k in ks) + " | features (s) | k-NN (s) |"
        + (f" {PAIRED_HEADER}, k={s.get('paired_k')} |" if paired else ""),
        "|---|---|" + "---:|" * (len(ks) + 2) + ("---|" if paired else ""),
    ]  # fmt: skip
    for r in report["results"]:
        accs = " | ".join(f"{r['top1'][k]:.2f}" for k in ks)
        lines.append(
            f"| {r['encoder']} | {r['pooling']} | {accs} | {_seconds(r)} | {r['eval_seconds']:.1f} |"
            + (f" {paired_cell(r)} |" if paired else "")
        )
    lines += paired_lines(report["results"], f"k-NN top-1, k={s.get('paired_k')}")
    lines += ["", f"Total wall time: {report['wall_time_s']:.1f} s on {s['device']}{_precision(s)}."]
    return "\n".join(lines) + "\n"


def linear_markdown(report: dict[str, Any]) -> str:
    """The linear-probe report as markdown: test top-1 of the chosen lr (and, when the random init was
    evaluated, the paired comparison with the random init of the same pooling), held-out accuracy per lr."""
    s = report["settings"]
    lrs = [f"{lr:g}" for lr in s["lrs"]]
    paired = has_paired(report["results"])
    lines = [
        "## Linear probe (BatchNorm1d without affine + linear) on frozen features",
        "",
        _data_line(report["data"]),
        "",
        f"SGD momentum {s['momentum']}, {s['epochs']} epochs, batch {s['batch_size']}, cosine schedule; lr chosen on "
        f"{s['heldout_images']} held-out TRAIN images ({s['val_fraction']:.0%}, seed {s['seed']}), then the head is "
        "retrained at that lr on all train images and tested once.",
        "",
        "| encoder | pooling | chosen lr | train top-1 | test top-1 | features (s) | probe (s) |"
        + (f" {PAIRED_HEADER} |" if paired else ""),
        "|---|---|---:|---:|---:|---:|---:|" + ("---|" if paired else ""),
    ]  # fmt: skip
    for r in report["results"]:
        lines.append(
            f"| {r['encoder']} | {r['pooling']} | {r['best_lr']:g} | {r['train_top1']:.2f} | {r['test_top1']:.2f} | "
            f"{_seconds(r)} | {r['eval_seconds']:.1f} |" + (f" {paired_cell(r)} |" if paired else "")
        )
    lines += paired_lines(report["results"], "linear-probe test top-1")
    lines += ["", "Held-out train accuracy (%) per lr:", ""]
    lines += ["| encoder | pooling | " + " | ".join(f"lr {lr}" for lr in lrs) + " |", "|---|---|" + "---:|" * len(lrs)]
    for r in report["results"]:
        lines.append(
            f"| {r['encoder']} | {r['pooling']} | "
            + " | ".join(f"{r['heldout_accuracy'][lr]:.2f}" for lr in lrs)
            + " |"
        )
    lines += ["", f"Total wall time: {report['wall_time_s']:.1f} s on {s['device']}{_precision(s)}."]
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], markdown: str, out_dir: str | Path, name: str) -> tuple[Path, Path]:
    """Write OUT/NAME.json and OUT/NAME.md atomically; returns both paths."""
    from maelab.eval.results import write_json_and_markdown

    return write_json_and_markdown(out_dir, name, report, markdown)


def frozen_reports(
    out: Path, make_encoders: Callable[[], list[Encoder]], data: Callable[[], EvalData], poolings: Sequence[str],
    ks: Sequence[int], probe: ProbeConfig, **common: Any,
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """{"knn": report, "linear": report} of ``make_encoders()`` on ``data()``, written to ``out/{knn,linear}.{json,md}``;
    a report already there is read back and nothing is built or loaded for it, so an interrupted experiment
    resumes per evaluation. ``common``: ``batch_size``, ``device``, ``progress``, ``precision`` of both."""
    reports: dict[str, dict[str, Any]] = {}
    for kind in ("knn", "linear"):
        path = out / f"{kind}.json"
        if not path.is_file():
            if kind == "knn":
                report = evaluate_knn(make_encoders(), data(), poolings, ks, **common)
                write_report(report, knn_markdown(report), out, kind)
            else:
                report = evaluate_linear(make_encoders(), data(), poolings, probe, **common)
                write_report(report, linear_markdown(report), out, kind)
        reports[kind] = json.loads(path.read_text())
    return reports

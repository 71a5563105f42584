"""What each evaluation command does, one function per command, called by ``maelab.cli`` with the
command's options (``maelab.config.evaluation``): ``eval knn``, ``eval linear``, ``eval finetune``,
and ``reconstruct`` (``bench`` lives in ``maelab.bench``).

Each function validates its options, does the work, writes the command's files and returns a
result dict with the ``table`` it prints and the paths it wrote (``json``, ``markdown``).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from maelab.config import (
    ConfigError,
    FinetuneOptions,
    FrozenEvalOptions,
    KnnOptions,
    LinearOptions,
    ReconstructOptions,
)
from maelab.eval.features import Encoder
from maelab.eval.frozen import EvalData, build_encoders, load_eval_data
from maelab.eval.results import markdown_table, write_eval_report
from maelab.runtime import resolve_device


# ------------------------------------------------------------------------------------ frozen features
def frozen_eval_setup(opts: FrozenEvalOptions) -> tuple[list[Encoder], EvalData, str]:
    """(encoders [evaluated, random init], data, output directory) of ``eval knn`` / ``eval linear``."""
    data = None
    img_size = opts.img_size
    if opts.backbone and not img_size:  # the backbone is created for the data's image size
        data = load_eval_data(opts.data_dir or None, None, opts.subset, opts.test_subset, opts.split)
        img_size = int(data.train.images.shape[-1])
    encoders, cfg = build_encoders(
        opts.run or None, opts.backbone or None, opts.weights or None, img_size, opts.backbone_kwargs(),
        opts.baseline, opts.seed,
    )  # fmt: skip
    if data is None:
        data = load_eval_data(opts.data_dir or None, cfg, opts.subset, opts.test_subset, opts.split)
    return encoders, data, opts.out or str(Path(opts.run) / "eval")


def _written(report: dict[str, Any], markdown: str, out: str, name: str) -> dict[str, Any]:
    from maelab.eval.frozen import write_report

    json_path, md_path = write_report(report, markdown, out, name)
    return {"report": report, "table": markdown, "json": str(json_path), "markdown": str(md_path)}


def knn_command(opts: KnnOptions) -> dict[str, Any]:
    """``maelab eval knn``: weighted k-NN accuracy of the frozen features of ``opts.run`` (or a timm
    backbone) beside its random init; writes ``OUT/knn.{json,md}`` (OUT: ``RUN/eval`` or ``--out``)."""
    from maelab.eval.frozen import evaluate_knn, knn_markdown

    opts.validate()
    encoders, data, out = frozen_eval_setup(opts)
    report = evaluate_knn(
        encoders, data, opts.pooling, opts.k, opts.temperature, opts.batch_size, resolve_device(opts.device),
        not opts.quiet, opts.cache, opts.precision,
    )  # fmt: skip
    return _written(report, knn_markdown(report), out, "knn")


def linear_command(opts: LinearOptions) -> dict[str, Any]:
    """``maelab eval linear``: linear probe (lr chosen on held-out training images, seed ``opts.seed``)
    of the frozen features beside the random init; writes ``OUT/linear.{json,md}``."""
    from dataclasses import replace

    from maelab.eval.frozen import evaluate_linear, linear_markdown

    opts.validate()
    encoders, data, out = frozen_eval_setup(opts)
    probe = replace(opts.probe, seed=opts.seed)
    report = evaluate_linear(
        encoders, data, opts.pooling, probe, opts.batch_size, resolve_device(opts.device), not opts.quiet,
        opts.cache, opts.precision,
    )  # fmt: skip
    return _written(report, linear_markdown(report), out, "linear")


# ------------------------------------------------------------------------------------ fine-tuning
def finetune_command(opts: FinetuneOptions) -> dict[str, Any]:
    """``maelab eval finetune``: fine-tune RUN's encoder (or, ``from_scratch``, only the random-init
    encoder) on the train split, score on the test split, and unless ``baseline`` is off also run the
    identical recipe from scratch. Writes ``RUN/eval/finetune[_scratch].{json,md}``."""
    from maelab.eval.finetune import finetune
    from maelab.methods import load_model

    opts.validate()
    ft, run = opts.recipe, opts.run
    pretrained, cfg = load_model(run, "cpu")  # MAE or DINO: both give their encoder under timm names
    method = cfg.train.method
    data = load_eval_data(opts.data_dir or None, cfg, opts.subset, opts.test_subset)
    inits = ["scratch"] if opts.from_scratch else [method] + (["scratch"] if opts.baseline else [])
    results = {}
    for init in inits:
        label = f"fine-tune ({method.upper()} init)" if init == method else "fine-tune (random init)"
        model = pretrained if init == method else None
        results[init] = finetune(model, cfg, ft, data.train, data.test, label, opts.precision)
    rows = [
        [(f"{method.upper()} pretrained" if k == method else "random init"), r["layer_decay"], r["top1"],
         r["first_loss"], r["last_loss"], r["wall_time_s"]]
        for k, r in results.items()
    ]  # fmt: skip
    headers = ["encoder", "layer decay", "test top-1 (%)", "first-epoch loss", "last-epoch loss", "time (s)"]
    table = markdown_table(headers, rows)
    recipe = (
        f"{ft.epochs} epochs, batch {ft.batch_size}, blr {ft.blr:g}, layer decay {ft.layer_decay:g} (pretrained; "
        "the from-scratch baseline trains every layer at the full lr), drop path "
        f"{ft.drop_path:g}, label smoothing {ft.label_smoothing:g}, {len(data.train)} train / {len(data.test)} test "
        f"images, {next(iter(results.values()))['precision']}"
    )
    markdown = f"# Fine-tuning of {run}\n\n{recipe}.\n\n{table}"
    result: dict[str, Any] = {"run": run, "subset": opts.subset, "test_subset": opts.test_subset, **results}
    name = "finetune_scratch" if opts.from_scratch else "finetune"
    result["json"], result["markdown"] = map(str, write_eval_report(run, name, result, markdown))
    result["table"] = f"{recipe}\n{table}"
    return result


# ------------------------------------------------------------------------------------ reconstruction
def reconstruct_command(opts: ReconstructOptions) -> dict[str, Any]:
    """``maelab reconstruct``: :func:`reconstruct_run` with the command's options."""
    opts.validate()
    return reconstruct_run(
        opts.run, opts.n, opts.out or None, opts.mask_ratio, opts.seed, opts.data_dir or None, opts.num_eval,
        opts.device, opts.quiet, opts.precision,
    )  # fmt: skip


def reconstruct_run(
    run: str | Path,
    n: int = 8,
    out: str | Path | None = None,
    mask_ratio: float | None = None,
    seed: int = 0,
    data_dir: str | None = None,
    num_eval: int = 2000,
    device: str = "auto",
    quiet: bool = False,
    precision: str = "auto",
) -> dict[str, Any]:
    """The figure of ``n`` test images (``out``, default ``RUN/eval/reconstruction_mr<R>_seed<S>.png``)
    and the reconstruction metrics over ``num_eval`` class-balanced test images (0 = all), both under
    the masks of ``seed``; writes ``RUN/eval/reconstruction_mr<R>_seed<S>.{json,md}``."""
    from maelab.data import class_balanced_indices, load_data
    from maelab.eval.reconstruction import evaluate_reconstruction
    from maelab.methods import load_model
    from maelab.models.mae import MAE
    from maelab.visualize import NORM_PIX_NOTE, choose_images, fixed_noise, reconstruction_panels, save_figure

    start = time.perf_counter()
    dev = resolve_device(device)
    model, cfg = load_model(str(run), dev)
    if not isinstance(model, MAE):
        raise ConfigError(f"{run}: reconstruction needs an MAE run, this is a {cfg.train.method!r} run")
    model.set_fused_attention(dev.type == "cuda")
    ratio = model.mask_ratio if mask_ratio is None else mask_ratio
    ReconstructOptions(mask_ratio=ratio, n=n, num_eval=num_eval, precision=precision).validate()
    d = cfg.data
    test = load_data(dataclasses.replace(d, data_dir=data_dir or d.data_dir), "test", cfg.model.img_size)
    name = f"reconstruction_mr{ratio:g}_seed{seed}"
    figure = Path(out) if out else Path(run) / "eval" / f"{name}.png"

    idx = choose_images(len(test), min(n, len(test)), seed)
    noise = fixed_noise(len(test), model.num_patches, seed)
    panels = reconstruction_panels(model, test.images[idx].to(dev), d.mean, d.std, noise[idx], ratio)
    caption = NORM_PIX_NOTE if model.norm_pix_loss else ""
    save_figure(panels, figure, f"{Path(run).name}: mask ratio {ratio:g}, image/mask seed {seed}", caption)

    scored = (
        class_balanced_indices(test.labels, len(test.classes), num_eval) if 0 < num_eval < len(test)
        else torch.arange(len(test))
    )  # fmt: skip
    metrics = evaluate_reconstruction(
        model, test.images, d.mean, d.std, ratio, seed, indices=scored, quiet=quiet,
        precision=precision,
    )  # fmt: skip
    result = {
        "run": str(run), "figure": str(figure), "trained_mask_ratio": model.mask_ratio,
        "norm_pix_loss": model.norm_pix_loss, **metrics, "wall_time_s": round(time.perf_counter() - start, 2),
    }  # fmt: skip
    table = markdown_table(
        ["mask ratio", "images", "MSE (loss space)", "PSNR masked (dB)", "SSIM masked"],
        [[ratio, metrics["num_images"], metrics["mse_loss_space"], metrics["psnr"], metrics["ssim"]]],
    )
    note = f"\n{NORM_PIX_NOTE}.\n" if model.norm_pix_loss else ""
    markdown = f"# Reconstruction of {run} (test split, mask seed {seed})\n\n{table}\nFigure: {figure}\n{note}"
    result["json"], result["markdown"] = map(str, write_eval_report(run, name, result, markdown))
    result["table"] = table
    return result

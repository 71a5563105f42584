"""The ``maelab`` command line: ``maelab pretrain ...`` (more subcommands join as they land).

Pretraining flags are generated from the config dataclasses, so every option is documented
with its default, and file values (``--config run.toml``) are overridden only by flags given.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from maelab import __version__
from maelab.checkpoint import CheckpointError
from maelab.config import SECTIONS, ConfigError, field_types, load_toml, resolve_config
from maelab.data import DataError

RESUME_OVERRIDES = ("epochs", "quiet", "device", "log_every")


def _flag(f: dataclasses.Field) -> str:
    return "--" + (f.metadata.get("flag") or f.name).replace("_", "-")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per config field, grouped by section; defaults suppressed so we see what was given."""
    for section, cls in SECTIONS.items():
        group = parser.add_argument_group(f"{section} options")
        types = field_types(cls)
        for f in dataclasses.fields(cls):
            typ = types[f.name]
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
            if section == "model" and f.name in (
                "embed_dim", "encoder_depth", "encoder_heads", "decoder_embed_dim", "decoder_depth",
                "decoder_heads", "mlp_ratio",
            ):  # fmt: skip
                shown = f"{shown} for ref"
            help_text = f"{f.metadata['help']} (default: {shown!s})"
            kwargs: dict[str, Any] = {"dest": f"{section}.{f.name}", "default": argparse.SUPPRESS, "help": help_text}
            if typ is bool:
                kwargs["action"] = argparse.BooleanOptionalAction
            elif typ in (int, float, str):
                kwargs["type"] = typ
                kwargs["metavar"] = typ.__name__.upper()
            else:
                kwargs.update(type=float, nargs="+", metavar="X")
            group.add_argument(_flag(f), **kwargs)


def cli_values(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """{section: {field: value}} for the config flags the user actually gave."""
    out: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for key, value in vars(args).items():
        if "." in key:
            section, name = key.split(".", 1)
            out[section][name] = tuple(value) if isinstance(value, list) else value
    return out


def cmd_pretrain(args: argparse.Namespace) -> int:
    from maelab.train import pretrain

    given = cli_values(args)
    if args.resume:
        extra = [f"--{k.replace('_', '-')}" for s, vals in given.items() for k in vals if k not in RESUME_OVERRIDES]
        if extra or args.config:
            raise ConfigError(
                f"--resume continues a run with its own config.json; only "
                f"{', '.join('--' + k.replace('_', '-') for k in RESUME_OVERRIDES)} may be given (got "
                f"{', '.join(extra + (['--config'] if args.config else []))})"
            )
        run = pretrain(resume=args.resume, overrides=given["train"])
    else:
        file_values = load_toml(args.config) if args.config else None
        cfg = resolve_config(file_values, given, args.config or "defaults")
        run = pretrain(cfg)
    print(f"run directory: {run}")
    from maelab.checkpoint import latest_checkpoint, load_meta

    found = latest_checkpoint(run)
    if found is not None and load_meta(found).get("reason") == "interrupted":
        return 130  # stopped by a signal: the checkpoint is safe, but the run is not finished
    return 0


def not_yet(args: argparse.Namespace) -> int:
    raise ConfigError(f"`maelab {args.command}` is not implemented yet")


# Each subcommand has its own add_*_parser function below; build_parser only wires them together.
def _add_frozen_eval_flags(p: argparse.ArgumentParser) -> None:
    """Flags shared by ``eval knn`` and ``eval linear`` (frozen features of a run or a timm backbone)."""
    p.add_argument("run", nargs="?", default="", metavar="RUN", help="pretraining run (or checkpoint) directory")
    p.add_argument("--data-dir", default="", help="data root (default: the run's, else $MAELAB_DATA)")
    p.add_argument("--subset", type=int, default=0, help="class-balanced training images (0 = all; default: 0)")
    p.add_argument("--test-subset", type=int, default=0, help="class-balanced test images (0 = all; default: 0)")
    p.add_argument(
        "--pooling", nargs="+", choices=("cls", "mean"), default=["cls"],
        help="feature: CLS token and/or mean of the patch tokens; several give one row each (default: cls)",
    )  # fmt: skip
    p.add_argument("--batch-size", type=int, default=256, help="images per feature-extraction batch (default: 256)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--seed", type=int, default=0, help="seed of the baseline, the probe's split and init (default: 0)")
    p.add_argument("--no-baseline", action="store_true", help="skip the random-init encoder of the same shape")
    p.add_argument("--no-cache", action="store_true", help="extract features again instead of using the cache")
    p.add_argument("--out", default="", metavar="DIR", help="where to write the report (default: RUN/eval)")
    p.add_argument("--backbone", default="", metavar="timm:NAME", help="evaluate a timm model instead of a RUN")
    p.add_argument("--weights", default="", metavar="FILE", help="local .safetensors/.pth weights for --backbone")
    p.add_argument(
        "--img-size", type=int, default=0,
        help="--backbone input size: images are resized to it (default: the data's size)",
    )  # fmt: skip
    p.add_argument(
        "--backbone-arg", action="append", default=[], metavar="KEY=VALUE",
        help="extra timm.create_model argument for --backbone, VALUE as JSON (e.g. embed_dim=384); repeatable",
    )  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _backbone_kwargs(items: Sequence[str]) -> dict[str, Any]:
    import json

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--backbone-arg {item!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw  # a bare string such as global_pool=token
    return out


def _frozen_eval_setup(args: argparse.Namespace) -> tuple[list, Any, str]:
    """(encoders, data, output directory) of ``eval knn`` / ``eval linear``."""
    from pathlib import Path

    from maelab.eval.frozen import build_encoders, load_eval_data

    if args.backbone and not args.out:
        raise ConfigError("--backbone has no run directory to write into; pass --out DIR")
    if args.run and (args.weights or args.backbone_arg or args.img_size):
        raise ConfigError("--weights, --backbone-arg and --img-size apply to --backbone only, not to a RUN")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    data = None
    img_size = args.img_size
    if args.backbone and not img_size:  # the backbone is created for the data's image size
        data = load_eval_data(args.data_dir or None, None, args.subset, args.test_subset)
        img_size = int(data.train.images.shape[-1])
    encoders, cfg = build_encoders(
        args.run or None, args.backbone or None, args.weights or None, img_size,
        _backbone_kwargs(args.backbone_arg), not args.no_baseline, args.seed,
    )  # fmt: skip
    if data is None:
        data = load_eval_data(args.data_dir or None, cfg, args.subset, args.test_subset)
    return encoders, data, args.out or str(Path(args.run) / "eval")


def cmd_eval_knn(args: argparse.Namespace) -> int:
    from maelab.eval.frozen import evaluate_knn, knn_markdown, write_report
    from maelab.runtime import resolve_device

    if not args.k or min(args.k) < 1:
        raise ConfigError(f"--k values must be >= 1, got {args.k}")
    if args.temperature <= 0:
        raise ConfigError(f"--temperature must be > 0, got {args.temperature}")
    encoders, data, out = _frozen_eval_setup(args)
    report = evaluate_knn(
        encoders, data, args.pooling, args.k, args.temperature, args.batch_size, resolve_device(args.device),
        not args.quiet, not args.no_cache,
    )  # fmt: skip
    markdown = knn_markdown(report)
    paths = write_report(report, markdown, out, "knn")
    print(markdown, end="")
    print(f"written: {paths[0]}, {paths[1]}")
    return 0


def add_eval_knn_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "knn",
        help="weighted k-NN accuracy of frozen features, beside a random-init encoder",
        description="k-NN classification of frozen features as in DINO: cosine similarity, the k nearest "
        "training images vote with weight exp(sim / T). Features (masking off, no augmentation) are cached "
        "per checkpoint. Writes RUN/eval/knn.{json,md} (or DIR/ with --out).",
    )
    _add_frozen_eval_flags(p)
    p.add_argument("--k", type=int, nargs="+", default=[10, 20, 200], help="neighbours (default: 10 20 200)")
    p.add_argument("--temperature", type=float, default=0.07, help="vote temperature T (default: 0.07)")
    p.set_defaults(func=cmd_eval_knn)


def cmd_eval_linear(args: argparse.Namespace) -> int:
    from maelab.eval.frozen import evaluate_linear, linear_markdown, write_report
    from maelab.eval.linear_probe import ProbeConfig
    from maelab.runtime import resolve_device

    if args.epochs < 1 or args.probe_batch_size < 1:
        raise ConfigError(f"--epochs and --probe-batch-size must be >= 1, got {args.epochs}, {args.probe_batch_size}")
    if not args.lrs or min(args.lrs) <= 0:
        raise ConfigError(f"--lrs must be > 0, got {args.lrs}")
    if not 0 < args.val_fraction < 1:
        raise ConfigError(f"--val-fraction must be in (0, 1), got {args.val_fraction}")
    probe = ProbeConfig(
        lrs=tuple(args.lrs), epochs=args.epochs, batch_size=args.probe_batch_size, val_fraction=args.val_fraction,
        seed=args.seed,
    )  # fmt: skip
    encoders, data, out = _frozen_eval_setup(args)
    report = evaluate_linear(
        encoders, data, args.pooling, probe, args.batch_size, resolve_device(args.device), not args.quiet,
        not args.no_cache,
    )  # fmt: skip
    markdown = linear_markdown(report)
    paths = write_report(report, markdown, out, "linear")
    print(markdown, end="")
    print(f"written: {paths[0]}, {paths[1]}")
    return 0


def add_eval_linear_parser(sub: argparse._SubParsersAction) -> None:
    from maelab.eval.linear_probe import DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS, DEFAULT_LRS

    p = sub.add_parser(
        "linear",
        help="linear probe on frozen features, beside a random-init encoder",
        description="Train BatchNorm1d(affine=False) + linear on frozen features (MAE's probe). One head per "
        "--lrs value is trained at once; the lr is picked on a held-out part of the TRAINING set, the head is "
        "retrained at it on all training images and tested once. Writes RUN/eval/linear.{json,md}.",
    )
    _add_frozen_eval_flags(p)
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help=f"probe epochs (default: {DEFAULT_EPOCHS})")
    p.add_argument(
        "--lrs", type=float, nargs="+", default=list(DEFAULT_LRS),
        help=f"candidate SGD learning rates (default: {' '.join(f'{lr:g}' for lr in DEFAULT_LRS)})",
    )  # fmt: skip
    p.add_argument(
        "--probe-batch-size", type=int, default=DEFAULT_BATCH_SIZE,
        help=f"feature rows per probe step (default: {DEFAULT_BATCH_SIZE})",
    )  # fmt: skip
    p.add_argument(
        "--val-fraction", type=float, default=0.1,
        help="fraction of the training images held out to choose the lr (default: 0.1)",
    )  # fmt: skip
    p.set_defaults(func=cmd_eval_linear)


def cmd_eval_finetune(args: argparse.Namespace) -> int:
    from maelab.eval.finetune import FinetuneConfig, finetune_run

    ft = FinetuneConfig(**{k: getattr(args, k) for k in FinetuneConfig.__dataclass_fields__})
    result = finetune_run(
        args.run, ft, args.data_dir, args.subset, args.test_subset, args.from_scratch, not args.no_baseline
    )
    print(result["table"], end="")
    print(f"written: {result['json']}, {result['markdown']}")
    return 0


def add_eval_finetune_parser(sub: argparse._SubParsersAction) -> None:
    from maelab.eval.finetune import FinetuneConfig

    d = FinetuneConfig()
    p = sub.add_parser(
        "finetune",
        help="fine-tune the whole encoder + a linear head, beside the same recipe from random init",
        description="Fine-tune RUN's encoder end to end (timm ViT, layer-wise lr decay, drop path, label "
        "smoothing, warm-up + cosine, random-resized-crop + flip) and report test top-1 beside the identical "
        "recipe from random initialisation. Writes RUN/eval/finetune.{json,md}.",
    )
    p.add_argument("run", metavar="RUN", help="pretraining run (or checkpoint) directory")
    p.add_argument("--data-dir", default="", help="data root (default: the run's, else $MAELAB_DATA)")
    p.add_argument("--subset", type=int, default=0, help="class-balanced training images (0 = all; default: 0)")
    p.add_argument("--test-subset", type=int, default=0, help="class-balanced test images (0 = all; default: 0)")
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"fine-tuning epochs (default: {d.epochs})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"images per step (default: {d.batch_size})")
    p.add_argument("--blr", type=float, default=d.blr, help=f"base lr; lr = blr * batch / 256 (default: {d.blr:g})")
    p.add_argument("--min-lr", type=float, default=d.min_lr, help=f"final cosine lr (default: {d.min_lr:g})")
    p.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs, help=f"(default: {d.warmup_epochs:g})")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help=f"AdamW (default: {d.weight_decay:g})")
    p.add_argument(
        "--layer-decay", type=float, default=d.layer_decay,
        help=f"lr scale per block below the head: block i gets ld**(depth-i) (default: {d.layer_decay:g})",
    )  # fmt: skip
    p.add_argument("--drop-path", type=float, default=d.drop_path, help=f"stochastic depth (default: {d.drop_path:g})")
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing, help=f"(default: {d.label_smoothing:g})")
    p.add_argument(
        "--crop-min-scale", type=float, default=d.crop_min_scale, help=f"random-resized-crop (default: {d.crop_min_scale:g})"
    )
    p.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=d.hflip, help="random horizontal flip")
    p.add_argument("--global-pool", choices=("avg", "token"), default=d.global_pool, help="avg tokens or CLS (default: avg)")
    p.add_argument("--eval-every", type=int, default=d.eval_every, help="test every N epochs (0 = at the end; default: 0)")
    p.add_argument("--from-scratch", action="store_true", help="fine-tune only a randomly initialised encoder")
    p.add_argument("--no-baseline", action="store_true", help="skip the random-init baseline")
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--seed", type=int, default=d.seed, help="head init, data order, augmentation (default: 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar; one line per epoch")
    p.set_defaults(func=cmd_eval_finetune)


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from maelab.visualize import reconstruct_run

    result = reconstruct_run(
        args.run, args.n, args.out or None, args.mask_ratio, args.seed, args.data_dir or None, args.num_eval,
        args.device, args.quiet,
    )  # fmt: skip
    print(result["table"], end="")
    print(f"figure: {result['figure']}\nwritten: {result['json']}, {result['markdown']}")
    return 0


def add_reconstruct_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reconstruct",
        help="reconstruction figure and quality (masked MSE, PSNR, SSIM) of an MAE run",
        description="Draw original | masked input | reconstruction | reconstruction + visible for N test images "
        "and score reconstruction on the test split, all under fixed masks drawn from --seed (comparable across "
        "runs). Writes the figure and RUN/eval/reconstruction_mr<R>_seed<S>.{json,md}.",
    )
    p.add_argument("run", metavar="RUN", help="MAE run (or checkpoint) directory")
    p.add_argument("--n", type=int, default=8, help="images (rows) in the figure (default: 8)")
    p.add_argument("--out", default="", help="figure path (default: RUN/eval/reconstruction_mr<R>_seed<S>.png)")
    p.add_argument("--mask-ratio", type=float, default=None, help="mask ratio (default: the run's own)")
    p.add_argument("--seed", type=int, default=0, help="chooses the images and the masks (default: 0)")
    p.add_argument(
        "--num-eval", type=int, default=2000, help="class-balanced test images scored (0 = all; default: 2000)"
    )
    p.add_argument("--data-dir", default="", help="data root (default: the run's, else $MAELAB_DATA)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_reconstruct)


def add_pretrain_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain",
        help="pretrain a ViT encoder (MAE) on an image folder or CIFAR-10",
        description="Pretrain a ViT with a masked autoencoder. Writes RUN/config.json, RUN/metrics.jsonl, "
        "RUN/checkpoints/ and RUN/summary.json. Values: defaults < --model preset < --config file < flags.",
    )
    p.add_argument("--config", default="", metavar="FILE", help="TOML file with [model], [data], [train] tables")
    p.add_argument("--resume", default="", metavar="RUN", help="continue RUN from its newest checkpoint")
    add_config_flags(p)
    p.set_defaults(func=cmd_pretrain)


def cmd_bench(args: argparse.Namespace) -> int:
    from maelab.bench import bench_maelab
    from maelab.runtime import hardware_line, resolve_device

    if args.batch_size < 1 or args.rounds < 1 or args.steps < 1 or args.warmup < 0:
        raise ConfigError("--batch-size, --rounds and --steps must be >= 1 and --warmup >= 0")
    for ratio in args.mask_ratio:
        if not 0.0 <= ratio < 1.0:
            raise ConfigError(f"--mask-ratio {ratio}: must be in [0, 1)")
    try:
        from maelab.models.vit import get_preset

        get_preset(args.model)
    except ValueError as e:
        raise ConfigError(f"--model: {e}") from e
    print(hardware_line(resolve_device(args.device)))
    for ratio in args.mask_ratio:
        r = bench_maelab(
            args.model, args.batch_size, ratio, args.precision, args.device, args.compile, args.attention,
            args.patch_size, args.rounds, args.steps, args.warmup,
        )  # fmt: skip
        print(r.line(), flush=True)
    return 0


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="training / inference throughput, peak memory and FLOP/s of the MAE",
        description="Time maelab's training step (forward + backward + AdamW, img/s) and encoder inference on "
        "random images, warm-up excluded, median of --rounds rounds of --steps steps. FLOPs per image are "
        "counted with torch.utils.flop_counter. Peak memory: allocated GPU memory, or the process's peak RSS "
        "on CPU. Peer comparisons: benchmarks/compare.py.",
    )
    p.add_argument("--model", default="ref", help="model preset: ref, vit-tiny, vit-small (default: ref)")
    p.add_argument("--patch-size", type=int, default=4, help="patch size (default: 4)")
    p.add_argument("--batch-size", type=int, default=256, help="images per step (default: 256)")
    p.add_argument("--mask-ratio", type=float, nargs="+", default=[0.75], metavar="R",
                   help="one or more mask ratios, each benchmarked (default: 0.75)")  # fmt: skip
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="auto (bf16 on CUDA, fp32 on CPU), fp32 or bf16 autocast (default: auto)")  # fmt: skip
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                   help="torch.compile the model (default: off)")  # fmt: skip
    p.add_argument("--attention", default="auto", choices=("auto", "sdpa", "explicit"),
                   help="attention kernel: auto (explicit on CPU, SDPA on CUDA), sdpa or explicit (default: auto)")  # fmt: skip
    p.add_argument("--rounds", type=int, default=3, help="timed rounds; the median is printed (default: 3)")
    p.add_argument("--steps", type=int, default=3, help="steps per timed round (default: 3)")
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up steps (default: 2)")
    p.set_defaults(func=cmd_bench)


def cmd_export(args: argparse.Namespace) -> int:
    from maelab.export import export_encoder

    weights, meta = export_encoder(args.run, args.out, args.format)
    print(f"encoder weights: {weights}\ntimm arguments: {meta}")
    return 0


def add_export_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a run's encoder as a timm VisionTransformer state dict",
        description="Write the encoder of RUN's newest checkpoint as a timm VisionTransformer state dict "
        "(safetensors) and, beside it (same name, .json), the timm.create_model arguments that load it with "
        "strict=True: timm.create_model(j['model_name'], pretrained=False, **j['kwargs']).",
    )
    p.add_argument("run", metavar="RUN", help="run directory (newest checkpoint) or a checkpoint directory")
    p.add_argument("--format", default="timm", choices=["timm"], help="export format (default: timm)")
    p.add_argument("--out", default="encoder.safetensors", metavar="FILE",
                   help="weights file; the arguments go to FILE with .json (default: encoder.safetensors)")  # fmt: skip
    p.set_defaults(func=cmd_export)


def cmd_report(args: argparse.Namespace) -> int:
    from maelab.report import write_report

    md, html = write_report(args.path, args.out or None, reconstruct=args.reconstruct, data_dir=args.data_dir or None)
    print(f"report: {html}\nmarkdown: {md}")
    return 0


def add_report_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="self-contained HTML report of a run or a results directory",
        description="Render PATH (a run directory or a directory of results/runs) as report.md and a "
        "self-contained report.html (images embedded): config, loss curves, reconstructions, evaluation tables "
        "and any figures and summary.md found.",
    )
    p.add_argument("path", metavar="RUN_OR_RESULTS_DIR", help="a run directory or a results directory")
    p.add_argument("--out", default="", metavar="DIR", help="where report.md/report.html go (default: PATH)")
    p.add_argument("--reconstruct", action=argparse.BooleanOptionalAction, default=True,
                   help="draw a reconstruction figure of a run without one (needs the test split; default: on)")  # fmt: skip
    p.add_argument("--data-dir", default="", metavar="DIR", help="data root for that figure (default: the run's)")
    p.set_defaults(func=cmd_report)


def cmd_sweep(args: argparse.Namespace) -> int:
    from maelab.experiments.sweep import make_plan, run_sweep

    overrides = {
        key: value for key, value in (
            ("train_subset", args.eval_subset), ("test_subset", args.eval_test_subset),
            ("probe_epochs", args.probe_epochs), ("recon_images", args.recon_images),
            ("common_ratio", args.common_ratio),
        ) if value is not None
    }  # fmt: skip
    budget = None if args.no_budget else ("auto" if args.budget_ratio is None else args.budget_ratio)
    file_values = load_toml(args.config) if args.config else None
    plan = make_plan(
        args.preset, tuple(args.mask_ratios) if args.mask_ratios else None, budget, file_values, cli_values(args),
        overrides, args.config or "command line",
    )  # fmt: skip
    summary = run_sweep(plan, "maelab " + shlex.join(sys.argv[1:]))
    print(f"results: {plan.out}\nsummary: {summary}")
    return 0


def add_sweep_parser(sub: argparse._SubParsersAction) -> None:
    from maelab.experiments.sweep import PRESETS

    p = sub.add_parser(
        "sweep",
        help="mask-ratio sweep (and the reconstruction study): pretrain one MAE per ratio, evaluate each",
        description="Pretrain one MAE per --mask-ratios value with everything else identical, then evaluate "
        "each (linear probe, k-NN, reconstruction at its own ratio and at --common-ratio, training speed) at "
        "equal epochs and at an equal wall-clock budget. Writes OUT/summary.md, summary.csv, metrics.json and "
        "figures (--out, default runs/sweep-PRESET). Re-running the same command continues an interrupted "
        "sweep. Presets: " + "; ".join(f"{k}: {v.description}" for k, v in PRESETS.items()) + ". Values: "
        "defaults < --preset < --config file < flags.",
    )
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS), help="scale of the sweep (default: cpu)")
    p.add_argument("--mask-ratios", type=float, nargs="+", metavar="R", help="ratios to sweep (default: the preset's)")
    p.add_argument(
        "--budget-ratio", type=float, default=None, metavar="R",
        help="the ratio whose training time is everyone's budget (default: 0.75 if swept, else the highest)",
    )  # fmt: skip
    p.add_argument("--no-budget", action="store_true", help="skip the equal wall-clock view")
    p.add_argument("--eval-subset", type=int, help="class-balanced training images for k-NN / linear (0 = all)")
    p.add_argument("--eval-test-subset", type=int, help="class-balanced test images for k-NN / linear (0 = all)")
    p.add_argument("--probe-epochs", type=int, help="linear-probe epochs (default: the preset's)")
    p.add_argument("--recon-images", type=int, help="class-balanced test images scored for reconstruction (0 = all)")
    p.add_argument("--common-ratio", type=float, help="every model is also scored at this mask ratio (default: 0.75)")
    p.add_argument("--config", default="", metavar="FILE", help="TOML file with [model], [data], [train] tables")
    add_config_flags(p)
    p.set_defaults(func=cmd_sweep)


def cmd_compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from maelab.experiments.compare import CompareOptions, run_compare

    given = cli_values(args)
    if "method" in given["train"]:
        raise ConfigError("--method: compare trains both methods (mae and dino); leave it out")
    for key, value in (("epochs", 10), ("batch_size", 128), ("quiet", True)):
        given["train"].setdefault(key, value)  # a CPU-sized default budget
    given["data"].setdefault("subset", 10000)
    file_values = load_toml(args.config) if args.config else None
    cfg = resolve_config(file_values, given, args.config or "defaults")
    out = cfg.train.out or str(Path("runs") / f"compare-{cfg.model.name}")
    opts = CompareOptions(
        points=args.points, eval_subset=args.eval_subset, eval_test_subset=args.eval_test_subset,
        linear_epochs=args.linear_epochs, finetune_epochs=args.finetune_epochs, finetune_subset=args.finetune_subset,
        finetune_batch_size=args.finetune_batch_size, equal_time=args.equal_time, isolate=args.isolate,
        progress=not cfg.train.quiet,
    )  # fmt: skip
    results = run_compare(cfg, opts, out, "maelab " + shlex.join(sys.argv[1:]))
    print((results / "summary.md").read_text(), end="")
    print(f"results: {results} (summary.md, summary.csv, metrics.json, plots/, runs/)")
    return 0


def add_compare_parser(sub: argparse._SubParsersAction) -> None:
    from maelab.experiments.compare import CompareOptions

    d = CompareOptions()
    p = sub.add_parser(
        "compare",
        help="pretrain MAE and DINO on the same encoder and data, evaluate both beside random init",
        description="Pretrain MAE and DINO with the same encoder, data, epochs and batch (each with its paper's "
        "optimizer recipe), then again at equal training time; evaluate k-NN, linear probe and fine-tuning of "
        "each beside the random-init encoder. Re-running with the same --out skips finished stages and resumes "
        "an interrupted pretraining. Writes OUT/summary.md, summary.csv, metrics.json, plots/ and runs/. "
        "Defaults here (unless given): --epochs 10, --batch-size 128, --subset 10000, --quiet.",
    )
    p.add_argument("--config", default="", metavar="FILE", help="TOML file with [model], [data], [train], [dino] tables")
    p.add_argument("--points", type=int, default=d.points, help=f"k-NN/entropy checks per run (default: {d.points})")
    p.add_argument("--eval-subset", type=int, default=d.eval_subset,
                   help=f"train images for k-NN / linear probe (0 = all; default: {d.eval_subset})")  # fmt: skip
    p.add_argument("--eval-test-subset", type=int, default=d.eval_test_subset,
                   help=f"test images for every evaluation (0 = all; default: {d.eval_test_subset})")  # fmt: skip
    p.add_argument("--linear-epochs", type=int, default=d.linear_epochs, help=f"(default: {d.linear_epochs})")
    p.add_argument("--finetune-epochs", type=int, default=d.finetune_epochs,
                   help=f"fine-tuning epochs (0 = skip fine-tuning; default: {d.finetune_epochs})")  # fmt: skip
    p.add_argument("--finetune-subset", type=int, default=d.finetune_subset,
                   help=f"train images for fine-tuning (0 = all; default: {d.finetune_subset})")  # fmt: skip
    p.add_argument("--finetune-batch-size", type=int, default=d.finetune_batch_size,
                   help=f"(default: {d.finetune_batch_size})")  # fmt: skip
    p.add_argument("--equal-time", action=argparse.BooleanOptionalAction, default=d.equal_time,
                   help="also retrain the slower method for the faster one's training time (default: on)")  # fmt: skip
    p.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=d.isolate,
                   help="pretrain in child processes so each run's peak memory is its own (default: on)")  # fmt: skip
    add_config_flags(p)
    p.set_defaults(func=cmd_compare)


def build_parser() -> argparse.ArgumentParser:
    """The ``maelab`` argument parser with all subcommands."""
    parser = argparse.ArgumentParser(
        prog="maelab",
        description="Pretrain Vision Transformers with Masked Autoencoders and measure what they learned.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example:\n  maelab pretrain --data-dir ../shared/data/cifar10 --subset 5000 --epochs 2\n"
        "Run `maelab COMMAND --help` for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"maelab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_pretrain_parser(sub)
    evaluate = sub.add_parser("eval", help="evaluate a run's encoder: knn, linear, finetune")
    eval_sub = evaluate.add_subparsers(dest="eval_command", metavar="EVAL", required=True)
    add_eval_knn_parser(eval_sub)
    add_eval_linear_parser(eval_sub)
    add_eval_finetune_parser(eval_sub)
    add_reconstruct_parser(sub)
    add_bench_parser(sub)
    add_export_parser(sub)
    add_report_parser(sub)
    add_sweep_parser(sub)
    add_compare_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``maelab`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    # Library warnings (e.g. a DINO teacher momentum too high for the run) read as one CLI line.
    warnings.formatwarning = lambda message, category, *_: f"maelab {args.command}: warning: {message}\n"
    try:
        return args.func(args)
    except (ConfigError, DataError, CheckpointError) as e:
        print(f"maelab {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("maelab: interrupted", file=sys.stderr)
        return 130
    except RuntimeError as e:
        from maelab.train import TrainingError

        if isinstance(e, TrainingError):
            print(f"maelab {args.command}: error: {e}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""``maelab bench``, ``maelab export`` and ``maelab report``: options from ``maelab.config.evaluation``."""

from __future__ import annotations

import argparse

from maelab.cli.flags import add_command, options_from_args
from maelab.config import BenchOptions, ExportOptions, ReportOptions


def cmd_bench(args: argparse.Namespace) -> int:
    """``maelab bench``: print each line of :func:`maelab.bench.bench_command`."""
    from maelab.bench import bench_command

    for line in bench_command(options_from_args(BenchOptions, args, "opts")):
        print(line, flush=True)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """``maelab export RUN``: write the encoder as a timm state dict and its arguments."""
    from maelab.export import export_encoder

    opts = options_from_args(ExportOptions, args, "opts", run=args.run)
    weights, meta = export_encoder(opts.run, opts.out, opts.format)
    print(f"encoder weights: {weights}\ntimm arguments: {meta}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``maelab report PATH``: write report.md and report.html."""
    from maelab.report import write_report

    opts = options_from_args(ReportOptions, args, "opts", path=args.path)
    md, html = write_report(opts.path, opts.out or None, reconstruct=opts.reconstruct, data_dir=opts.data_dir or None)
    print(f"report: {html}\nmarkdown: {md}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """``maelab bench``, ``maelab export`` and ``maelab report``."""
    add_command(
        sub, "bench", cmd_bench, BenchOptions, "training / inference throughput, peak memory and FLOP/s of the MAE",
        "Time maelab's training step (forward + backward + AdamW, img/s) and encoder inference on random images, "
        "warm-up excluded, median of --rounds rounds of --steps steps. FLOPs per image are counted with "
        "torch.utils.flop_counter. Peak memory: allocated GPU memory, or the process's peak RSS on CPU. Peer "
        "comparisons: benchmarks/compare.py.",
    )  # fmt: skip
    add_command(
        sub, "export", cmd_export, ExportOptions, "export a run's encoder as a timm VisionTransformer state dict",
        "Write the encoder of RUN's newest checkpoint as a timm VisionTransformer state dict (safetensors) and, "
        "beside it (same name, .json), the timm.create_model arguments that load it with strict=True: "
        "timm.create_model(j['model_name'], pretrained=False, **j['kwargs']).",
        ("run", "RUN", "run directory (newest checkpoint) or a checkpoint directory"),
    )  # fmt: skip
    add_command(
        sub, "report", cmd_report, ReportOptions, "self-contained HTML report of a run or a results directory",
        "Render PATH (a run directory or a directory of results/runs) as report.md and a self-contained "
        "report.html (images embedded): config, loss curves, reconstructions, evaluation tables and any figures "
        "and summary.md found.", ("path", "RUN_OR_RESULTS_DIR", "a run directory or a results directory"),
    )  # fmt: skip

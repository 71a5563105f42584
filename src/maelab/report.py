"""``maelab report PATH``: one self-contained HTML page (and its markdown) for a run or a results dir.

PATH is a run directory (it holds ``config.json``) or any directory of results: runs below it
(found by their ``config.json``), figures (``*.png``) and summaries (``summary.md``) of sweeps and
comparisons. The report is written as ``report.md`` (figures linked by relative path, drawn into
``report_files/``) and rendered from it to ``report.html`` with every image embedded as base64, so
the page can be mailed or archived alone. Sections: configuration, loss curves (``metrics.jsonl``),
reconstructions (found under ``RUN/eval`` or drawn for a single run), evaluation tables
(``RUN/eval/*.md``, or ``*.json`` without one), other figures and summaries.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from maelab import rundir
from maelab.checkpoint import atomic_write_text
from maelab.config import ConfigError

ASSETS = "report_files"
# Never searched for figures: checkpoints, event files and the report's own output.
SKIP_DIRS = {"checkpoints", "tensorboard", ASSETS, ".git", "__pycache__"}
MAX_JSON_ROWS = 40
CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 1em 1.2em 0; font-size: 0.9em; display: inline-table; vertical-align: top; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; }
img { max-width: 100%; border: 1px solid #eee; }
code, pre { background: #f6f6f6; font-size: 0.85em; }
pre { padding: 0.6em; overflow-x: auto; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
"""


# ------------------------------------------------------------------------------------ discovery
def _walk(root: Path, pattern: str) -> list[Path]:
    """Files matching ``pattern`` under ``root``, skipping :data:`SKIP_DIRS`, in sorted order."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        found += [Path(dirpath) / f for f in sorted(filenames) if Path(f).match(pattern)]
    return found


def find_runs(root: Path) -> list[Path]:
    """Run directories (they hold ``config.json``): ``root`` itself, or every run below it."""
    if (root / rundir.CONFIG).is_file():
        return [root]
    return [p.parent for p in _walk(root, rundir.CONFIG)]


def _summary(run: Path) -> dict[str, Any]:
    """The run's summary.json fields that have a value; {} when it has none or it is unreadable."""
    try:
        summary = rundir.read_summary(run)
    except rundir.RunDirError:
        return {}
    return {k: v for k, v in summary.to_dict().items() if v not in (None, "")} if summary else {}


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


# ------------------------------------------------------------------------------------ markdown pieces
def _cell(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, (list, tuple)):
        text = " ".join(_cell(v) for v in value)
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _image(path: Path, out_dir: Path, alt: str) -> str:
    rel = os.path.relpath(path, out_dir).replace(os.sep, "/")
    return f"![{alt}]({rel})\n"


def _demote_headings(markdown: str, levels: int = 2) -> str:
    """Shift ``#`` headings of an included file down so they nest under the report's sections."""
    return re.sub(r"^(#{1,6}) ", lambda m: "#" * min(len(m.group(1)) + levels, 6) + " ", markdown, flags=re.M)


def _flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += _flatten(value, name + ".")
        else:
            rows.append((name, value))
    return rows


def _label(run: Path, root: Path) -> str:
    return run.name if run == root else os.path.relpath(run, root)


# ------------------------------------------------------------------------------------ sections
def config_section(runs: list[Path], root: Path) -> str:
    """One table per config section for a single run; for several runs, one table of what differs."""
    configs = {run: rundir.read_config_dict(run) for run in runs}
    summaries = {run: _summary(run) for run in runs}
    if len(runs) == 1:
        run = runs[0]
        tables = [_table([section, "value"], [[k, v] for k, v in values.items()])
                  for section, values in configs[run].items() if isinstance(values, dict)]  # fmt: skip
        if summaries[run]:
            tables.append(_table([rundir.SUMMARY, ""], [[k, v] for k, v in summaries[run].items()]))
        return "## Configuration\n\n" + "\n".join(tables)
    flat = {run: dict(_flatten(cfg)) for run, cfg in configs.items()}
    keys = sorted({k for f in flat.values() for k in f})
    differing = [k for k in keys if len({json.dumps(f.get(k)) for f in flat.values()}) > 1 and not k.endswith(".out")]
    headers = ["run", "status", "steps", "final loss", "img/s", *differing]
    rows = [
        [_label(run, root), summaries[run].get("status", "-"), summaries[run].get("steps", "-"),
         summaries[run].get("final_loss", "-"), summaries[run].get("median_img_per_s", "-"),
         *[flat[run].get(k, "-") for k in differing]]
        for run in runs
    ]  # fmt: skip
    return "## Runs\n\nOptions that differ between the runs:\n\n" + _table(headers, rows)


def plot_loss_curves(runs: list[Path], root: Path, path: Path) -> Path | None:
    """Loss (log scale) and learning rate against epoch for every run with metrics; None if none has any."""
    series = {_label(run, root): rundir.read_metrics(run) for run in runs}
    series = {name: records for name, records in series.items() if records}
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(11, 3.8))
    for name, records in series.items():
        epochs = [r["epoch"] for r in records]
        ax_loss.plot(epochs, [r["loss"] for r in records], label=name, marker="." if len(records) < 30 else None)
        ax_lr.plot(epochs, [r["lr"] for r in records], label=name)
    ax_loss.set(xlabel="epoch", ylabel="training loss", yscale="log", title="loss")
    ax_lr.set(xlabel="epoch", ylabel="learning rate", title="learning rate")
    for ax in (ax_loss, ax_lr):
        ax.grid(alpha=0.3)
    if len(series) > 1:
        ax_loss.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def draw_reconstruction(run: Path, path: Path, data_dir: str | None = None, n: int = 8, seed: int = 0) -> Path:
    """The reconstruction figure of ``n`` seeded test images (maelab.visualize) of a run, saved to ``path``."""
    from maelab.data import load_data
    from maelab.methods import load_model
    from maelab.models.mae import MAE
    from maelab.visualize import choose_images, fixed_noise, reconstruction_panels, save_figure

    model, cfg = load_model(str(run))
    if not isinstance(model, MAE):
        raise ConfigError(f"{run}: a {cfg.train.method!r} run has no pixel decoder to draw reconstructions")
    model.set_fused_attention(False)  # CPU: the explicit attention path is the faster one
    d = cfg.data
    test = load_data(dataclasses.replace(d, data_dir=data_dir or d.data_dir), "test", cfg.model.img_size)
    idx = choose_images(len(test), min(n, len(test)), seed)
    noise = fixed_noise(len(test), model.num_patches, seed)[idx]
    panels = reconstruction_panels(model, test.images[idx], d.mean, d.std, noise)
    title = f"{run.name}: test images, mask ratio {model.mask_ratio:g}, image/mask seed {seed}"
    return save_figure(panels, path, title)


def reconstruction_section(
    runs: list[Path], root: Path, out_dir: Path, reconstruct: bool, data_dir: str | None
) -> tuple[str, set[Path]]:
    """Reconstruction figures found in each run (``RUN/eval/*reconstruct*.png``); for a single run
    without one, drawn now. Returns the markdown and the figures it shows."""
    parts, shown = ["## Reconstructions\n"], set()
    for run in runs:
        found = [p for p in _walk(run, "*.png") if "reconstruct" in p.name.lower()]
        captions = [f"**{_label(run, root)}**: `{os.path.relpath(p, root)}`" for p in found]
        if not found and reconstruct and len(runs) == 1:
            from maelab.checkpoint import CheckpointError
            from maelab.data import DataError

            try:
                found = [draw_reconstruction(run, out_dir / ASSETS / "reconstruction.png", data_dir)]
                captions = ["Drawn for this report: 8 seeded test images under seeded masks (newest checkpoint)."]
            except ImportError:
                parts.append(f"No reconstruction figure in {_label(run, root)} (maelab.visualize is not available).\n")
            except (ConfigError, DataError, CheckpointError) as e:
                parts.append(f"No reconstruction figure for {_label(run, root)}: {e}\n")
        for png, caption in zip(found, captions, strict=True):
            shown.add(png.resolve())
            parts.append(f"{caption}\n\n" + _image(png, out_dir, png.stem))
    return ("\n".join(parts) if len(parts) > 1 else ""), shown


def evaluation_section(runs: list[Path], root: Path) -> str:
    """Every evaluation's table: ``RUN/eval/*.md`` verbatim, ``*.json`` without a ``.md`` flattened."""
    parts = ["## Evaluations\n"]
    for run in runs:
        eval_dir = run / "eval"
        if not eval_dir.is_dir():
            continue
        for md in sorted(eval_dir.glob("*.md")):
            text = re.sub(r"^Figure: .*$", "", md.read_text(), flags=re.M)  # figures are shown as images instead
            parts.append(f"### {_label(run, root)}: {md.stem}\n\n" + _demote_headings(text, 3) + "\n")
        for js in sorted(eval_dir.glob("*.json")):
            data = _read_json(js)
            if js.with_suffix(".md").is_file() or data is None:
                continue
            rows = [[k, v] for k, v in _flatten(data) if not isinstance(v, (list, dict)) or len(str(v)) < 80]
            parts.append(f"### {_label(run, root)}: {js.stem}\n\n" + _table(["key", "value"], rows[:MAX_JSON_ROWS]))
    return "\n".join(parts) if len(parts) > 1 else ""


def figures_section(root: Path, out_dir: Path, shown: set[Path]) -> str:
    """Every PNG not ``shown`` yet and every ``summary.md`` (sweeps, comparisons) under ``root``."""
    parts = []
    summaries = _walk(root, "summary.md")
    for md in summaries:
        parts.append(f"### {os.path.relpath(md, root)}\n\n" + _demote_headings(md.read_text(), 3) + "\n")
    for png in _walk(root, "*.png"):
        if png.resolve() not in shown:
            parts.append(f"**`{os.path.relpath(png, root)}`**\n\n" + _image(png, out_dir, png.stem))
    return "## Figures and summaries\n\n" + "\n".join(parts) if parts else ""


# ------------------------------------------------------------------------------------ the report
def build_markdown(root: Path, out_dir: Path, reconstruct: bool = True, data_dir: str | None = None) -> str:
    """The report of ``root`` (a run or a results dir) as markdown; figures are drawn into ``out_dir/report_files``."""
    runs = find_runs(root)
    stamp = datetime.now().isoformat(timespec="seconds")
    kind = "run" if runs == [root] else f"results directory ({len(runs)} runs)"
    parts = [f"# maelab report: {root.resolve().name}\n\n`{root}`, a {kind}; generated {stamp}.\n"]
    if runs:
        parts.append(config_section(runs, root))
        curves = plot_loss_curves(runs, root, out_dir / ASSETS / "loss_curves.png")
        if curves is not None:
            parts.append("## Loss curves\n\nFrom `metrics.jsonl`.\n\n" + _image(curves, out_dir, "loss curves"))
    reconstructions, shown = reconstruction_section(runs, root, out_dir, reconstruct, data_dir)
    parts.append(reconstructions)
    parts.append(evaluation_section(runs, root))
    parts.append(figures_section(root, out_dir, shown))
    return "\n".join(p for p in parts if p).rstrip() + "\n"


def _data_uri(path: Path) -> str:
    mime = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}
    kind = mime.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{kind};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def markdown_to_html(markdown: str, base_dir: Path, title: str) -> str:
    """Render report markdown to one HTML page; images (paths relative to ``base_dir``) become base64 data URIs.

    Raw HTML in the markdown is escaped, not passed through, so included files cannot add scripts.
    """
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)

    def embed(m: re.Match) -> str:
        src = html.unescape(m.group(1))
        path = base_dir / src
        if src.startswith("data:") or not path.is_file():
            return m.group(0)
        return f'src="{_data_uri(path)}"'

    body = re.sub(r'src="([^"]+)"', embed, body)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<title>{html.escape(title)}</title>\n<link rel="icon" href="data:,">\n<style>{CSS}</style>\n'
        f"</head>\n<body>\n{body}</body>\n</html>\n"
    )


def write_report(
    path: str | Path, out: str | Path | None = None, reconstruct: bool = True, data_dir: str | None = None
) -> tuple[Path, Path]:
    """Write ``report.md`` and the self-contained ``report.html`` for ``path`` into ``out`` (default: ``path``).

    Returns (markdown path, html path).
    """
    root = Path(path)
    if not root.is_dir():
        raise ConfigError(f"maelab report: {root} is not a directory (give a run or a results directory)")
    out_dir = Path(out) if out else root
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = build_markdown(root, out_dir, reconstruct, data_dir)
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    atomic_write_text(md_path, markdown)
    atomic_write_text(html_path, markdown_to_html(markdown, out_dir, f"maelab report: {root.resolve().name}"))
    return md_path, html_path

"""The results of a mask-ratio sweep: summary.md, summary.csv, metrics.json and plots.

Every number comes from the files the sweep's stages wrote (each run's summary.json and
metrics.jsonl, each checkpoint's evals/<point>/*.json); the sentences under "What it shows" are
generated from them, never typed in.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from maelab.checkpoint import atomic_write_text
from maelab.experiments.sweep import SweepPlan, images_per_step, read_records, run_name, training_seconds
from maelab.runtime import environment

VIEWS = ("equal epochs", "equal time")


# ------------------------------------------------------------------------------------ collecting
def run_stats(run: Path) -> dict[str, Any]:
    """Speed and loss of one finished run, from its summary.json, config.json and metrics.jsonl."""
    from maelab.train import load_run_config

    summary = json.loads((run / "summary.json").read_text())
    cfg = load_run_config(run)
    records = read_records(run)
    train_s = training_seconds(records, images_per_step(cfg))
    steps_per_epoch = summary["total_steps"] // cfg.train.epochs
    return {
        "run": str(run), "epochs": cfg.train.epochs, "steps": summary["steps"], "steps_per_epoch": steps_per_epoch,
        "median_img_per_s": summary["median_img_per_s"], "train_seconds": round(train_s, 2),
        "seconds_per_epoch": round(train_s / summary["steps"] * steps_per_epoch, 2),
        "wall_time_s": summary["wall_time_s"], "peak_memory_mb": summary["peak_memory_mb"],
        "first_loss": summary["first_loss"], "final_loss": summary["final_loss"], "device": summary["device"],
        "precision": summary["precision"],
        "curve": [{"epoch": r["epoch"], "loss": r["loss"], "train_seconds": round(
            training_seconds(records, images_per_step(cfg), r["step"]), 2)} for r in records],
    }  # fmt: skip


def _point_metrics(evals: dict[str, Any], ratio: float, common: float) -> dict[str, Any]:
    """Flat numbers of one evaluated checkpoint: linear/k-NN top-1 per pooling, reconstruction."""
    out: dict[str, Any] = {}
    for r in evals["linear"]["results"]:
        out[f"linear_{r['pooling']}"] = r["test_top1"]
    for r in evals["knn"]["results"]:
        for k, acc in r["top1"].items():
            out[f"knn{k}_{r['pooling']}"] = acc
    out["test_images"] = evals["linear"]["data"]["test_images"]
    for label, rr in (("own", ratio), ("common", common)):
        rec = evals.get(f"reconstruction_mr{rr:g}")
        if rec is not None:
            out.update({f"psnr_{label}": round(rec["psnr"], 3), f"ssim_{label}": round(rec["ssim"], 4),
                        f"mse_{label}": round(rec["mse_loss_space"], 5)})  # fmt: skip
    return out


def collect_rows(
    plan: SweepPlan, stats: dict[float, dict[str, Any]], budgets: dict[float, dict[str, Any]],
    evals: dict[str, dict[str, Any]],
) -> list[dict[str, Any]]:  # fmt: skip
    """One row per (ratio, view): the checkpoint it uses, its training time and its evaluations."""
    rows = []
    common = plan.eval.common_ratio
    for ratio in plan.ratios:
        s = stats[ratio]
        final = {"ratio": ratio, "step": s["steps"], "epoch": float(s["epochs"]), "train_seconds": s["train_seconds"]}
        speed = {k: s[k] for k in ("median_img_per_s", "seconds_per_epoch", "wall_time_s", "peak_memory_mb",
                                   "first_loss", "final_loss")}  # fmt: skip
        rows.append({"view": VIEWS[0], **final, "note": "", **speed, **_point_metrics(evals[run_name(ratio)], ratio, common)})
        if plan.budget_ratio is None:
            continue
        b = budgets.get(ratio)
        if b is None:  # the budget ratio itself
            row = {"view": VIEWS[1], **final, "note": "sets the budget"}
            rows.append({**row, **_point_metrics(evals[run_name(ratio)], ratio, common)})
        elif b["capped"]:
            row = {"view": VIEWS[1], **final, "note": "run ended before the budget (final checkpoint)"}
            rows.append({**row, **_point_metrics(evals[run_name(ratio)], ratio, common)})
        else:
            used = training_seconds(read_records(Path(s["run"])), images_per_step(plan.base), b["step"])
            note = "over budget: the speed probe already passed it" if b["over_budget"] else "budget checkpoint"
            row = {"view": VIEWS[1], "ratio": ratio, "step": b["step"],
                   "epoch": round(b["step"] / s["steps_per_epoch"], 2), "train_seconds": round(used, 2), "note": note}  # fmt: skip
            rows.append({**row, **_point_metrics(evals[f"{run_name(ratio)}-budget"], ratio, common)})
    return rows


# ------------------------------------------------------------------------------------ formatting
def _se(acc: float, n: int) -> float:
    """Binomial standard error (percentage points) of an accuracy ``acc`` (%) measured on ``n`` images."""
    p = acc / 100.0
    return 100.0 * math.sqrt(max(p * (1 - p), 0.0) / max(n, 1))


def _acc(row: dict[str, Any], key: str) -> str:
    return f"{row[key]:.2f} ± {_se(row[key], row['test_images']):.2f}" if key in row else "-"


def _num(row: dict[str, Any], key: str, fmt: str) -> str:
    return format(row[key], fmt) if row.get(key) is not None else "-"


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, Any]]) -> str:
    lines = ["| " + " | ".join(h for h, _ in columns) + " |", "|" + "---:|" * len(columns)]
    lines += ["| " + " | ".join(cell(r) for _, cell in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _columns(plan: SweepPlan, view: str) -> list[tuple[str, Any]]:
    c = f"{plan.eval.common_ratio:g}"
    k = "20" if 20 in plan.eval.ks else str(plan.eval.ks[0])
    cols: list[tuple[str, Any]] = [("mask ratio", lambda r: f"{r['ratio']:g}")]
    if view == VIEWS[1]:
        cols += [("step (epoch)", lambda r: f"{r['step']} ({r['epoch']:g})"),
                 ("training time (s)", lambda r: f"{r['train_seconds']:.0f}")]  # fmt: skip
    for p in plan.eval.poolings:
        cols.append((f"linear {p} (%)", lambda r, p=p: _acc(r, f"linear_{p}")))
    for p in plan.eval.poolings:
        cols.append((f"k-NN k={k} {p} (%)", lambda r, p=p: _num(r, f"knn{k}_{p}", ".2f")))
    cols += [("PSNR own (dB)", lambda r: _num(r, "psnr_own", ".2f"))]
    cols += [(f"PSNR @{c} (dB)", lambda r: _num(r, "psnr_common", ".2f")),
             (f"SSIM @{c}", lambda r: _num(r, "ssim_common", ".3f"))]  # fmt: skip
    if view == VIEWS[0]:
        cols += [("final loss", lambda r: _num(r, "final_loss", ".4f")),
                 ("img/s", lambda r: _num(r, "median_img_per_s", ".0f")),
                 ("s/epoch", lambda r: _num(r, "seconds_per_epoch", ".1f")),
                 ("training time (s)", lambda r: f"{r['train_seconds']:.0f}"),
                 ("wall time (s)", lambda r: _num(r, "wall_time_s", ".0f")),
                 ("peak mem (MiB)", lambda r: _num(r, "peak_memory_mb", ".0f"))]  # fmt: skip
    else:
        cols.append(("note", lambda r: r["note"]))
    return cols


def _best(rows: list[dict[str, Any]], key: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    ranked = sorted((r for r in rows if key in r), key=lambda r: -r[key])
    return ranked[0], (ranked[1] if len(ranked) > 1 else None)


def _accuracy_sentence(rows: list[dict[str, Any]], key: str, label: str) -> str:
    best, second = _best(rows, key)
    text = f"{label}: best at mask ratio {best['ratio']:g} ({best[key]:.2f}%)"
    if second is None:
        return text + "."
    gap = best[key] - second[key]
    se = math.hypot(_se(best[key], best["test_images"]), _se(second[key], second["test_images"]))
    verdict = "more than" if gap > 2 * se else "within"
    return (
        f"{text}, {gap:.2f} points above the next ({second['ratio']:g}: {second[key]:.2f}%) — {verdict} two "
        f"standard errors of the difference ({2 * se:.2f} points on {best['test_images']} test images)."
    )


def findings(plan: SweepPlan, rows: list[dict[str, Any]], random_init: dict[str, float]) -> list[str]:
    """Sentences generated from the numbers: accuracy, reconstruction and speed trends."""
    out = []
    p0 = plan.eval.poolings[0]
    eq = [r for r in rows if r["view"] == VIEWS[0]]
    if len(eq) > 1:
        speeds = sorted(eq, key=lambda r: r["ratio"])
        fast, slow = max(eq, key=lambda r: r["median_img_per_s"]), min(eq, key=lambda r: r["median_img_per_s"])
        steps = [b["median_img_per_s"] - a["median_img_per_s"] for a, b in zip(speeds, speeds[1:], strict=False)]
        trend = "rising" if min(steps) > 0 else "falling" if max(steps) < 0 else "not monotonic"
        listed = ", ".join(f"{r['median_img_per_s']:.0f} img/s at {r['ratio']:g}" for r in speeds)
        out.append(
            f"Speed: {listed} ({trend} with the mask ratio); mask "
            f"{fast['ratio']:g} trains {fast['median_img_per_s'] / slow['median_img_per_s']:.2f}x as fast as "
            f"{slow['ratio']:g} per image."
        )
    for view in VIEWS:
        vr = [r for r in rows if r["view"] == view]
        if len(vr) > 1:
            out.append(f"{view.capitalize()} — " + _accuracy_sentence(vr, f"linear_{p0}", f"linear probe ({p0})"))
            k = "20" if 20 in plan.eval.ks else str(plan.eval.ks[0])
            best, _ = _best(vr, f"knn{k}_{p0}")
            out.append(f"{view.capitalize()} — k-NN (k={k}, {p0}): best at mask ratio {best['ratio']:g} "
                       f"({best[f'knn{k}_{p0}']:.2f}%).")  # fmt: skip
    if f"linear_{p0}" in random_init:
        base = random_init[f"linear_{p0}"]
        above = [f"{r['ratio']:g}" for r in eq if r[f"linear_{p0}"] > base]
        out.append(
            f"Against the random-init encoder ({base:.2f}% linear, {p0}): "
            + (f"above it at mask ratio {', '.join(above)}." if above else "no pretrained model is above it.")
        )
    rec = [r for r in eq if "psnr_common" in r]
    if len(rec) > 1:
        best, _ = _best(rec, "psnr_common")
        out.append(
            f"Reconstruction under the same masks (ratio {plan.eval.common_ratio:g}): best PSNR at mask ratio "
            f"{best['ratio']:g} ({best['psnr_common']:.2f} dB); at their own ratios: "
            + ", ".join(f"{r['psnr_own']:.2f} dB at {r['ratio']:g}" for r in sorted(rec, key=lambda r: r["ratio"]))
            + " (a lower ratio leaves more visible context, an easier task)."
        )
    elif len(rec) == 1:
        r = rec[0]
        out.append(
            f"Reconstruction at mask ratio {plan.eval.common_ratio:g}: PSNR {r['psnr_common']:.2f} dB, SSIM "
            f"{r['ssim_common']:.3f} over the masked pixels; the loss fell from {r.get('first_loss', float('nan')):.4f} "
            f"to {r['final_loss']:.4f}."
        )
    return out


# ------------------------------------------------------------------------------------ plots
def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def plot_results(
    plan: SweepPlan, rows: list[dict[str, Any]], stats: dict[float, dict[str, Any]], random_init: dict[str, float],
    budget_s: float | None,
) -> list[Path]:  # fmt: skip
    """accuracy_vs_ratio.png, psnr_vs_ratio.png, speed_vs_ratio.png and loss_curves.png in OUT/figures."""
    plt = _pyplot()
    fig_dir = plan.out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    k = "20" if 20 in plan.eval.ks else str(plan.eval.ks[0])
    styles = {VIEWS[0]: "-", VIEWS[1]: "--"}

    def by_view(view: str) -> list[dict[str, Any]]:
        return sorted((r for r in rows if r["view"] == view), key=lambda r: r["ratio"])

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric, title in ((axes[0], "linear", "linear probe"), (axes[1], f"knn{k}", f"k-NN (k={k})")):
        for view in VIEWS:
            vr = by_view(view)
            for i, p in enumerate(plan.eval.poolings):
                key = f"{metric}_{p}"
                if not vr or key not in vr[0]:
                    continue
                ys = [r[key] for r in vr]
                errs = [_se(y, r["test_images"]) for y, r in zip(ys, vr, strict=True)]
                ax.errorbar([r["ratio"] for r in vr], ys, yerr=errs, linestyle=styles[view], marker="os"[view == VIEWS[1]],
                            color=f"C{i}", capsize=3, label=f"{p}, {view}")  # fmt: skip
        for i, p in enumerate(plan.eval.poolings):
            if f"{metric}_{p}" in random_init:
                ax.axhline(random_init[f"{metric}_{p}"], color=f"C{i}", linestyle=":", linewidth=1)
        ax.set(xlabel="mask ratio", ylabel="test top-1 (%)", title=f"{title} (dotted: random init; bars: ±1 s.e.)",
               xticks=plan.ratios)  # fmt: skip
        ax.legend(fontsize=7)
    paths.append(_save(fig, fig_dir / "accuracy_vs_ratio.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    for view in VIEWS:
        vr = by_view(view)
        if vr and "psnr_own" in vr[0]:
            ax.plot([r["ratio"] for r in vr], [r["psnr_own"] for r in vr], styles[view], marker="os"[view == VIEWS[1]],
                    color="C0", label=f"at its own ratio, {view}")  # fmt: skip
        if vr and all("psnr_common" in r for r in vr):
            ax.plot([r["ratio"] for r in vr], [r["psnr_common"] for r in vr], styles[view],
                    marker="os"[view == VIEWS[1]], color="C1", label=f"at {plan.eval.common_ratio:g}, {view}")  # fmt: skip
    ax.set(xlabel="mask ratio (trained)", ylabel="PSNR of masked pixels (dB)", title="reconstruction", xticks=plan.ratios)
    ax.legend(fontsize=7)
    paths.append(_save(fig, fig_dir / "psnr_vs_ratio.png"))

    eq = by_view(VIEWS[0])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["ratio"] for r in eq], [r["median_img_per_s"] for r in eq], "-o", color="C0")
    ax.set(xlabel="mask ratio", ylabel="training img/s (median)", title="training speed", xticks=plan.ratios)
    ax2 = ax.twinx()
    ax2.plot([r["ratio"] for r in eq], [r["seconds_per_epoch"] for r in eq], "--s", color="C1")
    ax2.set_ylabel("seconds per epoch (dashed)", color="C1")
    paths.append(_save(fig, fig_dir / "speed_vs_ratio.png"))

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ratio in sorted(stats):
        curve = stats[ratio]["curve"]
        axes[0].plot([c["epoch"] for c in curve], [c["loss"] for c in curve], label=f"mask {ratio:g}")
        axes[1].plot([c["train_seconds"] for c in curve], [c["loss"] for c in curve], label=f"mask {ratio:g}")
    axes[0].set(xlabel="epoch", ylabel="training loss (masked patches)", title="loss per epoch")
    axes[1].set(xlabel="training time (s)", ylabel="training loss", title="loss per training second")
    if budget_s:
        axes[1].axvline(budget_s, color="grey", linestyle=":", label="budget")
    for ax in axes:
        ax.legend(fontsize=7)
    paths.append(_save(fig, fig_dir / "loss_curves.png"))
    return paths


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path


# ------------------------------------------------------------------------------------ writing
def _random_init_metrics(evals: dict[str, Any]) -> dict[str, float]:
    if "random-init" not in evals:
        return {}
    m = {f"linear_{r['pooling']}": r["test_top1"] for r in evals["random-init"]["linear"]["results"]}
    for r in evals["random-init"]["knn"]["results"]:
        m.update({f"knn{k}_{r['pooling']}": v for k, v in r["top1"].items()})
    return m


def _csv(rows: list[dict[str, Any]]) -> str:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def _settings_lines(plan: SweepPlan, stats: dict[float, dict[str, Any]], evals: dict[str, dict[str, Any]]) -> list[str]:
    """The pretraining and evaluation settings, with the image counts the evaluations actually used."""
    c, t, d, ev = plan.base.model, plan.base.train, plan.base.data, plan.eval
    any_stats = next(iter(stats.values()))
    point = evals[run_name(plan.ratios[0])]
    used = point["linear"]["data"]
    recon_n = point[f"reconstruction_mr{plan.ratios[0]:g}"]["num_images"]
    lr = t.lr if t.lr > 0 else t.blr * images_per_step(plan.base) / 256
    subset = f"a {d.subset}-image class-balanced subset of" if d.subset else "all of"
    same = " (identical for every ratio but the mask ratio)" if len(plan.ratios) > 1 else ""
    scored_at = f"at each model's own ratio and at {ev.common_ratio:g}" if len(plan.ratios) > 1 or (
        plan.ratios[0] != ev.common_ratio) else f"at {ev.common_ratio:g}"  # fmt: skip
    return [
        f"- Pretraining{same}: model `{c.name}` (embed {c.embed_dim}, depth {c.encoder_depth}, decoder "
        f"{c.decoder_embed_dim} x {c.decoder_depth}, patch {c.patch_size}), {subset} the training split of "
        f"`{d.data_dir}`, {_plural(t.epochs, 'epoch')} ({any_stats['steps']} steps), batch {t.batch_size} x "
        f"{t.accum_steps}, peak lr {lr:.3g} (--warmup-epochs {t.warmup_epochs:g}, then cosine), weight decay "
        f"{t.weight_decay}, norm_pix_loss {c.norm_pix_loss}, seed {t.seed}, {any_stats['precision']} on "
        f"{any_stats['device']}.",
        f"- k-NN (cosine, T = 0.07) and linear probe (BatchNorm + linear, {_plural(ev.probe_epochs, 'epoch')}, lr "
        f"chosen on held-out training features) on frozen features of {used['train_images']} training and "
        f"{used['test_images']} test images (class-balanced); ± is the binomial standard error.",
        f"- Reconstruction: {recon_n} class-balanced test images under fixed masks (seed {ev.seed}), scored over "
        f"the masked pixels, {scored_at}.",
    ]


BUDGET_TEXT = """Every ratio gets the training time of the mask-{b:g} run: {budget:.0f} s of training steps, measured
from its metrics.jsonl (the seconds of each logged window, so process start, data loading and model
building are left out for every run alike). A slower ratio first trains {probe:.0%} of its steps; its
measured seconds per step give the step at which its time runs out. The run stops there, that
checkpoint is kept (budget/mr<R>/checkpoint) and evaluated, and the run then continues to its end for
the equal-epoch view, so both views come from one training run. Two biases, both stated: a budget
checkpoint is mid-schedule (its learning rate has not decayed), which handicaps the slower ratios
against a schedule fitted to the budget; and a faster ratio's run ends before the budget ("run ended
before the budget"), which understates what it would reach in the full time. "training time" below
is what each checkpoint actually used, measured after the fact.
"""


def summary_markdown(
    plan: SweepPlan, env: dict[str, Any], command: str, rows: list[dict[str, Any]],
    stats: dict[float, dict[str, Any]], evals: dict[str, dict[str, Any]], budget_s: float | None,
) -> str:  # fmt: skip
    """summary.md: the command, environment, settings, tables, findings and figures."""
    from maelab.experiments.sweep import PRESETS, PROBE_FRACTION

    random_init = _random_init_metrics(evals)
    single = len(plan.ratios) == 1
    title = "Reconstruction study" if single else "Mask-ratio sweep"
    hw = f"{env['cpu_model']}, {env['cpu_cores']} cores ({env['torch_threads']} torch threads)"
    if "gpu" in env:
        hw = f"{env['gpu']}; CPU {hw}"
    lines = [
        f"# {title} (preset `{plan.preset}`)", "",
        f"- Command: `{command or '(Python API)'}`",
        f"- Preset `{plan.preset}`: {PRESETS[plan.preset].description}",
        f"- Date: {env['date']}; git commit {env['git_commit']}; torch {env['torch']}, Python {env['python']}",
        f"- Hardware: {hw}; device {env['device']}",
        *_settings_lines(plan, stats, evals), "",
    ]  # fmt: skip
    lines += [f"## {'Results' if single else 'Equal epochs'}", "", _table([r for r in rows if r["view"] == VIEWS[0]],
              _columns(plan, VIEWS[0]))]  # fmt: skip
    if random_init:
        p = plan.eval.poolings
        k = "20" if 20 in plan.eval.ks else str(plan.eval.ks[0])
        lines += [
            "Random-init encoder of the same architecture (the floor): linear "
            + ", ".join(f"{q} {random_init[f'linear_{q}']:.2f}%" for q in p) + f"; k-NN (k={k}) "
            + ", ".join(f"{q} {random_init[f'knn{k}_{q}']:.2f}%" for q in p) + ".", "",
        ]  # fmt: skip
    if plan.budget_ratio is not None:
        lines += ["## Equal wall-clock budget", "", BUDGET_TEXT.format(b=plan.budget_ratio, budget=budget_s or 0.0,
                  probe=PROBE_FRACTION), _table([r for r in rows if r["view"] == VIEWS[1]], _columns(plan, VIEWS[1]))]  # fmt: skip
    lines += ["## What it shows", ""]
    lines += [f"- {s}" for s in findings(plan, rows, random_init)]
    lines.append("- Scale: differences within two standard errors are not evidence either way." + (
        "" if single else " Training losses of different mask ratios are over different masked sets and are not "
        "comparable across ratios."))  # fmt: skip
    lines += ["", "## Figures", ""]
    if not single:
        for name, caption in (("accuracy_vs_ratio", "Linear probe and k-NN accuracy vs mask ratio"),
                              ("psnr_vs_ratio", "Reconstruction PSNR vs mask ratio"),
                              ("speed_vs_ratio", "Training speed vs mask ratio")):  # fmt: skip
            lines += [f"![{caption}](figures/{name}.png)", ""]
    lines += ["![Training loss curves](figures/loss_curves.png)", ""]
    n = plan.eval.figure_images
    for ratio in plan.ratios:
        lines += [f"Mask ratio {ratio:g}: original | masked | reconstruction | reconstruction + visible "
                  f"({n} test images{'' if single else ', the same for every ratio'}, masks of seed {plan.eval.seed}):",
                  "",
                  f"![reconstruction mr{ratio:g}](figures/reconstruction_{run_name(ratio)}.png)", ""]  # fmt: skip
    lines += ["Files: `summary.csv` (one row per ratio and view), `metrics.json` (everything, with the evaluation "
              "reports), `runs/mr<R>/` (the pretraining runs), `evals/<point>/` (per-checkpoint reports).", ""]  # fmt: skip
    return "\n".join(lines)


def write_results(
    plan: SweepPlan, runs: dict[float, Path], budgets: dict[float, dict[str, Any]], evals: dict[str, dict[str, Any]],
    command: str = "",
) -> Path:  # fmt: skip
    """Write summary.md, summary.csv, metrics.json and the plots into OUT; returns summary.md's path."""
    stats = {ratio: run_stats(run) for ratio, run in runs.items()}
    rows = collect_rows(plan, stats, budgets, evals)
    random_init = _random_init_metrics(evals)
    budget_s = stats[plan.budget_ratio]["train_seconds"] if plan.budget_ratio is not None else None
    env = environment(next(iter(stats.values()))["device"])
    plot_results(plan, rows, stats, random_init, budget_s)
    metrics = {
        "command": command, "environment": env, "settings": plan.to_dict(), "budget_seconds": budget_s,
        "budgets": {f"{r:g}": b for r, b in budgets.items()}, "runs": {f"{r:g}": s for r, s in stats.items()},
        "rows": rows, "random_init": random_init, "evaluations": evals,
    }  # fmt: skip
    atomic_write_text(plan.out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    atomic_write_text(plan.out / "summary.csv", _csv(rows))
    path = plan.out / "summary.md"
    atomic_write_text(path, summary_markdown(plan, env, command, rows, stats, evals, budget_s))
    return path

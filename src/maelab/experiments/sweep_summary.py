"""The results of a mask-ratio sweep: summary.md, summary.csv, metrics.json and plots.

Every number comes from the sweep's stages (each run's speed and loss, each budget plan, each
checkpoint's evaluations); the sentences under "What it shows" are generated from them, never typed in
(:mod:`maelab.experiments.sweep_findings`: paired, like-for-like accuracy comparisons, and which effect
the reconstruction numbers show).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from maelab.config.experiments import PRESETS
from maelab.eval.finetune import MAX_WARMUP_FRACTION
from maelab.eval.results import fmt, markdown_table, with_se, write_summary_files
from maelab.experiments.compare_stats import UNPAIRED_NOTE
from maelab.experiments.plots import plot_sweep
from maelab.experiments.stages import computed_span
from maelab.experiments.sweep_findings import findings
from maelab.experiments.sweep_plan import (
    PROBE_FRACTION,
    RANDOM_INIT,
    VIEWS,
    SweepPlan,
    budget_point,
    knn_k,
    run_name,
)
from maelab.runtime import environment, hardware_text


# ------------------------------------------------------------------------------------ collecting
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
    """One row per (ratio, view): the checkpoint it uses (``point``, its evaluation's name), its training
    time and its evaluations."""
    rows = []
    common = plan.eval.common_ratio
    for ratio in plan.ratios:
        s, own = stats[ratio], _point_metrics(evals[run_name(ratio)], ratio, common)
        final = {"ratio": ratio, "point": run_name(ratio), "step": s["steps"], "epoch": float(s["epochs"]),
                 "train_seconds": s["train_seconds"]}  # fmt: skip
        speed = {k: s[k] for k in ("median_img_per_s", "seconds_per_epoch", "wall_time_s", "peak_memory_mb",
                                   "first_loss", "final_loss")}  # fmt: skip
        tuned = evals[run_name(ratio)].get("finetune")
        ft = {"finetune": tuned["top1"]} if tuned else {}
        rows.append({"view": VIEWS[0], **final, "note": "", **speed, **own, **ft})
        if plan.budget_ratio is None:
            continue
        b = budgets.get(ratio)
        # The budget ratio and a capped one use their final checkpoint in both views, its fine-tune included.
        if b is None:  # the budget ratio itself
            rows.append({"view": VIEWS[1], **final, "note": "sets the budget", **own, **ft})
        elif b["capped"]:
            rows.append({"view": VIEWS[1], **final, "note": "run ended before the budget (final checkpoint)", **own,
                         **ft})  # fmt: skip
        else:
            point = budget_point(ratio)
            note = "over budget: the speed probe already passed it" if b["over_budget"] else "budget checkpoint"
            btuned = evals[point].get("finetune")
            if plan.eval.finetune_epochs and not btuned:  # an older sweep run again without its weights
                note += "; not fine-tuned: its weights were gone when the sweep was run again"
            epoch = round(b["step"] / s["steps_per_epoch"], 2)
            row = {"view": VIEWS[1], "ratio": ratio, "point": point, "step": b["step"], "epoch": epoch,
                   "train_seconds": b["train_seconds"], "note": note}  # fmt: skip
            rows.append({**row, **_point_metrics(evals[point], ratio, common),
                         **({"finetune": btuned["top1"]} if btuned else {})})  # fmt: skip
    return rows


def _random_init_metrics(evals: dict[str, Any]) -> dict[str, float]:
    """The random-init encoder's top-1 (%) per metric key (``linear_cls``, ``knn20_mean``, ..., and ``finetune``
    from scratch when fine-tuned); {} when it was not evaluated."""
    if RANDOM_INIT not in evals:
        return {}
    m = {f"linear_{r['pooling']}": r["test_top1"] for r in evals[RANDOM_INIT]["linear"]["results"]}
    for r in evals[RANDOM_INIT]["knn"]["results"]:
        m.update({f"knn{k}_{r['pooling']}": v for k, v in r["top1"].items()})
    if "finetune" in evals[RANDOM_INIT]:
        m["finetune"] = evals[RANDOM_INIT]["finetune"]["top1"]
    return m


def baseline_rows(evals: dict[str, Any]) -> list[dict[str, Any]]:
    """[the random-init encoder as a row] of summary.csv, metrics.json and the equal-epochs table (ratio None)
    when it was fine-tuned from scratch; else []."""
    m = _random_init_metrics(evals)
    if "finetune" not in m:
        return []
    n = evals[RANDOM_INIT]["linear"]["data"]["test_images"]
    note = "random init: frozen floor; fine-tuned from scratch without layer decay"
    return [{"view": "baseline", "ratio": None, "point": RANDOM_INIT, "note": note, **m, "test_images": n}]


# ------------------------------------------------------------------------------------ tables and words
def _table(plan: SweepPlan, rows: list[dict[str, Any]], view: str, extra: list[dict[str, Any]] | None = None) -> str:
    """The markdown table of one view; ``extra`` rows (the baseline, no ratio) go last."""
    c, k = f"{plan.eval.common_ratio:g}", knn_k(plan)
    shown = [r for r in rows if r["view"] == view] + (extra or [])
    cols: list[tuple[str, Any]] = [("mask ratio", lambda r: "random init" if r["ratio"] is None else f"{r['ratio']:g}")]
    if view == VIEWS[1]:
        cols += [("step (epoch)", lambda r: f"{r['step']} ({r['epoch']:g})" if "step" in r else "-"),
                 ("training time (s)", lambda r: fmt(r.get("train_seconds"), ".0f"))]  # fmt: skip
    for p in plan.eval.poolings:
        cols.append((f"linear {p} (%)", lambda r, p=p: with_se(r[f"linear_{p}"], r["test_images"])
                     if f"linear_{p}" in r else "-"))  # fmt: skip
    for p in plan.eval.poolings:
        cols.append((f"k-NN k={k} {p} (%)", lambda r, p=p: fmt(r.get(f"knn{k}_{p}"), ".2f")))
    if any("finetune" in r for r in shown):
        cols.append(("fine-tune (%)", lambda r: with_se(r["finetune"], r["test_images"]) if "finetune" in r else "-"))
    cols += [("PSNR own (dB)", lambda r: fmt(r.get("psnr_own"), ".2f")),
             (f"PSNR @{c} (dB)", lambda r: fmt(r.get("psnr_common"), ".2f")),
             (f"SSIM @{c}", lambda r: fmt(r.get("ssim_common"), ".3f"))]  # fmt: skip
    if view == VIEWS[0]:
        cols += [("final loss", lambda r: fmt(r.get("final_loss"), ".4f")),
                 ("img/s", lambda r: fmt(r.get("median_img_per_s"), ".0f")),
                 ("s/epoch", lambda r: fmt(r.get("seconds_per_epoch"), ".1f")),
                 ("training time (s)", lambda r: fmt(r.get("train_seconds"), ".0f")),
                 ("wall time (s)", lambda r: fmt(r.get("wall_time_s"), ".0f")),
                 ("peak mem (MiB)", lambda r: fmt(r.get("peak_memory_mb"), ".0f"))]  # fmt: skip
    else:
        cols.append(("note", lambda r: r["note"]))
    cells = [[cell(r) for _, cell in cols] for r in shown]
    return markdown_table([h for h, _ in cols], cells, align="r")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def _settings_lines(plan: SweepPlan, stats: dict[float, dict[str, Any]], evals: dict[str, dict[str, Any]]) -> list[str]:
    """The pretraining and evaluation settings, with the image counts the evaluations actually used."""
    c, t, d, ev = plan.base.model, plan.base.train, plan.base.data, plan.eval
    any_stats = next(iter(stats.values()))
    point = evals[run_name(plan.ratios[0])]
    used = point["linear"]["data"]
    recon_n = point[f"reconstruction_mr{plan.ratios[0]:g}"]["num_images"]
    lr = t.peak_lr()
    subset = f"a {d.subset}-image class-balanced subset of" if d.subset else "all of"
    same = " (identical for every ratio but the mask ratio)" if len(plan.ratios) > 1 else ""
    scored_at = f"at each model's own ratio and at {ev.common_ratio:g}" if len(plan.ratios) > 1 or (
        plan.ratios[0] != ev.common_ratio) else f"at {ev.common_ratio:g}"  # fmt: skip
    tuned = point.get("finetune")
    budget_tuned = any("finetune" in evals.get(budget_point(r), {}) for r in plan.ratios)
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
    ] + ([_finetune_line(tuned, evals.get(RANDOM_INIT, {}).get("finetune"), budget_tuned)] if tuned else [])


def _finetune_line(tuned: dict[str, Any], scratch: dict[str, Any] | None, budget: bool = False) -> str:
    """The fine-tuning settings, from a stored result's recipe (every point uses the same one); ``budget``: the
    equal wall-clock checkpoints were fine-tuned too."""
    f = tuned["recipe"]
    warmup = min(f["warmup_epochs"], MAX_WARMUP_FRACTION * f["epochs"])  # what finetune() used (older records: capped)
    base = ""
    if scratch is not None:
        base = ("; the random-init encoder from scratch with the same recipe and epochs, layer decay "
                f"{scratch['layer_decay']:g}")  # fmt: skip
    points = "each ratio's final checkpoint"
    if budget:
        points += (" and of each equal wall-clock checkpoint (the budget ratio and a ratio whose run ended "
                   "before the budget reuse their final checkpoint's fine-tune)")  # fmt: skip
    return (
        f"- Fine-tuning (reduced recipe: no mixup, CutMix or RandAugment) of {points}: "
        f"{_plural(f['epochs'], 'epoch')} on {tuned['train_images']} training images, batch {f['batch_size']}, blr "
        f"{f['blr']:g} ({warmup:g} warm-up epochs, then cosine), layer decay {f['layer_decay']:g}, drop "
        f"path {f['drop_path']:g}, label smoothing {f['label_smoothing']:g}, seed {f['seed']}, {tuned['precision']}"
        f"{base}; scored on the same {tuned['test_images']} test images as k-NN and the linear probe."
    )


BUDGET_TEXT = """Every ratio gets the training time of the mask-{b:g} run: {budget:.0f} s of training steps, measured
from its metrics.jsonl (the seconds of each logged window, so process start, data loading and model
building are left out for every run alike). Every other ratio first trains {probe:.0%} of its steps; its
measured seconds per step give the step at which its time runs out. A slower ratio's run stops there, that
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
    computed: dict[str, Any] | None = None,
) -> str:  # fmt: skip
    """summary.md: the command, environment, settings, tables, findings and figures; ``computed``: when and at which
    git commit each stage was computed (:meth:`~maelab.experiments.stages.Stages.computed`)."""
    random_init = _random_init_metrics(evals)
    single = len(plan.ratios) == 1
    title = "Reconstruction study" if single else "Mask-ratio sweep"
    hw = hardware_text(env)
    span = computed_span(computed)  # when the numbers were computed, beside when the report was written
    lines = [
        f"# {title} (preset `{plan.preset}`)", "",
        f"- Command: `{command or '(Python API)'}`",
        f"- Preset `{plan.preset}`: {PRESETS[plan.preset].description}",
        f"- Report written {env['date']}, git commit {env['git_commit']}{'; ' + span if span else ''}; torch "
        f"{env['torch']}, Python {env['python']}",
        f"- Hardware: {hw}; device {env['device']}",
        *_settings_lines(plan, stats, evals), "",
        f"## {'Results' if single else 'Equal epochs'}", "", _table(plan, rows, VIEWS[0], baseline_rows(evals)),
    ]  # fmt: skip
    if random_init:
        p, k = plan.eval.poolings, knn_k(plan)
        lines += [
            "Random-init encoder of the same architecture (the floor): linear "
            + ", ".join(f"{q} {random_init[f'linear_{q}']:.2f}%" for q in p) + f"; k-NN (k={k}) "
            + ", ".join(f"{q} {random_init[f'knn{k}_{q}']:.2f}%" for q in p)
            + (f"; fine-tuned from scratch (no layer decay) {random_init['finetune']:.2f}%"
               if "finetune" in random_init else "") + ".", "",
        ]  # fmt: skip
    if plan.budget_ratio is not None:
        lines += ["## Equal wall-clock budget", "", BUDGET_TEXT.format(b=plan.budget_ratio, budget=budget_s or 0.0,
                  probe=PROBE_FRACTION), _table(plan, rows, VIEWS[1], baseline_rows(evals))]  # fmt: skip
    lines += ["## What it shows", ""]
    lines += [f"- {s}" for s in findings(plan, rows, random_init, evals)]
    lines.append(
        "- Scale: accuracies are compared at the same pooling and paired on the same test images: a difference counts "
        "only with an exact McNemar p < 0.05 and a 95% paired-bootstrap interval that excludes 0, else it is a tie "
        f"(given with its interval; where marked, {UNPAIRED_NOTE}). ± in the tables is one accuracy's binomial "
        "standard error." + ("" if single else " Training losses of different mask ratios are over different masked "
        "sets and are not comparable across ratios."))  # fmt: skip
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
              "reports), `runs/mr<R>/` (the pretraining runs), `evals/<point>/` (per-checkpoint reports).",
              ""]  # fmt: skip
    return "\n".join(lines)


def write_results(
    plan: SweepPlan, stats: dict[float, dict[str, Any]], budgets: dict[float, dict[str, Any]],
    evals: dict[str, dict[str, Any]], command: str = "", computed: dict[str, Any] | None = None,
) -> Path:  # fmt: skip
    """Write summary.md, summary.csv, metrics.json and the plots into OUT; returns summary.md's path. ``computed``:
    when and at which git commit each stage was computed (metrics.json ``stages_computed``)."""
    rows = collect_rows(plan, stats, budgets, evals)
    random_init = _random_init_metrics(evals)
    budget_s = stats[plan.budget_ratio]["train_seconds"] if plan.budget_ratio is not None else None
    env = environment(next(iter(stats.values()))["device"])
    plot_sweep(plan, rows, stats, random_init, budget_s)
    metrics = {
        "command": command, "environment": env, "settings": plan.to_dict(), "budget_seconds": budget_s,
        "budgets": {f"{r:g}": b for r, b in budgets.items()}, "runs": {f"{r:g}": s for r, s in stats.items()},
        "rows": rows, "random_init": random_init, "evaluations": evals, "stages_computed": computed or {},
    }  # fmt: skip
    markdown = summary_markdown(plan, env, command, rows, stats, evals, budget_s, computed)
    metrics["rows"] = rows + baseline_rows(evals)  # the from-scratch baseline: a row of metrics.json and summary.csv
    return write_summary_files(plan.out, metrics, metrics["rows"], markdown)

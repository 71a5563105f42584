"""The results of ``maelab recipe``: scores, the ranking, the winner's margin, summary.md / .csv, metrics.json.

Score of a candidate = mean of its validation k-NN top-1 (k=20) and linear-probe top-1, each at the
candidate's better pooling (chosen on the validation split, the split the search selects on). The
winner's margin over the runner-up is judged with paired statistics on the same validation images
(McNemar + paired bootstrap, :func:`maelab.eval.stats.compare_paired`), per metric, both at the
winner's pooling: with one seed, a difference within noise is a tie, never a win.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from maelab.budget import WARMUP_STEPS
from maelab.config import SECTIONS
from maelab.eval.features import POOLINGS
from maelab.eval.results import fmt, markdown_table, write_summary_files
from maelab.eval.stats import compare_paired, unpack_correct
from maelab.experiments.compare_plan import MOMENTUM_RULE
from maelab.experiments.recipe_plan import (
    BUDGET_TOLERANCE,
    KNN_K,
    RecipePlan,
    budget_flag,
    encoder_shape,
)
from maelab.experiments.stages import computed_span

METRICS = ("knn", "linear")
METRIC_NAMES = {"knn": f"k-NN (k={KNN_K})", "linear": "linear probe"}


# ------------------------------------------------------------------------------------ scores and ranking
def best_pooling(accs: dict[str, float]) -> tuple[str, float]:
    """(pooling, accuracy) of the better pooling; a tie goes to the first of :data:`POOLINGS`."""
    pooling = max((p for p in POOLINGS if p in accs), key=lambda p: accs[p])
    return pooling, accs[pooling]


def score(val: dict[str, Any]) -> dict[str, Any]:
    """A candidate's score from its validation result (see the module docstring), with the random init's
    score at the same poolings and the paired comparison with it per metric."""
    out: dict[str, Any] = {}
    for m in METRICS:
        pooling, acc = best_pooling(val["knn" if m == "knn" else "linear"])
        out[f"{m}_pooling"], out[m] = pooling, acc
        out[f"random_init_{m}"] = val["random_init"][m][pooling]
        out[f"{m}_vs_random_init_p"] = val.get("vs_random_init", {}).get(m, {}).get(pooling, {}).get("p_value")
    out["score"] = round((out["knn"] + out["linear"]) / 2, 3)
    out["random_init_score"] = round((out["random_init_knn"] + out["random_init_linear"]) / 2, 3)
    out["over_random_init"] = round(out["score"] - out["random_init_score"], 3)
    return out


def rank(vals: dict[str, dict[str, Any]]) -> list[str]:
    """Candidate names by score, best first (equal scores keep the table's order)."""
    return sorted(vals, key=lambda name: -score(vals[name])["score"])


def paired(a: dict[str, Any], b: dict[str, Any], metric: str, pooling: str) -> Any:
    """compare_paired of candidates ``a`` and ``b`` (validation results) on ``metric`` at ``pooling``."""
    return compare_paired(unpack_correct(a["correct"][metric][pooling]), unpack_correct(b["correct"][metric][pooling]))


def margin(names: tuple[str, str], a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Candidate ``names[0]`` (validation result ``a``) against ``names[1]`` (``b``): the score difference,
    and per metric the paired comparison at ``a``'s better pooling, with a verdict for the pair."""
    sa, sb = score(a), score(b)
    out: dict[str, Any] = {"a": names[0], "b": names[1], "score_difference": round(sa["score"] - sb["score"], 3)}
    wins, losses = [], []
    for m in METRICS:
        pooling = sa[f"{m}_pooling"]
        pc = paired(a, b, m, pooling)
        out[m] = {"pooling": pooling, **pc.to_dict(), "verdict": pc.verdict(*names)}
        if pc.significant():
            (wins if pc.difference > 0 else losses).append(METRIC_NAMES[m])
    out["a_better_on"], out["b_better_on"] = wins, losses
    if wins and not losses:
        head = f"{names[0]} beats {names[1]} beyond noise on {' and '.join(wins)}"
        head += "" if len(wins) == len(METRICS) else "; the other metric is a tie"
    elif losses and not wins:
        head = f"mixed: {names[1]} is better beyond noise on {' and '.join(losses)} despite the lower score"
    elif wins:
        head = f"mixed: {names[0]} is better on {' and '.join(wins)}, {names[1]} on {' and '.join(losses)}"
    else:
        head = f"a tie: {names[0]} and {names[1]} are within noise on both metrics"
    out["verdict"] = head
    return out


def candidate_flags(overrides: dict[str, dict[str, Any]]) -> str:
    """``--batch-size 128 --lr 0.001 --norm-pix-loss``: a candidate's overrides as pretraining flags."""
    parts = []
    for section, values in overrides.items():
        flags = {f.name: f.metadata.get("flag") or f.name for f in dataclasses.fields(SECTIONS[section])}
        for key, value in values.items():
            flag = "--" + flags[key].replace("_", "-")
            if isinstance(value, bool):
                parts.append(flag if value else flag.replace("--", "--no-", 1))
            elif isinstance(value, (tuple, list)):  # e.g. --blur-prob 1 0.1 0.5
                parts.append(" ".join([flag, *(f"{v:g}" if isinstance(v, float) else str(v) for v in value)]))
            else:
                parts.append(f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}")
    return " ".join(parts)


def vs_winner_cell(m: dict[str, Any]) -> str:
    """A table cell for a candidate against the winner: ``tie`` or where the winner is better / worse."""
    parts = [f"worse on {', '.join(m['a_better_on'])}"] if m["a_better_on"] else []
    parts += [f"better on {', '.join(m['b_better_on'])}"] if m["b_better_on"] else []
    return "; ".join(parts) or "tie"


# ------------------------------------------------------------------------------------ rows
def knobs(cfg: Any) -> dict[str, Any]:
    """The knobs the search varies, as they were in the candidate's config."""
    m, d, t = cfg.model, cfg.data, cfg.train
    return {
        "method": t.method,
        "batch": t.images_per_step(), "lr": t.peak_lr(),
        "warmup_epochs": t.warmup_epochs, "norm_pix_loss": m.norm_pix_loss, "encoder": encoder_shape(cfg),
        "decoder": f"{m.decoder_embed_dim}x{m.decoder_depth}", "mask_ratio": m.mask_ratio,
        "images": d.subset or "all",
    }  # fmt: skip


def collect_rows(plan: RecipePlan, results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per candidate, in rank order: knobs, speed, budget use, loss, validation scores."""
    vals = {name: r["val"] for name, r in results.items()}
    order = rank(vals)
    winner = order[0]
    rows = []
    for i, name in enumerate(order):
        r, cand = results[name], next(c for c in plan.candidates if c.name == name)
        c, run, s = r["calibration"], r["run"], score(r["val"])
        row: dict[str, Any] = {"rank": i + 1, "candidate": name, **knobs(plan.config(cand))}
        row.update(
            calib_img_per_s=c["img_per_s"], train_images=c["train_images"], planned_steps=c["planned_steps"],
            steps=run["steps"], warmup_steps=run["warmup_steps"], budget_s=c["budget_s"],
            train_seconds=run["train_seconds"], budget_use=run["budget_use"],
            budget_flag=budget_flag(run["budget_use"]), train_img_per_s=run["median_img_per_s"], epochs=run["epochs"],
            final_loss=run["final_loss"], momentum_teacher=run.get("momentum_teacher"), refit=refit_note(run),
        )  # fmt: skip
        for m in METRICS:
            row.update({f"{m}_{p}": r["val"][m][p] for p in POOLINGS})
        row.update(s)
        row["vs_winner"] = (
            "winner" if name == winner else vs_winner_cell(margin((winner, name), vals[winner], r["val"]))
        )
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------ markdown
def knobs_table(plan: RecipePlan, rows: list[dict[str, Any]]) -> str:
    """Candidates: what each one sets (its description) and its knobs."""
    desc = {c.name: c.description for c in plan.candidates}
    headers = ["candidate", "batch", "peak lr", "warm-up (ep / steps)", "norm_pix", "encoder", "decoder",
               "train images", "what it tests"]  # fmt: skip
    mae = [r.get("method", "mae") == "mae" for r in rows]  # DINO has no decoder and no pixel target
    cells = [[r["candidate"], r["batch"], f"{r['lr']:.3g}", f"{r['warmup_epochs']:g} / {r['warmup_steps']}",
              ("yes" if r["norm_pix_loss"] else "no") if is_mae else "- (DINO)", r["encoder"],
              r["decoder"] if is_mae else "-", r["train_images"], desc[r["candidate"]]]
             for r, is_mae in zip(rows, mae, strict=True)]  # fmt: skip
    return markdown_table(headers, cells, align="lrrrlllrl")


def budget_cell(row: dict[str, Any]) -> str:
    """``222 (123%) **over budget**``: training seconds, their share of the budget, and the flag if any."""
    flag = f" **{row['budget_flag']}**" if row["budget_flag"] else ""
    return f"{row['train_seconds']:.0f} ({row['budget_use']:.0%}){flag}"


def results_table(rows: list[dict[str, Any]]) -> str:
    """Ranked results: speed, budget use, loss, validation accuracies, random init, score."""
    headers = ["#", "candidate", "img/s (calib.)", "steps planned / done", "train s (of budget)", "epochs",
               "final loss", "k-NN cls", "k-NN mean", "linear cls", "linear mean", "random init (same shape)",
               "over random init", "score", "vs winner (paired)"]  # fmt: skip
    cells = [[r["rank"], r["candidate"], fmt(r["calib_img_per_s"], ".0f"), f"{r['planned_steps']} / {r['steps']}",
              budget_cell(r), fmt(r["epochs"], ".2f"), fmt(r["final_loss"], ".4f"),
              *(fmt(r[f"{m}_{p}"], ".2f") for m in METRICS for p in POOLINGS),
              f"{r['random_init_score']:.2f}", f"{r['over_random_init']:+.2f}", f"**{r['score']:.2f}**",
              r["vs_winner"]] for r in rows]  # fmt: skip
    return markdown_table(headers, cells, align="rlrrrrrrrrrrrrl")


def momentum_lines(rows: list[dict[str, Any]]) -> list[str]:
    """For DINO candidates, one line: each one's teacher momentum, fitted to its planned steps (or given)."""
    dino = [r for r in rows if r.get("momentum_teacher") is not None]
    if not dino:
        return []
    each = "; ".join(f"`{r['candidate']}` {r['momentum_teacher']:.4f} ({r['planned_steps']} steps)" for r in dino)
    return ["", f"DINO teacher momentum m0 ({MOMENTUM_RULE}, unless the candidate sets one): {each}."]


def budget_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Whether every candidate trained for its budget: the ones whose training seconds were outside
    :data:`BUDGET_TOLERANCE` of it, named with their seconds and share, or one line saying none was."""
    low, high = BUDGET_TOLERANCE
    off = [r for r in rows if r["budget_flag"]]
    if not off:
        return [f"Equal budget: every candidate trained for {low:.0%}-{high:.0%} of its budget (training seconds / "
                "budget in the table)."]  # fmt: skip
    named = "; ".join(f"`{r['candidate']}` {r['train_seconds']:.0f} s of {r['budget_s']:.0f} s ({r['budget_use']:.0%}, "
                      f"{r['budget_flag']})" for r in off)  # fmt: skip
    return [f"**Unequal budget:** {named}: outside {low:.0%}-{high:.0%} of the budget, so "
            f"{'its' if len(off) == 1 else 'their'} comparisons with the others are not at equal training time "
            "(a candidate over budget had more time to learn, one under it less)."]  # fmt: skip


def refit_note(run: dict[str, Any]) -> str | None:
    """How a candidate's run re-fitted its steps, from its stage record (``refit``: see
    :func:`maelab.experiments.recipe.refit_record`): ``planned 3936 -> 3610 at step 703``, why it did not, or None
    for a run trained without the re-fit (a search from before it, or ``--no-refit``)."""
    if "refit" not in run:
        return None
    fit = run["refit"]
    if fit is None:
        why = (
            f"a warm-up of {run['warmup_steps']} steps"
            if run["warmup_steps"] <= WARMUP_STEPS
            else "resumed in its warm-up"
        )
        return f"none ({why}: the plan stood)"
    if fit["too_short"]:
        return f"none at step {fit['at_step']} ({fit['timed_seconds']:.1f} s timed, too few: the plan stood)"
    return f"planned {fit['planned_steps']} -> {fit['steps']} at step {fit['at_step']}"


def refit_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The candidates' re-fits, one sentence after the budget's (none when no run had the re-fit: older searches)."""
    notes = [f"`{r['candidate']}` {r['refit']}" for r in rows if r.get("refit")]
    if not notes:
        return []
    return ["Steps re-fitted once, at the end of the warm-up, from the run's own speed (as `pretrain --minutes`): "
            + "; ".join(notes) + "."]  # fmt: skip


def winner_lines(plan: RecipePlan, rows: list[dict[str, Any]], m: dict[str, Any] | None, n_val: int) -> list[str]:
    """The winner, its flags, its margin over the runner-up (paired, per metric) and the verdict."""
    w = rows[0]
    overrides = next(c.overrides for c in plan.candidates if c.name == w["candidate"])
    dino = w.get("method") == "dino"
    lines = [f"**Winner: `{w['candidate']}`**, score {w['score']:.2f} (k-NN {w['knn']:.2f}% {w['knn_pooling']}, "
             f"linear {w['linear']:.2f}% {w['linear_pooling']}; {w['over_random_init']:+.2f} points over the random "
             "init of its encoder).", "",
             f"Its recipe as flags (on the ref model, patch 4{'' if dino else ', mask 0.75'}; add --steps or --epochs "
             "for your budget" + (f", and a --momentum-teacher fitted to them: {w['momentum_teacher']:.4f} for its "
             f"{w['planned_steps']} planned steps" if dino and w.get("momentum_teacher") is not None else "")
             + f"): `{candidate_flags(overrides)}`"]  # fmt: skip
    if m is None:
        return lines + ["", "Only one candidate: nothing to compare it with."]
    lines += [
        "", f"Margin over the runner-up `{m['b']}`: {m['score_difference']:+.2f} points of score. Paired on the same "
        f"{n_val} validation images (difference in points, 95% paired-bootstrap CI, exact McNemar p):", "",
        *(f"- {METRIC_NAMES[k]} ({m[k]['pooling']}): {m[k]['verdict']}" for k in METRICS), "",
        f"Verdict: {m['verdict']}. One seed per candidate: " + _seed_caveat(m),
    ]  # fmt: skip
    return lines


def _seed_caveat(m: dict[str, Any]) -> str:
    """What one seed allows the winner-vs-runner-up margin ``m`` to say."""
    if m["a_better_on"] and not m["b_better_on"]:
        return "the seed-to-seed spread is not measured, so treat a win on one metric only as weak evidence."
    if m["b_better_on"]:
        return (
            "the runner-up is better beyond noise on " + ", ".join(m["b_better_on"]) + ": the ranking by score "
            "is mixed, and more seeds (--seed 1, --seed 2) would be needed to order them."
        )
    return (
        "the winner is a tie with the runner-up; either recipe is as good at this budget, and more seeds "
        "(--seed 1, --seed 2) would be needed to separate them."
    )


def summary_markdown(plan: RecipePlan, env: dict[str, Any], hardware: str, command: str,
                     rows: list[dict[str, Any]], m: dict[str, Any] | None, info: dict[str, Any],
                     computed: dict[str, Any] | None = None) -> str:  # fmt: skip
    """summary.md: command, machine, budget, the candidates, the ranked results, the winner and figures; ``computed``:
    when and at which git commit each stage was computed (:meth:`~maelab.experiments.stages.Stages.computed`)."""
    o, first = plan.options, rows[0]
    span = computed_span(computed)  # when the numbers were computed, beside when the report was written
    schedule = (  # older searches trained their planned steps
        "At the end of its warm-up a run re-fits its step count once from its own measured speed (as `maelab pretrain "
        "--minutes`; per candidate below the results), and the cosine decay spans the re-fitted steps."
        if any(r.get("refit") for r in rows)
        else "The schedule (warm-up, cosine decay) spans the planned steps."
    )
    lines = [
        "# Short-schedule recipe search (validation split of the training set)", "",
        f"- Command: `{command or '(Python API)'}`",
        f"- Date: {env['date']}; git commit {env['git_commit']}{'; ' + span if span else ''}; torch {env['torch']}, "
        f"Python {env['python']}",
        f"- Machine: {hardware}; {env['cpu_cores']} CPUs; device {env['device']}",
        f"- Precision: {first['precision']} for training and features ({first['precision_reason']})",
        f"- Budget: {plan.budget_s:.0f} s ({o.budget_minutes:g} min) of training steps per candidate, wall-clock on "
        "THIS machine (it should be otherwise idle). Each candidate's img/s is calibrated first by the training "
        "loop itself (a short run of its exact config in a fresh process, as its run: data indexing, augmentation, "
        "optimizer step and logging included, timed after a warm-up for at least "
        f"{plan.calibration_s:.0f} s), which fixes its step count = budget x img/s / batch; its actual training "
        "seconds (from metrics.jsonl, process start and data loading excluded) are shown beside the budget, and a "
        f"candidate outside {BUDGET_TOLERANCE[0]:.0%}-{BUDGET_TOLERANCE[1]:.0%} of it is flagged. {schedule}",
        f"- Data: pretraining on the training images of `{info['data_dir']}` minus the {info['test_images']} held-out "
        f"ones (--holdout {o.holdout}, class-balanced, the last of each class); scores on those held-out images "
        f"only. k-NN (cosine, T = 0.07, k = {KNN_K}) and a linear probe ({o.probe_epochs} epochs, lr chosen on held-out "
        f"probe-training features) on frozen features of {info['train_images']} other training images. "
        "The test set is never read.",
        f"- Seed {o.seed} for every candidate. Score = mean of k-NN and linear top-1 (%), each at the candidate's "
        "better pooling (cls or mean). Random init: the same encoder shape at its seeded initialisation, scored "
        "the same way.", "",
        "## Candidates", "", knobs_table(plan, rows),
        "## Results (ranked)", "", results_table(rows), *budget_lines(rows), *refit_lines(rows), "",
        "img/s (calib.): the calibration; train s: training seconds actually used (% of the budget, flagged "
        f"outside {BUDGET_TOLERANCE[0]:.0%}-{BUDGET_TOLERANCE[1]:.0%}); epochs: "
        "passes over the candidate's training images. Losses of norm_pix_loss, raw-pixel and DINO candidates are "
        "over different targets and are not comparable. vs winner: paired tests on the validation images at the "
        "winner's poolings (worse / better beyond noise, or tie).", *momentum_lines(rows), "",
        "## Winner", "", *winner_lines(plan, rows, m, info["test_images"]), "",
        "## Figures", "", "![loss against training time](plots/loss_vs_time.png)", "",
        "![scores](plots/scores.png)", "",
        "Files: `summary.csv` (one row per candidate), `metrics.json` (everything, with per-candidate calibration, "
        "runs and validation results), `evals/<name>/` (k-NN and linear reports), `runs/<name>/` (the runs).", "",
    ]  # fmt: skip
    return "\n".join(lines)


def write_results(plan: RecipePlan, results: dict[str, dict[str, Any]], command: str = "",
                  wall_time_s: float | None = None, computed: dict[str, Any] | None = None) -> Path:  # fmt: skip
    """Write summary.md, summary.csv, metrics.json and the plots into OUT; returns summary.md's path. ``computed``:
    when and at which git commit each stage was computed (metrics.json ``stages_computed``)."""
    import torch

    from maelab.experiments.plots import plot_recipe
    from maelab.runtime import environment, hardware_line

    rows = collect_rows(plan, results)
    vals = {name: r["val"] for name, r in results.items()}
    device = next(iter(results.values()))["run"]["device"]
    env, hardware = environment(device), hardware_line(torch.device(device))
    for r in rows:
        r.update(precision=results[r["candidate"]]["calibration"]["precision"],
                 precision_reason=results[r["candidate"]]["calibration"]["precision_reason"])  # fmt: skip
    m = margin((rows[0]["candidate"], rows[1]["candidate"]), vals[rows[0]["candidate"]],
               vals[rows[1]["candidate"]]) if len(rows) > 1 else None  # fmt: skip
    info = {"data_dir": plan.options.data_dir, "train_images": next(iter(vals.values()))["probe_train_images"],
            "test_images": next(iter(vals.values()))["val_images"]}  # fmt: skip
    plot_recipe(plan.out, rows, {name: r["run"]["curve"] for name, r in results.items()})
    metrics = {
        "command": command, "environment": env, "hardware": hardware, "settings": plan.settings(),
        "budget_seconds": plan.budget_s, "wall_time_this_call_s": wall_time_s, "ranking": [r["candidate"] for r in rows],
        "winner": rows[0]["candidate"], "margin_over_runner_up": m, "budget_tolerance": list(BUDGET_TOLERANCE),
        "off_budget": {r["candidate"]: r["budget_use"] for r in rows if r["budget_flag"]}, "rows": rows,
        "candidates": {c.name: {"description": c.description, "overrides": c.overrides} for c in plan.candidates},
        "results": results, "stages_computed": computed or {},
    }  # fmt: skip
    markdown = summary_markdown(plan, env, hardware, command, rows, m, info, computed)
    return write_summary_files(plan.out, metrics, rows, markdown)

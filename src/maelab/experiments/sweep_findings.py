"""The sentences under "What it shows" in a sweep's summary, each generated from the measured numbers.

Accuracies are compared like for like (one protocol, one pooling) on the same test images, and "A is
better" is decided by the paired statistics (:func:`maelab.experiments.compare_stats.judge`: exact
McNemar and a 95% paired-bootstrap interval; otherwise a tie, given with its interval). Evaluations
written by an older maelab hold no per-image flags: those sentences use the unpaired 2-SE rule and
say so. Reconstruction is read at each model's own ratio AND under the same masks, and the sentence
says which effect the numbers show (a harder task, a train/test mask-ratio mismatch, or a model
that reconstructs worse). Fine-tuning (at equal epochs, and at equal time when its budget checkpoints
were fine-tuned) is read against the random-init encoder fine-tuned from scratch with the same recipe
and epochs and, for the MAE paper's claim that its accuracy is insensitive to the mask ratio across
40-80%, by every paired difference between the swept ratios in that range: "insensitive" only when none
is beyond noise. At equal time a capped ratio (its run ended before the budget) is tagged with the share
of the budget its final checkpoint used.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import combinations
from typing import Any

from maelab.eval.paired import RANDOM_LABEL
from maelab.experiments.compare_stats import Score, judge, paired
from maelab.experiments.sweep_plan import CAPPED, RANDOM_INIT, VIEWS, SweepPlan, budget_share, equal_time_kind, knn_k

# The MAE paper: fine-tuning accuracy is insensitive to the mask ratio across 40-80% (ratios in this range).
INSENSITIVE_RANGE = (0.4, 0.8)


def _untagged(row: dict[str, Any]) -> str:
    """No words after a ratio (every view but equal time)."""
    return ""


def capped_tag(plan: SweepPlan, rows: list[dict[str, Any]]) -> Callable[[dict[str, Any]], str]:
    """The words after a ratio in the equal-time sentences (``rows``: that view): " (final checkpoint, 63% of the
    budget)" for a capped ratio, whose run ended before the budget, "" for the others."""
    budget_s = next((r.get("train_seconds") for r in rows if r["ratio"] == plan.budget_ratio), None)

    def tag(row: dict[str, Any]) -> str:
        if equal_time_kind(row["ratio"], row.get("point", ""), plan.budget_ratio) != CAPPED:
            return ""
        share = budget_share(row.get("train_seconds"), budget_s)
        return f" ({CAPPED}" + (f", {share:.0%} of the budget" if share is not None else "") + ")"

    return tag


def packed_correct(evals: dict[str, Any], point: str | None, kind: str, pooling: str, k: str) -> dict[str, Any] | None:
    """The packed per-image test flags of one evaluation row of a sweep's ``evaluations`` (``kind`` knn | linear, at
    ``pooling``; k-NN at ``k``), or None if not stored."""
    report = evals.get(point or "", {}).get(kind) or {}
    for r in report.get("results", []):
        if r["pooling"] == pooling:
            flags = r.get("test_correct")
            return flags.get(k) if kind == "knn" and flags else flags
    return None


def _metrics(plan: SweepPlan) -> list[tuple[str, str, str, str]]:
    """(row key, evaluation kind, pooling, label) of every accuracy the sentences compare."""
    k = knn_k(plan)
    out = [(f"linear_{p}", "linear", p, f"linear probe ({p})") for p in plan.eval.poolings]
    return out + [(f"knn{k}_{p}", "knn", p, f"k-NN (k={k}, {p})") for p in plan.eval.poolings]


def _best(rows: list[dict[str, Any]], key: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    ranked = sorted((r for r in rows if key in r), key=lambda r: -r[key])
    return ranked[0], (ranked[1] if len(ranked) > 1 else None)


def accuracy_sentence(
    rows: list[dict[str, Any]], evals: dict[str, Any], metric: tuple[str, str, str, str], k: str,
    tag: Callable[[dict[str, Any]], str] = _untagged,
) -> str:  # fmt: skip
    """The best ratio for one metric and, paired on the same images, whether it beats the next one (``tag(row)``:
    words after a ratio, see :func:`capped_tag`)."""
    key, kind, pooling, label = metric
    best, second = _best(rows, key)
    text = f"{label}: best at mask ratio {best['ratio']:g}{tag(best)} ({best[key]:.2f}%)"
    if second is None:
        return text + "."
    a = Score(best[key], packed_correct(evals, best.get("point"), kind, pooling, k))
    b = Score(second[key], packed_correct(evals, second.get("point"), kind, pooling, k))
    j = judge(f"mask {best['ratio']:g}", a, f"mask {second['ratio']:g}", b, best["test_images"])
    return f"{text}; against the next ({second['ratio']:g}{tag(second)}: {second[key]:.2f}%): {j.text}."


def random_init_sentence(
    rows: list[dict[str, Any]], evals: dict[str, Any], random_init: dict[str, float],
    metric: tuple[str, str, str, str], k: str,
) -> str | None:  # fmt: skip
    """Each ratio against the random-init encoder of the same pooling, paired on the same images."""
    key, kind, pooling, label = metric
    if key not in random_init:
        return None
    base = Score(random_init[key], packed_correct(evals, RANDOM_INIT, kind, pooling, k))
    parts = _grouped(rows, lambda r: Score(r[key], packed_correct(evals, r.get("point"), kind, pooling, k)), base)
    return f"Against the random-init encoder ({label}, {random_init[key]:.2f}%, same pooling): {parts}."


def _grouped(
    rows: list[dict[str, Any]], score_of: Callable[[dict[str, Any]], Score | None], base: Score,
    tag: Callable[[dict[str, Any]], str] = _untagged,
) -> str:  # fmt: skip
    """Each ratio's score (``score_of(row)``; None: skipped) against ``base``, paired on the same images, grouped
    as ``above it at ...; a tie with it at ...; below it at ...`` (``tag(row)``: words after a ratio)."""
    groups: dict[str, list[str]] = {"above": [], "a tie with": [], "below": []}
    for r in sorted(rows, key=lambda r: r["ratio"]):
        score = score_of(r)
        if score is None:
            continue
        name = f"mask {r['ratio']:g}"
        j = judge(name, score, RANDOM_LABEL, base, r["test_images"])
        group = "a tie with" if j.winner is None else "above" if j.winner == name else "below"
        groups[group].append(f"{r['ratio']:g}{tag(r)} ({j.numbers})")
    return "; ".join(f"{g} it at {', '.join(v)}" for g, v in groups.items() if v)


def _finetuned(evals: dict[str, Any], point: str | None) -> Score | None:
    """The fine-tuning top-1 (%) and packed per-image flags of ``point``, or None if it was not fine-tuned."""
    r = (evals.get(point or "") or {}).get("finetune")
    return None if r is None else Score(r["top1"], r.get("test_correct"))


def _seeds(seeds: int) -> str:
    # Paired statistics resample test images; they say nothing about another pretraining or fine-tuning seed.
    return ("one seed" if seeds == 1 else f"{seeds} seeds") + ": the intervals cover test-image noise, not seed noise"


def finetune_vs_scratch_sentence(
    rows: list[dict[str, Any]], evals: dict[str, Any], seeds: int = 1, tag: Callable[[dict[str, Any]], str] = _untagged
) -> str | None:
    """Each fine-tuned ratio against the random init fine-tuned with the same recipe and epochs (from scratch, no
    layer decay), paired on the same test images; None without a fine-tuned baseline. ``tag(row)``: words after a
    ratio."""
    base = _finetuned(evals, RANDOM_INIT)
    if base is None:
        return None
    parts = _grouped(rows, lambda r: _finetuned(evals, r.get("point")), base, tag)
    epochs = (evals[RANDOM_INIT]["finetune"].get("recipe") or {}).get("epochs")
    recipe = "the same fine-tuning recipe" + (f" ({epochs} epoch{'s' * (epochs != 1)})" if epochs else "")
    return (
        f"Fine-tuning against {recipe} from scratch (random init without layer decay, {base.accuracy:.2f}%): "
        f"{parts} ({_seeds(seeds)})."
    )


def finetune_spread_sentence(
    rows: list[dict[str, Any]], evals: dict[str, Any], seeds: int = 1, within: tuple[float, float] = INSENSITIVE_RANGE,
    tag: Callable[[dict[str, Any]], str] = _untagged,
) -> str | None:  # fmt: skip
    """Whether fine-tuning is insensitive to the mask ratio ``within`` the range (the MAE paper's claim): every
    pair of fine-tuned ratios in it, paired on the same images; "no difference detected" only if no pair
    differs beyond noise, with the largest difference and its interval. None when nothing was fine-tuned.
    ``tag(row)``: words after a ratio."""
    scored = [(r, _finetuned(evals, r.get("point"))) for r in sorted(rows, key=lambda r: r["ratio"])]
    tuned = [(r, score) for r, score in scored if score is not None]
    if not tuned:
        return None
    lo, hi = within
    inside = [(r, score) for r, score in tuned if lo - 1e-9 <= r["ratio"] <= hi + 1e-9]
    claim = f"Fine-tuning across mask ratios {lo:.0%}-{hi:.0%} (the MAE paper: insensitive to the ratio)"
    if len(inside) < 2:
        return f"{claim}: not tested, {len(inside)} fine-tuned ratio in that range (two are needed)."
    judged: list[tuple[float, str, bool]] = []  # (difference, sentence part, beyond noise) of every pair
    for (a, sa), (b, sb) in combinations(inside, 2):
        if sa.accuracy < sb.accuracy:  # the higher one first: the difference reads positive
            (a, sa), (b, sb) = (b, sb), (a, sa)
        name_a, name_b = f"mask {a['ratio']:g}", f"mask {b['ratio']:g}"
        j, r = judge(name_a, sa, name_b, sb, a["test_images"]), paired(sa, sb)
        part = j.text if j.winner is not None or r is None else (
            f"{name_a} - {name_b} = {r.difference:+.2f} points (95% CI [{r.ci_low:+.2f}, {r.ci_high:+.2f}], McNemar "
            f"p = {r.p_value:.3g}, n = {r.n})"
        )  # fmt: skip
        judged.append((sa.accuracy - sb.accuracy, part, j.winner is not None))
    ratios = ", ".join(f"{r['ratio']:g}{tag(r)} ({score.accuracy:.2f}%)" for r, score in inside)
    beyond = [part for _, part, won in judged if won]
    if not beyond:
        return (
            f"{claim}: no difference detected at this budget (consistent with insensitivity; a tie is not proof of "
            f"it): no paired difference among {ratios} is beyond noise; the largest, {max(judged)[1]} ({_seeds(seeds)})."
        )
    return f"{claim}: not insensitive at this budget: among {ratios}, {'; '.join(beyond)} ({_seeds(seeds)})."


def _trend(values: list[float]) -> str:
    steps = [b - a for a, b in zip(values, values[1:], strict=False)]
    return "rises" if min(steps) > 0 else "falls" if max(steps) < 0 else "is not monotonic"


def reconstruction_sentences(rec: list[dict[str, Any]], common: float) -> list[str]:
    """Each model at its own ratio and under the same masks (ratio ``common``), and which effect the
    numbers show: the own-ratio ranking mixes model and task (a higher ratio is a different, harder
    test); the same masks separate them, and a ranking that follows the distance between a model's
    training ratio and ``common`` is a train/test mask-ratio mismatch."""
    by = sorted(rec, key=lambda r: r["ratio"])
    own = [r["psnr_own"] for r in by]
    out = [
        "Reconstruction at each model's own ratio (a different test per model): "
        + ", ".join(f"{r['psnr_own']:.2f} dB at {r['ratio']:g}" for r in by)
        + f" (PSNR {_trend(own)} as the ratio rises). Under the same masks (ratio {common:g}, the same images): "
        + ", ".join(f"{r['psnr_common']:.2f} dB for the {r['ratio']:g} model" for r in by)
        + f"; best: the {max(by, key=lambda r: r['psnr_common'])['ratio']:g} model."
    ]
    worst = min(by, key=lambda r: r["psnr_own"])
    passed = [r for r in by if r["psnr_own"] > worst["psnr_own"] and r["psnr_common"] < worst["psnr_common"]]
    w = f"the {worst['ratio']:g} model"
    if passed:
        out.append(
            f"So {w}'s low PSNR at its own ratio is its harder task, not a worse model: under the same masks it "
            f"scores {worst['psnr_common']:.2f} dB, above "
            + ", ".join(f"the {r['ratio']:g} model ({r['psnr_common']:.2f} dB)" for r in passed)
            + (", which scored higher at its own ratio." if len(passed) == 1 else ", which scored higher at theirs.")
        )
    elif worst is min(by, key=lambda r: r["psnr_common"]):
        out.append(
            f"{w[0].upper() + w[1:]} is lowest under the same masks too ({worst['psnr_common']:.2f} dB): it "
            "reconstructs worse, beyond its harder task."
        )
    dist = sorted(by, key=lambda r: abs(r["ratio"] - common))
    follows = all(
        a["psnr_common"] >= b["psnr_common"]
        for i, a in enumerate(dist) for b in dist[i + 1 :]
        if abs(a["ratio"] - common) < abs(b["ratio"] - common) - 1e-9
    )  # fmt: skip
    order = ", ".join(f"{r['ratio']:g} ({r['psnr_common']:.2f} dB)" for r in dist)
    nearest_best = dist[0]["psnr_common"] >= max(r["psnr_common"] for r in by)
    if follows and len(by) > 2:
        out.append(
            f"Under the same masks PSNR falls with the distance between a model's training ratio and {common:g} "
            f"({order}): a train/test mask-ratio mismatch effect; each model reconstructs best the masking it was "
            "trained on."
        )
    elif nearest_best:
        out.append(
            f"The model trained nearest to {common:g} is best under those masks ({order}): consistent with a "
            "train/test mask-ratio mismatch for the others"
            + ("." if len(by) <= 2 else ", though the order does not follow the distance strictly.")
        )
    else:
        out.append(
            f"The order under the same masks ({order}, by distance from {common:g}) does not follow the distance "
            "between training and test ratio: not a train/test mismatch effect."
        )
    return out


def _speed_sentence(eq: list[dict[str, Any]]) -> str:
    speeds = sorted(eq, key=lambda r: r["ratio"])
    fast, slow = max(eq, key=lambda r: r["median_img_per_s"]), min(eq, key=lambda r: r["median_img_per_s"])
    trend = {"rises": "rising", "falls": "falling"}.get(
        _trend([r["median_img_per_s"] for r in speeds]), "not monotonic"
    )
    listed = ", ".join(f"{r['median_img_per_s']:.0f} img/s at {r['ratio']:g}" for r in speeds)
    return (
        f"Speed: {listed} ({trend} with the mask ratio); mask {fast['ratio']:g} trains "
        f"{fast['median_img_per_s'] / slow['median_img_per_s']:.2f}x as fast as {slow['ratio']:g} per image."
    )


def findings(
    plan: SweepPlan, rows: list[dict[str, Any]], random_init: dict[str, float], evals: dict[str, Any]
) -> list[str]:
    """Sentences generated from the numbers: speed, accuracy per view and pooling (paired), each ratio vs the
    random init of the same pooling (paired), fine-tuning vs from scratch and across 40-80% (paired; at equal
    epochs, and at equal time when its budget checkpoints were fine-tuned), and reconstruction (own ratio vs the
    same masks)."""
    k = knn_k(plan)
    eq = [r for r in rows if r["view"] == VIEWS[0]]
    out = [_speed_sentence(eq)] if len(eq) > 1 else []
    for view in VIEWS:
        vr = [r for r in rows if r["view"] == view]
        if len(vr) > 1:
            tag = capped_tag(plan, vr) if view == VIEWS[1] else _untagged
            out += [f"{view.capitalize()}: " + accuracy_sentence(vr, evals, m, k, tag) for m in _metrics(plan)]
    for m in _metrics(plan):
        sentence = random_init_sentence(eq, evals, random_init, m, k)
        if sentence:
            out.append(sentence)
    out += [s for s in (finetune_vs_scratch_sentence(eq, evals), finetune_spread_sentence(eq, evals)) if s]
    et = [r for r in rows if r["view"] == VIEWS[1]]
    # Equal time, when every checkpoint of it was fine-tuned and one differs from the equal-epoch ones (a budget one).
    if et and all("finetune" in r for r in et) and {r["point"] for r in et} != {r["point"] for r in eq}:
        tag = capped_tag(plan, et)
        for s in (finetune_vs_scratch_sentence(et, evals, tag=tag), finetune_spread_sentence(et, evals, tag=tag)):
            if s:
                out.append(f"{VIEWS[1].capitalize()}: {s[0].lower()}{s[1:]}")
    rec = [r for r in eq if "psnr_common" in r and "psnr_own" in r]
    if len(rec) > 1:
        out += reconstruction_sentences(rec, plan.eval.common_ratio)
    elif len(rec) == 1:
        r = rec[0]
        out.append(
            f"Reconstruction at mask ratio {plan.eval.common_ratio:g}: PSNR {r['psnr_common']:.2f} dB, SSIM "
            f"{r['ssim_common']:.3f} over the masked pixels; the loss fell from "
            f"{r.get('first_loss', float('nan')):.4f} to {r['final_loss']:.4f}."
        )
    return out

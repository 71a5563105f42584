"""The results folder of ``maelab compare``: summary.md, summary.csv and plots, from measured numbers only.

Every "A beats B" compares like for like (one protocol, one pooling, the same test images) and is
decided by the paired statistics of :mod:`maelab.experiments.compare_stats` (exact McNemar and a 95%
paired-bootstrap interval): a difference within noise is reported as a tie with its interval. Results
of an older maelab without per-image flags fall back to the unpaired 2-SE rule, and say so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from maelab.checkpoint import atomic_write_text
from maelab.config import config_from_dict
from maelab.config.experiments import method_config
from maelab.eval.features import POOLINGS
from maelab.eval.results import fmt, markdown_table, write_csv
from maelab.experiments.compare_plan import METHOD_NAMES, MOMENTUM_FORMULA, MOMENTUM_RULE, WARMUP_RULE
from maelab.experiments.compare_stats import (
    RANDOM_LABEL,
    RULE,
    UNPAIRED_NOTE,
    Judgment,
    Score,
    all_paired,
    comparison_columns,
    judge,
    paired_table,
    tests,
)
from maelab.experiments.plots import plot_compare
from maelab.experiments.stages import computed_span


# ------------------------------------------------------------------------------------ tables
def rows(trained: dict, equal_time: dict | None, frozen: dict, finetuned: dict) -> list[dict[str, Any]]:
    """One flat row per encoder (MAE, DINO, the equal-time run, random init) for the table and the CSV."""
    runs = {m.upper(): trained[m] for m in trained}
    if equal_time and equal_time.get("label"):
        runs[equal_time["label"]] = equal_time.get("record") or {}
    out = []
    for label in frozen["knn"]:
        t = runs.get(label, {})
        row = {
            "encoder": label, "epochs": t.get("epochs"), "steps": t.get("steps"), "wall_time_s": t.get("wall_time_s"),
            "train_time_s": t.get("train_time_s"),
            "img_per_s": t.get("img_per_s"), "seconds_per_epoch": t.get("seconds_per_epoch"),
            "peak_memory_mb": t.get("peak_memory_mb"),
        }  # fmt: skip
        for p in POOLINGS:
            row[f"knn_{p}"] = frozen["knn"][label].get(p)
            row[f"linear_{p}"] = frozen["linear"][label].get(p)
        row["finetune"] = finetuned.get(label, {}).get("top1")
        row["finetune_layer_decay"] = finetuned.get(label, {}).get("layer_decay")
        row["momentum_teacher"] = t.get("momentum_teacher")
        out.append(row)
    return out


def results_table(table: list[dict[str, Any]]) -> str:
    """The markdown table of :func:`rows`: speed, size and accuracies of every encoder."""
    headers = ["encoder", "epochs", "wall (s)", "train (s)", "img/s", "s/epoch", "peak mem (MB)", "k-NN cls",
               "k-NN mean", "linear cls", "linear mean", "fine-tune"]  # fmt: skip
    cells = [
        [r["encoder"], fmt(r["epochs"], "g"), fmt(r["wall_time_s"]), fmt(r["train_time_s"]), fmt(r["img_per_s"], ".0f"),
         fmt(r["seconds_per_epoch"]), fmt(r["peak_memory_mb"], ".0f")]
        + [fmt(r[k]) for k in ("knn_cls", "knn_mean", "linear_cls", "linear_mean", "finetune")]
        for r in table
    ]  # fmt: skip
    return markdown_table(headers, cells, align="l" + "r" * 11)


def trajectory_table(trained: dict) -> str:
    """The markdown table of the checks during pretraining: k-NN per pooling and DINO's teacher entropies."""
    headers = ["method", "epoch", "k-NN cls", "k-NN mean", "teacher entropy", "marginal entropy", "log K"]
    cells = []
    for m, rec in trained.items():
        for p in rec.get("trajectory", []):
            t = p.get("teacher", {})
            cells.append([m.upper(), f"{p['epoch']:g}", f"{p['knn']['cls']:.1f}", f"{p['knn']['mean']:.1f}",
                          fmt(t.get("entropy"), ".3f"), fmt(t.get("marginal_entropy"), ".3f"),
                          fmt(t.get("max_entropy"), ".3f")])  # fmt: skip
    return markdown_table(headers, cells, align="l" + "r" * 6)


# ------------------------------------------------------------------------------------ the answer
def _mae_vs_dino(scores: dict[str, Score], n: int) -> Judgment:
    return judge("MAE", scores["MAE"], "DINO", scores["DINO"], n)


def _by_pooling(winners: dict[str, str | None]) -> str:
    """'MAE (cls and mean)' / 'no measurable difference' / 'by pooling: cls DINO, mean tie'."""
    found = set(winners.values())
    if found == {None}:
        return "no measurable difference at either pooling"
    if len(found) == 1:
        return f"{found.pop()} (at {' and '.join(winners)} pooling)"
    return "depends on the pooling: " + ", ".join(f"{p} {w or 'tie'}" for p, w in winners.items())


def answer(trained: dict, equal_time: dict | None, frozen: dict, finetuned: dict, n_test: int) -> list[str]:
    """The "which is better for transfer, and why" rows, each generated from the measured numbers: every
    comparison at one pooling, decided by the paired statistics (compare_stats)."""
    scores = tests(frozen, finetuned)
    out = []
    for test, s in scores.items():
        text = _mae_vs_dino(s, n_test).text
        base = "; ".join(judge(m, s[m], RANDOM_LABEL, s[RANDOM_LABEL], n_test).text for m in ("MAE", "DINO"))
        out.append(
            f"| {test} | {text}; vs random init (same {'recipe' if test == 'fine-tune' else 'pooling'}): {base} |"
        )

    # What is learned: where the information sits (CLS vs mean of patch tokens): one encoder, paired over poolings.
    learned = []
    reasons = (("MAE", "reconstructing pixels trains local patch features and gives the CLS token no objective"),
               ("DINO", "the loss acts on the CLS token only, as an embedding invariant across crops"))  # fmt: skip
    for m, why in reasons:
        j = judge(f"{m} CLS", scores["linear probe cls"][m], f"{m} mean", scores["linear probe mean"][m], n_test)
        winner = None if j.winner is None else j.winner.split()[-1].replace("CLS", "cls")
        verdict = "consistent with: " if winner == ("mean" if m == "MAE" else "cls") else "not visible here, though: "
        learned.append(f"{m} linear probe, CLS vs mean pooling: {j.text} ({verdict}{why})")
    out.append("| what is learned | " + "; ".join(learned) + " |")

    # Best use: frozen features (per pooling) vs fine-tuning.
    linear = {p: _mae_vs_dino(scores[f"linear probe {p}"], n_test).winner for p in POOLINGS}
    use = [f"frozen features (linear probe): {_by_pooling(linear)}"]
    if finetuned:
        ft_win = _mae_vs_dino(scores["fine-tune"], n_test).winner
        use.append(f"initialisation for fine-tuning: {ft_win or 'no measurable difference'}")
    out.append("| best use (this budget) | " + "; ".join(use) + " |")

    mae, dino = trained["mae"], trained["dino"]
    if mae.get("img_per_s") and dino.get("img_per_s"):
        ratio = mae["img_per_s"] / dino["img_per_s"]
        speed = (
            f"MAE {mae['img_per_s']:.0f} img/s, {fmt(mae['seconds_per_epoch'])} s/epoch, "
            f"{fmt(mae['peak_memory_mb'], '.0f')} MB; DINO {dino['img_per_s']:.0f} img/s, "
            f"{fmt(dino['seconds_per_epoch'])} s/epoch, {fmt(dino['peak_memory_mb'], '.0f')} MB: DINO is "
            f"{ratio:.2f}x {'slower' if ratio >= 1 else 'faster'} per image (it runs the student on 2 global + local "
            "crops and the teacher on 2 global crops, all patches; MAE encodes only the visible patches once)"
        )
        out.append(f"| training speed | {speed}{split_calls_note(mae, dino)} |")
    if equal_time and equal_time.get("label"):
        label, ref = equal_time["label"], equal_time["reference"].upper()
        parts = [f"{p}: " + judge(ref, scores[f"linear probe {p}"][ref], label, scores[f"linear probe {p}"][label],
                                  n_test).text for p in POOLINGS]  # fmt: skip
        rec = equal_time.get("record") or {}
        teacher = (f", teacher momentum m0 {rec['momentum_teacher']:.4g} (the teacher keeps "
                   f"{rec['teacher_init_left']:.1%} of its random init)") if "momentum_teacher" in rec else ""  # fmt: skip
        out.append(
            f"| equal wall-clock ({equal_time['budget_s']:.0f} s) | {label}: {equal_time['epochs']} epoch(s)"
            f"{' cut at step ' + str(equal_time['stop_after_steps']) if equal_time['stop_after_steps'] else ''}"
            f"{teacher}; linear probe {'; '.join(parts)}{split_calls_note(trained[equal_time['reference']], rec)} |"
        )
    elif equal_time:
        out.append("| equal wall-clock | the same number of epochs fits both budgets: the equal-epoch runs apply |")
    return out


def rule_text(scores: dict[str, dict[str, Score]], n_test: int) -> str:
    """How a win was decided: the paired rule, and the fallback where per-image flags are missing."""
    rule = RULE.format(n=n_test)
    return rule if all_paired(scores) else f"{rule}; where marked, {UNPAIRED_NOTE}"


def verdict(frozen: dict, finetuned: dict, n_test: int) -> str:
    """One paragraph: which method transferred better in this run, counting only paired wins beyond noise
    at the same pooling; ties are listed with their intervals."""
    scores = tests(frozen, finetuned)
    wins: dict[str, list[str]] = {"MAE": [], "DINO": []}
    ties = []
    for test, s in scores.items():
        j = _mae_vs_dino(s, n_test)
        if j.winner:
            wins[j.winner].append(test)
        else:
            ties.append(f"{test} (MAE - DINO {j.numbers})")
    parts = [f"{m} is better beyond noise at {', '.join(v)}" for m, v in wins.items() if v]
    if ties:
        parts.append(f"a tie (within noise) at {', '.join(ties)}")
    if not wins["MAE"] and not wins["DINO"]:
        head = "At this budget neither method transfers measurably better"
    elif wins["MAE"] and wins["DINO"]:
        head = "The answer depends on the protocol"
    else:
        head = f"At this budget {'MAE' if wins['MAE'] else 'DINO'} transfers better"
    return (
        f"{head}: {'; '.join(parts)} ({rule_text(scores, n_test)}). Frozen-feature protocols favour a method whose "
        "pooled token is itself a semantic embedding (DINO's CLS); fine-tuning re-learns the top layers and mostly "
        "tests how good an initialisation the encoder is. Small budgets favour neither paper's result; read these "
        "numbers with the epochs above."
    )


def momentum_line(records: dict[str, dict[str, Any]]) -> str:
    """The teacher momentum of each DINO run ({label: its pretraining record}) and the rule that chose it."""
    parts, rules = [], set()
    for label, r in records.items():
        if "momentum_teacher" not in r:
            parts.append(f"{label}: not recorded (a run of an older maelab: DINO's default 0.996 unless given)")
            continue
        rules.add(r["momentum_rule"])
        warmups = ""
        if "freeze_last_layer" in r:
            warmups = (f"; last layer frozen {r['freeze_last_layer']:.3g} epochs, teacher temperature warmed up over "
                       f"{r['warmup_teacher_temp_epochs']:.3g} epochs")  # fmt: skip
        parts.append(
            f"{label}: m0 = {r['momentum_teacher']:.4g} ({r['momentum_rule']}) over {r['steps']} steps, the teacher "
            f"keeps {r['teacher_init_left']:.1%} of its random init at the end{warmups}"
        )
    head = (
        f"DINO {MOMENTUM_RULE} {MOMENTUM_FORMULA}" if "fitted to the run length" in rules else "DINO teacher momentum"
    )
    tail = f" {WARMUP_RULE}, unless given." if any("freeze_last_layer" in r for r in records.values()) else ""
    return f"{head}: {'; '.join(parts)}.{tail}"


def optimizer_text(settings: dict[str, Any]) -> str:
    """Each method's optimizer as it trained (``MAE (recipe short): lr 0.001, ...; DINO (recipe paper): ...``),
    rebuilt from the stored shared config and options by :func:`~maelab.config.experiments.method_config`, as the
    runs were: MAE's --recipe, DINO's paper recipe, the values given to both."""
    base = config_from_dict(settings["config"], "metrics.json")
    parts = []
    for method in METHOD_NAMES:
        t = method_config(base, method, given=settings["options"].get("given", ())).train
        batch = t.images_per_step()
        lr = f"lr {t.lr:g}" if t.lr > 0 else f"lr {t.peak_lr():g} (blr {t.blr:g} x {batch} / 256)"
        decay = f"{t.weight_decay:g}" + (f" -> {t.weight_decay_end:g} (cosine)" if t.weight_decay_end >= 0 else "")
        warmup = f"{t.warmup_epochs:g} epoch{'' if t.warmup_epochs == 1 else 's'}"
        parts.append(f"{method.upper()} (recipe {t.recipe}): {lr}, warm-up {warmup} (at most a quarter of the run), "
                     f"betas {tuple(t.betas)}, weight decay {decay}, min lr {t.min_lr:g}")  # fmt: skip
    return "; ".join(parts)


def finetune_text(finetuned: dict[str, Any], opts: dict[str, Any]) -> str:
    """The fine-tuning part of the evaluation sentence, with the layer decay each run used."""
    if not finetuned:
        return ", no fine-tuning."
    by_value: dict[str, list[str]] = {}
    for label, r in finetuned.items():
        by_value.setdefault(fmt(r.get("layer_decay"), "g"), []).append(label)
    if "-" in by_value:
        decay = "layer decay not recorded per run: an older maelab, which used 0.75 for every init"
    else:
        decay = (
            "layer-wise lr decay " + "; ".join(f"{v} for {', '.join(labels)}" for v, labels in by_value.items())
            + ": from random init there is nothing pretrained for layer decay to protect, so that baseline has none"
        )  # fmt: skip
    return (
        f", fine-tuning {opts['finetune_epochs']} epochs on {opts['finetune_subset'] or 'all'} train images, the same "
        f"budget for every init ({decay}). The fine-tuning recipe is reduced: AdamW, warm-up + cosine, drop path, "
        "label smoothing, random-resized-crop + flip; no mixup, CutMix, RandAugment or random erasing."
    )


def collapse_line(trained: dict) -> str:
    """Whether DINO's teacher collapsed, from the last trajectory point."""
    traj = [p for p in trained["dino"].get("trajectory", []) if "teacher" in p]
    if not traj:
        return "No teacher statistics were recorded."
    t = traj[-1]["teacher"]
    mi = t["marginal_entropy"] - t["entropy"]
    ok = 0.02 * t["max_entropy"] < t["entropy"] < 0.98 * t["max_entropy"] and mi > 0.1
    return (
        f"DINO teacher at epoch {traj[-1]['epoch']:g}: mean entropy {t['entropy']:.3f} nats, entropy of the mean "
        f"prediction {t['marginal_entropy']:.3f}, log K {t['max_entropy']:.3f}; their difference (the information "
        f"the prototype assignment carries about the image) is {mi:.3f} nats: "
        + ("no sign of collapse." if ok else "POSSIBLE COLLAPSE (one-hot or uniform outputs); check the curves.")
    )


def across_calls(*records: dict[str, Any]) -> bool:
    """Whether the pretraining ``records`` (``_trained_run`` stages) ran in more than one call of the experiment
    (different calls, or a resumed run): their speeds then come from different states of the machine. False when
    they shared one call or predate the ``call`` field."""
    calls = {r.get("call") for r in records}
    return None not in calls and (len(calls) > 1 or any(r.get("resumed") for r in records))


def split_calls_note(*records: dict[str, Any]) -> str:
    """The report's warning when :func:`across_calls` holds for ``records``, else ""."""
    if not across_calls(*records):
        return ""
    return (
        "; **measured in more than one call of `maelab compare`** (a run resumed, or the methods trained in "
        "different calls): the machine's speed can differ between calls, so this ratio and the equal-time budget "
        "carry that drift"
    )


def write_results(
    out: Path, data: dict[str, Any], trained: dict, equal_time: dict | None, frozen: dict, finetuned: dict,
    command: str = "", device: str = "cpu", computed: dict[str, Any] | None = None,
) -> None:  # fmt: skip
    """Write summary.md, summary.csv and plots/*.png into ``out`` (metrics.json is kept by the stages); ``computed``:
    when and at which git commit each stage was computed (:meth:`~maelab.experiments.stages.Stages.computed`), said
    on its own line under the date (the seeds report reads the date line whole)."""
    from maelab.runtime import environment, hardware_text

    env = environment(device)
    hw = hardware_text(env)
    if equal_time and equal_time.get("label"):
        equal_time = {**equal_time, "record": data["stages"].get(f"pretrain:{equal_time['retrained']}-equal-time")}
    table = rows(trained, equal_time, frozen, finetuned)
    n_test = int(frozen["data"]["test_images"])
    settings = data["settings"]["config"]
    opts = data["settings"]["options"]
    m, t, d = settings["model"], settings["train"], settings["data"]
    plot_paths = plot_compare(out, trained, table)
    dino_runs = {"DINO": trained["dino"]}
    if equal_time and equal_time.get("label") and equal_time.get("retrained") == "dino":
        dino_runs[equal_time["label"]] = equal_time.get("record") or {}
    scores = tests(frozen, finetuned)
    reference = equal_time["reference"].upper() if equal_time and equal_time.get("label") else None
    span = computed_span(computed)  # when the numbers were computed, beside when the report was written
    lines = [
        "# MAE vs DINO on the same encoder",
        "",
        f"- Command: `{command or '(Python API)'}`",
        f"- Date: {env['date']}; git commit {env['git_commit']}; torch {env['torch']}, Python {env['python']}",
        *([f"- {span[:1].upper()}{span[1:]}"] if span else []),
        f"- Hardware: {hw}; device {env['device']}",
        f"- Wall time of the last call: {data.get('wall_time_this_call_s', 0) / 60:.1f} min (stages finished in "
        "earlier calls are reused)",
        "",
        f"Encoder: {m['name']} (embed {m['embed_dim']}, depth {m['encoder_depth']}, heads {m['encoder_heads']}, "
        f"patch {m['patch_size']}, {m['img_size']} px). Pretraining data: {d['subset'] or 'all'} training images of "
        f"{d['data_dir'] or '$MAELAB_DATA'}, {t['epochs']} epochs, batch {t['batch_size']}, seed {t['seed']}. "
        + optimizer_text(data["settings"])
        + f". MAE: mask ratio {m['mask_ratio']:g}"
        + (", norm_pix_loss" if m.get("norm_pix_loss") else "")
        + f". DINO: {settings['dino']['local_crops']} local crops, out dim {settings['dino']['out_dim']}.",
        "",
        momentum_line(dino_runs),
        "",
        f"Evaluation: {frozen['data']['train_images']} train / {n_test} test images (class-balanced); k-NN k=20 "
        f"(T=0.07), linear probe {opts['linear_epochs']} epochs (lr chosen on held-out train images)"
        + finetune_text(finetuned, opts)
        + " Accuracies are test top-1 in %.",
        "",
        "## Results",
        "",
        results_table(table),
        "wall: the run's wall time (start-up included); train: time in training steps (from metrics.jsonl), which "
        "gives s/epoch and the equal-time budget; img/s: median of the logged windows; peak memory: the training "
        "process's peak (GPU: allocated; CPU: resident set).",
        "",
        "## Paired comparisons (same pooling, same test images)",
        "",
        paired_table(scores, comparison_columns(list(frozen["knn"]), reference), n_test),
        f"Each cell: A - B in points, [95% paired-bootstrap interval], exact McNemar p, and the winner ({rule_text(scores, n_test)}).",
        "",
        "## Which is better for transfer, and why",
        "",
        verdict(frozen, finetuned, n_test),
        "",
        "| question | measured answer |",
        "|---|---|",
        *answer(trained, equal_time, frozen, finetuned, n_test),
        "",
        "## During pretraining (k-NN and DINO collapse check)",
        "",
        trajectory_table(trained),
        collapse_line(trained),
        "",
        "Plots: " + ", ".join(f"[{p.name}](plots/{p.name})" for p in plot_paths) + ". All numbers: metrics.json.",
    ]
    atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")
    write_csv(out / "summary.csv", table)

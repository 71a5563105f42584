"""The figures of the experiments (matplotlib, files only): the sweep's accuracy / PSNR / speed vs mask
ratio and loss curves, and compare's loss curves, pretraining trajectories and accuracy bars."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from maelab import rundir
from maelab.eval.features import POOLINGS
from maelab.eval.results import accuracy_se
from maelab.experiments.sweep_plan import VIEWS, SweepPlan, knn_k


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    """Lay out, write (100 dpi) and close ``fig``; returns ``path``."""
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path


# ------------------------------------------------------------------------------------ the sweep
def plot_sweep(
    plan: SweepPlan, rows: list[dict[str, Any]], stats: dict[float, dict[str, Any]], random_init: dict[str, float],
    budget_s: float | None,
) -> list[Path]:  # fmt: skip
    """accuracy_vs_ratio.png, psnr_vs_ratio.png, speed_vs_ratio.png and loss_curves.png in OUT/figures."""
    plt = _pyplot()
    fig_dir = plan.out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    k = knn_k(plan)
    styles, markers = {VIEWS[0]: "-", VIEWS[1]: "--"}, {VIEWS[0]: "o", VIEWS[1]: "s"}

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
                errs = [accuracy_se(y, r["test_images"]) for y, r in zip(ys, vr, strict=True)]
                ax.errorbar([r["ratio"] for r in vr], ys, yerr=errs, linestyle=styles[view], marker=markers[view],
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
        xs = [r["ratio"] for r in vr]
        if vr and "psnr_own" in vr[0]:
            ax.plot(xs, [r["psnr_own"] for r in vr], styles[view], marker=markers[view], color="C0",
                    label=f"at its own ratio, {view}")  # fmt: skip
        if vr and all("psnr_common" in r for r in vr):
            ax.plot(xs, [r["psnr_common"] for r in vr], styles[view], marker=markers[view], color="C1",
                    label=f"at {plan.eval.common_ratio:g}, {view}")  # fmt: skip
    ax.set(xlabel="mask ratio (trained)", ylabel="PSNR of masked pixels (dB)", title="reconstruction",
           xticks=plan.ratios)  # fmt: skip
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


# ------------------------------------------------------------------------------------ MAE vs DINO
def plot_compare(out: Path, trained: dict[str, dict[str, Any]], table: list[dict[str, Any]]) -> list[Path]:
    """plots/loss_curves.png, plots/trajectory.png and plots/accuracy_bars.png in ``out``.

    ``trained``: {method: its pretraining record, with ``run`` and ``trajectory``}; ``table``: one row
    per encoder with ``encoder`` and the accuracy columns (knn_cls, ..., finetune).
    """
    plt = _pyplot()
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    paths = []

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, m in zip(axes, ("mae", "dino"), strict=True):
        recs = rundir.read_metrics(trained[m]["run"])
        ax.plot([r["epoch"] for r in recs], [r["loss"] for r in recs], label="loss")
        for key in ("kl", "teacher_entropy"):
            if recs and key in recs[0]:
                ax.plot([r["epoch"] for r in recs], [r[key] for r in recs], label=key.replace("_", " "))
        ax.set(title=f"{m.upper()} pretraining", xlabel="epoch")
        ax.legend()
    paths.append(_save(fig, plots / "loss_curves.png"))

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for m in ("mae", "dino"):
        traj = trained[m].get("trajectory", [])
        for p in POOLINGS:
            axes[0].plot([t["epoch"] for t in traj], [t["knn"][p] for t in traj], marker="o", label=f"{m.upper()} {p}")
    axes[0].set(title="k-NN top-1 (k=20) during pretraining", xlabel="epoch", ylabel="%")
    axes[0].legend()
    traj = [t for t in trained["dino"].get("trajectory", []) if "teacher" in t]
    for key, label in (("entropy", "mean entropy"), ("marginal_entropy", "entropy of mean"), ("max_entropy", "log K")):
        axes[1].plot([t["epoch"] for t in traj], [t["teacher"][key] for t in traj], marker="o", label=label)
    axes[1].set(title="DINO teacher output entropy (nats)", xlabel="epoch")
    axes[1].legend()
    paths.append(_save(fig, plots / "trajectory.png"))

    columns = ("knn_cls", "knn_mean", "linear_cls", "linear_mean", "finetune")
    groups = [k for k in columns if table[0].get(k) is not None]
    fig, ax = plt.subplots(figsize=(10, 3.5))
    width = 0.8 / len(table)
    for i, r in enumerate(table):
        xs = [g + (i - (len(table) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, [r[k] or 0 for k in groups], width, label=r["encoder"])
    ax.set_xticks(range(len(groups)), [g.replace("_", " ") for g in groups])
    ax.set(ylabel="test top-1 (%)", title="Transfer accuracy")
    ax.legend(fontsize=8)
    paths.append(_save(fig, plots / "accuracy_bars.png"))
    return paths


# ------------------------------------------------------------------------------------ recipe search
def plot_recipe(out: Path, rows: list[dict[str, Any]], curves: dict[str, list[dict[str, Any]]]) -> list[Path]:
    """plots/loss_vs_time.png and plots/scores.png in ``out``.

    ``rows``: one per candidate in rank order (``candidate``, ``norm_pix_loss``, ``budget_s``, ``knn``,
    ``linear``, ``score``, ``random_init_score``; ``method``, default mae); ``curves``: {candidate:
    [{train_seconds, loss}, ...]}. Loss curves are split by target, one panel per target the candidates have:
    norm_pix_loss, raw-pixel and DINO losses are not on one scale.
    """
    plt = _pyplot()
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    paths = []

    def target(r: dict[str, Any]) -> str:
        return "dino" if r.get("method", "mae") == "dino" else "norm_pix" if r["norm_pix_loss"] else "raw"

    titles = {"norm_pix": ("target: per-patch normalised pixels (norm_pix_loss)", "training loss (masked patches)"),
              "raw": ("target: raw pixels", "training loss (masked patches)"),
              "dino": ("DINO (student vs teacher cross-entropy)", "training loss")}  # fmt: skip
    panels = [t for t in titles if any(target(r) == t for r in rows)] or ["norm_pix"]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        for i, r in enumerate(rows):
            if target(r) == panel:
                curve = curves[r["candidate"]]
                ax.plot([c["train_seconds"] for c in curve], [c["loss"] for c in curve], color=f"C{i % 10}",
                        label=r["candidate"])  # fmt: skip
        ax.axvline(rows[0]["budget_s"], color="grey", linestyle=":", label="budget")
        ax.set(xlabel="training time (s)", ylabel=titles[panel][1], title=titles[panel][0])
        ax.legend(fontsize=7)
    paths.append(_save(fig, plots / "loss_vs_time.png"))

    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 2.0))
    ys = list(range(len(rows)))[::-1]  # the winner on top
    ax.barh(ys, [r["score"] for r in rows], color="C0", alpha=0.6, label="score (mean of the two)")
    ax.plot([r["knn"] for r in rows], ys, "o", color="C1", label="k-NN k=20 (better pooling)")
    ax.plot([r["linear"] for r in rows], ys, "s", color="C2", label="linear probe (better pooling)")
    ax.plot([r["random_init_score"] for r in rows], ys, "|", color="k", markersize=14, label="random init score")
    ax.set_yticks(ys, [r["candidate"] for r in rows])
    ax.set(xlabel="validation top-1 (%) on the held-out training images")
    ax.legend(fontsize=7, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    paths.append(_save(fig, plots / "scores.png"))
    return paths

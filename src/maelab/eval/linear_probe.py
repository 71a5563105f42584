"""Linear probing of frozen features: BatchNorm1d(affine=False) + Linear, as in the MAE paper.

The learning rate is chosen on a held-out part of the *training* features (never the test set):
one head per candidate lr is trained on the rest in the same pass (the heads share the
parameter-free BatchNorm and see the same batches, so they are exactly independent probes), the
head with the best held-out accuracy names the lr, and a fresh head is then trained at that lr on
the full training set and evaluated once on the test set.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

# The probe's settings are options of `maelab eval linear`; imported here for the Python API.
from maelab.config.evaluation import DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS, DEFAULT_LRS, ProbeConfig  # noqa: F401

# Multiply-adds per probe step below which a CPU probe runs on one thread (see _one_thread_if_small).
SMALL_STEP_MACS = 1 << 24


class LinearProbe(nn.Module):
    """BatchNorm1d(affine=False) shared by ``num_heads`` linear heads: (B, D) -> (B, num_heads, C).

    The heads are one weight (D, H, C) so that training H of them costs one matmul.
    """

    def __init__(self, dim: int, num_classes: int, num_heads: int = 1) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(dim, affine=False, eps=1e-6)
        # As MAE's linear probe: small weights (trunc. normal, std 0.01), zero bias. Every head starts
        # from the same draw, so heads differ only by their lr (and a 1-head run reproduces any head).
        w = nn.init.trunc_normal_(torch.empty(dim, 1, num_classes), std=0.01)
        self.weight = nn.Parameter(w.repeat(1, num_heads, 1))
        self.bias = nn.Parameter(torch.zeros(num_heads, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.norm(x)  # (B, D)
        return (z @ self.weight.flatten(1)).view(x.shape[0], *self.bias.shape) + self.bias  # (B, H, C)


@dataclass
class ProbeResult:
    """Held-out train accuracy per lr, the chosen lr, and the retrained head's accuracies (all in %).

    ``test_correct`` (M,) bool on the CPU: which test images the retrained head gets right, for paired
    comparisons of two encoders on the same images (its mean is ``test_accuracy`` / 100).
    """

    val_accuracy: dict[float, float]
    best_lr: float
    train_accuracy: float
    test_accuracy: float
    num_fit: int
    num_val: int
    config: ProbeConfig = field(repr=False, default_factory=ProbeConfig)
    test_correct: torch.Tensor = field(repr=False, default_factory=lambda: torch.zeros(0, dtype=torch.bool))


@contextlib.contextmanager
def _one_thread_if_small(device: torch.device, step_macs: int) -> Iterator[None]:
    """Run a small CPU probe on one thread, then restore the thread count.

    A CIFAR-sized step ((256, 256) @ (256, 70)) is too small for intra-op threads to pay off, and on a
    busy CPU OpenMP's spin-waiting makes it far slower: 7 ms vs 300 ms per step on a shared 2-core
    machine. Large probes (e.g. 1000 classes) keep every thread.
    """
    if device.type != "cpu" or step_macs >= SMALL_STEP_MACS:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _lr_factors(total_steps: int, warmup_fraction: float) -> torch.Tensor:
    from maelab.optim import lr_schedule

    return lr_schedule(1.0, 0.0, total_steps, round(warmup_fraction * total_steps))


def train_probe(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    lrs: Sequence[float],
    cfg: ProbeConfig,
    progress: bool = False,
    desc: str = "linear probe",
) -> LinearProbe:
    """Train one head per lr on features x (N, D) and labels y (N,); returns the probe in eval mode."""
    if not lrs or min(lrs) <= 0:
        raise ValueError(f"learning rates must be > 0, got {list(lrs)}")
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # head init
    probe = LinearProbe(x.shape[1], num_classes, len(lrs)).to(x.device)
    # Each head's loss is weighted by its lr and the optimizer's lr is the schedule's factor: for SGD
    # with momentum and no weight decay, that is exactly one SGD run per head at lr * factor.
    head_lrs = torch.tensor(list(lrs), dtype=torch.float32, device=x.device)
    opt = torch.optim.SGD(probe.parameters(), lr=1.0, momentum=cfg.momentum)
    n = x.shape[0]
    batch = min(cfg.batch_size, n)
    steps_per_epoch = max(n // batch, 1)  # drop the last partial batch: BatchNorm needs > 1 row
    factors = _lr_factors(cfg.epochs * steps_per_epoch, cfg.warmup_fraction).tolist()
    probe.train()
    step = 0
    with _one_thread_if_small(x.device, batch * x.shape[1] * len(lrs) * num_classes):
        for _ in tqdm(range(cfg.epochs), desc=desc, disable=not progress, unit="epoch", dynamic_ncols=True):
            perm = torch.randperm(n, generator=gen).to(x.device)
            for s in range(steps_per_epoch):
                idx = perm[s * batch : (s + 1) * batch]
                opt.param_groups[0]["lr"] = factors[step]
                logits = probe(x[idx])  # (B, H, C)
                labels = y[idx].repeat_interleave(len(lrs))  # row-major (B, H) like logits.flatten(0, 1)
                per_row = F.cross_entropy(logits.flatten(0, 1), labels, reduction="none")  # (B*H,)
                loss = (per_row.view(-1, len(lrs)).mean(dim=0) * head_lrs).sum()  # (H,) -> scalar
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
    return probe.eval()


@torch.no_grad()
def probe_correct(probe: LinearProbe, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N, H) bool: whether each head of an eval-mode probe classifies each row of x (N, D) as y (N,)."""
    return probe(x).argmax(dim=-1) == y.unsqueeze(1)  # (N, H)


def probe_accuracy(probe: LinearProbe, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Top-1 accuracy (%) of every head of an eval-mode probe on x (N, D), y (N,)."""
    return (100.0 * probe_correct(probe, x, y).float().mean(dim=0)).tolist()


def holdout_split(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded random (fit indices, held-out indices) of range(n); at least one row in each."""
    if not 0 < fraction < 1:
        raise ValueError(f"the held-out fraction must be in (0, 1), got {fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = min(max(1, math.floor(n * fraction)), n - 1)
    return perm[n_val:], perm[:n_val]


def select_lr(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, cfg: ProbeConfig, progress: bool = False
) -> tuple[dict[float, float], float, int, int]:
    """Choose the lr on a held-out ``cfg.val_fraction`` of the TRAINING features x (N, D), y (N,).

    Returns ({lr: held-out accuracy %}, best lr, fit rows, held-out rows); ties go to the smaller lr.
    """
    fit, val = holdout_split(x.shape[0], cfg.val_fraction, cfg.seed)
    probe = train_probe(x[fit], y[fit], num_classes, cfg.lrs, cfg, progress, desc="linear probe: lr search")
    accs = probe_accuracy(probe, x[val], y[val])
    by_lr = dict(zip(cfg.lrs, accs, strict=True))
    best = max(sorted(cfg.lrs), key=lambda lr: by_lr[lr])  # max keeps the first (smallest) of equals
    return by_lr, best, len(fit), len(val)


def linear_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    cfg: ProbeConfig | None = None,
    num_classes: int | None = None,
    progress: bool = False,
) -> ProbeResult:
    """Pick the lr on held-out train features, retrain at it on all train features, test once.

    train_x (N, D), train_y (N,), test_x (M, D), test_y (M,) on one device; accuracies in %, and
    the test images the head gets right as ``result.test_correct`` (M,) bool.
    """
    cfg = cfg or ProbeConfig()
    c = num_classes or int(max(train_y.max(), test_y.max())) + 1
    train_x, test_x = train_x.float(), test_x.float().to(train_x.device)
    train_y, test_y = train_y.long().to(train_x.device), test_y.long().to(train_x.device)
    by_lr, best, n_fit, n_val = select_lr(train_x, train_y, c, cfg, progress)
    probe = train_probe(train_x, train_y, c, [best], cfg, progress, desc=f"linear probe: lr {best:g}")
    test_correct = probe_correct(probe, test_x, test_y)[:, 0].cpu()  # (M,) the one head's flags
    return ProbeResult(
        val_accuracy=by_lr, best_lr=best, train_accuracy=probe_accuracy(probe, train_x, train_y)[0],
        test_accuracy=100.0 * test_correct.float().mean().item(), num_fit=n_fit, num_val=n_val, config=cfg,
        test_correct=test_correct,
    )  # fmt: skip

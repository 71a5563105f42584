"""Paired statistics for "A beats B" on the same test images.

Two encoders evaluated on the same images are not independent samples: most images are right (or
wrong) for both, so the standard error of the difference is far below the sum of the two standard
errors. Both tests here look only at the images on which the two disagree.

- :func:`mcnemar`: exact two-sided McNemar test (a binomial test on the discordant images).
- :func:`paired_bootstrap`: percentile interval of the accuracy difference, resampling images.
- :func:`pooled_paired_bootstrap`: the same over several seeds scored on the same images: per image the
  difference averaged over seeds, resampling images (the test-image noise of a mean over seeds).
- :func:`pack_correct` / :func:`unpack_correct`: a compact JSON form of the per-image flags, so that
  reports keep which images an encoder got right and later comparisons need no re-evaluation.
- :func:`seed_spread`: mean, standard deviation and 95% t-interval of a quantity measured once per
  seed (the paired tests above cover test-image noise only; another seed is another pretraining).
- :func:`t_test_p` / :func:`holm_adjust`: the two-sided p-value of that seed t-test and Holm's step-down
  adjustment over the many pairs one report tests (so a reader can tell which verdicts survive them all).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike


@dataclass(frozen=True)
class PairedComparison:
    """A vs B on the same ``n`` images. Accuracies and the difference are in percentage points."""

    n: int
    accuracy_a: float
    accuracy_b: float
    difference: float  # accuracy_a - accuracy_b
    ci_low: float  # 95% paired-bootstrap interval of the difference
    ci_high: float
    only_a_right: int  # discordant images: A right, B wrong
    only_b_right: int
    p_value: float  # exact two-sided McNemar

    def significant(self, alpha: float = 0.05) -> bool:
        """Whether the difference is beyond noise at level ``alpha`` (McNemar) and the interval excludes 0."""
        return self.p_value < alpha and (self.ci_low > 0 or self.ci_high < 0)

    def verdict(self, name_a: str = "A", name_b: str = "B", alpha: float = 0.05) -> str:
        """'A beats B' / 'B beats A' / 'tie' with the numbers that decide it."""
        numbers = (
            f"{self.difference:+.2f} points, 95% CI [{self.ci_low:+.2f}, {self.ci_high:+.2f}], McNemar p = "
            f"{self.p_value:.3g}, n = {self.n}"
        )
        if not self.significant(alpha):
            return f"tie: {name_a} vs {name_b} {numbers}"
        winner, loser = (name_a, name_b) if self.difference > 0 else (name_b, name_a)
        return f"{winner} beats {loser}: {name_a} - {name_b} {numbers}"

    def to_dict(self) -> dict[str, float | int]:
        """The fields as a JSON-ready dict."""
        return asdict(self)


def _as_bool(correct: np.ndarray | list[bool], name: str) -> np.ndarray:
    a = np.asarray(correct)
    if a.ndim != 1:
        raise ValueError(f"{name}: expected one correct/incorrect flag per image (1-D), got shape {a.shape}")
    return a.astype(bool)


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> tuple[int, int, float]:
    """Exact two-sided McNemar test. ``correct_*``: (N,) bool, one flag per image, same images.

    Returns (only_a_right, only_b_right, p): under "no difference" each discordant image is A's or
    B's with probability 1/2, so p = P(|Binomial(b + c, 1/2) - (b + c)/2| >= |b - (b + c)/2|).
    """
    a, b = _as_bool(correct_a, "correct_a"), _as_bool(correct_b, "correct_b")
    if a.shape != b.shape:
        raise ValueError(f"A and B must be scored on the same images: {a.shape} vs {b.shape}")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    n = only_a + only_b
    if n == 0:
        return only_a, only_b, 1.0
    k = min(only_a, only_b)
    # log P(X = i) for X ~ Binomial(n, 1/2), summed in log space so n = 10,000 does not overflow.
    log_terms = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2) for i in range(k + 1)
    ]
    top = max(log_terms)
    tail = math.exp(top) * sum(math.exp(t - top) for t in log_terms)
    return only_a, only_b, min(1.0, 2.0 * tail)


def paired_bootstrap(
    correct_a: np.ndarray, correct_b: np.ndarray, n_boot: int = 2000, seed: int = 0, chunk: int = 250
) -> tuple[float, float, float]:
    """(difference, low, high) in percentage points: A's accuracy minus B's and its 95% percentile
    interval from ``n_boot`` resamples of the images (the same resampled images for A and B)."""
    a, b = _as_bool(correct_a, "correct_a"), _as_bool(correct_b, "correct_b")
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"A and B must be scored on the same, non-empty set of images: {a.shape} vs {b.shape}")
    return _bootstrap_mean(a.astype(np.float64) - b.astype(np.float64), n_boot, seed, chunk)  # per image: +1, 0, -1


def pooled_paired_bootstrap(
    correct_a: Sequence[ArrayLike], correct_b: Sequence[ArrayLike], n_boot: int = 2000, seed: int = 0, chunk: int = 250
) -> tuple[float, float, float]:
    """(difference, low, high) in percentage points of A vs B pooled over seeds on the same images.

    ``correct_a`` / ``correct_b``: one (N,) bool array per seed (S of each, every seed scored on the same N
    images). Per image d = mean over seeds of (A right - B right); its mean (x100) is the mean of the per-seed
    differences, and its 95% percentile interval comes from ``n_boot`` resamples of the images, the same
    resampled images in every seed. With one seed this is :func:`paired_bootstrap` (same ``seed``, same result).
    """
    if len(correct_a) != len(correct_b) or len(correct_a) == 0:
        raise ValueError(
            f"A and B need flags of the same, non-zero number of seeds: {len(correct_a)} vs {len(correct_b)}"
        )
    a = [_as_bool(x, f"correct_a[{s}]") for s, x in enumerate(correct_a)]
    b = [_as_bool(x, f"correct_b[{s}]") for s, x in enumerate(correct_b)]
    sizes_a, sizes_b = [x.size for x in a], [x.size for x in b]
    if len(set(sizes_a + sizes_b)) != 1 or sizes_a[0] == 0:
        # Pooling per image needs image i to be the same image in every seed and for A and B.
        raise ValueError(
            "pooling over seeds needs every seed's A and B scored on the same, non-empty set of images: A has "
            f"{sizes_a} images per seed, B {sizes_b}"
        )
    diff = np.mean([x.astype(np.float64) - y.astype(np.float64) for x, y in zip(a, b, strict=True)], axis=0)
    return _bootstrap_mean(diff, n_boot, seed, chunk)


def _bootstrap_mean(diff: np.ndarray, n_boot: int, seed: int, chunk: int) -> tuple[float, float, float]:
    """(mean, low, high) x100 of the (N,) float per-image ``diff`` and its 95% percentile interval from ``n_boot``
    resamples of the images (``chunk`` resamples at a time)."""
    rng = np.random.default_rng(seed)
    means = []
    for start in range(0, n_boot, chunk):  # chunks keep memory at chunk x N indices
        idx = rng.integers(0, diff.size, size=(min(chunk, n_boot - start), diff.size))
        means.append(diff[idx].mean(axis=1))
    boot = np.concatenate(means) * 100
    low, high = np.percentile(boot, [2.5, 97.5])
    return float(diff.mean() * 100), float(low), float(high)


def compare_paired(correct_a: np.ndarray, correct_b: np.ndarray, n_boot: int = 2000, seed: int = 0) -> PairedComparison:
    """McNemar + paired bootstrap of two encoders' per-image correctness on the same test images."""
    a, b = _as_bool(correct_a, "correct_a"), _as_bool(correct_b, "correct_b")
    only_a, only_b, p = mcnemar(a, b)
    diff, low, high = paired_bootstrap(a, b, n_boot, seed)
    return PairedComparison(
        n=int(a.size), accuracy_a=float(a.mean() * 100), accuracy_b=float(b.mean() * 100), difference=diff,
        ci_low=low, ci_high=high, only_a_right=only_a, only_b_right=only_b, p_value=p,
    )  # fmt: skip


def pack_correct(correct: ArrayLike) -> dict[str, int | str]:
    """(N,) bool flags -> ``{"n": N, "bits": base64 of np.packbits(flags)}`` (JSON-able, N / 6 characters).

    Accepts anything ``np.asarray`` takes (a CPU torch tensor too). Bits are big-endian within each
    byte (numpy's default), the last byte zero-padded.
    """
    a = _as_bool(correct, "correct")
    return {"n": int(a.size), "bits": base64.b64encode(np.packbits(a).tobytes()).decode("ascii")}


def unpack_correct(packed: dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`pack_correct`: (N,) bool; a clear error if the bits do not hold N flags."""
    n = int(packed["n"])
    raw = np.frombuffer(base64.b64decode(packed["bits"], validate=True), dtype=np.uint8)
    if raw.size != (n + 7) // 8:
        raise ValueError(f"packed correctness: {raw.size} bytes cannot hold exactly {n} flags")
    return np.unpackbits(raw, count=n).astype(bool)


# Two-sided 95% quantiles of Student's t by degrees of freedom (standard table values); beyond 30, 2.042
# (the value at 30) is used, which is slightly conservative.
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # fmt: skip


@dataclass(frozen=True)
class SeedSpread:
    """A quantity measured once per seed: ``n`` seeds, their mean, sample standard deviation (n - 1) and
    the 95% t-interval of the mean; ``sd`` and the interval are None with fewer than 2 seeds."""

    n: int
    mean: float
    sd: float | None
    ci_low: float | None
    ci_high: float | None

    def excludes_zero(self) -> bool:
        """Whether the seed interval lies entirely on one side of 0 (False without an interval)."""
        return self.ci_low is not None and self.ci_high is not None and (self.ci_low > 0 or self.ci_high < 0)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return asdict(self)


def seed_spread(values: ArrayLike) -> SeedSpread:
    """Mean, SD and 95% t-interval over seeds of ``values`` (one per seed, (S,)): mean +- t(S-1) SD / sqrt(S)."""
    a = np.asarray(values, dtype=float).ravel()
    if a.size == 0:
        raise ValueError("seed_spread needs at least one value")
    mean = float(a.mean())
    if a.size < 2:
        return SeedSpread(1, mean, None, None, None)
    sd = float(a.std(ddof=1))
    half = T_975[min(a.size - 1, len(T_975)) - 1] * sd / math.sqrt(a.size)
    return SeedSpread(int(a.size), mean, sd, mean - half, mean + half)


def t_two_sided_p(t: float, df: int) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` >= 1 degrees of freedom, in closed form (Abramowitz & Stegun
    26.7.3-4: a finite series in cos(theta), theta = atan(|t| / sqrt(df))), so no SciPy is needed."""
    if df < 1 or not math.isfinite(t):
        raise ValueError(f"t_two_sided_p: needs df >= 1 and a finite t, got df {df}, t {t}")
    theta = math.atan(abs(t) / math.sqrt(df))
    cos2 = math.cos(theta) ** 2
    k = df % 2  # odd df: series in odd powers of cos, plus theta; even df: even powers, times sin
    term = math.cos(theta) if k else 1.0
    series = 0.0
    while k <= df - 2:
        series += term
        term *= cos2 * (k + 1) / (k + 2)
        k += 2
    if df % 2:
        inside = 2 / math.pi * (theta + math.sin(theta) * series)
    else:
        inside = math.sin(theta) * series
    return min(1.0, max(0.0, 1.0 - inside))


def t_test_p(values: ArrayLike) -> float | None:
    """Two-sided p-value of the one-sample t-test that the mean of ``values`` (one per seed, (S,)) is 0: the test
    behind :func:`seed_spread`'s interval. None with fewer than 2 values; 0 or 1 when they do not vary."""
    a = np.asarray(values, dtype=float).ravel()
    if a.size < 2:
        return None
    sd = float(a.std(ddof=1))
    if sd == 0.0:
        return 1.0 if float(a.mean()) == 0.0 else 0.0
    return t_two_sided_p(float(a.mean()) / (sd / math.sqrt(a.size)), a.size - 1)


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values of ``p_values`` (m tests, in their order): the i-th smallest p times
    (m - i + 1), made non-decreasing and capped at 1; a test holds at level alpha over all m when its adjusted p
    is below alpha (this controls the chance of any false "decided" among the m, unlike judging each alone)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted

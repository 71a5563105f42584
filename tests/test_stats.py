"""Paired statistics against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from maelab.eval.stats import (
    T_975,
    compare_paired,
    holm_adjust,
    mcnemar,
    paired_bootstrap,
    pooled_paired_bootstrap,
    seed_spread,
    t_test_p,
    t_two_sided_p,
)


def flags(both: int, only_a: int, only_b: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    a = [True] * both + [True] * only_a + [False] * only_b + [False] * neither
    b = [True] * both + [False] * only_a + [True] * only_b + [False] * neither
    return np.array(a), np.array(b)


def test_mcnemar_exact_by_hand() -> None:
    # 8 vs 2 discordant images: P(X <= 2 | n=10, 1/2) = (1 + 10 + 45) / 1024; two-sided doubles it.
    a, b = flags(50, 8, 2, 40)
    assert mcnemar(a, b) == (8, 2, pytest.approx(112 / 1024))
    # 5 vs 0: 2 * (1/2)^5; symmetric in A and B.
    a, b = flags(3, 0, 5, 1)
    assert mcnemar(a, b) == (0, 5, pytest.approx(2 / 32))
    assert mcnemar(b, a)[2] == pytest.approx(2 / 32)
    # equal counts and no discordant images: p = 1
    assert mcnemar(*flags(10, 3, 3, 0))[2] == 1.0
    assert mcnemar(*flags(10, 0, 0, 5))[2] == 1.0


def test_mcnemar_large_n_does_not_overflow() -> None:
    a, b = flags(6000, 2100, 1900, 0)  # 10,000 images, 4,000 discordant
    _, _, p = mcnemar(a, b)
    # normal approximation: z = (2100 - 2000) / sqrt(4000 / 4) = 3.16 -> p ~ 0.0016
    assert 0.0008 < p < 0.003


def test_paired_bootstrap_interval_matches_the_normal_approximation() -> None:
    a, b = flags(600, 60, 40, 300)  # diff = 2 points; per-image sd of the difference sqrt(0.0996)
    diff, low, high = paired_bootstrap(a, b, n_boot=4000, seed=1)
    half = 1.96 * np.sqrt(0.0996 / 1000) * 100  # 1.956 points
    assert diff == pytest.approx(2.0)
    assert low == pytest.approx(2.0 - half, abs=0.3) and high == pytest.approx(2.0 + half, abs=0.3)


def test_degenerate_cases_and_verdicts() -> None:
    same = compare_paired(*flags(70, 0, 0, 30))
    assert (same.difference, same.ci_low, same.ci_high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert same.verdict("MAE", "random").startswith("tie")
    better = compare_paired(*flags(500, 300, 100, 100))
    assert better.significant() and better.verdict("MAE", "random").startswith("MAE beats random")
    worse = compare_paired(*flags(500, 100, 300, 100))
    assert worse.verdict("MAE", "random").startswith("random beats MAE")
    with pytest.raises(ValueError, match="same images"):
        mcnemar(np.ones(3, bool), np.ones(4, bool))


def test_packed_correctness_round_trips() -> None:
    import json

    import torch

    from maelab.eval.stats import pack_correct, unpack_correct

    rng = np.random.default_rng(0)
    for n in (0, 1, 7, 8, 9, 10_000):
        flags = rng.random(n) < 0.7
        packed = json.loads(json.dumps(pack_correct(flags)))  # survives a JSON report
        assert packed["n"] == n and len(packed["bits"]) <= 4 * ((n + 7) // 8 + 2) // 3
        back = unpack_correct(packed)
        assert back.dtype == bool and np.array_equal(back, flags)
    assert np.array_equal(unpack_correct(pack_correct(torch.tensor([True, False, True]))), [True, False, True])
    with pytest.raises(ValueError, match="cannot hold"):
        unpack_correct({"n": 17, "bits": pack_correct(np.ones(8, bool))["bits"]})


def test_seed_spread_by_hand() -> None:
    # [1, 2, 3]: mean 2, SD 1, 95% t-interval 2 +- t(2) 1 / sqrt(3) with t(2) = 4.303.
    s = seed_spread([1.0, 2.0, 3.0])
    assert (s.n, s.mean, s.sd) == (3, 2.0, 1.0)
    assert s.ci_low == pytest.approx(2 - 4.303 / math.sqrt(3)) and s.ci_high == pytest.approx(2 + 4.303 / math.sqrt(3))
    assert not s.excludes_zero()
    assert seed_spread([5.0, 6.0, 7.0]).excludes_zero()
    one = seed_spread([4.0])
    assert (one.n, one.mean, one.sd, one.ci_low) == (1, 4.0, None, None) and not one.excludes_zero()


def test_pooled_paired_bootstrap_by_hand() -> None:
    # Per image, the difference averaged over 2 seeds: seed 1 gives [+1, 0, 0, -1], seed 2 [0, 0, +1, 0], so
    # d = [0.5, 0, 0.5, -0.5], mean 0.125: +12.5 points, the mean of the per-seed differences (0 and +25).
    a = [np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0])]
    b = [np.array([0, 1, 0, 1]), np.array([1, 0, 0, 0])]
    diff, low, high = pooled_paired_bootstrap(a, b, n_boot=2000, seed=3)
    assert diff == pytest.approx(12.5)
    # A resample's mean lies in [-50, +50] (all four draws image 3, or all images 0 or 2). +50 is 1/16 of the
    # resamples ((2/4)^4, more than the top 2.5%), so it is the upper end; 47/256 of them are below 0.
    assert high == pytest.approx(50.0) and -50.0 <= low < 0.0
    # Pooled per image, not per seed: A wins image 0 and loses image 1 in seed 1, the reverse in seed 2, so every
    # image's d is 0 and so is every resample (8 images side by side would give a wide interval instead).
    assert pooled_paired_bootstrap([[True, False], [False, True]], [[False, True], [True, False]]) == (0.0, 0.0, 0.0)


def test_pooled_paired_bootstrap_of_one_seed_is_the_paired_bootstrap() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.random(500) < 0.6, rng.random(500) < 0.5
    one = paired_bootstrap(a, b, n_boot=1000, seed=7)
    assert pooled_paired_bootstrap([a], [b], n_boot=1000, seed=7) == one
    # Two identical seeds: the same per-image d, so the same resamples and the same interval.
    assert pooled_paired_bootstrap([a, a], [b, b], n_boot=1000, seed=7) == pytest.approx(one)


def test_pooled_paired_bootstrap_refuses_different_images_or_seeds() -> None:
    four, three = np.ones(4, bool), np.ones(3, bool)
    with pytest.raises(ValueError, match=r"same, non-empty set of images: A has \[4, 3\] images per seed, B \[4, 4\]"):
        pooled_paired_bootstrap([four, three], [four, four])  # seed 2 scored on other images
    with pytest.raises(ValueError, match="same, non-empty set of images"):
        pooled_paired_bootstrap([four], [three])
    with pytest.raises(ValueError, match=r"same, non-zero number of seeds: 2 vs 1"):
        pooled_paired_bootstrap([four, four], [four])
    with pytest.raises(ValueError, match=r"number of seeds: 0 vs 0"):
        pooled_paired_bootstrap([], [])


def test_t_p_value_by_hand_and_against_the_quantile_table() -> None:
    # df 1 is the Cauchy law: P(|T| >= 1) = 1/2; df 2 has P(|T| >= t) = 1 - t / sqrt(2 + t^2).
    assert t_two_sided_p(1.0, 1) == pytest.approx(0.5)
    assert t_two_sided_p(2.0, 2) == pytest.approx(1 - 2 / math.sqrt(6))
    assert t_two_sided_p(0.0, 7) == pytest.approx(1.0)
    assert t_two_sided_p(-3.0, 5) == t_two_sided_p(3.0, 5)
    # The 95% quantiles used for every seed interval give p = 0.05 (table values are rounded to 3 decimals).
    for df, t in enumerate(T_975, start=1):
        assert t_two_sided_p(t, df) == pytest.approx(0.05, abs=3e-4), df
    assert t_two_sided_p(10.0, 8) < 1e-4 < t_two_sided_p(3.0, 8) < 0.05
    with pytest.raises(ValueError, match="df"):
        t_two_sided_p(1.0, 0)
    with pytest.raises(ValueError, match="finite"):
        t_two_sided_p(float("nan"), 3)


def test_t_test_p_is_the_test_behind_the_seed_interval() -> None:
    # [1, 2, 3]: mean 2, SD 1, t = 2 / (1 / sqrt 3) on 2 degrees of freedom.
    t = 2 * math.sqrt(3)
    assert t_test_p([1.0, 2.0, 3.0]) == pytest.approx(1 - t / math.sqrt(2 + t * t))
    for values in ([0.3, 1.1, 0.8], [-2.0, 0.5, 1.0, 0.2], [1.5, 1.6, 1.4, 1.7, 1.2]):
        inside = not seed_spread(values).excludes_zero()
        assert (t_test_p(values) >= 0.05) == inside
    assert t_test_p([1.0]) is None
    assert t_test_p([2.0, 2.0]) == 0.0 and t_test_p([0.0, 0.0]) == 1.0


def test_holm_adjust_by_hand() -> None:
    # Sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> non-decreasing 0.02, 0.03, 0.06, 0.06.
    assert holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_adjust([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm_adjust([]) == []

"""Weighted k-nearest-neighbour classification of frozen features, as in DINO (Caron et al. 2021).

Features are L2-normalised so the dot product is the cosine similarity; each test image takes its
k most similar training images, and each neighbour votes for its class with weight exp(sim / T).
All k share one top-k search (the largest k), and test rows go in chunks so that a
(chunk, N_train) similarity block is all that is ever held in memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

DEFAULT_KS = (10, 20, 200)
DEFAULT_TEMPERATURE = 0.07
PAIRED_K = 20  # DINO's headline k: paired comparisons use it when it was evaluated


def knn_class_scores(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    num_classes: int,
    ks: Sequence[int] = DEFAULT_KS,
    temperature: float = DEFAULT_TEMPERATURE,
    chunk_size: int = 0,
) -> dict[int, torch.Tensor]:
    """Class scores {k: (M, num_classes)} = sum over the k nearest neighbours of exp(cos / T) * onehot.

    train_features (N, D), train_labels (N,) int, test_features (M, D); features need not be
    normalised. k larger than N is clipped to N. ``chunk_size`` test rows at a time (0 = automatic,
    about 2**25 elements per block).
    """
    if not ks or min(ks) < 1:
        raise ValueError(f"k must be >= 1, got {list(ks)}")
    device = train_features.device
    train = F.normalize(train_features.float(), dim=1)
    test = F.normalize(test_features.float().to(device), dim=1)
    labels = train_labels.to(device).long()
    n_train = train.shape[0]
    k_max = min(max(ks), n_train)
    # Two (chunk, ...) blocks dominate memory: similarities (chunk, N) and votes (chunk, k_max, C).
    chunk = chunk_size or max(1, (1 << 25) // max(n_train, k_max * num_classes, 1))
    scores = {k: torch.zeros(test.shape[0], num_classes, device=device) for k in ks}
    for start in range(0, test.shape[0], chunk):
        sim = test[start : start + chunk] @ train.T  # (chunk, N) cosine similarities
        top_sim, top_idx = sim.topk(k_max, dim=1)  # sorted, most similar first
        weights = (top_sim / temperature).exp()  # (chunk, k_max)
        votes = F.one_hot(labels[top_idx], num_classes).float() * weights.unsqueeze(-1)  # (chunk, k_max, C)
        cumulative = votes.cumsum(dim=1)  # scores of every k at once
        for k in ks:
            scores[k][start : start + chunk] = cumulative[:, min(k, k_max) - 1]
    return scores


def knn_correct(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    ks: Sequence[int] = DEFAULT_KS,
    temperature: float = DEFAULT_TEMPERATURE,
    num_classes: int | None = None,
    chunk_size: int = 0,
) -> dict[int, torch.Tensor]:
    """Per-test-image correctness {k: (M,) bool, on the CPU} of the weighted k-NN vote.

    Shapes as :func:`knn_class_scores`, test_labels (M,). These flags, not just their mean, are what a
    paired comparison of two encoders on the same test images needs (see ``maelab.eval.stats``).
    """
    c = num_classes or int(max(train_labels.max(), test_labels.max())) + 1
    scores = knn_class_scores(train_features, train_labels, test_features, c, ks, temperature, chunk_size)
    truth = test_labels.to(train_features.device)
    return {k: (s.argmax(dim=1) == truth).cpu() for k, s in scores.items()}


def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    ks: Sequence[int] = DEFAULT_KS,
    temperature: float = DEFAULT_TEMPERATURE,
    num_classes: int | None = None,
    chunk_size: int = 0,
) -> dict[int, float]:
    """Top-1 accuracy (in %) of the weighted k-NN vote for each k. Shapes as :func:`knn_class_scores`."""
    correct = knn_correct(train_features, train_labels, test_features, test_labels, ks, temperature, num_classes,
                          chunk_size)  # fmt: skip
    return {k: 100.0 * flags.float().mean().item() for k, flags in correct.items()}

"""Like-for-like, paired judgments of ``maelab compare``: who beats whom, and by how much beyond noise.

Every test is one protocol at one pooling ("k-NN cls", "linear probe mean", ..., "fine-tune"), and two
encoders are only ever compared within a test: never one encoder's best pooling against another's,
which would credit a pooling chosen on the test set. All encoders are scored on the same test
images, so "A beats B" is decided by the paired statistics of :mod:`maelab.eval.stats` on the
per-image flags the stages keep: exact McNemar p < 0.05 and a 95% paired-bootstrap interval of the
difference that excludes 0. Anything else is a tie, reported with its interval.

Results written by an older maelab hold no per-image flags; those fall back to the unpaired rule
(:func:`maelab.eval.results.versus`: a difference beyond twice its binomial standard error), and
the text says so. :class:`Score` and :func:`judge` serve the mask-ratio sweep's sentences too.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from maelab.eval.features import POOLINGS
from maelab.eval.paired import RANDOM_LABEL
from maelab.eval.results import markdown_table, versus
from maelab.eval.stats import PairedComparison, compare_paired, unpack_correct

UNPAIRED_NOTE = "unpaired 2-SE rule: no per-image results stored (written by an older maelab)"
RULE = (
    "paired on the same {n} test images: a win needs an exact McNemar p < 0.05 and a 95% paired-bootstrap "
    "interval of the difference that excludes 0; otherwise it is a tie; every comparison is at the same pooling"
)


@dataclass(frozen=True)
class Score:
    """One encoder's result in one test: top-1 (%) and its packed (N,) per-image flags (None if not stored)."""

    accuracy: float
    correct: dict[str, Any] | None = None


@dataclass(frozen=True)
class Judgment:
    """A vs B in one test: the winner's name (None for a tie), a sentence with the numbers, the numbers
    alone (difference A - B in points, 95% CI, McNemar p), and whether the paired statistics decided it."""

    winner: str | None
    text: str
    numbers: str
    paired: bool

    @property
    def cell(self) -> str:
        """A table cell: the numbers and the winner (or "tie")."""
        return f"{self.numbers}: {self.winner or 'tie'}"


def tests(frozen: dict[str, Any], finetuned: dict[str, Any]) -> dict[str, dict[str, Score]]:
    """{test: {encoder label: Score}}: "k-NN cls", "k-NN mean", "linear probe cls", "linear probe mean"
    (from the frozen stage) and "fine-tune" (when fine-tuned)."""
    out: dict[str, dict[str, Score]] = {}
    for title, key in (("k-NN", "knn"), ("linear probe", "linear")):
        flags = frozen.get(f"{key}_correct", {})
        for p in POOLINGS:
            out[f"{title} {p}"] = {
                label: Score(accs[p], flags.get(label, {}).get(p)) for label, accs in frozen[key].items() if p in accs
            }
    if finetuned:
        out["fine-tune"] = {label: Score(r["top1"], r.get("test_correct")) for label, r in finetuned.items()}
    return out


@functools.lru_cache(maxsize=256)
def _paired(bits_a: str, n_a: int, bits_b: str, n_b: int) -> PairedComparison:
    # Cached: the table and the sentences ask for the same pairs, and the bootstrap is the costly part.
    return compare_paired(unpack_correct({"n": n_a, "bits": bits_a}), unpack_correct({"n": n_b, "bits": bits_b}))


def paired(a: Score, b: Score) -> PairedComparison | None:
    """The paired comparison of two scores on the same images, or None without per-image flags for both."""
    if a.correct is None or b.correct is None or a.correct["n"] != b.correct["n"]:
        return None
    return _paired(a.correct["bits"], int(a.correct["n"]), b.correct["bits"], int(b.correct["n"]))


def judge(name_a: str, a: Score, name_b: str, b: Score, n: int) -> Judgment:
    """A vs B by the paired statistics, or by the unpaired 2-SE rule (said so) when flags are missing."""
    r = paired(a, b)
    if r is None:
        winner, text = versus(name_a, a.accuracy, name_b, b.accuracy, n)
        numbers = f"{a.accuracy - b.accuracy:+.2f} (unpaired)"
        return Judgment(winner, f"{text} ({UNPAIRED_NOTE})", numbers, False)
    winner = (name_a if r.difference > 0 else name_b) if r.significant() else None
    numbers = f"{r.difference:+.2f} [{r.ci_low:+.2f}, {r.ci_high:+.2f}], p = {r.p_value:.2g}"
    return Judgment(winner, r.verdict(name_a, name_b), numbers, True)


def comparison_columns(labels: list[str], reference: str | None = None) -> list[tuple[str, str]]:
    """The (A, B) pairs of the paired table: MAE vs DINO, each trained encoder vs random init, and the
    equal-time run vs the method it was timed against (``reference``)."""
    trained = [label for label in labels if label != RANDOM_LABEL]
    pairs = [("MAE", "DINO")] if {"MAE", "DINO"} <= set(trained) else []
    pairs += [(label, RANDOM_LABEL) for label in trained if RANDOM_LABEL in labels]
    extra = [label for label in trained if label not in ("MAE", "DINO")]
    if reference and extra:
        pairs += [(label, reference) for label in extra]
    return pairs


def paired_table(scores: dict[str, dict[str, Score]], pairs: list[tuple[str, str]], n: int) -> str:
    """Markdown: one row per test, one column per pair: difference A - B in points, 95% CI, McNemar p, winner."""
    headers = ["test (same pooling)"] + [f"{a} - {b}" for a, b in pairs]
    cells = [
        [test] + [judge(a, s[a], b, s[b], n).cell if a in s and b in s else "-" for a, b in pairs]
        for test, s in scores.items()
    ]
    return markdown_table(headers, cells, align="l")


def all_paired(scores: dict[str, dict[str, Score]]) -> bool:
    """Whether every score holds its per-image flags (else some judgments use the unpaired rule)."""
    return all(s.correct is not None for by_label in scores.values() for s in by_label.values())

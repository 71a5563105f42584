"""Holm's correction over the pairs a report over seeds tests: adjusted p per pair, and decided verdicts say
whether they hold."""

from __future__ import annotations

import pytest

from maelab.eval.stats import t_two_sided_p
from maelab.experiments.seeds_holm import decided_line, holm_count, mark_holm


def test_holm_marks_decided_verdicts_over_the_pairs_a_report_tests() -> None:
    def pair(diffs: list[float], winner: str | None) -> dict:
        return {"per_seed": [{"difference": d} for d in diffs], "winner": winner, "text": "verdict"}

    # per-seed differences -> t = mean / (SD / sqrt 3) on 2 degrees of freedom:
    # strong [2, 2.1, 1.9]: t = 20 sqrt 3; middle [1, 2, 3]: t = 2 sqrt 3; weak [0.1, 2, 0.6]: t ~ 1.58 (a tie).
    strong, middle, weak = pair([2.0, 2.1, 1.9], "A"), pair([1.0, 2.0, 3.0], "A"), pair([0.1, 2.0, 0.6], None)
    repeat = pair([1.0, 2.0, 3.0], "A")  # the same checkpoints as `middle`, not counted again
    family = [strong, middle, weak]
    mark_holm([*family, repeat], family)
    p_strong, p_middle = t_two_sided_p(20 * 3**0.5, 2), t_two_sided_p(2 * 3**0.5, 2)
    assert p_middle == pytest.approx(1 - 2 * 3**0.5 / 14**0.5)
    assert strong["holm"] == {"p": pytest.approx(p_strong), "adjusted_p": pytest.approx(3 * p_strong), "family": 3}
    assert middle["holm"]["adjusted_p"] == pytest.approx(2 * p_middle) == repeat["holm"]["adjusted_p"]
    assert strong["text"] == f"verdict; Holm over the report's 3 pairs: holds (adjusted p {3 * p_strong:.2g})"
    assert middle["text"] == f"verdict; Holm over the report's 3 pairs: does not hold (adjusted p {2 * p_middle:.2g})"
    assert weak["text"] == "verdict" and "holm" in weak  # a tie is not annotated, but its p is kept
    assert holm_count(family) == ", 1 of them also after a Holm correction over the report's 3 pairs"
    assert holm_count([weak]) == ""
    # A section's "Decided:" line: 2 of the 3 decided (strong, middle), 1 of them holds; a report's note at the end.
    holm = "1 of them also after a Holm correction over the report's 3 pairs"
    assert decided_line(family, "; a note") == f"Decided: 2 of 3 pairs, {holm}; a note."
    assert decided_line([weak]) == "Decided: 0 of 1 pairs."  # nothing decided: no Holm tail
    # A pair outside the family with a p below all of the family's: Bonferroni over the family (3 p, at most 1).
    lone = pair([5.0, 5.01, 4.99], "A")
    mark_holm([lone], family)
    assert lone["holm"]["adjusted_p"] == pytest.approx(min(1.0, 3 * lone["holm"]["p"]))
    mark_holm([lone], [])  # an empty family never yields adjusted p 0
    assert lone["holm"]["adjusted_p"] == pytest.approx(lone["holm"]["p"])

"""The promotion rule: when a challenger program replaces the champion."""

from __future__ import annotations

from delegation.core.reoptimization import EvaluateResult, Scores


def promotion_verdict(scores: EvaluateResult, margin: float) -> tuple[bool, str]:
    """Promote only when the challenger gains at least ``margin`` dev accuracy (and some), is not
    worse on test, and does not fail more often (dev and test pooled)."""
    challenger, champion = scores.challenger, scores.champion
    gain = challenger.dev_accuracy - champion.dev_accuracy
    comparison = (
        f"dev accuracy {challenger.dev_accuracy:.3f} vs champion {champion.dev_accuracy:.3f} ({gain:+.3f}), "
        f"test {challenger.test_accuracy:.3f} vs {champion.test_accuracy:.3f}"
    )
    if gain <= 0 or gain < margin:
        return False, f"{comparison}: the dev gain is below the margin {margin:.3f}"
    if challenger.test_accuracy < champion.test_accuracy:
        return False, f"{comparison}: worse on test"
    challenger_errors = _pooled_error_rate(challenger)
    champion_errors = _pooled_error_rate(champion)
    if challenger_errors > champion_errors:
        return False, f"{comparison}: error rate {challenger_errors:.1%} is worse than {champion_errors:.1%}"
    return (
        True,
        f"{comparison}, error rate {challenger_errors:.1%} vs {champion_errors:.1%}: beats the margin {margin:.3f}",
    )


def _pooled_error_rate(scores: Scores) -> float:
    n = scores.dev_n + scores.test_n
    return (scores.dev_error_rate * scores.dev_n + scores.test_error_rate * scores.test_n) / n if n else 0.0

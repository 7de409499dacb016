"""The promotion rule of the re-optimization: margin on dev, no loss on test, no more errors."""

from __future__ import annotations

import pytest

from delegation.core.reoptimization import EvaluateResult, Scores
from delegation.learning.promotion import promotion_verdict


def scores(dev: float, test: float, dev_err: float = 0.0, test_err: float = 0.0, version: str = "v") -> Scores:
    return Scores(
        version=version,
        dev_accuracy=dev,
        dev_error_rate=dev_err,
        test_accuracy=test,
        test_error_rate=test_err,
        dev_n=60,
        test_n=60,
    )


def verdict(challenger: Scores, champion: Scores, margin: float = 0.02) -> tuple[bool, str]:
    return promotion_verdict(EvaluateResult(challenger=challenger, champion=champion), margin)


def test_promotes_when_dev_gain_meets_the_margin_and_nothing_gets_worse() -> None:
    promoted, reason = verdict(scores(0.60, 0.62), scores(0.55, 0.60))
    assert promoted
    assert "dev accuracy 0.600 vs champion 0.550 (+0.050)" in reason


@pytest.mark.parametrize(
    ("challenger", "champion", "why"),
    [
        (scores(0.56, 0.70), scores(0.55, 0.60), "below the margin 0.020"),
        (scores(0.55, 0.70), scores(0.55, 0.60), "below the margin 0.020"),
        (scores(0.70, 0.58), scores(0.55, 0.60), "worse on test"),
        (scores(0.70, 0.70, dev_err=0.05), scores(0.55, 0.60, dev_err=0.0), "error rate 2.5% is worse than 0.0%"),
    ],
)
def test_rejects_with_the_reason(challenger: Scores, champion: Scores, why: str) -> None:
    promoted, reason = verdict(challenger, champion)
    assert not promoted
    assert why in reason


def test_a_zero_margin_still_needs_a_gain() -> None:
    assert not verdict(scores(0.55, 0.60), scores(0.55, 0.60), margin=0.0)[0]
    assert verdict(scores(0.56, 0.60), scores(0.55, 0.60), margin=0.0)[0]

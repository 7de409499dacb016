"""The re-optimization's promotion step, run once in a process of its own: ``python -m tests.support.promote_challenger
CHALLENGER CHAMPION``.

It calls the real ``decide_promotion`` activity (in temporalio's ``ActivityEnvironment``) on the
store ``DATABASE_URL`` names, with scores that pass the promotion rule, and prints the result.
The LLM and the dataset are never touched by this step, so none is configured.
"""

from __future__ import annotations

import asyncio
import sys

from temporalio.testing import ActivityEnvironment

from delegation.activities.reoptimization import ReoptimizationActivities
from delegation.core.reoptimization import EvaluateResult, PromotionInput, Scores
from delegation.core.settings import get_settings
from delegation.learning.dataset import DEFAULT_DATASET
from delegation.learning.registry import ArtifactRegistry
from delegation.learning.training_set import TrainingSetStore
from delegation.store.database import database_for
from delegation.store.decisions import DecisionStore


def _scores(version: str, accuracy: float) -> Scores:
    return Scores(
        version=version,
        dev_accuracy=accuracy,
        dev_error_rate=0.0,
        test_accuracy=accuracy,
        test_error_rate=0.0,
        dev_n=80,
        test_n=76,
    )


def main(challenger: int, champion: int) -> None:
    settings = get_settings()
    database = database_for(settings)
    activities = ReoptimizationActivities(
        store=DecisionStore(database, settings.decision_log_path),
        registry=ArtifactRegistry(database),
        training_sets=TrainingSetStore(database, DEFAULT_DATASET),
        lm=None,  # type: ignore[arg-type]  # promotion makes no LLM call
        endpoint=None,  # type: ignore[arg-type]
        dataset=DEFAULT_DATASET,
        margin=0.02,
        review_confidence_below=0.5,
    )
    scores = EvaluateResult(challenger=_scores(f"v{challenger}", 0.9), champion=_scores(f"v{champion}", 0.8))
    request = PromotionInput(
        run_key="concurrency-test", challenger_version=challenger, champion_version=champion, scores=scores
    )
    result = asyncio.run(ActivityEnvironment().run(activities.decide_promotion, request))
    print(result.model_dump_json())


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))

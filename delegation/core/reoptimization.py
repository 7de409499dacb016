"""Wire models of the closed loop: ``ReoptimizeDelegationWorkflow``, its activities and its schedule.

Standard library and pydantic only: workflow code imports this module.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

ReoptimizationOutcome = Literal["promoted", "rejected", "no_new_failures", "no_new_examples"]


class ReoptimizeInput(BaseModel):
    """Options of one re-optimization run; every field has a sensible default for the schedule."""

    model_config = ConfigDict(frozen=True)

    since: AwareDatetime | None = Field(
        default=None, description="Collect feedback that arrived after this; default: where the last run stopped."
    )
    margin: float | None = Field(
        default=None, ge=0, le=1, description="Dev accuracy the challenger must gain; default REOPTIMIZE_MARGIN."
    )


class FailedDecisionRef(BaseModel):
    """A failed decision with the assignee that was correct: one future training example."""

    model_config = ConfigDict(frozen=True)

    workflow_id: str
    run_id: str
    task_id: str
    correct_assignee_id: str


class ReviewItem(BaseModel):
    """A decision a person should look at (not trained on): a fallback, or low confidence without feedback."""

    model_config = ConfigDict(frozen=True)

    workflow_id: str
    task_id: str
    reason: str


class CollectInput(BaseModel):
    """The window to collect failed decisions in; ``since=None`` means since the last finished run."""

    model_config = ConfigDict(frozen=True)

    since: AwareDatetime | None
    until: AwareDatetime


class CollectResult(BaseModel):
    """Failed decisions to train on, and the ones listed for review only."""

    model_config = ConfigDict(frozen=True)

    since: AwareDatetime | None
    until: AwareDatetime
    failed: list[FailedDecisionRef]
    failed_without_assignee: int = Field(ge=0, description="Failed decisions whose feedback names no assignee.")
    review: list[ReviewItem]
    review_total: int = Field(ge=0, description="All review items; ``review`` holds at most the first 50.")
    champion_version: int | None = Field(description="The champion when the run collected.")


class TrainingSetInput(BaseModel):
    """The failed decisions to append to the training set."""

    model_config = ConfigDict(frozen=True)

    run_key: str
    failed: list[FailedDecisionRef]


class TrainingSetResult(BaseModel):
    """The versioned training set the challenger is optimized on."""

    model_config = ConfigDict(frozen=True)

    version: int = Field(ge=0, description="0 is the shipped dataset's train split alone.")
    path: str = Field(description="Where it is: the shipped dataset file (version 0), or the version in the store.")
    sha256: str
    train_size: int = Field(ge=0)
    added: int = Field(ge=0)
    duplicates: int = Field(ge=0, description="Examples skipped because their text is already in some split.")
    redactions: int = Field(ge=0, description="Personal data and credentials replaced in the added examples.")


class ChallengerInput(BaseModel):
    """What to optimize the challenger on, and from which champion's configuration."""

    model_config = ConfigDict(frozen=True)

    run_key: str
    training_set: TrainingSetResult
    champion_version: int | None


class ChallengerResult(BaseModel):
    """The challenger written to the registry as a candidate."""

    model_config = ConfigDict(frozen=True)

    version: int
    optimizer: str
    optimizer_params: dict[str, int | float | str]
    base_dev_score: float
    optimized_dev_score: float
    reused: bool = Field(description="True when a retry found the version an earlier attempt wrote.")


class Scores(BaseModel):
    """One program's accuracy and error rate on the dev and test splits."""

    model_config = ConfigDict(frozen=True)

    version: str
    dev_accuracy: float
    dev_error_rate: float
    test_accuracy: float
    test_error_rate: float
    dev_n: int
    test_n: int


class EvaluateInput(BaseModel):
    """The two programs to compare on the same examples."""

    model_config = ConfigDict(frozen=True)

    challenger_version: int
    champion_version: int | None


class EvaluateResult(BaseModel):
    """Challenger and champion scores on the same dev and test examples."""

    model_config = ConfigDict(frozen=True)

    challenger: Scores
    champion: Scores


class PromotionInput(BaseModel):
    """The comparison to decide on."""

    model_config = ConfigDict(frozen=True)

    run_key: str
    challenger_version: int
    champion_version: int | None
    scores: EvaluateResult
    margin: float | None = None


class PromotionResult(BaseModel):
    """Whether the challenger became champion, and why (or why not)."""

    model_config = ConfigDict(frozen=True)

    promoted: bool
    reason: str
    margin: float
    champion_version: int | None


class ReoptimizeReport(BaseModel):
    """What a re-optimization run did; also the workflow's result and its final memo."""

    model_config = ConfigDict(frozen=True)

    run_key: str
    outcome: ReoptimizationOutcome
    reason: str
    since: AwareDatetime | None
    until: AwareDatetime
    collected: int = Field(ge=0, description="Failed decisions with a correct assignee in the window.")
    failed_without_assignee: int = 0
    review: list[ReviewItem] = Field(default_factory=list)
    review_total: int = 0
    training_set: TrainingSetResult | None = None
    challenger: ChallengerResult | None = None
    scores: EvaluateResult | None = None
    champion_before: int | None = None
    champion_after: int | None = None
    new_version: int | None = Field(default=None, description="The challenger's version, promoted or rejected.")


class FinishInput(BaseModel):
    """The report to remember, so the next run collects from where this one stopped."""

    model_config = ConfigDict(frozen=True)

    report: ReoptimizeReport


class FinishResult(BaseModel):
    """Whether this attempt stored the run (False on a retried duplicate)."""

    model_config = ConfigDict(frozen=True)

    stored: bool

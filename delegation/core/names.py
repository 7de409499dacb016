"""Every name other processes, recorded histories and deployments depend on, defined once.

Workflow, activity and query names are part of every recorded history: never rename a value
here. Task queues and the schedule id are defaults; the settings can move the queues.
Standard library only: workflow modules, clients in any process and the settings import it.
"""

from __future__ import annotations

# ---- workflows and their queries ---------------------------------------------------------------
DELEGATION_WORKFLOW = "DelegationWorkflow"
FEEDBACK_WORKFLOW = "RecordFeedbackWorkflow"
REOPTIMIZE_WORKFLOW = "ReoptimizeDelegationWorkflow"
DECISION_QUERY = "decision"
PROGRESS_QUERY = "progress"

# ---- activities -------------------------------------------------------------------------------
READ_FEATURE_FLAGS = "read_feature_flags"
DECIDE_WITH_INSTRUCTOR = "decide_with_instructor"
DECIDE_WITH_DSPY = "decide_with_dspy"
RECORD_DECISION = "record_decision"
RECORD_FEEDBACK = "record_feedback"
COLLECT_FAILED_DECISIONS = "collect_failed_decisions"
EXTEND_TRAINING_SET = "extend_training_set"
OPTIMIZE_CHALLENGER = "optimize_challenger"
EVALUATE_PROGRAMS = "evaluate_programs"
DECIDE_PROMOTION = "decide_promotion"
FINISH_REOPTIMIZATION = "finish_reoptimization"

# ---- task queues (defaults of TEMPORAL_TASK_QUEUE and REOPTIMIZATION_TASK_QUEUE) ----------------
DEFAULT_TASK_QUEUE = "delegation"
# Optimization is long and CPU-bound: its own queue, so decisions never wait behind it.
DEFAULT_REOPTIMIZATION_TASK_QUEUE = "delegation-reoptimization"

# ---- the monthly schedule ---------------------------------------------------------------------
SCHEDULE_ID = "delegation-reoptimization-monthly"
SCHEDULED_WORKFLOW_ID_PREFIX = "delegation-reoptimization"
"""Prefix of the scheduled runs' workflow ids; Temporal appends ``-<scheduled time>``."""

# ---- workflow ids -----------------------------------------------------------------------------
DECISION_WORKFLOW_ID_PREFIX = "delegation-"
FEEDBACK_WORKFLOW_ID_PREFIX = "feedback-"


def workflow_id_for(task_id: str) -> str:
    """The id of the decision workflow for a task: one decision per task (``delegation-<task_id>``)."""
    return f"{DECISION_WORKFLOW_ID_PREFIX}{task_id}"


# ---- the embedded model -----------------------------------------------------------------------
EMBEDDED_MODEL_NAME = "qwen2.5-coder-1.5b-instruct"
"""The name the embedded llama.cpp server serves the model under, and the deciders ask for."""

# workflow.patched() ids: recorded histories from before a change replay along the old path.
STEERING_SEARCH_ATTRIBUTE_PATCH = "steering-search-attribute"

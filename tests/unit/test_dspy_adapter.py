"""The DSPy prompt is kept short: no per-call format reminder, one-line demo answers, no repeated team list."""

from __future__ import annotations

import json

from core.team import default_team
from ml.dspy_modules import SAME_CANDIDATES, DelegationJSONAdapter, DelegationSignature
from ml.policy import format_candidates, format_task
from tests.support.factories import CUSTOM_TEAM

TEAM = format_candidates(default_team())
OTHER_TEAM = format_candidates(CUSTOM_TEAM)


def demo(candidates: str, title: str, assignee: str) -> dict:
    return {
        "candidates": candidates,
        "task": format_task(title, "", "normal"),
        "assignee_id": assignee,
        "confidence": 0.9,
        "reasoning": "Rule 2: invoice payment.",
    }


def render(inputs_team: str, demos: list[dict]) -> list[dict]:
    inputs = {"candidates": inputs_team, "task": format_task("Pay the invoice", "", "normal")}
    return DelegationJSONAdapter().format(DelegationSignature, demos, inputs)


def test_a_demo_with_the_request_candidates_points_to_them_instead_of_repeating_them() -> None:
    messages = render(TEAM, [demo(TEAM, "Refund Ana", "finance-manager"), demo(OTHER_TEAM, "Ship it", "self")])
    first_demo, second_demo, request = messages[1]["content"], messages[3]["content"], messages[-1]["content"]
    assert SAME_CANDIDATES in first_demo and TEAM not in first_demo
    assert OTHER_TEAM in second_demo  # a different list is shown in full
    assert TEAM in request
    assert sum(TEAM in m["content"] for m in messages) == 1


def test_demos_are_shown_in_full_when_the_request_has_other_candidates() -> None:
    messages = render(OTHER_TEAM, [demo(TEAM, "Refund Ana", "finance-manager")])
    assert TEAM in messages[1]["content"] and SAME_CANDIDATES not in messages[1]["content"]


def test_demo_answers_are_one_line_json_and_there_is_no_format_reminder() -> None:
    messages = render(TEAM, [demo(TEAM, "Refund Ana", "finance-manager")])
    answer = messages[2]["content"]
    assert "\n" not in answer
    assert json.loads(answer) == {"assignee_id": "finance-manager", "confidence": 0.9,
                                  "reasoning": "Rule 2: invoice payment."}
    assert "Respond with" not in messages[-1]["content"]
    assert messages[-1]["content"].rstrip().endswith("</task>")


def test_the_fixed_prefix_is_identical_across_requests_with_the_same_candidates() -> None:
    demos = [demo(TEAM, "Refund Ana", "finance-manager")]
    a = DelegationJSONAdapter().format(DelegationSignature, demos, {"candidates": TEAM, "task": "<task>a</task>"})
    b = DelegationJSONAdapter().format(DelegationSignature, demos, {"candidates": TEAM, "task": "<task>b</task>"})
    assert a[:-1] == b[:-1]
    assert a[-1]["content"].split("[[ ## task ## ]]")[0] == b[-1]["content"].split("[[ ## task ## ]]")[0]

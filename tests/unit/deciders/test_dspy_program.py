"""The DSPy prompt is kept short: no per-call format reminder, one-line demo answers, no repeated team list."""

from __future__ import annotations

import json

from delegation.core.team import default_team
from delegation.deciders.dspy_program import DEFAULT_TEAM_MARK, DelegationJSONAdapter, DelegationSignature
from delegation.deciders.policy import format_candidates, format_task
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


def test_a_default_team_demo_shows_a_mark_instead_of_repeating_the_list() -> None:
    messages = render(TEAM, [demo(TEAM, "Refund Ana", "finance-manager"), demo(OTHER_TEAM, "Ship it", "self")])
    first_demo, second_demo, request = messages[1]["content"], messages[3]["content"], messages[-1]["content"]
    assert DEFAULT_TEAM_MARK in first_demo and TEAM not in first_demo
    assert OTHER_TEAM in second_demo  # another team is shown in full
    assert TEAM in request  # the request always lists its candidates
    assert sum(TEAM in m["content"] for m in messages) == 1


def test_the_demos_do_not_depend_on_the_request_candidates() -> None:
    demos = [demo(TEAM, "Refund Ana", "finance-manager"), demo(OTHER_TEAM, "Ship it", "self")]
    default_request = render(TEAM, demos)
    custom_request = render(OTHER_TEAM, demos)
    # The whole prefix (system message and demos) is the same, so the server's prompt cache
    # keeps it when requests with their own candidates come in between.
    assert default_request[:-1] == custom_request[:-1]
    assert OTHER_TEAM in custom_request[-1]["content"]


def test_demo_answers_are_one_line_json_and_there_is_no_format_reminder() -> None:
    messages = render(TEAM, [demo(TEAM, "Refund Ana", "finance-manager")])
    answer = messages[2]["content"]
    assert "\n" not in answer
    assert json.loads(answer) == {
        "assignee_id": "finance-manager",
        "confidence": 0.9,
        "reasoning": "Rule 2: invoice payment.",
    }
    assert "Respond with" not in messages[-1]["content"]
    assert messages[-1]["content"].rstrip().endswith("</task>")


def test_the_fixed_prefix_is_identical_across_requests_with_the_same_candidates() -> None:
    demos = [demo(TEAM, "Refund Ana", "finance-manager")]
    a = DelegationJSONAdapter().format(DelegationSignature, demos, {"candidates": TEAM, "task": "<task>a</task>"})
    b = DelegationJSONAdapter().format(DelegationSignature, demos, {"candidates": TEAM, "task": "<task>b</task>"})
    assert a[:-1] == b[:-1]
    assert a[-1]["content"].split("[[ ## task ## ]]")[0] == b[-1]["content"].split("[[ ## task ## ]]")[0]

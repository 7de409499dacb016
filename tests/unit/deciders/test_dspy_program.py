"""The DSPy prompt suits the prompt cache: a fixed prefix, demos as chat turns of the bare id, the request last."""

from __future__ import annotations

import json

import pytest
from dspy.utils.exceptions import AdapterParseError

from delegation.core.team import default_team
from delegation.deciders.dspy_program import DelegationSignature, LabelFirstAdapter
from delegation.deciders.policy import POLICY, format_candidates, format_task
from tests.support.factories import CUSTOM_TEAM

TEAM = format_candidates(default_team())
OTHER_TEAM = format_candidates(CUSTOM_TEAM)


def demo(candidates: str, title: str, assignee: str) -> dict:
    return {"candidates": candidates, "task": format_task(title, "", "normal"), "assignee_id": assignee}


def render(inputs_team: str, demos: list[dict], title: str = "Pay the invoice", constraint: str = "grammar") -> list:
    inputs = {"candidates": inputs_team, "task": format_task(title, "", "normal")}
    return LabelFirstAdapter(constraint).format(DelegationSignature, demos, inputs)  # type: ignore[arg-type]


DEMOS = [demo(TEAM, "Refund Ana", "finance-manager"), demo(OTHER_TEAM, "Ship it", "self")]


def test_the_system_message_holds_the_policy_and_the_default_team_once() -> None:
    messages = render(TEAM, DEMOS)
    assert messages[0]["role"] == "system"
    assert messages[0]["content"].startswith(POLICY) and TEAM in messages[0]["content"]
    assert sum(TEAM in m["content"] for m in messages) == 1  # a default-team demo or request does not repeat it


def test_demos_are_chat_turns_whose_answer_is_the_bare_id() -> None:
    messages = render(TEAM, DEMOS)
    roles = [m["role"] for m in messages]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
    assert messages[2]["content"] == "finance-manager"
    assert messages[1]["content"] == format_task("Refund Ana", "", "normal")
    assert messages[3]["content"].startswith("Candidates for this task:\n" + OTHER_TEAM)


def test_with_a_json_schema_constraint_demo_answers_are_the_one_key_object() -> None:
    messages = render(TEAM, DEMOS, constraint="json_schema")
    assert json.loads(messages[2]["content"]) == {"assignee_id": "finance-manager"}


def test_the_prefix_is_identical_for_default_team_and_custom_list_requests() -> None:
    default_request = render(TEAM, DEMOS, title="a")
    other_task = render(TEAM, DEMOS, title="b")
    custom_request = render(OTHER_TEAM, DEMOS, title="a")
    assert default_request[:-1] == other_task[:-1] == custom_request[:-1]
    # What varies comes last: the custom list first, then the task, so a list seen before is a cached prefix.
    assert custom_request[-1]["content"].startswith("Candidates for this task:\n" + OTHER_TEAM)
    assert custom_request[-1]["content"].endswith(format_task("a", "", "normal"))
    assert default_request[-1]["content"] == format_task("a", "", "normal")


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("finance-manager", {"assignee_id": "finance-manager"}),
        ("  self\n", {"assignee_id": "self"}),
        ("legal-counsel - Rule 1: contract", {"assignee_id": "legal-counsel", "reasoning": "Rule 1: contract"}),
        ('{"assignee_id": "self"}', {"assignee_id": "self"}),
        ('{"assignee_id": "self", "confidence": 0.7}', {"assignee_id": "self", "confidence": 0.7}),
    ],
)
def test_the_answer_is_parsed_back(completion: str, expected: dict) -> None:
    assert LabelFirstAdapter().parse(DelegationSignature, completion) == expected


@pytest.mark.parametrize("completion", ["", "   ", '{"who": "self"}', "{not json"])
def test_an_unreadable_answer_is_an_adapter_parse_error(completion: str) -> None:
    with pytest.raises(AdapterParseError):
        LabelFirstAdapter().parse(DelegationSignature, completion)

"""The label-first answer: its constraint, parsing, and the id's probability from token log-probabilities."""

from __future__ import annotations

import math

import pytest

from delegation.core.team import default_team
from delegation.deciders.errors import InvalidDecisionError
from delegation.deciders.label_first import (
    AnswerParseError,
    AnswerSpec,
    ParsedAnswer,
    candidate_probability,
    decision_from_answer,
    request_turn,
    user_turn,
)
from delegation.deciders.policy import format_candidates, format_task
from tests.support.factories import CUSTOM_TEAM

IDS = ("self", "backend-engineer", "it-ops-agent", "it")


def entry(token: str, p: float, alternatives: dict[str, float]) -> dict:
    tops = {token: p, **alternatives}
    return {
        "token": token,
        "logprob": math.log(p),
        "top_logprobs": [{"token": t, "logprob": math.log(q)} for t, q in tops.items()],
    }


def test_the_grammar_admits_exactly_the_ids_and_the_schema_puts_the_id_first() -> None:
    spec = AnswerSpec("grammar", ("self", "finance-manager"))
    assert spec.grammar() == 'root ::= ("self" | "finance-manager")'
    params = spec.request_params()
    assert params["extra_body"] == {"grammar": spec.grammar()} and params["logprobs"] is True
    assert params["max_tokens"] <= 16 and "response_format" not in params
    json_spec = AnswerSpec("json_schema", ("self",), generated_reason=True)
    schema = json_spec.request_params()["response_format"]["json_schema"]["schema"]
    assert list(schema["properties"]) == ["assignee_id", "reasoning"]
    assert schema["properties"]["assignee_id"]["enum"] == ["self"]


def test_a_generated_confidence_needs_a_json_schema() -> None:
    with pytest.raises(ValueError, match="json_schema"):
        AnswerSpec("grammar", ("self",), generated_confidence=True)
    params = AnswerSpec("json_schema", ("self",), generated_confidence=True).request_params()
    assert "logprobs" not in params


@pytest.mark.parametrize(
    ("text", "expected"),
    [("it-ops-agent", "it-ops-agent"), ("it", "it"), (" self", "self")],
)
def test_plain_answers_parse_to_the_longest_matching_id(text: str, expected: str) -> None:
    assert AnswerSpec("grammar", IDS).parse(text).assignee_id == expected


@pytest.mark.parametrize("text", ["ceo", "self and more", ""])
def test_a_plain_answer_that_is_no_id_is_refused(text: str) -> None:
    with pytest.raises(AnswerParseError):
        AnswerSpec("grammar", IDS).parse(text)


def test_a_json_answer_records_where_the_id_starts() -> None:
    parsed = AnswerSpec("json_schema", IDS).parse('{"assignee_id": "self"}')
    assert (parsed.assignee_id, parsed.id_offset, parsed.id_terminator) == ("self", 17, '"')


def test_the_probability_is_renormalised_over_tokens_that_spell_a_candidate() -> None:
    # "backend-engineer" in two tokens; at the first, "it" and "self" are candidates, "The" is not.
    logprobs = {
        "content": [
            entry("backend", 0.6, {"it": 0.2, "self": 0.1, "The": 0.1}),
            entry("-engineer", 0.9, {"-eng": 0.05, "er": 0.05}),
        ]
    }
    answer = AnswerSpec("grammar", IDS).parse("backend-engineer")
    # first token: 0.6 / (0.6 + 0.2 + 0.1); second: "-eng" also spells it, "er" does not.
    expected = (0.6 / 0.9) * (0.9 / 0.95)
    assert candidate_probability(logprobs, answer, IDS) == pytest.approx(expected)


def test_json_tokens_before_the_id_do_not_count_and_its_closing_quote_does() -> None:
    logprobs = {
        "content": [
            entry('{"', 1.0, {}),
            entry("assignee_id", 0.99, {"name": 0.01}),
            entry('": "', 0.97, {'":"': 0.03}),
            entry("self", 0.7, {"it": 0.2, "ceo": 0.1}),
            entry('"}', 0.9, {'"': 0.05, "ie": 0.05}),
        ]
    }
    answer = AnswerSpec("json_schema", IDS).parse('{"assignee_id": "self"}')
    # The quote says the id ends here: "ie" would spell no candidate, so it does not count.
    assert candidate_probability(logprobs, answer, IDS) == pytest.approx((0.7 / 0.9) * (0.9 / 0.95))


def test_a_token_that_straddles_the_start_of_the_id_is_read_past_its_lead() -> None:
    logprobs = {"content": [entry('{"assignee_id":"', 1.0, {}), entry('it"}', 0.5, {'self"}': 0.25, '"}': 0.25})]}
    answer = AnswerSpec("json_schema", IDS).parse('{"assignee_id":"it"}')
    assert answer.id_offset == 16
    assert candidate_probability(logprobs, answer, IDS) == pytest.approx(0.5 / 0.75)


def test_no_logprobs_or_tokens_that_do_not_spell_the_answer_give_none() -> None:
    answer = ParsedAnswer("self")
    assert candidate_probability(None, answer, IDS) is None
    assert candidate_probability({"content": []}, answer, IDS) is None
    assert candidate_probability({"content": [entry("backend", 0.9, {})]}, answer, IDS) is None


def test_a_decision_without_any_confidence_is_refused_and_an_out_of_list_id_too() -> None:
    team = default_team()
    with pytest.raises(InvalidDecisionError, match="no log-probabilities"):
        decision_from_answer(ParsedAnswer("self"), None, team)
    with pytest.raises(InvalidDecisionError, match="not one of the candidate ids"):
        decision_from_answer(ParsedAnswer("ceo"), None, team)
    with pytest.raises(InvalidDecisionError, match="not in"):
        decision_from_answer(ParsedAnswer("self", confidence="very"), None, team)
    generated = decision_from_answer(ParsedAnswer("self", confidence=85), None, team)
    assert generated.confidence == pytest.approx(0.85) and generated.confidence_source == "generated"


def test_the_request_turn_lists_custom_candidates_before_the_task_and_never_the_default_team() -> None:
    task = format_task("Ship the pallets", "", "normal")
    assert request_turn(default_team(), "Ship the pallets", "", "normal") == task
    custom = request_turn(CUSTOM_TEAM, "Ship the pallets", "", "normal")
    assert custom == user_turn(format_candidates(CUSTOM_TEAM), task)
    assert custom.index("- logistics") < custom.index("<task>")

"""The label-first answer: its constraint, parsing, and the id's probability from token log-probabilities."""

from __future__ import annotations

import math

import pytest

from delegation.core.team import default_team
from delegation.deciders.calibration import PriorCorrection
from delegation.deciders.errors import InvalidDecisionError
from delegation.deciders.label_first import (
    AnswerParseError,
    AnswerSpec,
    ParsedAnswer,
    candidate_log_scores,
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


TEAM_IDS = tuple(c.id for c in default_team())


def _team_answer(first: str, p: float, alternatives: dict[str, float], rest: list[dict] | None = None) -> tuple:
    """A grammar answer on the default team: the first token with its alternatives, then the rest of the id."""
    content = [entry(first, p, alternatives), *(rest or [])]
    text = "".join(e["token"] for e in content)
    return AnswerSpec("grammar", TEAM_IDS).parse(text), {"content": content}


def test_every_candidate_gets_its_first_token_log_probability_and_the_unreported_ones_a_bound() -> None:
    answer, logprobs = _team_answer("self", 0.5, {"legal": 0.3, "research": 0.1, "The": 0.05, "le": 0.01})
    scores = candidate_log_scores(logprobs, answer, TEAM_IDS)
    assert scores is not None and set(scores) == set(TEAM_IDS)
    assert scores["self"] == pytest.approx(math.log(0.5))
    # "legal" and "le" both begin only legal-counsel: their total.
    assert scores["legal-counsel"] == pytest.approx(math.log(0.31))
    assert scores["research-agent"] == pytest.approx(math.log(0.1))
    # Not reported: at most the smallest reported probability.
    assert scores["finance-manager"] == pytest.approx(math.log(0.01))


def test_candidates_that_share_their_first_token_are_not_told_apart() -> None:
    ids = ("self", "community-manager", "community-moderator")
    content = [entry("community", 0.7, {"self": 0.3}), entry("-manager", 1.0, {})]
    answer = AnswerSpec("grammar", ids).parse("community-manager")
    assert candidate_log_scores({"content": content}, answer, ids) is None
    # A negligible shared token ("s" begins "self" and "support") is left out instead.
    ids = ("self", "support", "legal")
    content = [entry("legal", 0.6, {"self": 0.3, "support": 0.0999, "s": 0.0001})]
    answer = AnswerSpec("grammar", ids).parse("legal")
    scores = candidate_log_scores({"content": content}, answer, ids)
    assert scores is not None and scores["support"] == pytest.approx(math.log(0.0999))


def test_json_answers_are_scored_where_the_id_starts() -> None:
    content = [
        entry('{"', 1.0, {}),
        entry("assignee_id", 1.0, {}),
        entry('": "', 1.0, {}),
        entry("backend", 0.6, {"self": 0.4}),
        entry('-engineer"}', 1.0, {}),
    ]
    answer = AnswerSpec("json_schema", TEAM_IDS).parse('{"assignee_id": "backend-engineer"}')
    scores = candidate_log_scores({"content": content}, answer, TEAM_IDS)
    assert scores is not None
    assert scores["backend-engineer"] == pytest.approx(math.log(0.6))
    assert scores["self"] == pytest.approx(math.log(0.4))


def _correction(**bias: float) -> PriorCorrection:
    return PriorCorrection(
        temperature=1.0,
        default_team_bias={i: bias.get(i.replace("-", "_"), 0.0) for i in TEAM_IDS},
        custom_self_bias=bias.get("custom_self", 0.0),
        fitted_on="test",
    )


def test_a_prior_correction_can_move_the_decision_and_its_confidence_is_the_corrected_probability() -> None:
    answer, logprobs = _team_answer("research", 0.5, {"legal": 0.4, "self": 0.1}, rest=[entry("-agent", 1.0, {})])
    team = default_team()
    raw = decision_from_answer(answer, logprobs, team)
    assert raw.assignee_id == "research-agent" and raw.confidence_source == "logprobs"
    corrected = decision_from_answer(answer, logprobs, team, calibration=_correction(legal_counsel=1.0))
    assert corrected.assignee_id == "legal-counsel"
    assert corrected.confidence_source == "calibrated_logprobs"
    assert corrected.reasoning_source == "candidate_description" and "legal-counsel" in corrected.reasoning
    e = math.e
    # Unreported candidates sit at the smallest reported probability (0.1), like "self".
    expected = 0.4 * e / (0.4 * e + 0.5 + 0.1 * 6)
    assert corrected.confidence == pytest.approx(expected)
    # No shift: the same choice as the model's, at its probability among the candidates.
    same = decision_from_answer(answer, logprobs, team, calibration=_correction())
    assert same.assignee_id == "research-agent" and same.confidence == pytest.approx(0.5 / 1.5)


def test_the_default_team_shifts_do_not_apply_to_a_custom_list_but_the_custom_self_shift_does() -> None:
    custom = CUSTOM_TEAM
    ids = tuple(c.id for c in custom)
    assert "self" in ids
    other = next(i for i in ids if i != "self")
    content = [entry(other, 0.6, {"self": 0.4})]
    answer = AnswerSpec("grammar", ids).parse(other)
    shifted = _correction(self=5.0)
    assert decision_from_answer(answer, {"content": content}, custom, calibration=shifted).assignee_id == other
    towards_self = _correction(custom_self=1.0)
    assert decision_from_answer(answer, {"content": content}, custom, calibration=towards_self).assignee_id == "self"


def test_a_first_token_answer_has_a_probability_even_when_a_shared_token_hides_the_others() -> None:
    """Regression: a custom list where "s" begins two ids (5 %) left a first-token answer without a confidence."""
    ids = ("self", "support", "legal")
    content = [entry("legal", 0.6, {"self": 0.3, "s": 0.05, "The": 0.05})]
    answer = AnswerSpec("grammar", ids, first_token=True).parse("legal")
    assert candidate_log_scores({"content": content}, answer, ids) is None
    team = [c.model_copy(update={"id": i}) for c, i in zip(default_team(), ids, strict=False)]
    decision = decision_from_answer(answer, {"content": content}, team, calibration=_correction())
    assert decision.assignee_id == "legal"
    assert decision.confidence == pytest.approx(0.6 / 0.95)  # tokens that begin a candidate: "legal", "self", "s"
    assert decision.confidence_source == "calibrated_logprobs"

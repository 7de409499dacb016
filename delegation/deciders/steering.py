"""A deterministic detector for text that tries to steer the routing ("assign this to X", fake system notes).

The deciders never obey such text (the policy says so, and the answer is checked against
the candidates in code); the detector only names what it found, so operators can find the
attempts. It returns categories, never the matched text: task text is personal data.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from delegation.core.models import SELF_ID

# Generic names text uses for a desk that is not a candidate id ("route to legal", "assign to: admin").
_DESK_WORDS = r"admin|administrator|legal|finance|accounts|hr|it|engineering|design|research|support|self|the assistant"

_PATTERNS: dict[str, re.Pattern[str]] = {
    "ignore_rules": re.compile(
        r"\b(ignore|disregard|skip|bypass|forget)\b[^.\n]{0,30}\b(rules?|instructions?|polic(?:y|ies)|usual team)\b",
        re.IGNORECASE,
    ),
    "system_note": re.compile(
        r"\bsystem\s*(?:note|message|prompt)?\s*:|\[\s*(?:router|routing|system)\b[^\]]*\]|\bnote to (?:the )?"
        r"(?:rout\w*|system|assistant)\b|\brout(?:er|ing) override\b|\boverride (?:the )?(?:rout\w*|polic\w*)\b|"
        r"\byou are now\b|\bas the (?:developer|admin\w*|owner) of\b|\binstrucci[oó]n para el sistema\b|</?system>",
        re.IGNORECASE,
    ),
    "answer_snippet": re.compile(r"[\"']?assignee(?:_id)?[\"']?\s*[:=]|\bclassify (?:it|this) as\b", re.IGNORECASE),
    "self_instruction": re.compile(
        r"\b(?:the )?assistant\b[^.\n]{0,30}\b(?:must|should|could|can|will)\b[^.\n]{0,30}"
        r"\b(?:handle|do|take|write|fill|answer)\b",
        re.IGNORECASE,
    ),
    "bypass_team": re.compile(r"\bno need to (?:bother|involve|send|ask|loop in)\b", re.IGNORECASE),
    "opinion_on_routing": re.compile(
        r"\bI (?:think|believe|guess|reckon|suppose)\b[^.\n]{0,50}"
        r"\b(?:should (?:take|handle|get|own)|is for|goes to)\b",
        re.IGNORECASE,
    ),
}
_ROUTE_VERBS = r"(?:assign|route|send|hand|forward|escalate|delegate|pass)\w*"


def detect_steering(text: str, candidate_ids: Iterable[str]) -> list[str]:
    """The kinds of routing instruction found in ``text``, sorted; empty when there is none.

    ``route_to_candidate`` needs a routing verb aimed at a candidate id or a desk word; a
    candidate id named with routing words around it ("this is for X", "X owns ...") is
    ``names_candidate``. Plain mentions of people or places are not hits.
    """
    hits = {name for name, pattern in _PATTERNS.items() if pattern.search(text)}
    ids = sorted({i for i in candidate_ids if i}, key=len, reverse=True)
    targets = "|".join([*(re.escape(i) for i in ids), _DESK_WORDS])
    route = re.compile(
        rf"\b{_ROUTE_VERBS}\b[^.\n]{{0,40}}?\b(?:to|over to)\s*:?\s*(?:the\s+)?(?:{targets})(?![\w-])",
        re.IGNORECASE,
    )
    if route.search(text):
        hits.add("route_to_candidate")
    # An id that is a compound (legal-counsel, it-ops-agent) in the text is a routing reference, not prose.
    compound = [re.escape(i) for i in ids if "-" in i or "_" in i]
    if compound:
        named = re.compile(
            rf"(?:\b(?:for|to|owns?|handles?|by)\s+(?:the\s+)?(?:{'|'.join(compound)})(?![\w-])|"
            rf"(?<![\w-])(?:{'|'.join(compound)})\s+(?:owns|handles|should|must|takes?)\b)",
            re.IGNORECASE,
        )
        if named.search(text):
            hits.add("names_candidate")
    return sorted(hits)


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
# Inside a sentence: after a colon or semicolon, or around a dash ("Assign this to X please: my password expired").
_CLAUSE_END = re.compile(r"(?<=[:;])\s+|\s+[\u2014\u2013-]{1,2}\s+")


def _without_steering_clauses(sentence: str, ids: list[str]) -> str:
    """A steering sentence without its steering clauses; empty when the instruction cannot be cut out alone.

    Only clauses that are hits on their own go. The whole sentence goes when no clause is (the
    instruction spans the separator: "Route this to: legal"), when what is left still reads as
    one, names a candidate, or ends in a lead-in to the instruction ("Message from the CEO:").
    """
    clauses = [c for c in _CLAUSE_END.split(sentence) if c.strip()]
    kept = [c for c in clauses if not detect_steering(c, ids)]
    if len(kept) == len(clauses) or not kept:
        return ""
    rest = " ".join(kept)
    named = [i for i in ids if i != SELF_ID and re.search(rf"(?<![\w-]){re.escape(i)}(?![\w-])", rest, re.IGNORECASE)]
    if named or detect_steering(rest, ids) or rest.rstrip().endswith(":"):
        return ""
    return rest


def without_steering(
    text: str, candidate_ids: Iterable[str], *, may_empty: bool = False, by_clause: bool = False
) -> str:
    """``text`` without its sentences that hold a routing instruction: what the model reads.

    Defense in depth, after the fence and the demos: the decision is the one the policy gives
    the task without those sentences. With ``by_clause`` (for a title, which is one sentence
    and must stay), a sentence whose instruction is a clause of its own ("Assign this to X
    please: my Jira password expired") keeps its other clauses. A text that is nothing but
    instructions stays as it is (the fence and the policy still apply) unless ``may_empty``:
    a description may go, the title stays, so a request never reaches the model empty.
    """
    ids = list(candidate_ids)
    sentences = [s for s in _SENTENCE_END.split(text) if s.strip()]
    kept = [
        s if not detect_steering(s, ids) else (_without_steering_clauses(s, ids) if by_clause else "")
        for s in sentences
    ]
    kept = [s for s in kept if s]
    if kept == sentences or (not kept and not may_empty):
        return text
    return " ".join(kept)

"""Issue 9's target table on the test split: the DSPy champion and Instructor, same examples, same endpoint.

    python scripts/bench_deciders.py [--split test] [--version champion] [--limit K]

Prints, per decider: accuracy (all, custom-candidate examples, steering subset), error rate,
Brier score and ECE, p50/p95 latency on default-team requests, and the p50 of custom-list
requests whose list was seen just before (a second pass that runs each list's examples one
after another). On the embedded llama.cpp server it also reads every request's prompt-token
counts from ``/slots`` (cached vs newly processed), so a broken prefix cache shows. Then the
base module's score, the rollout plan's improvement line and McNemar's test.
"""

from __future__ import annotations

import json
import statistics
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from delegation.cli.learning_commands import _decider, _ensure_endpoint, _load, _run
from delegation.cli.report_view import _num
from delegation.core.activity_io import DeciderResult
from delegation.core.models import DelegationRequest
from delegation.core.settings import get_settings
from delegation.core.targets import IMPROVEMENT_TARGET
from delegation.deciders.protocol import Decider
from delegation.learning.dataset import DEFAULT_DATASET, LabeledExample
from delegation.learning.evaluation import EvaluationReport, Outcome, mcnemar_test, summarize
from delegation.learning.optimizer import relative_improvement
from delegation.rollout.arm_metrics import percentile
from delegation.worker.main import WARM_UP_TIMEOUT_S

console = Console(width=160)


class TokenCounting:
    """Wraps a decider; reads the llama.cpp server's counters around each decision: new prompt tokens and generated.

    The prompt tokens the server had to process (not served from its cache) are what a broken
    prefix cache makes grow, so the benchmark prints them.
    """

    def __init__(
        self, inner: Decider, metrics_url: str | None, counts: dict[str, tuple[float, float]], api_key: str = ""
    ) -> None:
        self.api_key = api_key
        self.inner = inner
        self.metrics_url = metrics_url
        self.counts = counts

    @property
    def program_version(self) -> str:
        return self.inner.program_version

    @property
    def model(self) -> str:
        return self.inner.model

    def _read(self) -> tuple[float, float] | None:
        if self.metrics_url is None:
            return None
        try:
            request = urllib.request.Request(self.metrics_url, headers={"Authorization": f"Bearer {self.api_key}"})
            with urllib.request.urlopen(request, timeout=5) as response:
                text = response.read().decode()
        except OSError:
            self.metrics_url = None  # not a llama.cpp server with metrics: no counts
            return None
        values = {}
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name in ("llamacpp:prompt_tokens_total", "llamacpp:tokens_predicted_total"):
                values[name] = float(value)
        if len(values) != 2:
            return None
        return values["llamacpp:prompt_tokens_total"], values["llamacpp:tokens_predicted_total"]

    async def decide(self, request: DelegationRequest) -> DeciderResult:
        before = self._read()
        result = await self.inner.decide(request)
        after = self._read()
        if before is not None and after is not None:
            self.counts[request.task_id] = (after[0] - before[0], after[1] - before[1])
        return result


def _pct(value: float | None, n: int | None = None) -> str:
    if value is None:
        return "-"
    return f"{value:.1%}" + (f" of {n}" if n is not None else "")


def _s(ms: float | None) -> str:
    return "-" if ms is None else f"{ms / 1000:.2f} s"


def _count(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _latencies(outcomes: list[Outcome], keep: set[str]) -> list[float]:
    return [o.latency_ms for o in outcomes if o.error is None and o.example_id in keep]


def _seen_before_pass(
    decider: TokenCounting, custom: list[LabeledExample]
) -> tuple[list[float], list[float], list[float]]:
    """Each custom list's examples one after another: latency of the first (list new) and of the rest (list seen)."""
    import asyncio

    groups: dict[str, list[LabeledExample]] = defaultdict(list)
    for example in custom:
        groups[json.dumps([a.model_dump() for a in example.assignees or []])].append(example)
    first: list[float] = []
    seen: list[float] = []
    seen_new_tokens: list[float] = []

    async def run() -> None:
        for examples in groups.values():
            for index, example in enumerate(examples):
                request = example.to_request().model_copy(update={"task_id": f"seen-{example.id}"})
                # (the request differs from the main pass's only in its id, which the prompt never shows)
                try:
                    result = await decider.decide(request)
                except Exception:  # counted as errors in the main pass already
                    continue
                (seen if index else first).append(result.latency_ms)
                if index and request.task_id in decider.counts:
                    seen_new_tokens.append(decider.counts[request.task_id][0])

    asyncio.run(run())
    return first, seen, seen_new_tokens


def main(
    dataset: Path = typer.Option(DEFAULT_DATASET, help="JSONL examples."),
    split: str = typer.Option("test", help="train, dev or test."),
    version: str = typer.Option("champion", help="The optimized DSPy program: a version number or champion."),
    limit: int | None = typer.Option(None, help="Only the first K examples."),
) -> None:
    """Evaluate the deciders and print issue 9's target table."""
    settings = get_settings()
    examples = _load(dataset, split, limit)
    _ensure_endpoint(settings)
    default_ids = {e.id for e in examples if e.assignees is None}
    custom = [e for e in examples if e.assignees is not None]
    reports: dict[str, EvaluationReport] = {}
    outcomes: dict[str, list[Outcome]] = {}
    extra: dict[str, dict[str, Any]] = {}
    for label, variant, program in (("DSPy champion", "dspy", version), ("Instructor", "instructor", "-")):
        counts: dict[str, tuple[float, float]] = {}

        def fresh(
            variant: str = variant, program: str = program, counts: dict = counts, timeout_s: float | None = None
        ) -> TokenCounting:
            # A decider per pass: each pass runs in its own event loop, and a client's pooled
            # connections belong to the loop that opened them.
            pass_settings = settings if timeout_s is None else settings.model_copy(update={"llm_timeout_s": timeout_s})
            inner = _decider(pass_settings, variant, program)
            endpoint = getattr(inner, "_endpoint", None)
            embedded = bool(getattr(endpoint, "embedded", False))
            url = str(getattr(endpoint, "base_url", "")).removesuffix("/v1") + "/metrics" if embedded else None
            key = endpoint.api_key.get_secret_value() if endpoint is not None else ""
            return TokenCounting(inner, url, counts, key)

        # As a worker's warm-up does before serving: one default-team request and one custom list, under
        # the warm-up's timeout (a first prefill of the longest prefix takes over a minute on 2 cores),
        # so the timed pass starts from warm prefixes in both slots.
        warm = [e for e in examples if e.assignees is None][:1] + custom[:1]
        _run(fresh(timeout_s=WARM_UP_TIMEOUT_S), warm, f"{label}: warming the prefixes")
        counts.clear()
        decider = fresh()
        outcomes[label] = _run(decider, examples, f"{label} on {len(examples)} {split} examples")
        reports[label] = summarize(
            outcomes[label], variant=variant, program_version=decider.program_version, model=decider.model
        )
        first, seen, seen_tokens = _seen_before_pass(fresh(), custom)
        default_counts = [counts[f"example-{i}"] for i in default_ids if f"example-{i}" in counts]
        extra[label] = {
            "default": _latencies(outcomes[label], default_ids),
            "first": first,
            "seen": seen,
            "new_tokens_default": statistics.median([n for n, _ in default_counts]) if default_counts else None,
            "generated_default": statistics.median([g for _, g in default_counts]) if default_counts else None,
            "new_tokens_seen": statistics.median(seen_tokens) if seen_tokens else None,
            "sources": sorted({o.confidence_source or "-" for o in outcomes[label] if o.error is None}),
        }
    champion, instructor = reports["DSPy champion"], reports["Instructor"]
    table = Table(
        "figure",
        f"DSPy champion ({champion.program_version})",
        f"Instructor ({instructor.program_version})",
        "target (DSPy / Instructor)",
        title=f"Deciders on the {split} split: {len(examples)} examples, model {champion.model}",
    )

    def row(name: str, fn: Any, target: str) -> None:
        table.add_row(name, fn("DSPy champion"), fn("Instructor"), target)

    row("accuracy", lambda k: _pct(reports[k].accuracy, reports[k].n), ">= 90 % / > 37 %")
    row(
        "accuracy, custom-candidate examples",
        lambda k: _pct(reports[k].custom_candidates_accuracy, reports[k].custom_candidates_n),
        ">= 85 % / report",
    )
    row(
        "steering subset: decision unchanged",
        lambda k: _pct(reports[k].steering_accuracy, reports[k].steering_n),
        "100 % / report",
    )
    row("error rate", lambda k: _pct(reports[k].error_rate), "< 1 % / < 2 %")
    row("Brier score", lambda k: _num(reports[k].brier_score), "<= 0.10 / report")
    row("expected calibration error", lambda k: _num(reports[k].ece), "report")
    row("avg confidence", lambda k: _num(reports[k].avg_confidence), "report")
    row("confidence source", lambda k: ", ".join(extra[k]["sources"]), "logprobs")
    row("p50 latency, default team", lambda k: _s(percentile(extra[k]["default"], 0.5)), "<= 1.5 s")
    row("p95 latency, default team", lambda k: _s(percentile(extra[k]["default"], 0.95)), "<= 2.0 s")
    row("p50, custom list seen before", lambda k: _s(percentile(extra[k]["seen"], 0.5)), "<= 2.0 s")
    row("p50, custom list first seen", lambda k: _s(percentile(extra[k]["first"], 0.5)), "report")
    row("p95, all requests", lambda k: _s(reports[k].p95_latency_ms), "report")
    row(
        "default team: new prompt tokens / generated tokens (median)",
        lambda k: f"{_count(extra[k]['new_tokens_default'])} / {_count(extra[k]['generated_default'])}",
        "report",
    )
    row("custom list seen before: new prompt tokens (median)", lambda k: _count(extra[k]["new_tokens_seen"]), "report")
    console.print(table)

    base_decider = _decider(settings, "dspy", "base")
    base_outcomes = _run(base_decider, examples, f"DSPy base module on {len(examples)} {split} examples")
    base = summarize(base_outcomes, variant="dspy", program_version=base_decider.program_version, model=champion.model)
    improvement = relative_improvement(base.accuracy, champion.accuracy)
    target = IMPROVEMENT_TARGET * 100
    console.print(
        f"base module {base.accuracy:.1%} -> champion {champion.accuracy:.1%}: {improvement:+.1f}% relative "
        f"(plan: > +{target:.0f}%)"
    )
    test = mcnemar_test(outcomes["DSPy champion"], outcomes["Instructor"])
    console.print(
        f"McNemar exact, champion vs Instructor: only DSPy right {test.only_a_right}, "
        f"only Instructor right {test.only_b_right}, p = {test.p_value:.4f}"
    )


if __name__ == "__main__":
    typer.run(main)

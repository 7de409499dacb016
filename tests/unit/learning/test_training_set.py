"""The versioned training set on both store backends: redaction, dedup against every split, versions, retries, races."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import count
from pathlib import Path
from typing import Any

import pytest

from delegation.core.models import DecisionRecord, DelegationDecision, DelegationRequest
from delegation.learning.dataset import DEFAULT_DATASET, check_text, load_examples, split_of
from delegation.learning.training_set import (
    FailedExample,
    TrainingSetError,
    TrainingSetStore,
    example_id_for,
    redact,
)
from delegation.store.database import Database

BASE_TRAIN = load_examples(DEFAULT_DATASET, split="train")
OWN_TEAM = [
    {"id": "self", "name": "Assistant", "kind": "agent", "description": "Writes and schedules."},
    {"id": "logistics", "name": "Logistics", "kind": "human", "description": "Carriers and shipping."},
]


def _failed(
    n: int, title: str | None = None, description: str = "", label: str = "finance-manager", **extra: Any
) -> FailedExample:
    """Failed decision number ``n``; its default title is unique per ``n``."""
    request = DelegationRequest(
        task_id=f"task-{n}",
        title=title or f"Reconcile the supplier statement number {n} against the ledger",
        description=description,
        **extra,
    )
    return FailedExample(f"delegation-task-{n}:run-{n}", request, label)


def _ids_in(split: str) -> Iterator[str]:
    for n in count():
        if split_of(f"probe-{n}") == split:
            yield f"probe-{n}"


@pytest.fixture
def store(database: Database) -> TrainingSetStore:
    return TrainingSetStore(database)


def _stored(store: TrainingSetStore, version: int) -> tuple[dict[str, Any], str]:
    """A version's manifest and examples as the row holds them."""
    with store.rows.database.transaction() as tx:
        row = tx.fetchone("SELECT manifest_json, examples_jsonl FROM training_sets WHERE version = ?", (version,))
    assert row is not None, f"no row for version {version}"
    return json.loads(row[0]), row[1]


def _overwrite(store: TrainingSetStore, version: int, column: str, value: str) -> None:
    """Edit a stored version behind the store's back (a bad hand-edit of the database)."""
    assert column in ("manifest_json", "examples_jsonl")
    with store.rows.database.transaction() as tx:
        tx.execute(f"UPDATE training_sets SET {column} = ? WHERE version = ?", (value, version))


# ---- redaction ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Mail jane.doe+billing@example.co.uk today", "Mail [email] today"),
        ("cc J_Smith99@sub.example.com, mailto:ops@acme.io", "cc [email], mailto:[email]"),
        ("Call +44 20 7946 0958 now", "Call [phone] now"),
        ("Call +44 (0)20 7946 0958.", "Call [phone]."),
        ("tel:+33 1 23 45 67 89 or +4915112345678", "tel:[phone] or [phone]"),
        ("US (415) 555-0132, 415-555-0132 or 415.555.0132", "US [phone], [phone] or [phone]"),
        ("Phone:415 555 0132; toll free 1-800-555-0199", "Phone:[phone]; toll free [phone]"),
        ("+1 415-555-0132 at 10:30", "[phone] at 10:30"),
        ("UK office 020 7946 0958", "UK office [phone]"),
    ],
)
def test_emails_and_phone_numbers_are_redacted(text: str, expected: str) -> None:
    redacted, n = redact(text)
    assert redacted == expected
    assert n == expected.count("[email]") + expected.count("[phone]")


@pytest.mark.parametrize(
    "text",
    [
        "Invoice #4421 for $2,300 is due 2026-11-29 at 14:30",
        "Upgrade to v2.3.1 (from 4.18.2) before 09.11.2026 10:30",
        "INV-2026-004421 and PO-88213, about €1.200.000 or 1 200 000 EUR",
        "Range 100-2000 users, 2019-2024 figures, 30/60/90-day plan, 11/29/2026",
        "Deploy at 2026-11-29T14:30:00Z; ticket 12345678; uptime 99.9%; £1,850.00",
        "Write to security@ or the sales-emea@ list",
    ],
)
def test_amounts_dates_ids_versions_and_times_are_untouched(text: str) -> None:
    assert redact(text) == (text, 0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Lease for 12 Elm Street, Springfield", "Lease for [address], Springfield"),
        ("Ship to 221B Baker St. by Friday", "Ship to [address] by Friday"),
        ("Office at Hauptstraße 5, Berlin", "Office at [address], Berlin"),
        ("Card 4111 1111 1111 1111 was charged twice", "Card [card] was charged twice"),
        ("Refund 4111-1111-1111-1111", "Refund [card]"),
        ("Pay IBAN DE89 3704 0044 0532 0130 00 today", "Pay IBAN [iban] today"),
        ("Pay GB82WEST12345698765432", "Pay [iban]"),
        ("Our key sk-proj-abcdefghijklmnop1234 leaked", "Our key [secret] leaked"),
        ("Rotate AKIAIOSFODNN7EXAMPLE now", "Rotate [secret] now"),
        ("wifi password: hunter2, guest", "wifi [secret] guest"),
        ("header Bearer eyJhbGciOiJIUzI1NiJ9.payload seen", "header [secret] seen"),
    ],
)
def test_addresses_cards_ibans_and_credentials_are_redacted(text: str, expected: str) -> None:
    assert redact(text) == (expected, sum(expected.count(p) for p in ("[address]", "[card]", "[iban]", "[secret]")))


@pytest.mark.parametrize(
    "text",
    [
        "Order 1234567890123 shipped",  # 13 digits that fail the Luhn check: an id, not a card
        "Account DE00 1234 5678 9012 3456 78 is closed",  # IBAN-shaped, wrong check digits
        "Rotate the token for the CI; the password policy changed",
        "Ship 3 Main boxes; 10 servers on Rack 4",
        "Jane Roe asked for a new laptop",  # names stay: no pattern finds them reliably (README)
    ],
)
def test_look_alikes_and_names_are_left(text: str) -> None:
    assert redact(text) == (text, 0)


# ---- versions -----------------------------------------------------------------------------------


def test_version_0_is_the_shipped_train_split(store: TrainingSetStore) -> None:
    latest = store.latest()
    assert latest.version == 0
    assert latest.train_size == len(BASE_TRAIN)
    assert Path(latest.path) == DEFAULT_DATASET
    assert store.load(0) == BASE_TRAIN


def test_versions_grow_by_appending_and_files_pass_the_dataset_check(store: TrainingSetStore) -> None:
    first = store.extend("run-1", [_failed(1), _failed(2, description="Ping anna.k@example.com for the PDF.")])
    assert (first.version, first.added, first.duplicates, first.redactions) == (1, 2, 0, 1)
    v1 = store.load(1)
    assert v1[: len(BASE_TRAIN)] == BASE_TRAIN  # the base train split is in version 1
    assert [e.id for e in v1[len(BASE_TRAIN) :]] == [
        example_id_for("delegation-task-1:run-1"),
        example_id_for("delegation-task-2:run-2"),
    ]
    assert first.train_size == len(v1) == len(BASE_TRAIN) + 2

    second = store.extend("run-2", [_failed(3, priority="urgent", assignees=OWN_TEAM, label="logistics")])
    assert (second.version, second.added) == (2, 1)
    v2 = store.load(2)
    assert v2[: len(v1)] == v1
    added = v2[-1]
    assert (added.priority, added.label) == ("urgent", "logistics")
    assert [a.id for a in added.assignees or []] == ["self", "logistics"]
    assert store.latest() == second

    manifest, _ = _stored(store, 2)
    assert manifest["parent_version"] == 1
    assert manifest["run_key"] == "run-2"
    assert manifest["added"] == [added.id]
    assert second.path == f"training set version 2 in {store.rows.database.describe()}"
    # Each version on its own passes the dataset checker (ids unique, no text shared across splits).
    for version in (1, 2):
        examples, problems = check_text(_stored(store, version)[1], f"v{version}")
        assert problems == []
        assert len(examples) == len(store.load(version))


def test_written_lines_follow_the_dataset_format_and_hold_no_personal_data(store: TrainingSetStore) -> None:
    store.extend(
        "run-1", [_failed(1, title="Call back Dana on +1 415-555-0132", description="Her mail: dana@corp.example")]
    )
    _, text = _stored(store, 1)
    assert "415-555-0132" not in text and "dana@corp.example" not in text
    line = json.loads(text.splitlines()[-1])
    assert line["title"] == "Call back Dana on [phone]"
    assert line["description"] == "Her mail: [email]"
    assert "assignees" not in line  # the default team, as in the shipped dataset


def test_loading_a_training_set_never_re_splits_it(store: TrainingSetStore) -> None:
    # Find a source whose example id hashes to "dev": it still belongs to the training set.
    n = next(n for n in count(100) if split_of(example_id_for(f"delegation-task-{n}:run-{n}")) == "dev")
    store.extend("run-1", [_failed(n)])
    assert store.load(1)[-1].id == example_id_for(f"delegation-task-{n}:run-{n}")
    assert store.load(1)[-1].split == "dev"


# ---- dedup --------------------------------------------------------------------------------------


def test_texts_of_any_split_are_not_added(store: TrainingSetStore) -> None:
    dev = load_examples(DEFAULT_DATASET, split="dev")[0]
    test = next(e for e in load_examples(DEFAULT_DATASET, split="test") if e.description)
    train = BASE_TRAIN[0]
    result = store.extend(
        "run-1",
        [
            _failed(1, title="  " + dev.title.upper() + "  "),  # same text after normalization
            _failed(2, title="A brand new title", description=test.description.replace(" ", "  ")),
            _failed(3, title=train.title),
            _failed(4),
        ],
    )
    assert (result.version, result.added, result.duplicates) == (1, 1, 3)
    texts = {e.title.lower() for e in store.load(1)}
    assert dev.title.lower() not in texts


def test_duplicates_within_the_batch_and_against_earlier_versions_are_skipped(store: TrainingSetStore) -> None:
    first = store.extend("run-1", [_failed(1), _failed(2, title=_failed(1).request.title), _failed(1)])
    assert (first.added, first.duplicates) == (1, 2)
    second = store.extend("run-2", [_failed(5, title=_failed(1).request.title.lower()), _failed(6)])
    assert (second.version, second.added, second.duplicates) == (2, 1, 1)


def test_a_dev_text_holding_a_phone_number_is_not_let_back_in_redacted(tmp_path: Path, database: Database) -> None:
    dev_id, train_id = next(_ids_in("dev")), next(_ids_in("train"))
    base = tmp_path / "base.jsonl"
    rows = [
        {"id": dev_id, "title": "Call the carrier at +44 20 7946 0958 about the pallets", "label": "people-ops"},
        {"id": train_id, "title": "Book the venue for the offsite", "label": "people-ops"},
    ]
    base.write_text("".join(json.dumps(r) + "\n" for r in rows))
    store = TrainingSetStore(database, base_dataset=base)
    result = store.extend("run-1", [_failed(1, title=rows[0]["title"], label="people-ops")])
    assert (result.version, result.added, result.duplicates) == (0, 0, 1)


def test_a_label_outside_the_candidates_is_skipped(store: TrainingSetStore) -> None:
    result = store.extend("run-1", [_failed(1, label="nobody"), _failed(2)])
    assert (result.added, result.duplicates) == (1, 0)
    manifest, _ = _stored(store, 1)
    assert manifest["invalid"] == 1


# ---- retries, no-ops, tampering and races -------------------------------------------------------


def test_a_retried_run_returns_the_version_it_wrote(store: TrainingSetStore) -> None:
    first = store.extend("run-1", [_failed(1)])
    store.extend("run-2", [_failed(2)])
    again = store.extend("run-1", [_failed(1), _failed(3)])
    assert again == first
    assert sorted(store.manifests()) == [1, 2]


def test_nothing_new_writes_no_version(store: TrainingSetStore) -> None:
    nothing = store.extend("run-0", [_failed(1, title=BASE_TRAIN[0].title)])
    assert (nothing.version, nothing.added, nothing.duplicates) == (0, 0, 1)
    assert store.extend("run-1", []).version == 0
    assert store.manifests() == {}

    first = store.extend("run-2", [_failed(1)])
    same = store.extend("run-3", [_failed(1)])
    assert (same.version, same.added, same.duplicates, same.sha256) == (1, 0, 1, first.sha256)
    assert sorted(store.manifests()) == [1]


def test_a_tampered_version_is_refused(store: TrainingSetStore) -> None:
    store.extend("run-1", [_failed(1)])
    _overwrite(store, 1, "examples_jsonl", _stored(store, 1)[1].replace("supplier", "vendor"))
    with pytest.raises(TrainingSetError, match=r"training set version 1 in .*SHA-256"):
        store.load(1)
    with pytest.raises(TrainingSetError, match=r"training set version 1 in"):
        store.extend("run-2", [_failed(2)])  # nothing is built on a tampered parent
    assert sorted(store.manifests()) == [1]


def test_an_unreadable_manifest_is_refused_with_its_version(store: TrainingSetStore) -> None:
    store.extend("run-1", [_failed(1)])
    _overwrite(store, 1, "manifest_json", '{"version": 1, "sha256":')
    with pytest.raises(TrainingSetError, match=r"manifest of training set version 1 in .* is unreadable"):
        store.latest()


def test_a_missing_version_is_named(store: TrainingSetStore) -> None:
    with pytest.raises(TrainingSetError, match=r"no training set version 3 in .*known: \[\]"):
        store.load(3)


def test_a_changed_base_dataset_evicts_feedback_now_in_dev(tmp_path: Path, database: Database) -> None:
    train_ids, dev_id = _ids_in("train"), next(_ids_in("dev"))
    base = tmp_path / "base.jsonl"
    rows = [{"id": next(train_ids), "title": "Book the venue for the offsite", "label": "people-ops"}]
    base.write_text("".join(json.dumps(r) + "\n" for r in rows))
    store = TrainingSetStore(database, base_dataset=base)
    store.extend("run-1", [_failed(1), _failed(2)])

    # The shipped dataset grows: one feedback text is now a dev example.
    rows.append({"id": dev_id, "title": _failed(1).request.title, "label": "finance-manager"})
    base.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = store.extend("run-2", [_failed(3)])
    assert (result.version, result.added) == (2, 1)
    ids = [e.id for e in store.load(2)]
    assert example_id_for("delegation-task-1:run-1") not in ids
    assert example_id_for("delegation-task-2:run-2") in ids
    manifest, _ = _stored(store, 2)
    assert manifest["dropped"] == [example_id_for("delegation-task-1:run-1")]


def test_an_example_can_be_made_from_a_decision_record() -> None:
    request = DelegationRequest(task_id="t-9", title="Renew the TLS certificate")
    record = DecisionRecord(
        workflow_id="delegation-t-9",
        run_id="r-1",
        task_id="t-9",
        request=request,
        decision=DelegationDecision(assignee_id="backend-engineer", confidence=0.4),
        variant="dspy",
        assigned_variant="dspy",
        program_version="v1",
        model="m",
        latency_ms=1.0,
        fallback_used=False,
        error=None,
        bucket=1,
        rollout_percentage=100,
        decided_at=datetime.now(UTC),
    )
    failed = FailedExample.from_record(record, "it-ops-agent")
    assert failed == FailedExample("delegation-t-9:r-1", request, "it-ops-agent")


def test_concurrent_runs_write_consecutive_versions(database: Database) -> None:
    from concurrent.futures import ThreadPoolExecutor

    # Separate stores (as on separate hosts): the version's primary key settles who writes which.
    stores = [TrainingSetStore(database) for _ in range(4)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda i: stores[i].extend(f"run-{i}", [_failed(i)]), range(4)))
    assert sorted(r.version for r in results) == [1, 2, 3, 4]
    final = stores[0].load(4)
    assert len(final) == len(BASE_TRAIN) + 4
    assert {e.id for e in final[len(BASE_TRAIN) :]} == {
        example_id_for(f"delegation-task-{i}:run-{i}") for i in range(4)
    }

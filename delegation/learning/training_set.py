"""The versioned, append-only training set grown from failed decisions, in the store's database.

- version 0 is implicit: the train split of the shipped dataset (``DEFAULT_DATASET``);
- version N >= 1 is one row of ``training_sets``: the whole training set of version N as JSONL
  in the dataset format, and its manifest (SHA-256, parent version, run key, added ids, counts...).
  The row lives where the rest of the store does (``DATABASE_URL``, else the SQLite file), so
  every worker host sees the same versions.

A training set version is **train-only by construction**: every line in it is a training
example, whatever ``split_of(id)`` says about the id (an ``fb-...`` id may hash to "dev").
Read it with :meth:`TrainingSetStore.load`, never through ``load_examples(..., split="train")``,
which would re-split it and silently drop feedback examples. Dev and test stay the shipped
dataset's splits; new examples never go there, and a new example whose text is already in
any split is skipped, so nothing the challenger trains on is scored on.

The row's insert is the commit (both parts or nothing). Two runs that compute the same next
version race on its number: the loser writes nothing and recomputes on the winner's version.
Versions are never rewritten.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from loguru import logger
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from delegation.core.models import DecisionRecord, DelegationRequest
from delegation.core.reoptimization import TrainingSetResult
from delegation.core.team import candidates_for
from delegation.learning.dataset import (
    DEFAULT_DATASET,
    DatasetError,
    LabeledExample,
    check_text,
    load_examples,
    text_keys,  # the checker's own text key, so what dedup lets in the checker accepts
)
from delegation.store.database import Database
from delegation.store.files import sha256_of
from delegation.store.training_sets import TrainingSetRows

FEEDBACK_ID_PREFIX = "fb-"
_MAX_ATTEMPTS = 5


class TrainingSetError(ValueError):
    """A training set version cannot be used or written; the message names the file."""


class FailedExample(NamedTuple):
    """One failed decision to learn from: where it came from, what was asked, who was right.

    A plain ``(source_id, request, label)`` tuple works as well.
    """

    source_id: str
    request: DelegationRequest
    label: str

    @classmethod
    def from_record(cls, record: DecisionRecord, correct_assignee_id: str) -> FailedExample:
        """The example a recorded decision and its feedback's correct assignee make."""
        return cls(source_id_of(record.workflow_id, record.run_id), record.request, correct_assignee_id)


class TrainingSetManifest(BaseModel):
    """What a training set version holds and how it was made."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(ge=1)
    sha256: str = Field(description="Of the data file's bytes.")
    created_at: AwareDatetime
    parent_version: int = Field(ge=0)
    run_key: str
    base_dataset_sha256: str = Field(description="Of the shipped dataset file the version was built on.")
    train_size: int = Field(ge=0)
    added: list[str] = Field(description="Ids of the examples this version added, in file order.")
    duplicates: int = Field(ge=0, description="New examples skipped: text or id already present.")
    invalid: int = Field(ge=0, description="New examples skipped: label not a candidate, or unusable request.")
    dropped: list[str] = Field(
        default_factory=list,
        description="Feedback examples of the parent left out because the base dataset now holds their text.",
    )
    redactions: int = Field(ge=0, description="Personal data and credentials replaced in the added examples.")


def source_id_of(workflow_id: str, run_id: str) -> str:
    """The identity of one decision: its workflow run."""
    return f"{workflow_id}:{run_id}"


def example_id_for(source_id: str) -> str:
    """A stable example id for a decision, without exposing the task id: ``fb-<16 hex>``."""
    return FEEDBACK_ID_PREFIX + hashlib.sha256(source_id.encode()).hexdigest()[:16]


# ---- redaction ----------------------------------------------------------------------------------

_EMAIL = re.compile(r"(?<![\w.%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])")
# Three shapes only, each distinctive enough not to catch amounts ($2,300), dates (2026-11-29),
# invoice numbers (#4421, INV-2026-0042), versions (v2.3.1), times (14:30) or ranges (100-2000).
# Bare 7-digit local numbers (555-0132) are left alone: they look too much like ranges and codes.
_PHONE = re.compile(
    r"""
    (?<![\w$€£¥#/.,+-])                      # not the middle of a word, amount, id, decimal or version
    (?:
        (?P<intl>\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{1,4}){1,5})  # +44 20 7946 0958
      | (?P<us>(?:1[ .-]?)?(?:\(\d{3}\)[ ]?|\d{3}[ .-])\d{3}[ .-]\d{4})            # (415) 555-0132
      | (?P<national>0\d{1,4}(?:[ .-]\d{2,6}){1,4})                                 # 020 7946 0958
    )
    (?![\w%$€£¥]|[.,:/-]?\d)                 # not followed by more digits, a unit, or a time's minutes
    """,
    re.VERBOSE,
)
# Digits a match must hold to count as a phone number (E.164 allows at most 15).
_PHONE_DIGITS = {"intl": (7, 15), "us": (10, 11), "national": (9, 12)}


# Credentials that a task may quote: provider key shapes and `password: …`-style assignments.
_SECRET = re.compile(
    r"""
    \b(?:sk|pk|rk)-(?:proj-|live-|test-)?[A-Za-z0-9_-]{16,}      # OpenAI/Stripe-style keys
  | \bAKIA[0-9A-Z]{16}\b                                        # AWS access key id
  | \bgh[pousr]_[A-Za-z0-9]{30,}\b                              # GitHub tokens
  | \bxox[abprs]-[A-Za-z0-9-]{10,}                               # Slack tokens
  | \b[Bb]earer\s+[A-Za-z0-9._~+/=-]{16,}                       # an Authorization header value
  | (?i:\b(?:password|passwd|pwd|passcode|api[_ -]?key|secret|token)\b\s*[:=]\s*)\S+
    """,
    re.VERBOSE,
)
# A card number: 13-19 digits, optionally in groups; counted only when the Luhn check passes.
_CARD = re.compile(r"(?<![\w.,/+-])\d(?:[ -]?\d){12,18}(?![\w.,/-]?\d)")
# An IBAN: country, check digits, 11-30 alphanumerics (groups of four allowed); checked mod 97.
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,4})?\b")
# A street address: a house number before (12 Elm Street) or after (Hauptstraße 5) the street name.
_STREET_WORD = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Square|Sq"
    r"|Parkway|Pkwy|Highway|Hwy|Crescent|Close|Row|Alley)\b\.?"
)
_ADDRESS = re.compile(
    rf"""
    \b\d{{1,5}}[A-Za-z]?(?:[ ]+[A-Z][A-Za-z'-]+){{1,4}}[ ]+{_STREET_WORD}      # 12 Elm Street, 221B Baker St.
  | \b[A-ZÄÖÜ][\wäöüß-]*(?:straße|strasse|gasse|weg|platz|allee|laan|straat|gatan|vej)[ ]+\d{{1,5}}[a-z]?\b
    """,
    re.VERBOSE,
)


def _luhn_ok(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def _iban_ok(text: str) -> bool:
    compact = text.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def redact(text: str) -> tuple[str, int]:
    """``text`` with personal data and credentials replaced by a placeholder, and how many were replaced.

    Replaced: credentials (``[secret]``), email addresses (``[email]``), card numbers that
    pass the Luhn check (``[card]``), IBANs that pass mod 97 (``[iban]``), phone numbers
    (``[phone]``) and street addresses (``[address]``). Not replaced: people's names, which
    no pattern finds reliably (README, "Personal data").
    """
    count = 0

    def _replace(
        placeholder: str, check: Callable[[re.Match[str]], bool] | None = None
    ) -> Callable[[re.Match[str]], str]:
        def _sub(match: re.Match[str]) -> str:
            nonlocal count
            if check is not None and not check(match):
                return match.group()
            count += 1
            return placeholder

        return _sub

    def _phone_digits_fit(match: re.Match[str]) -> bool:
        # e.g. 09.11.2026 matches the national shape but is a date: too few digits for a phone.
        low, high = _PHONE_DIGITS[match.lastgroup or "intl"]
        return low <= sum(ch.isdigit() for ch in match.group()) <= high

    text = _SECRET.sub(_replace("[secret]"), text)  # first: a key may look like anything below
    text = _EMAIL.sub(_replace("[email]"), text)  # before phones: an address may hold digit runs
    text = _IBAN.sub(_replace("[iban]", lambda m: _iban_ok(m.group())), text)
    text = _CARD.sub(_replace("[card]", lambda m: _luhn_ok(re.sub(r"\D", "", m.group()))), text)
    text = _PHONE.sub(_replace("[phone]", _phone_digits_fit), text)
    text = _ADDRESS.sub(_replace("[address]"), text)
    return text, count


# ---- the store ----------------------------------------------------------------------------------


def version_name(version: int) -> str:
    """How messages and results name a stored version."""
    return f"training set version {version}"


def _serialize(examples: Sequence[LabeledExample]) -> str:
    # Dataset format: assignees omitted for the default team; one example per line.
    return "".join(
        json.dumps(e.model_dump(mode="json", exclude_none=True), ensure_ascii=False) + "\n" for e in examples
    )


class TrainingSetStore:
    """Reads, verifies and extends the training set versions in the store's database."""

    def __init__(self, database: Database, base_dataset: Path = DEFAULT_DATASET) -> None:
        self.rows = TrainingSetRows(database)
        self.base_dataset = base_dataset

    def _where(self, version: int) -> str:
        return f"{version_name(version)} in {self.rows.database.describe()}"

    # ---- reading --------------------------------------------------------------------------------

    def manifests(self) -> dict[int, TrainingSetManifest]:
        """Every version and its manifest, ascending."""
        found: dict[int, TrainingSetManifest] = {}
        for version, text in self.rows.manifests():
            try:
                manifest = TrainingSetManifest.model_validate_json(text)
            except ValidationError as err:
                raise TrainingSetError(
                    f"the manifest of {self._where(version)} is unreadable: {err.error_count()} problem(s)"
                ) from None
            if manifest.version != version:
                raise TrainingSetError(f"the manifest of {self._where(version)} says version {manifest.version}")
            found[version] = manifest
        return found

    def latest(self) -> TrainingSetResult:
        """The newest committed version; version 0 (the shipped train split) when none was written."""
        manifests = self.manifests()
        if not manifests:
            return self._base_result()
        return self._result(manifests[max(manifests)])

    def load(self, version: int) -> list[LabeledExample]:
        """Every example of a version, in file order, after checking the file against its manifest.

        Not re-split: a training set file holds training examples only.
        """
        if version == 0:
            return self._base_train()
        manifest = self.manifests().get(version)
        if manifest is None:
            raise TrainingSetError(f"no {self._where(version)} (known: {sorted(self.manifests())})")
        return self._load_verified(manifest)

    def _load_verified(self, manifest: TrainingSetManifest) -> list[LabeledExample]:
        where = self._where(manifest.version)
        text = self.rows.examples(manifest.version)
        if text is None:
            raise TrainingSetError(f"{where} has no examples")
        digest = sha256_of(text.encode("utf-8"))
        if digest != manifest.sha256:
            raise TrainingSetError(
                f"{where} has SHA-256 {digest[:12]}…, its manifest says {manifest.sha256[:12]}…: refusing it"
            )
        examples, problems = check_text(text, version_name(manifest.version))
        if problems:
            raise TrainingSetError(f"{where} is invalid: " + "; ".join(problems[:5]))
        return examples

    def _base_train(self) -> list[LabeledExample]:
        return load_examples(self.base_dataset, split="train")

    def _base_result(self) -> TrainingSetResult:
        return TrainingSetResult(
            version=0,
            path=str(self.base_dataset),
            sha256=sha256_of(self.base_dataset.read_bytes()),
            train_size=len(self._base_train()),
            added=0,
            duplicates=0,
            redactions=0,
        )

    def _result(self, manifest: TrainingSetManifest) -> TrainingSetResult:
        return TrainingSetResult(
            version=manifest.version,
            path=self._where(manifest.version),
            sha256=manifest.sha256,
            train_size=manifest.train_size,
            added=len(manifest.added),
            duplicates=manifest.duplicates,
            redactions=manifest.redactions,
        )

    # ---- writing --------------------------------------------------------------------------------

    def extend(self, run_key: str, failed: Iterable[tuple[str, DelegationRequest, str]]) -> TrainingSetResult:
        """Append the failed decisions as new examples and write the next version; idempotent per ``run_key``.

        Each ``(source_id, request, label)`` becomes an example with a stable ``fb-`` id, its title and
        description redacted. Examples whose text (or id) is already in any split of the base dataset,
        in the current training set or earlier in the batch are skipped. A retry with the same
        ``run_key`` returns the version that run wrote; when the content would not change, no
        version is written and the latest one is returned with ``added=0``.
        """
        items = list(failed)
        for _ in range(_MAX_ATTEMPTS):
            result = self._extend_once(run_key, items)
            if result is not None:
                return result
            logger.info("another run wrote the next training set version first; recomputing run {}", run_key)
        raise TrainingSetError(
            f"the training set changed {_MAX_ATTEMPTS} times while run {run_key} was extending it; nothing written"
        )

    def _extend_once(self, run_key: str, items: list[tuple[str, DelegationRequest, str]]) -> TrainingSetResult | None:
        """One attempt on the latest version; None when another writer committed the next version first."""
        manifests = self.manifests()
        for manifest in manifests.values():
            if manifest.run_key == run_key:
                logger.info("training set version {} already written for run {}", manifest.version, run_key)
                return self._result(manifest)
        parent = max(manifests) if manifests else 0

        base_bytes = self.base_dataset.read_bytes()
        try:
            base_all = load_examples(self.base_dataset)
        except DatasetError as err:
            raise TrainingSetError(str(err)) from None
        seen_keys = {key for example in base_all for key in text_keys(example)}
        seen_ids = {example.id for example in base_all}

        carried = [e for e in base_all if e.split == "train"]
        parent_examples = self._load_verified(manifests[parent]) if parent else []
        dropped: list[str] = []
        # Feedback examples are carried over on the current base: if the shipped dataset changed
        # since the parent and now holds one's text (say in dev), it must leave the training set.
        feedback_ids = {i for m in manifests.values() if m.version <= parent for i in m.added}
        for example in parent_examples:
            if example.id not in feedback_ids:
                continue
            keys = text_keys(example)
            if example.id in seen_ids or seen_keys.intersection(keys):
                dropped.append(example.id)
                continue
            carried.append(example)
            seen_keys.update(keys)
            seen_ids.add(example.id)

        added: list[LabeledExample] = []
        duplicates = invalid = redactions = 0
        for source_id, request, label in items:
            new, count = self._to_example(source_id, request, label)
            if new is None:
                invalid += 1
                continue
            # Raw keys too: a dev text holding a phone number must not come back redacted.
            raw = new.model_copy(update={"title": request.title, "description": request.description})
            new_keys = set(text_keys(new)) | set(text_keys(raw))
            if new.id in seen_ids or seen_keys.intersection(new_keys):
                duplicates += 1
                continue
            added.append(new)
            seen_keys.update(new_keys)
            seen_ids.add(new.id)
            redactions += count

        examples = carried + added
        text = _serialize(examples)
        digest = sha256_of(text.encode("utf-8"))
        parent_sha = manifests[parent].sha256 if parent else None
        unchanged = digest == parent_sha or (parent == 0 and not added)
        if unchanged:
            logger.info(
                "training set unchanged for run {}: {} new example(s) were duplicates, {} invalid",
                run_key,
                duplicates,
                invalid,
            )
            current = self._result(manifests[parent]) if parent else self._base_result()
            return current.model_copy(update={"added": 0, "duplicates": duplicates, "redactions": 0})

        version = parent + 1
        manifest = TrainingSetManifest(
            version=version,
            sha256=digest,
            created_at=datetime.now(UTC),
            parent_version=parent,
            run_key=run_key,
            base_dataset_sha256=sha256_of(base_bytes),
            train_size=len(examples),
            added=[e.id for e in added],
            duplicates=duplicates,
            invalid=invalid,
            dropped=dropped,
            redactions=redactions,
        )
        if not self.rows.insert(version, manifest.model_dump_json(indent=2) + "\n", text):
            return None
        logger.info(
            "wrote training set version {} for run {}: {} examples, {} added, {} duplicates, {} invalid, "
            "{} dropped, {} redactions",
            version,
            run_key,
            len(examples),
            len(added),
            duplicates,
            invalid,
            len(dropped),
            redactions,
        )
        return self._result(manifest)

    def _to_example(self, source_id: str, request: DelegationRequest, label: str) -> tuple[LabeledExample | None, int]:
        """The redacted example, or None (logged by source only: the text may hold personal data)."""
        title, title_count = redact(request.title)
        description, description_count = redact(request.description)
        try:
            example = LabeledExample(
                id=example_id_for(source_id),
                title=title,
                description=description,
                priority=request.priority,
                assignees=request.assignees,
                label=label,
            )
            candidate_ids = [a.id for a in candidates_for(example.to_request())]
        except ValidationError as err:
            logger.warning("skipping failed decision {}: {} problem(s) in the example", source_id, err.error_count())
            return None, 0
        if label not in candidate_ids:
            logger.warning("skipping failed decision {}: {!r} is not one of its candidates", source_id, label)
            return None, 0
        return example, title_count + description_count

"""A job's terms as a request states them, their digests, and field-by-field comparison.

The terms a signed contract fixes (:class:`~services.protocol.messages.JobTerms`) are derived by
``contracts.job.job_terms``; a label party's :class:`TrainingSpec` states them too
(:func:`terms_document`). Every party compares the two with :func:`differences` and refuses
(403 ``contract_mismatch``) a job that differs, naming each field. The *spec digest* of a job is
the SHA-256 of its terms' canonical JSON; the *model digest* of a trained model version binds
that digest to every party's segment digest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from services.protocol.errors import ErrorCode, Forbidden
from services.protocol.fine_tune import tuned
from services.protocol.messages import (
    GbdtModelSpec,
    JobTerms,
    ModelSpec,
    PrepareJob,
    TrainingSpec,
    WireDtype,
)

MAX_SHOWN = 20
"""Differences listed in one refusal (the count is complete)."""


def canonical(document: Any) -> bytes:
    """JSON with sorted keys and no spaces, UTF-8: what digests are taken of."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def document_digest(document: Any) -> str:
    """SHA-256 (hex) of :func:`canonical`."""
    return hashlib.sha256(canonical(document)).hexdigest()


def terms_digest(terms: JobTerms) -> str:
    """The spec digest of ``terms``."""
    return document_digest(terms.model_dump(mode="json"))


def terms_document(spec: TrainingSpec) -> dict[str, Any]:
    """The terms a training spec asks for, shaped as ``JobTerms`` JSON (columns may be null:
    an open-mode spec that trains on every column)."""
    return {
        "task": spec.task.value,
        "label_party": spec.party,
        "label_column": spec.label_column,
        "id_column": spec.id_column,
        "columns": {
            spec.party: spec.columns,
            **{fp.name: fp.columns for fp in spec.feature_parties},
        },
        "key_columns": {fp.name: fp.key_column for fp in spec.feature_parties},
        "model": spec.model.model_dump(mode="json"),
        "protection": spec.protection.model_dump(mode="json"),
        "epochs": spec.epochs,
        "batch_size": spec.batch_size,
        "patience": spec.patience,
        "validation_fraction": spec.validation_fraction,
        "test_fraction": spec.test_fraction,
        "psi_limits": dict(spec.psi_limits),
    }


def spec_digest(spec: TrainingSpec) -> str:
    """The spec digest of a training spec: its terms' digest (equal to the contract's spec
    digest exactly when the spec trains what the contract says)."""
    return document_digest(terms_document(spec))


def model_digest(spec: str, segments: Mapping[str, str]) -> str:
    """The digest of a trained model: its spec digest and each party's segment digest."""
    return document_digest({"spec_digest": spec, "segment_digests": dict(segments)})


@dataclass(frozen=True, slots=True)
class Difference:
    """One field where a job differs from its contract: dotted path, both values."""

    field: str
    contract: Any
    job: Any

    def as_dict(self) -> dict[str, Any]:
        """JSON view."""
        return {"field": self.field, "contract": self.contract, "job": self.job}


_ABSENT = object()


def differences(contract: Any, job: Any, path: str = "") -> list[Difference]:
    """Every leaf where ``job`` differs from ``contract`` (both JSON-like), as dotted paths.

    Mappings are compared key by key (a key one side lacks is a difference at that key); lists
    and scalars as a whole, so ``model.bottom.paste.hidden`` names a changed layer list."""
    if isinstance(contract, Mapping) and isinstance(job, Mapping):
        found: list[Difference] = []
        for key in [*contract, *(k for k in job if k not in contract)]:
            sub = f"{path}.{key}" if path else str(key)
            a, b = contract.get(key, _ABSENT), job.get(key, _ABSENT)
            if a is _ABSENT or b is _ABSENT:
                found.append(
                    Difference(sub, None if a is _ABSENT else a, None if b is _ABSENT else b)
                )
            else:
                found.extend(differences(a, b, sub))
        return found
    if contract == job and type(contract) is type(job):
        return []
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (contract, job))
    if numbers and contract == job:
        return []  # 1 and 1.0 are one number in JSON
    return [Difference(path, contract, job)]


def require_same(
    contract: Any, job: Any, *, party: str, what: str = "the job", prefix: str = ""
) -> None:
    """Refuse (403 ``contract_mismatch``) when ``job`` differs from ``contract`` anywhere; the
    message names the first fields, ``detail`` lists them with both values."""
    found = differences(contract, job, prefix)
    if not found:
        return
    named = ", ".join(d.field for d in found[:5]) + (", ..." if len(found) > 5 else "")
    raise Forbidden(
        f"party {party} refuses {what}: it differs from the signed contract at {named}",
        code=ErrorCode.CONTRACT_MISMATCH,
        detail={
            "party": party,
            "fields": [d.field for d in found],
            "differences": [d.as_dict() for d in found[:MAX_SHOWN]],
        },
    )


def prepare_for(
    terms: JobTerms,
    party: str,
    *,
    job_id: str,
    seed: int,
    contract_id: str | None,
    keys: list[str] | None = None,
    alignment: Literal["psi", "keys"] = "psi",
    wire_dtype: WireDtype = "float32",
    warm_start: str | None = None,
    batch_size: int | None = None,
    lr_factor: float = 1.0,
) -> PrepareJob:
    """What feature party ``party`` is asked to prepare for a job of ``terms`` (``warm_start``:
    the job a retraining starts from, which the party checks is one of its own; then
    ``batch_size`` and ``lr_factor``: the contract's retraining policy, see
    services/protocol/fine_tune.py)."""
    prepare = PrepareJob.model_validate(
        {
            **segment_fields(terms.model, party),
            "job_id": job_id,
            "party": party,
            "seed": seed,
            "keys": keys or [],
            "alignment": alignment,
            "wire_dtype": wire_dtype,
            "protection": terms.protection,
            "batch_size": terms.batch_size,
            "contract_id": contract_id,
            "label_party": terms.label_party,
            "psi_limits": terms.psi_limits,
            "columns": terms.columns.get(party),
            "terms": terms,
            "warm_start": warm_start,
        }
    )
    return tuned(prepare, batch_size, lr_factor)


def segment_fields(model: ModelSpec | GbdtModelSpec, party: str) -> dict[str, Any]:
    """The family-specific part of what feature party ``party`` prepares: an ``nn`` job's
    bottom segment, optimizer and interactive layer; a ``gbdt`` job has no segment to train, so
    it prepares the placeholder ``identity`` segment (its rows are aligned as for ``nn``; its
    features never leave it: the segment endpoints refuse a tree job, docs/adr/0014)."""
    if isinstance(model, GbdtModelSpec):
        return {"family": model.family, "segment": {"kind": "identity"}, "optimizer": {}}
    return {
        "family": model.family,
        "segment": model.bottom[party],
        "optimizer": model.optimizer,
        "interactive": model.top.interactive,
        "interactive_optimizer": model.interactive_optimizer,
    }

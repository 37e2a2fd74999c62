"""The job a signed contract fixes: one derivation, used by the registry and by every party.

:func:`job_terms` turns a contract version into the :class:`JobTerms` of every job run under
it: the task and label, each party's columns (in the contract's order) and join key, the model,
the cut-layer protection and the training settings. From the terms come the label party's
:class:`TrainingSpec` (:func:`training_spec`) and each feature party's :class:`PrepareJob`
(:func:`prepare_job`); only what a contract cannot fix (the job id, the feature parties' URLs,
the seed, the alignment) is added. The registry records :func:`spec_digest` with each job; each
party derives the terms itself from the contract it fetched and refuses a job that differs
(``services.protocol.terms.require_same``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from contracts.spec import Contract
from services.protocol.messages import (
    FeaturePartyRef,
    JobTerms,
    PrepareJob,
    TrainingSpec,
    WireDtype,
)
from services.protocol.terms import prepare_for, terms_digest


def job_terms(contract: Contract) -> JobTerms:
    """What every job under ``contract`` trains (see the module docstring)."""
    label = contract.label_party
    training = contract.training
    return JobTerms(
        task=contract.task.type,
        label_party=label.name,
        label_column=contract.task.label.column,
        id_column=label.feature_schema.id_column,
        columns={p.name: p.feature_schema.column_names for p in contract.parties},
        key_columns={
            p.name: p.feature_schema.key_column
            for p in contract.feature_parties
            if p.feature_schema.key_column is not None
        },
        model=contract.model,
        protection=contract.protection.to_wire(),
        epochs=training.max_epochs,
        batch_size=training.batch_size,
        patience=training.patience,
        validation_fraction=training.validation_fraction,
        test_fraction=training.test_fraction,
        psi_limits=contract.alignment.limits([p.name for p in contract.parties]),
    )


def spec_digest(contract: Contract) -> str:
    """The spec digest of every job under ``contract``: SHA-256 of its terms' canonical JSON."""
    return terms_digest(job_terms(contract))


def training_spec(
    contract: Contract,
    *,
    job_id: str,
    contract_id: str | None,
    feature_urls: Mapping[str, str],
    seed: int = 0,
    alignment: Literal["psi", "keys"] = "psi",
    wire_dtype: WireDtype = "float32",
    checkpoint_every: int | None = None,
) -> TrainingSpec:
    """The label party's training spec for a job under ``contract``; ``feature_urls`` names
    where each feature party is reached (KeyError naming a party without one)."""
    terms = job_terms(contract)
    missing = [p.name for p in contract.feature_parties if p.name not in feature_urls]
    if missing:
        raise KeyError(f"no URL for feature part{'y' if len(missing) == 1 else 'ies'} {missing}")
    return TrainingSpec(
        job_id=job_id,
        contract_id=contract_id,
        task=terms.task,
        label_column=terms.label_column,
        party=terms.label_party,
        feature_parties=[
            FeaturePartyRef(
                name=p.name,
                url=feature_urls[p.name],  # validated as HttpUrl
                key_column=terms.key_columns[p.name],
                columns=terms.columns[p.name],
            )
            for p in contract.feature_parties
        ],
        model=terms.model,
        epochs=terms.epochs,
        batch_size=terms.batch_size,
        patience=terms.patience,
        seed=seed,
        validation_fraction=terms.validation_fraction,
        test_fraction=terms.test_fraction,
        id_column=terms.id_column,
        columns=terms.columns[terms.label_party],
        wire_dtype=wire_dtype,
        protection=terms.protection,
        alignment=alignment,
        checkpoint_every=checkpoint_every,
        psi_limits=terms.psi_limits,
    )


def prepare_job(
    contract: Contract,
    party: str,
    *,
    job_id: str,
    seed: int,
    contract_id: str | None,
    keys: list[str] | None = None,
    alignment: Literal["psi", "keys"] = "psi",
    wire_dtype: WireDtype = "float32",
) -> PrepareJob:
    """What feature party ``party`` is asked to prepare for a job under ``contract``."""
    return prepare_for(
        job_terms(contract),
        party,
        job_id=job_id,
        seed=seed,
        contract_id=contract_id,
        keys=keys,
        alignment=alignment,
        wire_dtype=wire_dtype,
    )


__all__ = ["job_terms", "prepare_job", "spec_digest", "training_spec"]

"""What a contract fixes about a job, and the feature party's job preparation."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    Field,
    model_validator,
)

from services.protocol.messages.base import JobId, PartyName, PsiLimits, Strict, Task, WireDtype
from services.protocol.messages.model import (
    MAX_BATCH_SIZE,
    MAX_EPOCHS,
    ColumnName,
    JobModel,
    ModelFamily,
    OptimizerSpec,
    SegmentSpec,
    _interactive_sgd,
)
from services.protocol.messages.protection import ProtectionMode, ProtectionSpec

# --- what a contract fixes about a job ----------------------------------------------------------


class JobTerms(Strict):
    """Everything a signed contract fixes about each job run under it: derived from the contract
    version (``contracts.job.job_terms``), carried by the label party to every feature party,
    and checked field by field by each party against the contract it fetched itself.

    ``columns`` lists each party's feature columns in the contract's order (the label party's
    too, possibly none); ``key_columns`` each feature party's join key. A job trains on exactly
    these columns. Its digest (:func:`services.protocol.terms.terms_digest`) is the job's *spec
    digest*, recorded with the job and with the model version it produces.
    """

    task: Task
    label_party: PartyName
    label_column: ColumnName
    id_column: ColumnName | None = None
    columns: Annotated[dict[PartyName, list[ColumnName]], Field(max_length=17)]
    key_columns: Annotated[dict[PartyName, ColumnName], Field(max_length=16)]
    model: JobModel
    protection: ProtectionSpec
    epochs: int = Field(ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(ge=1, le=MAX_BATCH_SIZE)
    patience: int = Field(ge=1, le=MAX_EPOCHS)
    validation_fraction: float = Field(gt=0.0, lt=0.5)
    test_fraction: float = Field(gt=0.0, lt=0.5)
    psi_limits: PsiLimits = Field(
        default_factory=dict,
        description="Each party's most distinct PSI keys (the contract's alignment.max_keys).",
    )


# --- feature party: job preparation -------------------------------------------------------------


class PrepareJob(Strict):
    """Label party -> feature party: create this party's segment for a job and align rows.

    ``keys`` are the distinct join keys the label party's rows reference. The answer says which
    exist; from then on a row is named by its *handle*, its position in ``keys``, never by key.
    """

    job_id: JobId
    party: PartyName
    family: ModelFamily = "nn"
    segment: SegmentSpec
    optimizer: OptimizerSpec
    seed: int = Field(ge=0, le=2**32 - 1)
    keys: list[Annotated[str, Field(max_length=1024)]] = Field(max_length=5_000_000)
    wire_dtype: WireDtype = "float32"
    protection: ProtectionSpec = Field(default_factory=ProtectionSpec)
    interactive: int = Field(default=16, ge=1, le=4096, description="Width m of W_i (d x m).")
    interactive_optimizer: OptimizerSpec = Field(default_factory=_interactive_sgd)
    batch_size: int = Field(default=256, ge=1, le=65_536, description="Sizes the CKKS layout.")
    contract_id: str | None = Field(default=None, max_length=64)
    label_party: PartyName | None = Field(
        default=None, description="The label party's name (whose psi_limits entry bounds it)."
    )
    warm_start: JobId | None = Field(
        default=None,
        description="A finished job of the same contract at this party (the champion): the "
        "segment starts from its weights and encodes with its encoder (retraining, issue 18).",
    )
    alignment: Literal["psi", "keys"] = Field(
        default="psi",
        description="psi: no key travels; rows are aligned by POST .../psi (ECDH PSI) and named "
        "by per-job handles. keys: the label party lists its keys (local pilots, tests).",
    )
    psi_limits: PsiLimits = Field(
        default_factory=dict,
        description="Each party's most distinct PSI keys (the contract's alignment.max_keys; "
        "under a registry they must equal the contract's). A party checks its own set and the "
        "label party's announced count before any exponentiation.",
    )
    columns: Annotated[list[ColumnName], Field(max_length=2000)] | None = Field(
        default=None,
        description="The columns of this party's table the segment takes, in order (the "
        "contract's); null: every column but the key (open mode only).",
    )
    terms: JobTerms | None = Field(
        default=None,
        description="The whole job as the label party trains it; a party enforcing a contract "
        "requires it and compares it, field by field, with the terms of the contract it fetched.",
    )

    @model_validator(mode="after")
    def _distinct(self) -> PrepareJob:
        if len(set(self.keys)) != len(self.keys):
            raise ValueError("keys must be distinct")
        if self.alignment == "psi" and self.keys:
            raise ValueError("with psi alignment no key travels: keys must be empty")
        return self


class PreparedJob(Strict):
    """Feature party's answer to :class:`PrepareJob`."""

    job_id: JobId
    party: PartyName
    in_features: int
    out_features: int
    found: list[bool]
    feature_names: list[str]
    mode: ProtectionMode = "plain"
    trainable: bool = Field(
        default=True,
        description="The party's bottom has trainable parameters: it receives dL/dh. False for "
        "an identity bottom, which only trains its share of the interactive weights.",
    )
    share: list[list[float]] | None = Field(
        default=None,
        description="plain mode: this party's initial share W_P (d x m) of its interactive "
        "weights; in ckks mode it never leaves the party.",
    )
    key_fingerprint: str | None = Field(
        default=None, description="ckks mode: sha256 of the public key bundle (GET .../keys)."
    )
    key_bytes: int = 0

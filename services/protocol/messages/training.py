"""The label party's training runs: specs, warm start, status."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    Field,
    HttpUrl,
    model_validator,
)

from services.protocol.messages.base import JobId, PartyName, PsiLimits, Strict, Task, WireDtype
from services.protocol.messages.model import (
    MAX_BATCH_SIZE,
    MAX_EPOCHS,
    ColumnName,
    JobModel,
    ModelSpec,
)
from services.protocol.messages.protection import ProtectionMode, ProtectionSpec

# --- label party: training runs -----------------------------------------------------------------


class FeaturePartyRef(Strict):
    """A feature party of a job, as the label party reaches it."""

    name: PartyName
    url: HttpUrl
    key_column: str = Field(min_length=1, max_length=256)
    columns: Annotated[list[ColumnName], Field(max_length=2000)] | None = Field(
        default=None, description="Its columns the job uses (the contract's); null: all."
    )


class WarmStart(Strict):
    """A retraining job (issue 18): every party starts from the champion job's weights and
    encoders instead of fresh ones, and trains ``epochs`` epochs on the recent window: the label
    party's rows from ``from_row`` on (the rows its table gained after the champion trained), in
    batches of ``batch_size`` with every learning rate times ``lr_factor``
    (:func:`services.protocol.fine_tune.tuned_spec`)."""

    job_id: JobId
    from_row: int = Field(ge=0, le=10**12)
    epochs: int = Field(default=3, ge=1, le=MAX_EPOCHS)
    batch_size: int | None = Field(
        default=None,
        ge=1,
        le=MAX_BATCH_SIZE,
        description="The fine-tune's batch size (the contract's retraining policy); null: the "
        "job's own.",
    )
    lr_factor: float = Field(
        default=1.0,
        gt=0.0,
        le=1.0,
        description="Every learning rate of the job (segments, top, interactive weights) times "
        "this factor, at every party (the contract's retraining policy).",
    )


class TrainingSpec(Strict):
    """Ask the label party to train a joint model with the given feature parties."""

    job_id: JobId
    contract_id: str | None = Field(
        default=None,
        max_length=64,
        description="The registry contract the job runs under (required when parties enforce).",
    )
    task: Task
    label_column: str = Field(min_length=1, max_length=256)
    party: PartyName
    feature_parties: list[FeaturePartyRef] = Field(min_length=1, max_length=16)
    model: JobModel
    epochs: int = Field(default=20, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(default=256, ge=1, le=MAX_BATCH_SIZE)
    patience: int = Field(default=5, ge=1, le=MAX_EPOCHS)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    validation_fraction: float = Field(default=0.15, gt=0.0, lt=0.5)
    test_fraction: float = Field(default=0.15, gt=0.0, lt=0.5)
    id_column: str | None = None
    columns: Annotated[list[ColumnName], Field(max_length=2000)] | None = Field(
        default=None,
        description="The label party's own feature columns, in order (the contract's). Null: "
        "every column but the label, the keys, the id and ``exclude_columns`` (open mode only: "
        "a party enforcing a contract trains on exactly the contract's columns).",
    )
    exclude_columns: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=list,
        max_length=1024,
        description="With ``columns`` null: columns of the label party's table that are not "
        "features (e.g. a second label such as defect_type when training on defect).",
    )
    wire_dtype: WireDtype = "float32"
    protection: ProtectionSpec = Field(default_factory=ProtectionSpec)
    alignment: Literal["psi", "keys"] = Field(
        default="psi", description="How rows are aligned with feature parties (PrepareJob)."
    )
    psi_limits: PsiLimits = Field(
        default_factory=dict,
        description="Each party's most distinct PSI keys (the contract's alignment.max_keys; "
        "under a registry they must equal the contract's; a party not named: each party's "
        "own setting psi_max_keys).",
    )
    checkpoint_every: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        description="Steps between consistent checkpoints of every party (a run resumes from the "
        "last one after a feature party's restart); unset: at the end of each epoch only.",
    )
    warm_start: WarmStart | None = Field(
        default=None,
        description="Retrain from a finished job of the same contract (the champion) on the "
        "recent window, for ``warm_start.epochs`` epochs (issue 18).",
    )

    @model_validator(mode="after")
    def _parties(self) -> TrainingSpec:
        names = [p.name for p in self.feature_parties]
        if len(set(names)) != len(names) or self.party in names:
            raise ValueError("party names must be distinct")
        bottoms = set(self.model.bottom) if isinstance(self.model, ModelSpec) else set(names)
        missing = {self.party, *names} - bottoms
        extra = bottoms - {self.party, *names}
        if extra:
            raise ValueError(f"model.bottom names unknown parties: {sorted(extra)}")
        if missing - {self.party}:
            raise ValueError(f"model.bottom has no segment for {sorted(missing - {self.party})}")
        unknown = set(self.psi_limits) - {self.party, *names}
        if unknown:
            raise ValueError(f"psi_limits names unknown parties: {sorted(unknown)}")
        return self


class ContractTraining(Strict):
    """Ask the label party to train the job a contract fixes (``POST
    /v1/contracts/{contract_id}/trainings``): everything else comes from the contract."""

    job_id: JobId | None = Field(
        default=None,
        description="The registry job to train; unset: the label party opens one under the "
        "contract.",
    )
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    feature_urls: Annotated[dict[PartyName, HttpUrl], Field(max_length=16)] = Field(
        default_factory=dict,
        description="Where each feature party is reached (default: the label party's "
        "SPLICE_PARTY_PEERS setting).",
    )
    checkpoint_every: int | None = Field(default=None, ge=1, le=10_000_000)


class JobState(StrEnum):
    """Lifecycle of a training run at the label party."""

    PENDING = "pending"
    ALIGNING = "aligning"
    TRAINING = "training"
    FINISHED = "finished"
    FAILED = "failed"


class EpochMetrics(Strict):
    """Metrics after one epoch."""

    epoch: int
    train_loss: float
    validation: dict[str, float]
    seconds: float


class TrainingStatus(Strict):
    """The label party's view of a training run."""

    job_id: JobId
    state: JobState
    task: Task
    epoch: int = 0
    epochs: int
    step: int = 0
    steps_per_epoch: int = 0
    rows: dict[str, int] = Field(default_factory=dict)
    history: list[EpochMetrics] = Field(default_factory=list)
    best_epoch: int | None = None
    test: dict[str, float] = Field(default_factory=dict)
    train_seconds: float = 0.0
    samples_per_second: float = 0.0
    bytes_sent: int = 0
    bytes_received: int = 0
    train_samples: int = 0
    train_bytes: int = 0
    mode: ProtectionMode = "plain"
    key_bytes: int = 0
    contributions: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="Per party, on the validation split: 'shapley' (exact) and 'leave_one_out' "
        "contributions to the primary metric (absent parties replaced by their mean input).",
    )
    resumes: int = Field(
        default=0, description="Times the run went back to its last consistent checkpoint."
    )
    share_bits: dict[str, int] = Field(
        default_factory=dict,
        description="ckks: per feature party, the width in bits of the offsets that "
        "re-randomise the label party's interactive share each step (the contract's share_bits "
        "unless the interactive learning rate forced fewer; then see warnings).",
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="What weakens the protection the contract states, said once per run.",
    )
    label_privacy: dict[str, float | int | str] = Field(
        default_factory=dict,
        description="Label differential privacy spent by this job: mechanism, epsilon and "
        "delta per unit, the unit, the per-row epsilon and the group size behind it (empty "
        "without label privacy).",
    )
    spec_digest: str | None = Field(
        default=None, description="Digest of the job's terms (what the contract fixes)."
    )
    segment_digests: dict[str, str] = Field(
        default_factory=dict,
        description="Per party, the digest of the segment weights of the chosen model.",
    )
    model_digest: str | None = Field(
        default=None, description="Digest of the spec and every segment digest (finished runs)."
    )
    error: str | None = None
    failed_party: str | None = Field(
        default=None,
        description="A failed run: the party at fault (the one whose call failed or refused, "
        "else this label party).",
    )
    cancelled: str | None = Field(
        default=None, description="A run stopped at the registry: the reason given there."
    )

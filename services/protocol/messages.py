"""Typed messages exchanged between Splice services.

JSON messages are pydantic models. Binary messages (forward, backward, embed) carry one of the
``*Header`` models as the codec frame's header and their tensors beside it.

Every state-changing message names its job, its step and an idempotency key: a retried request is
answered from the cache, not applied twice; a different request for an already-applied step is a
conflict.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, model_validator

JobId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
PartyName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]
IdempotencyKey = Annotated[str, Field(min_length=8, max_length=64)]
Step = Annotated[int, Field(ge=0, le=2**40)]
WireDtype = Literal["float32", "float16", "bfloat16"]


class Strict(BaseModel):
    """Base for wire models: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Task(StrEnum):
    """What the joint model predicts."""

    BINARY = "binary"
    MULTICLASS = "multiclass"
    REGRESSION = "regression"


Activation = Literal["relu", "gelu", "tanh", "sigmoid", "leaky_relu", "identity"]


class SegmentSpec(Strict):
    """An MLP segment: hidden layers, then an output layer of width ``out``."""

    hidden: list[Annotated[int, Field(ge=1, le=4096)]] = Field(default_factory=lambda: [64])
    out: Annotated[int, Field(ge=1, le=4096)] = 32
    activation: Activation = "relu"
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    batch_norm: bool = False


class TopSpec(Strict):
    """The label party's part above the cut: interactive layer (``interactive`` wide), then MLP."""

    interactive: Annotated[int, Field(ge=1, le=4096)] = 16
    hidden: list[Annotated[int, Field(ge=1, le=4096)]] = Field(default_factory=lambda: [32])
    activation: Activation = "relu"
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0


class OptimizerSpec(Strict):
    """Optimizer every segment of the job uses."""

    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: Annotated[float, Field(gt=0.0, le=10.0)] = 1e-3
    weight_decay: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0


class ModelSpec(Strict):
    """The joint model: one bottom segment per party (by name), the top, the optimizer."""

    bottom: dict[PartyName, SegmentSpec]
    top: TopSpec = Field(default_factory=TopSpec)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)


# --- feature party: job preparation -------------------------------------------------------------


class PrepareJob(Strict):
    """Label party -> feature party: create this party's segment for a job and align rows.

    ``keys`` are the distinct join keys the label party's rows reference. The answer says which
    exist; from then on a row is named by its *handle*, its position in ``keys``, never by key.
    """

    job_id: JobId
    party: PartyName
    segment: SegmentSpec
    optimizer: OptimizerSpec
    seed: int = Field(ge=0, le=2**32 - 1)
    keys: list[Annotated[str, Field(max_length=1024)]] = Field(max_length=5_000_000)
    wire_dtype: WireDtype = "float32"

    @model_validator(mode="after")
    def _distinct(self) -> PrepareJob:
        if len(set(self.keys)) != len(self.keys):
            raise ValueError("keys must be distinct")
        return self


class PreparedJob(Strict):
    """Feature party's answer to :class:`PrepareJob`."""

    job_id: JobId
    party: PartyName
    in_features: int
    out_features: int
    found: list[bool]
    feature_names: list[str]


# --- feature party: per-step frames (headers of binary messages) --------------------------------


class ForwardHeader(Strict):
    """Header of a forward frame; tensors: ``handles`` (int64[B]) and optionally ``grad``.

    When ``grad_step`` is set, ``grad`` (float[B', out]) is the gradient for the forward of step
    ``grad_step`` and is applied before this forward: one round trip per training step.
    """

    job_id: JobId
    step: Step
    idempotency_key: IdempotencyKey
    train: bool = True
    grad_step: Step | None = None


class BackwardHeader(Strict):
    """Header of a backward frame; tensor ``grad`` (float[B, out]) for the forward of ``step``."""

    job_id: JobId
    step: Step
    idempotency_key: IdempotencyKey


class EmbedHeader(Strict):
    """Header of an embed frame (evaluation, no state change); tensor ``handles`` (int64[B])."""

    job_id: JobId


class ActivationsHeader(Strict):
    """Header of the answer to forward/embed; tensor ``activations`` (float[B, out])."""

    job_id: JobId
    step: Step | None = None


class StepAck(Strict):
    """Answer to a backward."""

    job_id: JobId
    step: Step
    applied: bool


class CheckpointRequest(Strict):
    """Ask a party to save (or restore) its segment and optimizer state under ``tag``."""

    tag: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class CheckpointInfo(Strict):
    """What a party saved or restored."""

    job_id: JobId
    tag: str
    step: int
    sha256: str


# --- label party: training runs -----------------------------------------------------------------


class FeaturePartyRef(Strict):
    """A feature party of a job, as the label party reaches it."""

    name: PartyName
    url: HttpUrl
    key_column: str = Field(min_length=1, max_length=256)


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
    model: ModelSpec
    epochs: int = Field(default=20, ge=1, le=10_000)
    batch_size: int = Field(default=256, ge=1, le=65_536)
    patience: int = Field(default=5, ge=1, le=1000)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    validation_fraction: float = Field(default=0.15, gt=0.0, lt=0.5)
    test_fraction: float = Field(default=0.15, gt=0.0, lt=0.5)
    id_column: str | None = None
    exclude_columns: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=list,
        max_length=1024,
        description="Columns of the label party's table that are not features (e.g. a second "
        "label such as defect_type when training on defect).",
    )
    wire_dtype: WireDtype = "float32"

    @model_validator(mode="after")
    def _parties(self) -> TrainingSpec:
        names = [p.name for p in self.feature_parties]
        if len(set(names)) != len(names) or self.party in names:
            raise ValueError("party names must be distinct")
        missing = {self.party, *names} - set(self.model.bottom)
        extra = set(self.model.bottom) - {self.party, *names}
        if extra:
            raise ValueError(f"model.bottom names unknown parties: {sorted(extra)}")
        if missing - {self.party}:
            raise ValueError(f"model.bottom has no segment for {sorted(missing - {self.party})}")
        return self


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
    error: str | None = None

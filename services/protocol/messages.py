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

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, HttpUrl, model_validator

from services.protocol.bounds import INT32_MAX

JobId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
PartyName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]
IdempotencyKey = Annotated[str, Field(min_length=8, max_length=64)]
Step = Annotated[int, Field(ge=0, le=2**40)]
EventId = Annotated[str, Field(pattern=r"^[A-Za-z0-9-]{8,64}$")]
"""A usage event's id (the label party's UUID), the idempotency key of metering."""
MAX_PREDICT_ROWS = 10_000
"""Most rows one prediction request (so one usage event) may carry."""
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


def _interactive_sgd() -> OptimizerSpec:
    return OptimizerSpec(name="sgd", lr=0.1, momentum=0.9)


class ModelSpec(Strict):
    """The joint model: one bottom segment per party (by name), the top, the optimizers.

    ``optimizer`` trains the bottoms and the top. ``interactive_optimizer`` trains the feature
    parties' interactive weights ``W_i``, which are additively shared in CKKS mode; shares can
    only follow a *linear* update, so it must be SGD (momentum and weight decay are linear) and
    is the same in every protection mode (docs/adr/0001-ckks-interactive-layer.md).
    """

    bottom: dict[PartyName, SegmentSpec]
    top: TopSpec = Field(default_factory=TopSpec)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    interactive_optimizer: OptimizerSpec = Field(default_factory=_interactive_sgd)

    @model_validator(mode="after")
    def _linear_interactive(self) -> ModelSpec:
        if self.interactive_optimizer.name != "sgd":
            raise ValueError("interactive_optimizer must be sgd: shared weights need a linear rule")
        return self


# --- protection of the cut layer ----------------------------------------------------------------

ProtectionMode = Literal["plain", "ckks"]


class DefenceSpec(Strict):
    """Label-leakage defence on what feature parties receive (both modes, on by default).

    Each example's gradient ``dL/dz`` (per-example loss scale) is clipped to ``max_norm`` and
    Gaussian noise of standard deviation ``noise_multiplier * max_norm`` is added per coordinate
    before anything derived from it leaves the label party.
    """

    enabled: bool = True
    max_norm: float = Field(default=4.0, gt=0.0, le=1e6, allow_inf_nan=False)
    noise_multiplier: float = Field(default=0.25, ge=0.0, le=100.0, allow_inf_nan=False)


class CkksSpec(Strict):
    """CKKS parameters of the protected interactive layer (see services/engine/he/params.py).

    ``share_bits``: the label party re-randomises its share of each ``W_i`` every step by a fresh
    offset uniform in ``+-2**share_bits`` (what the feature party learns about W's trajectory is
    hidden at that scale; docs/threat-model.md states the bound).
    """

    poly_modulus_degree: Literal[8192, 16384] = 8192
    coeff_mod_bit_sizes: list[Annotated[int, Field(ge=20, le=60)]] = Field(
        default_factory=lambda: [60, 40, 60], min_length=3, max_length=8
    )
    input_scale_bits: int = Field(default=40, ge=20, le=60)
    output_scale_bits: int = Field(default=30, ge=20, le=60)
    mask_bits: int = Field(default=26, ge=8, le=50)
    share_bits: int = Field(default=10, ge=0, le=20)


class ProtectionSpec(Strict):
    """How the cut layer of a job is protected: ``plain`` or ``ckks``, plus the defence."""

    mode: ProtectionMode = "ckks"
    ckks: CkksSpec = Field(default_factory=CkksSpec)
    defence: DefenceSpec = Field(default_factory=DefenceSpec)


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
    protection: ProtectionSpec = Field(default_factory=ProtectionSpec)
    interactive: int = Field(default=16, ge=1, le=4096, description="Width m of W_i (d x m).")
    interactive_optimizer: OptimizerSpec = Field(default_factory=_interactive_sgd)
    batch_size: int = Field(default=256, ge=1, le=65_536, description="Sizes the CKKS layout.")
    contract_id: str | None = Field(default=None, max_length=64)
    alignment: Literal["psi", "keys"] = Field(
        default="psi",
        description="psi: no key travels; rows are aligned by POST .../psi (ECDH PSI) and named "
        "by per-job handles. keys: the label party lists its keys (local pilots, tests).",
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
    share: list[list[float]] | None = Field(
        default=None,
        description="plain mode: this party's initial share W_P (d x m) of its interactive "
        "weights; in ckks mode it never leaves the party.",
    )
    key_fingerprint: str | None = Field(
        default=None, description="ckks mode: sha256 of the public key bundle (GET .../keys)."
    )
    key_bytes: int = 0


# --- feature party: per-step frames (headers of binary messages) --------------------------------


class ForwardHeader(Strict):
    """Header of a forward frame; tensors: ``handles`` (int64[B]) and optionally ``grad``.

    When ``grad_step`` is set, ``grad`` (float[B', out]) is the gradient for the forward of step
    ``grad_step`` and is applied before this forward: one round trip per training step.

    In ckks mode the gradient travels as two uint8 ciphertext blobs, ``grad_w`` (``Enc(h^T dz +
    R')``, this party's masked share of W's gradient) and ``grad_h`` (``Enc(dz~ W^T)``), and the
    answer carries ``enc_h`` (``Enc(h)``) and ``enc_w`` (``Enc(W_P)``) instead of ``activations``.
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
    """Header of an embed frame (evaluation, no state change); tensor ``handles`` (int64[B]).

    In ckks mode the answer is ``enc_h`` and ``ref`` names it for the :class:`MixHeader` that
    follows (the party keeps the few latest embeddings by ``ref``).
    """

    job_id: JobId
    ref: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] | None = None
    usage_event: EventId | None = Field(
        default=None,
        description="The usage event of the prediction this embed serves (label party's id): "
        "the feature party records it for the registry's reconciliation.",
    )


class MixHeader(Strict):
    """ckks mode, second message of a forward or an embed: tensor ``masked`` (uint8 blob,
    ``Enc(h W_A + R)``). The party decrypts it, adds ``h W_P`` and answers tensor ``mixed``
    (float64[B, m]). Names the training ``step`` or the embed ``ref`` it completes."""

    job_id: JobId
    step: Step | None = None
    ref: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] | None = None

    @model_validator(mode="after")
    def _one(self) -> MixHeader:
        if (self.step is None) == (self.ref is None):
            raise ValueError("a mix names exactly one of step or ref")
        return self


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
    protection: ProtectionSpec = Field(default_factory=ProtectionSpec)
    alignment: Literal["psi", "keys"] = Field(
        default="psi", description="How rows are aligned with feature parties (PrepareJob)."
    )
    checkpoint_every: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        description="Steps between consistent checkpoints of every party (a run resumes from the "
        "last one after a feature party's restart); unset: at the end of each epoch only.",
    )

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
    error: str | None = None


# --- usage metering (label party -> registry) ---------------------------------------------------


class UsageEvent(Strict):
    """Served predictions of one request: the unit the registry meters and bills.

    ``event_id`` is chosen by the label party (a UUID) and is the idempotency key: the registry
    counts an event once however often it is posted. ``caller_token`` is the access token the
    prediction call carried, as presented: the registry verifies it (its signature, that it was
    issued for this label party and contract and valid when the call was served) and bills the
    organisation it names, never the label party's word for it (``caller_org`` must agree).
    """

    event_id: EventId
    contract_id: str = Field(min_length=1, max_length=64)
    contract_version: int = Field(ge=1, le=INT32_MAX)
    model_version: int = Field(ge=1, le=INT32_MAX)
    caller_org: str = Field(min_length=1, max_length=64)
    count: int = Field(ge=1, le=MAX_PREDICT_ROWS)
    timestamp: AwareDatetime
    caller_token: str | None = Field(default=None, min_length=1, max_length=8192)


class UsageBatch(Strict):
    """Usage events the label party ships to the registry in one ``POST /v1/usage``."""

    events: list[UsageEvent] = Field(min_length=1, max_length=500)


class ServingObservation(Strict):
    """A feature party's own record of one serving call: it computed its part of the joint
    model for ``rows`` handles of a deployed ``job_id``, for the usage event the label party
    named (``event_id``; empty when the call named none). Reported independently of the label
    party, so the registry can reconcile the two sides (``POST /v1/usage/observations``)."""

    observation_id: EventId
    event_id: Annotated[str, Field(pattern=r"^([A-Za-z0-9-]{8,64})?$")]
    contract_id: str = Field(min_length=1, max_length=64)
    job_id: JobId
    rows: int = Field(ge=0, le=MAX_PREDICT_ROWS)
    timestamp: AwareDatetime


class ObservationBatch(Strict):
    """Serving observations a feature party ships to the registry in one request."""

    observations: list[ServingObservation] = Field(min_length=1, max_length=500)


class UsageRefusal(BaseModel):
    """One event the registry will never count, and why (e.g. ``usage_cap_reached``)."""

    model_config = ConfigDict(extra="ignore")

    event_id: str
    code: str
    message: str = ""


class UsageReceipt(BaseModel):
    """The registry's answer to a usage batch: ids stored now, ids it already held, refusals.

    Read leniently (unknown fields are ignored): the registry may say more than this."""

    model_config = ConfigDict(extra="ignore")

    accepted: list[str] = Field(default_factory=list)
    duplicates: list[str] = Field(default_factory=list)
    refused: list[UsageRefusal] = Field(default_factory=list)


# --- joint inference (a buyer -> the label party) -----------------------------------------------

CellValue = str | int | float | bool | None


class PredictRequest(Strict):
    """Rows to predict: each names the label party's own feature columns and, per feature party,
    its join key column (e.g. ``paste_lot_id``). Exactly those columns: an unknown or missing
    one is refused (422) by name."""

    rows: list[dict[str, CellValue]] = Field(min_length=1, max_length=MAX_PREDICT_ROWS)


class Prediction(Strict):
    """The joint model's answer for one row.

    Binary: ``probability`` of the positive class and the predicted ``label`` (threshold 0.5).
    Multiclass: the predicted ``label`` and ``probabilities`` by class. Regression: ``value``.
    """

    label: str | None = None
    probability: float | None = None
    probabilities: dict[str, float] | None = None
    value: float | None = None


class PredictResponse(Strict):
    """Predictions in request order, with the model and contract versions that made them and
    the usage event that meters them."""

    model_version: int
    contract_version: int
    event_id: str
    predictions: list[Prediction]

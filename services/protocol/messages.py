"""Typed messages exchanged between Splice services.

JSON messages are pydantic models. Binary messages (forward, backward, embed) carry one of the
``*Header`` models as the codec frame's header and their tensors beside it.

Every state-changing message names its job, its step and an idempotency key: a retried request is
answered from the cache, not applied twice; a different request for an already-applied step is a
conflict.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    HttpUrl,
    model_validator,
)

from services.protocol.bounds import INT32_MAX
from services.protocol.errors import ErrorCode, Unprocessable

JobId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
PartyName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]
IdempotencyKey = Annotated[str, Field(min_length=8, max_length=64)]
Step = Annotated[int, Field(ge=0, le=2**40)]
EventId = Annotated[str, Field(pattern=r"^[A-Za-z0-9-]{8,64}$")]
"""A usage event's id (the label party's UUID), the idempotency key of metering."""
MAX_PREDICT_ROWS = 10_000
"""Most rows one prediction request (so one usage event) may carry."""
WireDtype = Literal["float32", "float16", "bfloat16"]
MAX_PSI_KEYS = 1 << 25
"""Most distinct keys any party may bring to a PSI (the frame's own limit)."""
PsiLimits = Annotated[
    dict[PartyName, Annotated[int, Field(ge=1, le=MAX_PSI_KEYS)]], Field(max_length=17)
]
"""Party -> the most distinct keys it may bring to the job's PSI (the contract's
``alignment.max_keys``)."""


class Strict(BaseModel):
    """Base for wire models: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Task(StrEnum):
    """What the joint model predicts."""

    BINARY = "binary"
    MULTICLASS = "multiclass"
    REGRESSION = "regression"


Activation = Literal["relu", "gelu", "tanh", "sigmoid", "leaky_relu", "identity"]
ColumnName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
"""A table column: letters, digits and underscores, not starting with a digit, at most 64."""

MAX_WIDTH = 4096
"""Widest layer of any segment (units)."""
MAX_HIDDEN_LAYERS = 8
"""Most hidden layers of one segment."""
MAX_LAYER_WEIGHTS = 1 << 22
"""Most weights between a segment's layers (its input layer aside, whose width depends on the
party's columns): 4,194,304, i.e. 16 MiB of float32, 64 MiB with Adam's state."""
MAX_EPOCHS = 1000
MAX_BATCH_SIZE = 65_536

Width = Annotated[int, Field(ge=1, le=MAX_WIDTH)]
Hidden = Annotated[list[Width], Field(max_length=MAX_HIDDEN_LAYERS)]


def _weights_bound(widths: list[int], what: str) -> None:
    weights = sum(a * b for a, b in zip(widths, widths[1:], strict=False))
    if weights > MAX_LAYER_WEIGHTS:
        raise ValueError(
            f"{what} has {weights:,} weights between its layers; at most {MAX_LAYER_WEIGHTS:,}"
        )


class SegmentSpec(Strict):
    """A party's bottom segment.

    ``mlp``: hidden layers, then an output layer of width ``out``, trained by the label's
    gradient. ``identity``: the party's encoded features themselves (``out``, ``hidden`` and the
    rest are ignored; the cut width is the number of encoded features). An identity bottom has
    nothing to train, so its party never receives ``dL/dh``: its features reach the model only
    through the shared interactive weights (docs/adr/0007-label-privacy.md).

    Bounded: at most 8 hidden layers of at most 4096 units, and at most 2**22 weights between
    the layers (the input layer aside)."""

    kind: Literal["mlp", "identity"] = "mlp"
    hidden: Hidden = Field(default_factory=lambda: [64])
    out: Width = 32
    activation: Activation = "relu"
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    batch_norm: bool = False

    @model_validator(mode="after")
    def _size(self) -> SegmentSpec:
        _weights_bound([*self.hidden, self.out], "the segment")
        return self


class TopSpec(Strict):
    """The label party's part above the cut: interactive layer (``interactive`` wide), then MLP.

    Bounded like a segment."""

    interactive: Width = 16
    hidden: Hidden = Field(default_factory=lambda: [32])
    activation: Activation = "relu"
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0

    @model_validator(mode="after")
    def _size(self) -> TopSpec:
        _weights_bound([self.interactive, *self.hidden], "the top")
        return self


class OptimizerSpec(Strict):
    """Optimizer every segment of the job uses."""

    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: Annotated[float, Field(gt=0.0, le=10.0)] = 1e-3
    weight_decay: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0


def _interactive_sgd() -> OptimizerSpec:
    return OptimizerSpec(name="sgd", lr=0.1, momentum=0.9)


ModelFamily = Literal["nn", "gbdt"]
"""Model families a contract may name: ``nn`` (neural segments) and ``gbdt`` (vertical
gradient-boosted trees, docs/adr/0012-vertical-gbdt.md). A new family is a new value of
``family`` with its own typed parameters, not a new schema version."""
MODEL_FAMILIES: tuple[str, ...] = ("nn", "gbdt")


class ModelSpec(Strict):
    """The ``nn`` family's joint model: one bottom segment per party (by name), the top, the
    optimizers.

    ``optimizer`` trains the bottoms and the top. ``interactive_optimizer`` trains the feature
    parties' interactive weights ``W_i``, which are additively shared in CKKS mode; shares can
    only follow a *linear* update, so it must be SGD (momentum and weight decay are linear) and
    is the same in every protection mode (docs/adr/0001-ckks-interactive-layer.md).
    """

    family: Literal["nn"] = "nn"
    bottom: Annotated[dict[PartyName, SegmentSpec], Field(max_length=17)]
    top: TopSpec = Field(default_factory=TopSpec)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    interactive_optimizer: OptimizerSpec = Field(default_factory=_interactive_sgd)

    @model_validator(mode="after")
    def _linear_interactive(self) -> ModelSpec:
        if self.interactive_optimizer.name != "sgd":
            raise ValueError("interactive_optimizer must be sgd: shared weights need a linear rule")
        return self


class GbdtModelSpec(Strict):
    """The ``gbdt`` family's model: boosted trees grown by the label party over every party's
    (encrypted, under the contract's protection) gradient histograms. The objective follows the
    job's task; each party bins its own columns into at most ``bins`` quantile bins."""

    family: Literal["gbdt"]
    trees: int = Field(default=10, ge=1, le=2000)
    depth: int = Field(default=3, ge=1, le=12)
    learning_rate: float = Field(default=0.3, gt=0.0, le=1.0)
    bins: int = Field(default=32, ge=2, le=256)
    min_child_weight: float = Field(default=1e-3, ge=0.0, le=1e6)
    l2: float = Field(default=1.0, ge=0.0, le=1e6)
    min_split_gain: float = Field(default=0.0, ge=0.0, le=1e6)
    row_subsample: float = Field(default=1.0, gt=0.0, le=1.0)
    col_subsample: float = Field(default=1.0, gt=0.0, le=1.0)
    early_stopping_rounds: int = Field(default=0, ge=0, le=1000)


def _default_family(value: Any) -> Any:
    """A model section that names no ``family`` is an ``nn`` one (documents written before
    families existed)."""
    if isinstance(value, dict) and "family" not in value:
        return {"family": "nn", **value}
    return value


JobModel = Annotated[
    ModelSpec | GbdtModelSpec, Field(discriminator="family"), BeforeValidator(_default_family)
]


def nn_model(model: ModelSpec | GbdtModelSpec) -> ModelSpec:
    """The ``nn`` model of a job; a job of another family reaching nn-only code is refused
    (422 ``family_not_implemented``)."""
    if isinstance(model, ModelSpec):
        return model
    raise Unprocessable(
        f"model family {model.family!r} is not trained by the neural-segment protocol",
        code=ErrorCode.FAMILY_NOT_IMPLEMENTED,
        detail={"field": "model.family", "family": model.family},
    )


"""A model section of any family, chosen by its ``family`` (a discriminated union: the next
family joins it as one more tagged member; an unknown family is refused by name)."""


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


LabelDpUnit = Literal["row", "key"]
"""What label privacy protects: one label-party row (a board), or everything under one feature
party join key (a paste lot)."""


class LabelDpSpec(Strict):
    """Label differential privacy of a job (docs/adr/0007-label-privacy.md).

    ``randomized_response``: the label party replaces each row's label by a randomised one once,
    before training (keeps it with probability ``e^eps / (e^eps + k - 1)`` for ``k`` classes), so
    every message and the model are post-processing: ``epsilon``-label-DP (``delta`` 0) per
    ``unit``, however long or often the contract's jobs train. For unit ``key`` the per-row
    epsilon is ``epsilon / (most rows under one key)`` (group privacy). ``none``: no label DP.
    """

    mechanism: Literal["none", "randomized_response"] = "none"
    epsilon: float = Field(default=4.0, gt=0.0, le=50.0, allow_inf_nan=False)
    delta: float = Field(default=0.0, ge=0.0, lt=1e-3, allow_inf_nan=False)
    unit: LabelDpUnit = "row"


class ProtectionSpec(Strict):
    """How the cut layer of a job is protected: ``plain`` or ``ckks``, the gradient defence,
    and the labels' differential privacy."""

    mode: ProtectionMode = "ckks"
    ckks: CkksSpec = Field(default_factory=CkksSpec)
    defence: DefenceSpec = Field(default_factory=DefenceSpec)
    label_dp: LabelDpSpec = Field(default_factory=LabelDpSpec)


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
    shadow: bool = Field(
        default=False,
        description="Shadow scoring (issue 18): the label party compares a finished model "
        "version of the contract with the deployed one on the recent outcome window; not a "
        "sale, so nothing is recorded or metered, and the rows do not count as served.",
    )


class MixHeader(Strict):
    """ckks mode, second message of a forward or an embed: tensor ``masked`` (uint8 blob,
    ``Enc(h W_A + R)``). The party decrypts it, adds ``h W_P`` and answers tensor ``mixed``
    (float64[B, m]). Names the training ``step`` or the embed ``ref`` it completes."""

    job_id: JobId
    step: Step | None = None
    ref: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] | None = None
    shadow: bool = Field(default=False, description="Completes a shadow embed (EmbedHeader).")

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
    """What a party saved or restored: ``sha256`` of the file, ``segment_digest`` of the weights
    that serve (``services.engine.content.weights_digest``; stable across saves)."""

    job_id: JobId
    tag: str
    step: int
    sha256: str
    segment_digest: str | None = None


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
    party's rows from ``from_row`` on (the rows its table gained after the champion trained)."""

    job_id: JobId
    from_row: int = Field(ge=0, le=10**12)
    epochs: int = Field(default=3, ge=1, le=MAX_EPOCHS)


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
    row_ids: list[Annotated[str, Field(min_length=1, max_length=128)]] | None = Field(
        default=None,
        max_length=MAX_PREDICT_ROWS,
        description="The caller's own id of each row (a board id), kept with the prediction at "
        "the label party so that outcomes may name it later; never sent to a feature party.",
    )

    @model_validator(mode="after")
    def _ids_match_rows(self) -> PredictRequest:
        if self.row_ids is not None and len(self.row_ids) != len(self.rows):
            raise ValueError(f"row_ids names {len(self.row_ids)} rows, rows holds {len(self.rows)}")
        return self


class Prediction(Strict):
    """The joint model's answer for one row.

    Binary: ``probability`` of the positive class and the predicted ``label`` (threshold 0.5).
    Multiclass: the predicted ``label`` and ``probabilities`` by class. Regression: ``value``.
    ``status`` is ``no_prediction`` for a row the joint model cannot predict (a join key the
    job's alignment did not share); such a row is metered like an answer and says nothing more.
    """

    status: Literal["predicted", "no_prediction"] = "predicted"
    label: str | None = None
    probability: float | None = None
    probabilities: dict[str, float] | None = None
    value: float | None = None


class Outcome(Strict):
    """The ground truth of one served prediction: by ``prediction_id`` (``<event_id>:<row>`` of
    the answer) or by the ``row_id`` the request named (its latest prediction)."""

    prediction_id: str | None = Field(default=None, min_length=3, max_length=200)
    row_id: str | None = Field(default=None, min_length=1, max_length=128)
    outcome: str | float | bool = Field(
        description="A class of the model (binary, multiclass) or a number (regression)."
    )

    @model_validator(mode="after")
    def _one_reference(self) -> Outcome:
        if (self.prediction_id is None) == (self.row_id is None):
            raise ValueError("name exactly one of prediction_id and row_id")
        return self


class OutcomesRequest(Strict):
    """Outcomes of served predictions (1 to 10,000)."""

    outcomes: list[Outcome] = Field(min_length=1, max_length=MAX_PREDICT_ROWS)


class OutcomesResponse(Strict):
    """What a batch of outcomes did: newly recorded, and already recorded with the same value."""

    recorded: int
    unchanged: int


class PredictResponse(Strict):
    """Predictions in request order, with the model and contract versions that made them, the
    digest of that model (spec and every party's segment, as the registry records it) and the
    usage event that meters them."""

    model_version: int
    contract_version: int
    model_digest: str
    event_id: str
    predictions: list[Prediction]
    rows: int = Field(default=0, description="Rows asked (and metered).")
    predicted: int = Field(default=0, description="Rows with a prediction.")
    keys_used: int | None = Field(
        default=None,
        description="Distinct join keys this caller has named this period, of keys_limit.",
    )
    keys_limit: int | None = None

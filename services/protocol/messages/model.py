"""The joint model's architecture: segments, top, optimisers, model families."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    model_validator,
)

from services.protocol.errors import ErrorCode, Unprocessable
from services.protocol.messages.base import PartyName, Strict

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
MAX_NUMERIC_BINS = 64
"""Most quantile bins of a numeric column's piecewise-linear encoding."""
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
    numeric_bins: int = Field(
        default=0,
        ge=0,
        le=MAX_NUMERIC_BINS,
        description="Besides its standardised value, each numeric column enters as a "
        "piecewise-linear encoding over this many quantile bins of the party's own values "
        "(fitted locally, saved with the encoder); 0: the standardised value only.",
    )

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

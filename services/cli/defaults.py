"""Defaults of ``splice pilot`` that depend on the data (issue 17, docs/adr/0015).

Rules on the label table's row count only (never on a dataset's name), measured on the
centralized equivalent of the split job (docs/adr/0015-data-dependent-defaults.md):

- Up to :data:`TINY_ROWS` rows (a few hundred training rows, a validation set of a few dozen):
  the label party's bottom narrower (32 wide, cut 16) and the top too (16; the interactive
  width stays 16), gelu, dropout 0.3, AdamW (lr 1e-3, weight decay 0.01), up to 60 epochs with
  patience 10 (the noisy validation loss of a few dozen rows needs more patience to find its
  minimum); feature parties' bottoms ``identity`` (no defended, noisy ``dL/dh`` trains a part
  of the model) with weight decay 0.01 on their interactive weights' SGD.
- From :data:`TINY_ROWS` to :data:`BINNED_ROWS` rows (:data:`SMALL`): the standard widths and
  schedule below, gelu, and feature parties' bottoms ``identity`` as on tiny tables. Measured on
  breast, motor and vehicle (569-846 rows; 5 seeds x 4 draws of the parties' keys, the label
  defence simulated), the defended ``dL/dh`` cost the mlp feature bottoms up to 0.04 (docs/adr/0015,
  second addendum).
- Larger tables: the standard defaults (bottom 64 -> 32, interactive 16, top 32, Adam 1e-3,
  20 epochs, patience 5), which were as good or better on every larger table measured.
- Under :data:`BINNED_ROWS` rows every party's numeric columns also enter as a piecewise-linear
  encoding over :data:`NUMERIC_BINS` quantile bins of its own values (docs/adr/0017).

The batch size keeps its own rule (:func:`services.cli.pilot.auto_batch_size`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from services.protocol.messages import (
    Activation,
    ModelSpec,
    OptimizerSpec,
    SegmentSpec,
    TopSpec,
)

TINY_ROWS = 500
"""Label tables with fewer rows get the regularised small-data defaults."""
BINNED_ROWS = 5000
"""Label tables with fewer rows get the piecewise-linear encoding of numeric columns."""
NUMERIC_BINS = 8
"""Quantile bins of that encoding (``SegmentSpec.numeric_bins``)."""


@dataclass(frozen=True, slots=True)
class DataDefaults:
    """What a pilot trains when the user names no model, epochs or patience."""

    epochs: int
    patience: int
    width: int
    cut: int
    interactive: int
    top: int
    dropout: float
    weight_decay: float
    numeric_bins: int = 0
    activation: Activation = "relu"
    interactive_decay: float = 0.0
    """Weight decay of the feature parties' interactive weights (their SGD, shared in ckks:
    decay is linear, so both shares follow it and their sum is the centralized weight)."""
    feature_identity: bool = False
    """Feature parties' bottoms are ``identity``: their encoded features reach the model through
    the interactive weights only, so no (defended, noisy) gradient trains a part of the model
    and none reaches a feature party (docs/adr/0007)."""

    def model(self, parties: list[str], label: str | None = None) -> ModelSpec:
        """The default model over ``parties``: every bottom of the same shape, but a feature
        party's (any party but ``label``) identity when :attr:`feature_identity`."""
        bottom = SegmentSpec(
            hidden=[self.width],
            out=self.cut,
            activation=self.activation,
            dropout=self.dropout,
            numeric_bins=self.numeric_bins,
        )
        identity = SegmentSpec(kind="identity", numeric_bins=self.numeric_bins)
        if self.feature_identity and label not in parties:
            raise ValueError(f"the label party {label!r} is not one of {parties}")
        optimizer = (
            OptimizerSpec(name="adamw", lr=1e-3, weight_decay=self.weight_decay)
            if self.weight_decay
            else OptimizerSpec()
        )
        spec = ModelSpec(
            bottom={
                p: identity if self.feature_identity and p != label else bottom for p in parties
            },
            top=TopSpec(
                interactive=self.interactive,
                hidden=[self.top],
                activation=self.activation,
                dropout=self.dropout,
            ),
            optimizer=optimizer,
        )
        decayed = spec.interactive_optimizer.model_copy(
            update={"weight_decay": self.interactive_decay}
        )
        return spec.model_copy(update={"interactive_optimizer": decayed})


STANDARD = DataDefaults(
    epochs=20, patience=5, width=64, cut=32, interactive=16, top=32, dropout=0.0, weight_decay=0.0
)
TINY = DataDefaults(
    epochs=60, patience=10, width=32, cut=16, interactive=16, top=16, dropout=0.3,
    weight_decay=0.01, activation="gelu", interactive_decay=0.01, feature_identity=True,
)  # fmt: skip


SMALL = replace(STANDARD, activation="gelu", feature_identity=True, numeric_bins=NUMERIC_BINS)
"""From :data:`TINY_ROWS` to :data:`BINNED_ROWS` rows: the standard widths and schedule, gelu,
feature parties' bottoms ``identity``, the piecewise-linear encoding."""


def data_defaults(rows: int) -> DataDefaults:
    """The defaults for a label table of ``rows`` rows."""
    if rows < TINY_ROWS:
        return replace(TINY, numeric_bins=NUMERIC_BINS)
    return SMALL if rows < BINNED_ROWS else STANDARD

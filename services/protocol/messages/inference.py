"""Joint inference (a buyer -> the label party) and outcomes."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    Field,
    model_validator,
)

from services.protocol.messages.base import MAX_PREDICT_ROWS, Strict

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

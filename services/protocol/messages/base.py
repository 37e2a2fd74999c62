"""Shared wire types: identifiers, bounds, the strict base model, the task."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
)

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

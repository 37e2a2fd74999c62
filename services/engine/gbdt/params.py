"""Typed parameters of gradient-boosted trees (what a contract's ``gbdt`` model section fixes)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from services.engine.gbdt.errors import GbdtParamsError

Objective = Literal["binary", "multiclass", "regression"]
Protection = Literal["plain", "ckks"]


class GbdtParams(BaseModel):
    """Hyperparameters shared by the centralized reference and the vertical protocol."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    objective: Objective = "binary"
    num_class: int = Field(default=1, ge=1, le=64)
    trees: int = Field(default=10, ge=1, le=2000)
    depth: int = Field(default=3, ge=1, le=12)
    learning_rate: float = Field(default=0.3, gt=0.0, le=1.0)
    bins: int = Field(default=32, ge=2, le=256)
    min_child_weight: float = Field(default=1e-3, ge=0.0)
    l2: float = Field(default=1.0, ge=0.0)
    min_split_gain: float = Field(default=0.0, ge=0.0)
    row_subsample: float = Field(default=1.0, gt=0.0, le=1.0)
    col_subsample: float = Field(default=1.0, gt=0.0, le=1.0)
    early_stopping_rounds: int = Field(default=0, ge=0, le=1000)
    protection: Protection = "ckks"

    @model_validator(mode="after")
    def _classes(self) -> GbdtParams:
        if self.objective == "multiclass" and self.num_class < 3:
            raise ValueError("multiclass needs num_class >= 3")
        if self.objective != "multiclass" and self.num_class != 1:
            raise ValueError("num_class is 1 unless the objective is multiclass")
        return self

    @classmethod
    def parse(cls, raw: object) -> GbdtParams:
        """Validate untrusted parameters; any problem is a :class:`GbdtParamsError`."""
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise GbdtParamsError(f"invalid tree parameters: {exc.errors()[0]['msg']}") from None

    @property
    def outputs(self) -> int:
        """Trees per boosting round (one per class for multiclass)."""
        return self.num_class if self.objective == "multiclass" else 1

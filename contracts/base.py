"""Base of every contract model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Frozen(BaseModel):
    """Immutable, and unknown fields are an error (never silently dropped)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

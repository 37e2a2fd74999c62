"""How many keys each party may put into a private alignment, and how many a buyer may name.

Join keys are often enumerable (lot numbers ``PL-`` + 6 digits). A party that lists every
possible id in a PSI learns the other's whole key book; a buyer that names every id in
prediction requests learns which ids the feature party holds. The contract bounds both:

* ``alignment.max_keys``: the most distinct keys a party may bring to a PSI (per party, or
  ``default_max_keys``). Both sides check their own set and the peer's announced count against
  these before any exponentiation, and refuse above them (4xx ``psi_set_too_large``).
* ``serving.max_keys_per_caller``: the most distinct join keys one caller organisation may name
  in prediction requests per ``period`` (a key counts once per period, predicted or not). A
  request that would pass it is refused before any work (429 ``key_limit_reached``).
* ``serving.round_probabilities``: predicted probabilities are rounded to this many decimals.

A limit makes enumeration slow and visible, not impossible (docs/threat-model.md).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from contracts.base import Frozen
from services.protocol.messages import MAX_PSI_KEYS, PartyName

KeyCount = Annotated[int, Field(ge=1, le=MAX_PSI_KEYS, strict=True)]


class AlignmentTerms(Frozen):
    """The most distinct keys each party may bring to a private alignment (PSI)."""

    default_max_keys: KeyCount = 1_000_000
    max_keys: Annotated[dict[PartyName, KeyCount], Field(max_length=64)] = Field(
        default_factory=dict
    )

    def limit(self, party: str) -> int:
        """Party ``party``'s maximum set size."""
        return self.max_keys.get(party, self.default_max_keys)

    def limits(self, parties: list[str]) -> dict[str, int]:
        """Every listed party's maximum set size (what a job's ``psi_limits`` must equal)."""
        return {p: self.limit(p) for p in parties}


class ServingTerms(Frozen):
    """What one caller organisation may ask of the deployed model per period."""

    max_keys_per_caller: Annotated[int, Field(ge=1, le=1_000_000_000, strict=True)] = 100_000
    period: Literal["day", "month"] = "month"
    round_probabilities: Annotated[int, Field(ge=1, le=12, strict=True)] | None = None


class MonitoringTerms(Frozen):
    """When the deployed model's live quality raises an alert (issue 18).

    The label party computes the live metric (AUC for binary tasks, accuracy for multiclass,
    R² for regression) over the latest ``window`` outcomes; each party computes the drift of its
    own features between the training and the serving window (PSI and KS per column) and shares
    only the scores. The alert is raised when the metric is below ``min_live_metric`` (with at
    least ``min_outcomes`` outcomes) or a column's PSI is above ``max_feature_psi``."""

    window: Annotated[int, Field(ge=10, le=100_000, strict=True)] = 500
    min_outcomes: Annotated[int, Field(ge=1, le=100_000, strict=True)] = 50
    min_live_metric: Annotated[float, Field(ge=-1.0, le=1.0)] | None = None
    max_feature_psi: Annotated[float, Field(gt=0.0, le=10.0)] = 0.25


__all__ = ["AlignmentTerms", "KeyCount", "MonitoringTerms", "ServingTerms"]

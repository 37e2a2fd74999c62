"""Commercial terms: the price of a prediction, how revenue is shared, and the usage cap.

Shares are keyed by payee: a party's name, or the owner's name (the owner may take a share even
when it holds no data). Percentages are exact decimals; a fixed split sums to exactly 100.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field, model_validator

from contracts.base import Frozen
from contracts.errors import raise_issues
from contracts.money import Money, Percent, plain_decimal_string
from services.protocol.messages import PartyName

ShareMap = Annotated[dict[PartyName, Percent], Field(max_length=64)]


class FixedShares(Frozen):
    """Every payee receives a fixed percentage of revenue; the percentages sum to exactly 100."""

    scheme: Literal["fixed"]
    shares: Annotated[dict[PartyName, Percent], Field(min_length=1, max_length=64)]

    @model_validator(mode="after")
    def _total(self) -> FixedShares:
        total = sum(self.shares.values(), Decimal(0))
        if total != 100:
            raise_issues(
                [(("shares",), f"shares sum to {plain_decimal_string(total)}, not exactly 100")]
            )
        return self

    def allocate(self, total_minor_units: int) -> dict[str, int]:
        """Split an amount in integer minor units by the shares; the parts sum to the total.

        Each payee gets the floor of its exact part; the units left over go one each to the
        largest remainders (ties by payee name), so no money is created or lost.
        """
        if total_minor_units < 0:
            raise ValueError("total must be non-negative")
        exact = {p: Decimal(total_minor_units) * s / 100 for p, s in self.shares.items()}
        parts = {p: int(v) for p, v in exact.items()}
        left = total_minor_units - sum(parts.values())
        for p in sorted(exact, key=lambda p: (-(exact[p] - parts[p]), p))[:left]:
            parts[p] += 1
        return parts


class ContributionShares(Frozen):
    """Revenue follows each payee's measured contribution to the joint model's quality.

    ``floors`` guarantee a minimum percentage to a payee (the owner's floor is its whole take, as
    it contributes no data); the rest is split by contribution, measured by ``measure`` on the
    held-out test split. Floors sum to at most 100.
    """

    scheme: Literal["contribution"]
    measure: Literal["shapley", "leave_one_out"] = "shapley"
    floors: ShareMap = Field(default_factory=dict)

    @model_validator(mode="after")
    def _total(self) -> ContributionShares:
        total = sum(self.floors.values(), Decimal(0))
        if total > 100:
            raise_issues(
                [(("floors",), f"floors sum to {plain_decimal_string(total)}, more than 100")]
            )
        return self


RevenueShare = Annotated[FixedShares | ContributionShares, Field(discriminator="scheme")]
"""``fixed`` or ``contribution``, chosen by ``scheme``."""


class Commercial(Frozen):
    """What a prediction costs the buyer and who receives the revenue."""

    price_per_prediction: Money
    revenue_share: RevenueShare

    @property
    def payees(self) -> list[str]:
        """Names the revenue share mentions."""
        rs = self.revenue_share
        return list(rs.shares if isinstance(rs, FixedShares) else rs.floors)


class UsageCap(Frozen):
    """At most ``max_predictions`` predictions per ``period`` (``contract``: over its validity)."""

    max_predictions: Annotated[int, Field(ge=1, le=10**15)]
    period: Literal["day", "week", "month", "year", "contract"] = "month"

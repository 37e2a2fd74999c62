"""Organisations' webhooks (issue 18): where the registry POSTs the events that concern them.

Imported by :mod:`services.registry.models`. No secret is stored: every delivery is signed with
the registry's token signing key (a detached JWS), which receivers verify against the registry's
published key set (docs/adr/0013-retraining-and-alerts.md).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from services.registry.models import Base, utcnow


class Webhook(Base):
    """One organisation's webhook URL."""

    __tablename__ = "webhooks"

    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), primary_key=True)
    url: Mapped[str] = mapped_column(String(2048))
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

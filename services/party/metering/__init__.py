"""Usage metering at the label party: every served prediction becomes a usage event, written to
a durable local outbox first and shipped to the registry in batches (issue 6)."""

from services.party.metering.outbox import UsageOutbox

__all__ = ["UsageOutbox"]

"""A feature party's own count of the predictions it served (its side of metering).

Every prediction at the label party asks each feature party for its part of the joint model
(``embed``) of the contract's deployed job. A feature party cannot see the buyer, but it sees
every such call: an ``embed`` for a job that has finished training (the registry's contract
check says so, and that the job is the deployed one) is a serving call, whatever the label party
says. Each is recorded as a :class:`ServingObservation` (the usage event the label party named
in the frame header, or none; the rows; this party's clock), written to a durable outbox and
shipped to the registry by the same shipper as usage events. The registry reconciles them with
the label party's events per contract and period and flags every difference.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime

from pydantic import ValidationError

from services.party.auth import ContractStanding, PeerCaller
from services.party.metering.outbox import ObservationOutbox
from services.protocol import codec
from services.protocol.messages import ServingObservation

log = logging.getLogger("splice.party.metering")
SERVING = "finished"
"""The registry's status of a job whose embeds serve predictions (it no longer trains)."""


class ServingObserver:
    """Records this feature party's serving calls."""

    def __init__(self, outbox: ObservationOutbox, notify: object | None = None) -> None:
        self.outbox = outbox
        self.notify = notify
        self.observed = 0

    async def observe(
        self, caller: PeerCaller | None, standing: ContractStanding | None, frame: codec.Frame
    ) -> None:
        """Record one served ``embed`` (nothing for a training job's evaluation, or without a
        registry). A record that cannot be written is logged: the call was served already."""
        if caller is None or standing is None or standing.job_status != SERVING:
            return
        if frame.header.get("shadow") is True:  # shadow scoring is not a sale
            return
        handles = frame.tensors.get("handles")
        event = frame.header.get("usage_event")
        try:
            observation = ServingObservation(
                observation_id=str(uuid.uuid4()),
                event_id=event if isinstance(event, str) else "",
                contract_id=caller.contract_id,
                job_id=caller.job_id,
                rows=0 if handles is None else int(handles.shape[0]),
                timestamp=datetime.now(UTC),
            )
            await asyncio.to_thread(self.outbox.append, [observation])
        except (ValidationError, OSError, ValueError) as exc:
            log.error("cannot record a serving call of job %s: %s", caller.job_id, exc)
            return
        self.observed += 1
        if callable(self.notify):
            self.notify()

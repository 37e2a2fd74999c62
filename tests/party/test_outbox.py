"""The label party's usage outbox: durable, idempotent by event id, ordered, thread-safe."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.party.metering import UsageOutbox
from services.protocol.messages import UsageEvent

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def event(i: int = 0, **over: object) -> UsageEvent:
    fields: dict[str, object] = {
        "event_id": str(uuid.UUID(int=i + 1)),
        "contract_id": "c-1",
        "contract_version": 1,
        "model_version": 2,
        "caller_org": "oem",
        "count": 1 + i % 3,
        "timestamp": T0 + timedelta(seconds=i),
    }
    return UsageEvent.model_validate(fields | over)


def test_events_survive_a_restart_in_order(tmp_path: Path) -> None:
    box = UsageOutbox(tmp_path / "outbox.db")
    assert box.append([event(i) for i in range(5)]) == 5
    box.close()
    again = UsageOutbox(tmp_path / "outbox.db")  # a new process would see the same file
    assert [e.event_id for e in again.pending()] == [event(i).event_id for i in range(5)]
    assert again.oldest() == T0 and again.depth() == 5
    again.acknowledge([event(0).event_id, event(1).event_id])
    assert [e.event_id for e in again.pending(2)] == [event(2).event_id, event(3).event_id]
    assert again.depth() == 3


def test_the_same_event_is_stored_once(tmp_path: Path) -> None:
    box = UsageOutbox(tmp_path / "o.db")
    assert box.append([event(1), event(2)]) == 2
    assert box.append([event(2), event(3)]) == 1  # a retried append
    assert box.depth() == 3
    box.acknowledge([event(9).event_id])  # unknown ids are fine
    assert box.depth() == 3


def test_a_failed_append_stores_nothing(tmp_path: Path) -> None:
    box = UsageOutbox(tmp_path / "o.db")

    class Broken(UsageEvent):
        def model_dump_json(self, **_: object) -> str:  # type: ignore[override]
            raise RuntimeError("disk full")

    broken = Broken.model_validate(event(7).model_dump())
    with pytest.raises(RuntimeError):
        box.append([event(1), broken])  # event 1 is written first, then rolled back
    assert box.depth() == 0
    assert box.append([event(1)]) == 1


def test_concurrent_appends_lose_nothing(tmp_path: Path) -> None:
    box = UsageOutbox(tmp_path / "o.db")

    def worker(k: int) -> None:
        for i in range(50):
            box.append([event(k * 1000 + i)])

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert box.depth() == 200
    assert len({e.event_id for e in box.pending(1000)}) == 200


@pytest.mark.parametrize(
    "bad",
    [
        {"count": 0},
        {"count": -1},
        {"count": 1.5},
        {"timestamp": datetime(2026, 11, 22, 12, 0)},  # no time zone
        {"event_id": "not an id!"},
        {"contract_version": 0},
    ],
)
def test_bad_events_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        event(0, **bad)

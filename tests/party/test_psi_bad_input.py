"""PSI alignment at a feature party: malformed, foreign-job and replayed messages get a 4xx and
leave the alignment able to finish correctly."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from services.engine import psi
from services.party.app import create_app
from services.party.settings import PartySettings
from services.protocol.errors import SpliceError
from services.protocol.messages import PrepareJob
from services.protocol.peers import SegmentClient

JOB = "job-psi"
THEIRS = [f"LOT-{i:05d}" for i in range(0, 40)]
MINE = [f"LOT-{i:05d}" for i in range(20, 60)] + ["GONE-1"]


@pytest.fixture
async def party(tmp_path: Path) -> AsyncIterator[SegmentClient]:
    table = tmp_path / "f0.csv"
    table.write_text("lot,a\n" + "".join(f"{k},{i * 0.5}\n" for i, k in enumerate(THEIRS)))
    settings = PartySettings(
        name="f0", table=table, key_column="lot", data_dir=tmp_path / "p", he_workers=1
    )
    client = SegmentClient("http://f0", transport=httpx.ASGITransport(app=create_app(settings)))
    spec = {"job_id": JOB, "party": "f0", "segment": {"hidden": [4], "out": 4},
            "optimizer": {}, "seed": 0, "keys": [], "protection": {"mode": "plain"}}  # fmt: skip
    await client.prepare(PrepareJob.model_validate(spec))
    yield client
    await client.aclose()


async def refused(call: Any, status: int = 400) -> None:
    with pytest.raises(SpliceError) as info:
        await call
    assert info.value.status == status, info.value


async def test_bad_psi_messages_leave_the_alignment_intact(party: SegmentClient) -> None:
    # before alignment no batch can be served
    await refused(party.embed(JOB, np.arange(2)), 409)
    label = psi.LabelParty(JOB, MINE)
    first = label.start().encode()
    await refused(party.psi(JOB, b""))
    await refused(party.psi(JOB, b"SPSI" + bytes(40)))
    await refused(party.psi(JOB, first[:-5]))
    await refused(party.psi(JOB, first + b"\0"))
    await refused(party.psi(JOB, psi.LabelParty("other-job", MINE).start().encode()))
    reply = await party.psi(JOB, first)
    assert await party.psi(JOB, first) == reply  # a retry gets the same answer
    # a second run of step 1 (another session of this job) is refused
    await refused(party.psi(JOB, psi.LabelParty(JOB, MINE).start().encode()))
    message = psi.decode(reply)
    assert isinstance(message, psi.FeatureReply)
    notice, alignment = label.finish(message)
    counts = await party.psi(JOB, notice.encode())
    assert b'"shared": 20' in counts
    assert await party.psi(JOB, notice.encode()) == counts  # a retried last step
    assert sorted(alignment.keys) == sorted(set(MINE) & set(THEIRS))
    # aligned: handles name the shared rows, in the label party's handle order
    out = await party.embed(JOB, np.arange(alignment.size))
    assert out.shape == (20, 4)
    await refused(party.embed(JOB, np.array([alignment.size])))

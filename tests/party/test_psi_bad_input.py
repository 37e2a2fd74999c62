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
from tests.conftest import InProcess
from tests.party.test_training import spec_for
from tests.synthetic import Vertical

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


def _spec(job: str, **limits: int) -> PrepareJob:
    return PrepareJob.model_validate(
        {"job_id": job, "party": "f0", "segment": {"hidden": [4], "out": 4}, "optimizer": {},
         "seed": 0, "keys": [], "protection": {"mode": "plain"}, "label_party": "maker",
         "psi_limits": limits}
    )  # fmt: skip


async def test_sets_above_the_contract_s_limits_are_refused_before_any_work(
    party: SegmentClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 13: the feature party refuses to bring its 40 lots where the job allows 39, and a
    label party announcing more keys than its limit, before any exponentiation."""
    calls: list[str] = []
    for name in ("multiply", "hash_multiply"):
        original = getattr(psi.PsiPool, name)

        def spy(self: Any, *args: Any, _f: Any = original, _n: str = name) -> Any:
            calls.append(_n)
            return _f(self, *args)

        monkeypatch.setattr(psi.PsiPool, name, spy)
    with pytest.raises(SpliceError) as info:
        await party.prepare(_spec("own-too-big", f0=39))
    assert (info.value.status, info.value.code.value) == (422, "psi_set_too_large")
    await refused(party.embed("own-too-big", np.arange(1)), 404)  # nothing was prepared
    # the label party may bring 30 keys: an announcement of 41 is refused unread
    await party.prepare(_spec("peer-too-big", f0=40, maker=30))
    label = psi.LabelParty("peer-too-big", MINE)
    first = label.start().encode()
    calls.clear()
    with pytest.raises(SpliceError) as info:
        await party.psi("peer-too-big", first)
    assert (info.value.status, info.value.code.value) == (422, "psi_set_too_large")
    assert calls == []  # not one exponentiation
    # within the limit the same job aligns
    small = psi.LabelParty("peer-too-big", MINE[:30])
    reply = psi.decode(await party.psi("peer-too-big", small.start().encode()))
    assert isinstance(reply, psi.FeatureReply)
    notice, alignment = small.finish(reply)
    assert b'"shared": 20' in await party.psi("peer-too-big", notice.encode())


def test_the_label_party_refuses_a_feature_set_above_its_limit_unread() -> None:
    label = psi.LabelParty(JOB, MINE, max_peer=39)
    feature = psi.FeatureParty(JOB, THEIRS)  # 40 keys
    reply = feature.reply(label.start())
    with pytest.raises(psi.PsiLimitError):
        label.finish(reply)
    with pytest.raises(psi.PsiLimitError):
        psi.LabelParty(JOB, MINE, max_own=len(MINE) - 1)
    # at the limit, the protocol runs
    label = psi.LabelParty(JOB, MINE, max_own=len(MINE), max_peer=40)
    _, alignment = label.finish(
        psi.FeatureParty(JOB, THEIRS, max_peer=len(MINE)).reply(label.start())
    )
    assert alignment.size == 20


async def test_a_label_party_over_its_limit_starts_no_run(
    vertical: Vertical, in_process: InProcess
) -> None:
    client = in_process(vertical)
    spec = spec_for(vertical).model_copy(update={"psi_limits": {"maker": 5}})
    with pytest.raises(SpliceError) as info:
        await client.start_training(spec)
    assert (info.value.status, info.value.code.value) == (422, "psi_set_too_large")
    assert info.value.detail["limit"] == 5 and info.value.detail["keys"] > 5
    await refused(client.training(spec.job_id), 404)

"""CKKS mode at a feature party: hostile or broken ciphertexts get a 4xx and change nothing, and
the secret key never leaves the party (every byte it sends during a training is scanned)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from services.engine import he
from services.engine.he import blob as he_blob
from services.engine.keyed import JobKey
from services.party.app import create_app
from services.party.protection import KeyMismatch, connect
from services.party.settings import PartySettings
from services.protocol import codec
from services.protocol.errors import SpliceError
from services.protocol.messages import JobState, PreparedJob, PrepareJob, ProtectionSpec
from services.protocol.peers import SegmentClient
from tests.conftest import InProcess
from tests.party.test_protection import protected
from tests.party.test_training import train
from tests.synthetic import Vertical

JOB = "job-c"
D, M = 4, 2
KEYS = [f"LOT-{i:05d}" for i in range(12)]


@pytest.fixture
async def party(tmp_path: Path) -> AsyncIterator[tuple[SegmentClient, Any, PreparedJob]]:
    table = tmp_path / "f0.csv"
    rows = ["lot,a,b"] + [f"LOT-{i:05d},{i * 0.1:.2f},{(i % 3) - 1}" for i in range(12)]
    table.write_text("\n".join(rows) + "\n")
    settings = PartySettings(
        name="f0", table=table, key_column="lot", data_dir=tmp_path / "p", he_workers=1
    )
    app = create_app(settings)
    client = SegmentClient("http://f0", transport=httpx.ASGITransport(app=app))
    prepared = await client.prepare(prepare_job())
    yield client, app, prepared
    await client.aclose()


def prepare_job(**over: Any) -> PrepareJob:
    spec: dict[str, Any] = {
        "job_id": JOB,
        "party": "f0",
        "segment": {"hidden": [8], "out": D},
        "optimizer": {"name": "sgd", "lr": 0.5},
        "seed": 0,
        "keys": KEYS,
        "protection": {"mode": "ckks"},
        "interactive": M,
        "batch_size": 8,
        "alignment": "keys",
    }
    return PrepareJob.model_validate(spec | over)


def job_state(app: Any) -> dict[str, Any]:
    job = app.state.party.jobs[JOB]
    return {
        "status": job.status(),
        "share": job.protection.share.w.copy(),
        "weights": [p.detach().clone() for p in job.model.parameters()],
    }


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (
        a["status"] == b["status"]
        and np.array_equal(a["share"], b["share"])
        and all(bool((x == y).all()) for x, y in zip(a["weights"], b["weights"], strict=True))
    )


def blobs(pair: tuple[bytes, bytes]) -> dict[str, Any]:
    return {"grad_w": codec.blob_tensor(pair[0]), "grad_h": codec.blob_tensor(pair[1])}


async def forward_encrypted(
    client: SegmentClient,
    job: str,
    step: int,
    handles: Any,
    grad_step: int | None = None,
    grads: tuple[bytes, bytes] | None = None,
) -> tuple[bytes, bytes]:
    """``Enc(h)`` and ``Enc(W_P)`` of a ckks forward through the client's one step call."""
    g = None if grads is None else blobs(grads)
    frame = await client.step(job, step, handles, grad_step=grad_step, grads=g)
    return codec.blob_of(frame, "enc_h"), codec.blob_of(frame, "enc_w")


async def backward_encrypted(
    client: SegmentClient, job: str, step: int, grads: tuple[bytes, bytes]
) -> Any:
    return await client.deliver(job, step, blobs(grads))


async def step0(client: SegmentClient) -> tuple[bytes, bytes, he.PublicBundle]:
    public = he.PublicBundle.parse(await client.public_keys(JOB))
    enc_h, enc_w = await forward_encrypted(client, JOB, 0, np.arange(5, dtype=np.int64))
    return enc_h, enc_w, public


def masked_forward(public: he.PublicBundle, enc_h: bytes, rows: int) -> tuple[bytes, Any]:
    mask = he.draw_mask(public.params, (rows, M))
    w = np.random.default_rng(1).normal(size=(D, M))
    return he.forward(public, enc_h, w, mask), mask


async def expect_4xx(call: Any, status: int | tuple[int, ...] = 400) -> SpliceError:
    with pytest.raises(SpliceError) as info:
        await call
    want = (status,) if isinstance(status, int) else status
    assert info.value.status in want, info.value
    return info.value


async def test_prepare_refuses_insecure_parameters(party: Any) -> None:
    client, app, prepared = party
    assert prepared.mode == "ckks" and prepared.share is None and prepared.key_fingerprint
    bad = ProtectionSpec.model_validate(
        {"mode": "ckks", "ckks": {"coeff_mod_bit_sizes": [60, 60, 60, 60]}}
    )
    err = await expect_4xx(client.prepare(prepare_job(job_id="job-x", protection=bad)))
    assert "CKKS parameters" in str(err)
    assert "job-x" not in app.state.party.jobs


async def test_mix_refuses_foreign_truncated_and_padded_ciphertexts(party: Any) -> None:
    client, app, _ = party
    enc_h, _, public = await step0(client)
    before = job_state(app)
    # a ciphertext under another key (another bundle's fingerprint)
    other = he.HeKeys.generate(public.params)
    foreign_up = he.encrypt_rows(other, np.zeros((5, D)))
    foreign, _ = masked_forward(he.PublicBundle.parse(other.public_bundle()), foreign_up, 5)
    await expect_4xx(client.mix(JOB, foreign, step=0))
    # the same ciphertexts relabelled with this job's fingerprint: caught at decryption
    parsed = he_blob.unpack(foreign, kind=he_blob.Kind.FORWARD, fingerprint=other.fingerprint,
                            shape=(D, M), expected_count=lambda r: 1, limit=1 << 24)  # fmt: skip
    relabelled = he_blob.pack(
        he_blob.Kind.FORWARD, public.fingerprint, 5, D, M, [bytes(c) for c in parsed.cts]
    )
    await expect_4xx(client.mix(JOB, relabelled, step=0))
    good, mask = masked_forward(public, enc_h, 5)
    await expect_4xx(client.mix(JOB, good[:-7], step=0))
    await expect_4xx(client.mix(JOB, good + b"\0", step=0))
    await expect_4xx(client.mix(JOB, b"SPHE" + os.urandom(100), step=0))
    assert same(before, job_state(app))
    # the job still works: the right ciphertext mixes, once
    mixed = await client.mix(JOB, good, step=0)
    assert mixed.shape == (5, M)
    again = await client.mix(JOB, good, step=0)
    assert np.array_equal(mixed, again)
    other_mask, _ = masked_forward(public, enc_h, 5)
    await expect_4xx(client.mix(JOB, other_mask, step=0), 409)


async def test_gradients_under_a_wrong_key_change_nothing(party: Any) -> None:
    client, app, _ = party
    enc_h, enc_w, public = await step0(client)
    good, _ = masked_forward(public, enc_h, 5)
    await client.mix(JOB, good, step=0)
    dz = np.random.default_rng(2).normal(size=(5, M)) * 0.01
    grad_w = he.backward(public, enc_h, dz, np.zeros((D, M)))
    grad_h = he.input_grad(public, enc_w, dz, np.zeros((5, D)))
    other = he.HeKeys.generate(public.params)
    o_public = he.PublicBundle.parse(other.public_bundle())
    o_up = he.encrypt_rows(other, np.zeros((5, D)))
    o_grad_w = he.backward(o_public, o_up, dz, np.zeros((D, M)))
    before = job_state(app)
    bad_pairs = [(o_grad_w, grad_h), (grad_w, grad_h[:-1]), (grad_w, grad_w), (grad_h, grad_h)]
    for pair in bad_pairs:
        await expect_4xx(forward_encrypted(client, JOB, 1, np.arange(3), grad_step=0, grads=pair))
        await expect_4xx(backward_encrypted(client, JOB, 0, pair))
        assert same(before, job_state(app))
    # replaying step 0's forward under a new idempotency key is a conflict
    await expect_4xx(forward_encrypted(client, JOB, 0, np.arange(5)), 409)
    ack = await backward_encrypted(client, JOB, 0, (grad_w, grad_h))
    assert ack.applied and not same(before, job_state(app))
    await expect_4xx(backward_encrypted(client, JOB, 0, (grad_w, grad_h)), 409)


async def test_plain_only_and_ckks_only_calls_are_refused(party: Any) -> None:
    client, _, _ = party
    await expect_4xx(client.embed(JOB, np.arange(3)))  # a ckks embed needs a ref
    await expect_4xx(client.mix(JOB, b"x" * 64, ref="nothing-here"))


def _secret_windows(keys: he.HeKeys) -> list[bytes]:
    """Byte windows of the secret key: SEAL's serialisation and raw coefficient runs."""
    dumped = he.seal.dump(keys.secret.secret_key)
    windows = [dumped[i : i + 48] for i in range(len(dumped) // 4, len(dumped) - 48, 997)]
    poly = keys.secret.secret_key.data()
    count = poly.coeff_count()
    for start in range(0, count - 6, max(count // 16, 6)):
        run = np.array([poly.data(start + i) for i in range(6)], dtype="<u8")
        windows.append(run.tobytes())
    return windows


async def test_secret_key_never_leaves_the_feature_party(
    vertical: Vertical, in_process: InProcess
) -> None:
    """Every byte the feature party sends during a ckks training (all its answers) is scanned
    for windows of its secret key."""
    sent: list[bytes] = []
    client = in_process(vertical)
    label_app = client._http._transport.app  # type: ignore[attr-defined]
    runs = label_app.state.runs
    factory = runs.client_factory

    def recording(url: str, settings: PartySettings) -> SegmentClient:
        inner = factory(url, settings)
        transport = inner._http._transport

        class Recorder(httpx.AsyncBaseTransport):
            async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
                response = await transport.handle_async_request(request)
                body = await response.aread()
                sent.append(body)
                return httpx.Response(response.status_code, headers=response.headers, content=body)

        inner._http._transport = Recorder()
        apps.append(transport.app)
        return inner

    apps: list[Any] = []
    runs.client_factory = recording
    spec = protected(vertical, "ckks", epochs=1)
    status = await train(client, spec)
    assert status.state is JobState.FINISHED, status.error
    keys = apps[0].state.party.jobs[spec.job_id].protection.keys
    assert sum(len(b) for b in sent) > 1_000_000  # the keys, every Enc(h) and every mix
    for window in _secret_windows(keys):
        assert all(window not in body for body in sent)


async def test_label_party_refuses_a_swapped_key_bundle(party: Any, vertical: Vertical) -> None:
    """The bundle must hash to what the party announced and to what the registry recorded."""
    client, _, prepared = party
    spec = protected(vertical, "ckks").model_copy(update={"job_id": JOB})
    spec = spec.model_copy(
        update={"model": spec.model.model_copy(update={"bottom": {
            "maker": spec.model.bottom["maker"], "f0": spec.model.bottom["f0"].model_copy(
                update={"out": D})}, "top": spec.model.top.model_copy(update={"interactive": M})})}
    )  # fmt: skip
    workers = he.HePool(1)

    def pool() -> he.HePool:
        return workers

    fp = prepared.key_fingerprint
    link = await connect(spec, "f0", client, JobKey.generate(), prepared, pool, {"f0": fp})
    assert link.key_bytes > 0
    with pytest.raises(KeyMismatch, match="the registry"):
        await connect(spec, "f0", client, JobKey.generate(), prepared, pool, {"f0": "0" * 64})
    with pytest.raises(KeyMismatch, match="the registry"):
        await connect(spec, "f0", client, JobKey.generate(), prepared, pool, {})
    swapped = prepared.model_copy(update={"key_fingerprint": "1" * 64})
    with pytest.raises(KeyMismatch, match="the party"):
        await connect(spec, "f0", client, JobKey.generate(), swapped, pool, None)

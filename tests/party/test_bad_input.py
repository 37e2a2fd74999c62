"""Every feature-party endpoint refuses bad input cleanly and leaves the job exactly as it was.

Each case sends one bad request to an in-process party that holds a prepared, once-trained job
and checks: a 4xx with a JSON error body and the expected code; the training state unchanged
(status counters, job count, and the embedding of fixed handles byte for byte); the service
still serving and still training afterwards. No answer ever carries a traceback.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from pydantic import SecretStr
from safetensors.numpy import save as st_save

from services.party.app import create_app
from services.party.settings import PartySettings
from services.protocol import codec
from services.protocol.errors import ErrorCode
from services.protocol.version import TENSOR_MEDIA_TYPE
from tests.synthetic import make_vertical

JOB = "job1"
KEYS = [f"LOT-{i:05d}" for i in range(12)] + ["GONE-1"]
"""The label party's keys: handles 0..11 exist at f0, handle 12 names a key f0 does not hold."""
PROBE = np.array([0, 3, 5, 11], dtype=np.int64)
"""Handles whose embedding is compared byte for byte before and after every bad request."""
OUT = 4
MAX_ROWS = 8
MAX_BODY = 4096
PENDING_ROWS = 3
KEY = "k-retry-0001"

# --- helpers ------------------------------------------------------------------------------------


def prepare_spec(**over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "job_id": JOB,
        "party": "f0",
        "segment": {"hidden": [8], "out": OUT},
        "optimizer": {"name": "sgd", "lr": 0.5},
        "seed": 0,
        "keys": KEYS,
        "protection": {"mode": "plain"},
        "alignment": "keys",
    }
    return spec | over


_counter = iter(range(10**9))


def new_key() -> str:
    return f"key-{next(_counter):08d}"


def fwd(step: int, *, job: str = JOB, key: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"job_id": job, "step": step, "idempotency_key": key or new_key(), **extra}


def bwd(step: int, *, job: str = JOB, key: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"job_id": job, "step": step, "idempotency_key": key or new_key(), **extra}


def handles(*values: int) -> npt.NDArray[np.int64]:
    return np.array(values, dtype=np.int64)


def grad(rows: int = PENDING_ROWS, cols: int = OUT, *, seed: int = 0) -> npt.NDArray[np.float32]:
    return np.random.default_rng(seed).normal(size=(rows, cols)).astype(np.float32)


def frame(header: dict[str, Any], wire: codec.WireFloat = "float32", **t: Any) -> bytes:
    return codec.encode(header, t, wire_dtype=wire)


async def chunked(body: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    """A streamed body: httpx sends it chunked, without a content-length."""
    for i in range(0, len(body), size):
        yield body[i : i + size]


def assert_error(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    body = resp.json()
    assert isinstance(body, dict) and set(body) == {"code", "message", "detail"}, body
    assert body["code"] == code, body
    assert ErrorCode(body["code"])  # a code of the wire contract
    assert isinstance(body["message"], str) and body["message"]
    return body


@dataclass(frozen=True)
class Snapshot:
    status: dict[str, Any]
    jobs: int
    embedding: bytes


class Party:
    """An in-process feature party f0 with job ``JOB`` prepared and trained for one step."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def post(
        self, path: str, body: bytes | AsyncIterator[bytes], media: str | None = TENSOR_MEDIA_TYPE
    ) -> httpx.Response:
        headers = {"content-type": media} if media else {}
        return await self.client.post(path, content=body, headers=headers)

    async def forward(self, header: dict[str, Any], **t: Any) -> httpx.Response:
        return await self.post(f"/v1/jobs/{header['job_id']}/forward", frame(header, **t))

    async def backward(self, header: dict[str, Any], **t: Any) -> httpx.Response:
        return await self.post(f"/v1/jobs/{header['job_id']}/backward", frame(header, **t))

    async def embed(self, h: npt.NDArray[Any] = PROBE, job: str = JOB) -> httpx.Response:
        return await self.post(f"/v1/jobs/{job}/embed", frame({"job_id": job}, handles=h))

    async def status(self) -> dict[str, Any]:
        resp = await self.client.get(f"/v1/jobs/{JOB}")
        assert resp.status_code == 200, resp.text
        doc: dict[str, Any] = resp.json()
        return doc

    async def snapshot(self) -> Snapshot:
        health = await self.client.get("/v1/health")
        assert health.status_code == 200, health.text
        emb = await self.embed()
        assert emb.status_code == 200, emb.text
        assert emb.headers["content-type"] == TENSOR_MEDIA_TYPE
        return Snapshot(await self.status(), health.json()["jobs"], emb.content)

    async def make_pending(self) -> None:
        """Leave step 1's forward awaiting its gradient."""
        resp = await self.forward(fwd(1), handles=handles(4, 5, 6))
        assert resp.status_code == 200, resp.text
        assert (await self.status())["pending_step"] == 1

    async def still_trains(self, pending_rows: int = PENDING_ROWS) -> None:
        """A full valid step goes through and changes the parameters."""
        before = await self.snapshot()
        pending = before.status["pending_step"]
        if pending is not None:
            resp = await self.backward(bwd(pending), grad=grad(pending_rows))
            assert resp.status_code == 200, resp.text
        resp = await self.forward(fwd(100), handles=handles(0, 1, 2, 3))
        assert resp.status_code == 200, resp.text
        acts = codec.decode(resp.content).tensor("activations", dtype="float32", ndim=2)
        assert acts.shape == (4, OUT)
        resp = await self.backward(bwd(100), grad=grad(4))
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"job_id": JOB, "step": 100, "applied": True}
        after = await self.snapshot()
        assert after.status["applied_step"] == 100 and after.status["pending_step"] is None
        assert after.embedding != before.embedding


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_vertical(tmp_path_factory.mktemp("data"), rows=200, lots=30).features["f0"]


async def _no_traceback(response: httpx.Response) -> None:
    await response.aread()
    assert b"Traceback" not in response.content
    assert b'File "' not in response.content


@pytest.fixture
async def party(table: Path, tmp_path: Path) -> AsyncIterator[Party]:
    settings = PartySettings(
        name="f0",
        table=table,
        key_column="lot",
        data_dir=tmp_path / "party",
        max_body_bytes=MAX_BODY,
        max_batch_rows=MAX_ROWS,
        # fixed job keys: the same initial weights every run (the probe rows' cut is not dead)
        key_master=SecretStr("bad-input-tests"),
    )
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://f0", event_hooks={"response": [_no_traceback]}
    ) as client:
        p = Party(client)
        resp = await client.put(f"/v1/jobs/{JOB}", json=prepare_spec())
        assert resp.status_code == 201, resp.text
        assert resp.json()["found"] == [True] * 12 + [False]
        resp = await p.forward(fwd(0), handles=handles(0, 1, 2, 3))
        assert resp.status_code == 200, resp.text
        resp = await p.backward(bwd(0), grad=grad(4))
        assert resp.status_code == 200, resp.text
        status = await p.status()
        assert status["applied_step"] == 0 and status["pending_step"] is None
        yield p


# --- the cases ----------------------------------------------------------------------------------

Send = Callable[[Party], Awaitable[httpx.Response]]


@dataclass(frozen=True)
class Case:
    id: str
    send: Send
    status: int
    code: ErrorCode
    pending: bool = False
    """Run against a job whose step 1 awaits its gradient (else: trained, nothing pending)."""


def _json(method: str, path: str, body: Any, media: str | None = "application/json") -> Send:
    async def send(p: Party) -> httpx.Response:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"content-type": media} if media else {}
        return await p.client.request(method, path, content=raw, headers=headers)

    return send


def _raw(path: str, body: bytes, media: str | None = TENSOR_MEDIA_TYPE) -> Send:
    return lambda p: p.post(path, body, media)


def _stream(path: str, body: bytes, media: str = TENSOR_MEDIA_TYPE) -> Send:
    return lambda p: p.post(path, chunked(body), media)


def _fwd(header: dict[str, Any], **t: Any) -> Send:
    return lambda p: p.forward(header, **t)


def _bwd(header: dict[str, Any], **t: Any) -> Send:
    return lambda p: p.backward(header, **t)


def _emb(h: npt.NDArray[Any]) -> Send:
    return lambda p: p.embed(h)


def _get(path: str) -> Send:
    return lambda p: p.client.get(path)


def _delete(path: str) -> Send:
    return lambda p: p.client.delete(path)


U = f"/v1/jobs/{JOB}"
OK_FWD = frame(fwd(2), handles=handles(0, 1))
OK_BWD = frame(bwd(1), grad=grad())
OK_EMB = frame({"job_id": JOB}, handles=PROBE)
BIN = {"forward": OK_FWD, "backward": OK_BWD, "embed": OK_EMB}
BIG = 600  # int64 handles: 4800 bytes > MAX_BODY
NAN_GRAD = grad()
NAN_GRAD[1, 2] = np.nan
INF_GRAD = grad()
INF_GRAD[0, 0] = np.inf


def _cases() -> list[Case]:
    v, b, m, s, d, n, u, c = (
        ErrorCode.VALIDATION,
        ErrorCode.BAD_REQUEST,
        ErrorCode.MALFORMED_TENSORS,
        ErrorCode.SHAPE_MISMATCH,
        ErrorCode.DTYPE_MISMATCH,
        ErrorCode.NON_FINITE,
        ErrorCode.UNKNOWN_HANDLES,
        ErrorCode.STEP_CONFLICT,
    )
    cases: list[Case] = []
    add = cases.append

    # unknown job, on every endpoint
    uj = ErrorCode.UNKNOWN_JOB
    add(Case("unknown-job-get", _get("/v1/jobs/nojob"), 404, uj))
    add(Case("unknown-job-delete", _delete("/v1/jobs/nojob"), 404, uj))
    add(Case("unknown-job-forward", _fwd(fwd(2, job="nojob"), handles=handles(0)), 404, uj))
    add(Case("unknown-job-backward", _bwd(bwd(1, job="nojob"), grad=grad()), 404, uj, True))
    add(Case("unknown-job-embed", lambda p: p.embed(PROBE, job="nojob"), 404, uj))
    for op in ("checkpoints", "restore"):
        add(Case(f"unknown-job-{op}", _json("POST", f"/v1/jobs/nojob/{op}", {"tag": "t"}), 404, uj))

    # invalid job id in the path, on every endpoint
    for bad_id in ("_x", "a" * 65, "job%20one"):
        p = f"/v1/jobs/{bad_id}"
        tag = bad_id[:6]
        add(Case(f"bad-id-get-{tag}", _get(p), 422, v))
        add(Case(f"bad-id-delete-{tag}", _delete(p), 422, v))
        add(Case(f"bad-id-put-{tag}", _json("PUT", p, prepare_spec()), 422, v))
        for op, body in BIN.items():
            add(Case(f"bad-id-{op}-{tag}", _raw(f"{p}/{op}", body), 422, v))
        for op in ("checkpoints", "restore"):
            add(Case(f"bad-id-{op}-{tag}", _json("POST", f"{p}/{op}", {"tag": "t"}), 422, v))

    # wrong content type
    for op, body in BIN.items():
        for media in ("application/json", "application/octet-stream", None):
            name = f"media-{op}-{media or 'none'}"
            add(Case(name, _raw(f"{U}/{op}", body, media), 415, ErrorCode.UNSUPPORTED_MEDIA_TYPE))
    for method, op, jbody in (
        ("PUT", "", prepare_spec(job_id="job2")),
        ("POST", "/checkpoints", {"tag": "t"}),
        ("POST", "/restore", {"tag": "t"}),
    ):
        for media in ("text/plain", None):
            add(
                Case(
                    f"media-{method}{op}-{media or 'none'}",
                    _json(
                        method,
                        f"/v1/jobs/job2{op}" if method == "PUT" else f"{U}{op}",
                        jbody,
                        media,
                    ),
                    415,
                    ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                )
            )

    # bodies that are not frames
    no_splice = bytes(st_save({"handles": PROBE}))
    for op, body in BIN.items():
        for label, junk in (
            ("empty", b""),
            ("garbage", b"garbage, not a frame"),
            ("truncated", body[: len(body) // 2]),
            ("trailing", body + b"\x00"),
            ("json", json.dumps(fwd(2)).encode()),
            ("no-splice-metadata", no_splice),
        ):
            add(Case(f"malformed-{op}-{label}", _raw(f"{U}/{op}", junk), 400, m, op == "backward"))

    # headers that do not fit the message
    other_fwd = frame(fwd(2, job="job2"), handles=handles(0))
    other_bwd = frame(bwd(1, job="job2"), grad=grad())
    add(Case("header-other-job-forward", _raw(f"{U}/forward", other_fwd), 400, b))
    add(Case("header-other-job-backward", _raw(f"{U}/backward", other_bwd), 400, b, True))
    add(
        Case(
            "header-other-job-embed",
            _raw(f"{U}/embed", frame({"job_id": "job2"}, handles=PROBE)),
            400,
            b,
        )
    )
    for label, header in (
        ("no-key", {"job_id": JOB, "step": 2}),
        ("short-key", fwd(2, key="k")),
        ("negative-step", fwd(-1)),
        ("step-not-int", fwd(2) | {"step": "two"}),
        ("unknown-field", fwd(2, lr=10.0)),
        ("job-not-str", fwd(2) | {"job_id": 7}),
        ("train-not-bool", fwd(2, train="maybe")),
    ):
        add(Case(f"header-forward-{label}", _fwd(header, handles=handles(0)), 422, v))
    add(
        Case(
            "header-backward-no-step",
            _bwd({"job_id": JOB, "idempotency_key": new_key()}, grad=grad()),
            422,
            v,
            True,
        )
    )
    add(Case("header-backward-unknown-field", _bwd(bwd(1, grad_step=0), grad=grad()), 422, v, True))
    add(
        Case(
            "header-embed-unknown-field",
            _raw(f"{U}/embed", frame({"job_id": JOB, "step": 3}, handles=PROBE)),
            422,
            v,
        )
    )

    # handles: dtype, rank, size, range
    for op, send in (("forward", lambda h: _fwd(fwd(2), handles=h)), ("embed", _emb)):
        add(Case(f"{op}-handles-float64", send(PROBE.astype(np.float64)), 400, d))
        add(Case(f"{op}-handles-uint8", send(PROBE.astype(np.uint8)), 400, d))
        add(Case(f"{op}-handles-bool", send(np.array([True, False])), 400, d))
        add(Case(f"{op}-handles-2d", send(PROBE.reshape(2, 2)), 400, s))
        add(Case(f"{op}-handles-scalar", send(np.array(3, dtype=np.int64)), 400, s))
        add(Case(f"{op}-handles-empty", send(handles()), 400, b))
        add(Case(f"{op}-too-many-rows", send(np.arange(MAX_ROWS + 1)), 400, b))
        add(Case(f"{op}-handle-beyond-keys", send(handles(0, len(KEYS))), 400, u))
        add(Case(f"{op}-handle-negative", send(handles(-1, 0)), 400, u))
        add(Case(f"{op}-handle-huge", send(handles(2**62)), 400, u))
        add(Case(f"{op}-handle-key-not-held", send(handles(0, 12)), 400, u))
    add(Case("forward-handles-missing", _fwd(fwd(2), idx=handles(0)), 400, b))
    add(Case("embed-handles-missing", _raw(f"{U}/embed", frame({"job_id": JOB})), 400, b))

    # gradients: shape, dtype, finiteness, presence (backward and piggybacked on a forward)
    grads: list[tuple[str, Any, ErrorCode]] = [
        ("rows", grad(PENDING_ROWS + 1), s),
        ("cols", grad(cols=OUT + 1), s),
        ("1d", grad().reshape(-1), s),
        ("3d", grad().reshape(1, PENDING_ROWS, OUT), s),
        ("empty", np.zeros((0, OUT), np.float32), s),
        ("int", np.ones((PENDING_ROWS, OUT), np.int64), d),
        ("float64", grad().astype(np.float64), d),
        ("nan", NAN_GRAD, n),
        ("inf", INF_GRAD, n),
        ("neg-inf", -INF_GRAD, n),
    ]
    for label, g, code in grads:
        add(Case(f"backward-grad-{label}", _bwd(bwd(1), grad=g), 400, code, True))
        add(
            Case(
                f"piggyback-grad-{label}",
                _fwd(fwd(2, grad_step=1), handles=handles(0, 1), grad=g),
                400,
                code,
                True,
            )
        )
    wires: tuple[codec.WireFloat, ...] = ("float16", "bfloat16")
    for wire in wires:
        add(
            Case(
                f"backward-grad-nan-{wire}",
                _raw(f"{U}/backward", frame(bwd(1), wire, grad=NAN_GRAD)),
                400,
                n,
                True,
            )
        )
    big = np.full((PENDING_ROWS, OUT), 1e6, np.float32)  # overflows float16 to infinity
    add(
        Case(
            "backward-grad-overflows-float16",
            _raw(f"{U}/backward", frame(bwd(1), "float16", grad=big)),
            400,
            n,
            True,
        )
    )
    add(Case("backward-grad-missing", _bwd(bwd(1), g=grad()), 400, b, True))
    add(Case("piggyback-grad-missing", _fwd(fwd(2, grad_step=1), handles=handles(0)), 400, b, True))
    add(
        Case(
            "piggyback-grad-step-not-before-step",
            _fwd(fwd(2, grad_step=2), handles=handles(0), grad=grad()),
            400,
            b,
            True,
        )
    )
    # a valid gradient but bad handles: nothing is applied
    add(
        Case(
            "piggyback-valid-grad-bad-handles",
            _fwd(fwd(2, grad_step=1), handles=handles(0, 99), grad=grad()),
            400,
            u,
            True,
        )
    )

    # steps: replays and order
    add(Case("forward-replayed-step", _fwd(fwd(0), handles=handles(0)), 409, c))
    add(Case("forward-replayed-pending-step", _fwd(fwd(1), handles=handles(0)), 409, c, True))
    add(Case("backward-replayed-step", _bwd(bwd(0), grad=grad(4)), 409, c))
    add(Case("backward-no-pending-forward", _bwd(bwd(5), grad=grad()), 409, c))
    add(Case("backward-wrong-step", _bwd(bwd(2), grad=grad()), 409, c, True))
    add(Case("backward-old-step-while-pending", _bwd(bwd(0), grad=grad()), 409, c, True))
    add(Case("forward-train-while-pending", _fwd(fwd(2), handles=handles(0)), 409, c, True))
    add(
        Case(
            "piggyback-wrong-grad-step",
            _fwd(fwd(3, grad_step=0), handles=handles(0), grad=grad()),
            409,
            c,
            True,
        )
    )
    add(
        Case(
            "piggyback-without-pending",
            _fwd(fwd(2, grad_step=1), handles=handles(0), grad=grad()),
            409,
            c,
        )
    )
    add(
        Case(
            "checkpoint-while-pending",
            _json("POST", f"{U}/checkpoints", {"tag": "t"}),
            409,
            c,
            True,
        )
    )

    # prepare
    add(Case("prepare-twice", _json("PUT", U, prepare_spec()), 409, ErrorCode.JOB_EXISTS))
    add(
        Case(
            "prepare-wrong-party",
            _json("PUT", "/v1/jobs/job2", prepare_spec(job_id="job2", party="f1")),
            400,
            b,
        )
    )
    add(
        Case(
            "prepare-url-other-job",
            _json("PUT", "/v1/jobs/job3", prepare_spec(job_id="job2")),
            400,
            b,
        )
    )
    j2 = "/v1/jobs/job2"
    for label, spec in (
        ("invalid-party-name", prepare_spec(job_id="job2", party="F0!")),
        (
            "duplicate-keys",
            prepare_spec(job_id="job2", keys=["LOT-00001", "LOT-00002", "LOT-00001"]),
        ),
        ("unknown-field", prepare_spec(job_id="job2", priority="high")),
        ("unknown-nested-field", prepare_spec(job_id="job2", segment={"out": 4, "depth": 3})),
        ("missing-keys", {k: val for k, val in prepare_spec(job_id="job2").items() if k != "keys"}),
        ("bad-out", prepare_spec(job_id="job2", segment={"out": 0})),
        ("bad-lr", prepare_spec(job_id="job2", optimizer={"name": "sgd", "lr": -1.0})),
        ("bad-optimizer", prepare_spec(job_id="job2", optimizer={"name": "magic"})),
        ("bad-seed", prepare_spec(job_id="job2", seed=-1)),
        ("bad-wire", prepare_spec(job_id="job2", wire_dtype="int8")),
        ("keys-not-list", prepare_spec(job_id="job2", keys="LOT-00001")),
        ("body-not-object", [prepare_spec(job_id="job2")]),
    ):
        add(Case(f"prepare-{label}", _json("PUT", j2, spec), 422, v))
    add(Case("prepare-malformed-json", _json("PUT", j2, b'{"job_id": "job2",'), 422, v))
    add(Case("prepare-empty-body", _json("PUT", j2, b""), 422, v))

    # checkpoints
    for op in ("checkpoints", "restore"):
        for label, cbody in (
            ("unknown-field", {"tag": "t", "step": 3}),
            ("path-tag", {"tag": "../../etc/passwd"}),
            ("empty-tag", {"tag": ""}),
            ("no-tag", {}),
            ("malformed", b"{tag"),
        ):
            add(Case(f"{op}-{label}", _json("POST", f"{U}/{op}", cbody), 422, v))
    add(
        Case(
            "restore-unknown-tag",
            _json("POST", f"{U}/restore", {"tag": "never"}),
            404,
            ErrorCode.NOT_FOUND,
        )
    )

    # oversized bodies: declared and streamed without a content-length
    big_frames = {
        "forward": frame(fwd(2), handles=np.arange(BIG)),
        "backward": frame(bwd(1), grad=grad(BIG, OUT)),
        "embed": frame({"job_id": JOB}, handles=np.arange(BIG)),
    }
    too_large = ErrorCode.PAYLOAD_TOO_LARGE
    for op, body in big_frames.items():
        assert len(body) > MAX_BODY
        add(Case(f"oversized-{op}", _raw(f"{U}/{op}", body), 413, too_large, op == "backward"))
        add(
            Case(
                f"oversized-chunked-{op}",
                _stream(f"{U}/{op}", body),
                413,
                too_large,
                op == "backward",
            )
        )
    big_keys = [f"LOT-{i:05d}" for i in range(600)]
    big_json = {
        j2: json.dumps(prepare_spec(job_id="job2", keys=big_keys)).encode(),
        f"{U}/checkpoints": json.dumps({"tag": "t", "pad": "x" * 5000}).encode(),
        f"{U}/restore": json.dumps({"tag": "t", "pad": "x" * 5000}).encode(),
    }
    for path, body in big_json.items():
        assert len(body) > MAX_BODY
        method = "PUT" if path == j2 else "POST"
        label = path.rsplit("/", 1)[-1]
        add(Case(f"oversized-json-{label}", _json(method, path, body), 413, too_large))
        add(
            Case(
                f"oversized-chunked-json-{label}",
                _stream(path, body, "application/json")
                if method == "POST"
                else _put_stream(path, body),
                413,
                too_large,
            )
        )

    # routes that do not exist
    add(
        Case(
            "unknown-route-json", _json("POST", f"{U}/nothing", {"a": 1}), 404, ErrorCode.NOT_FOUND
        )
    )
    add(Case("unknown-route-get", _get("/v2/jobs"), 404, ErrorCode.NOT_FOUND))
    add(Case("method-not-allowed", _json("PATCH", U, {"a": 1}), 405, ErrorCode.BAD_REQUEST))
    add(Case("get-forward", _get(f"{U}/forward"), 405, ErrorCode.BAD_REQUEST))
    return cases


def _put_stream(path: str, body: bytes) -> Send:
    async def send(p: Party) -> httpx.Response:
        headers = {"content-type": "application/json"}
        return await p.client.put(path, content=chunked(body), headers=headers)

    return send


CASES = _cases()


def test_case_ids_are_unique() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
async def test_bad_input_is_refused_without_side_effects(party: Party, case: Case) -> None:
    if case.pending:
        await party.make_pending()
    before = await party.snapshot()
    resp = await case.send(party)
    assert_error(resp, case.status, case.code)
    assert await party.snapshot() == before
    await party.still_trains()


# --- retries, ledger, and positive controls -----------------------------------------------------


async def test_backward_retry_is_answered_not_applied_twice(party: Party) -> None:
    await party.make_pending()
    header = bwd(1, key=KEY)
    first = await party.backward(header, grad=grad())
    assert first.status_code == 200, first.text
    after_first = await party.snapshot()
    assert after_first.status["applied_step"] == 1
    # the retry may even carry another gradient: the stored answer is returned, nothing applied
    for g in (grad(), grad(seed=7)):
        retry = await party.backward(header, grad=g)
        assert retry.status_code == 200, retry.text
        assert retry.content == first.content
        assert await party.snapshot() == after_first
    # the same step under another key is a conflict, still without effect
    assert_error(await party.backward(bwd(1), grad=grad()), 409, ErrorCode.STEP_CONFLICT)
    assert await party.snapshot() == after_first
    await party.still_trains()


async def test_piggybacked_forward_retry_is_answered_not_applied_twice(party: Party) -> None:
    await party.make_pending()
    header = fwd(2, key=KEY, grad_step=1)
    first = await party.forward(header, handles=handles(0, 1), grad=grad())
    assert first.status_code == 200, first.text
    after_first = await party.snapshot()
    assert after_first.status["applied_step"] == 1
    assert after_first.status["pending_step"] == 2
    for _ in range(2):
        retry = await party.forward(header, handles=handles(0, 1), grad=grad())
        assert retry.status_code == 200, retry.text
        assert retry.content == first.content
        assert await party.snapshot() == after_first
    assert_error(
        await party.forward(fwd(2, grad_step=1), handles=handles(0, 1), grad=grad()),
        409,
        ErrorCode.STEP_CONFLICT,
    )
    assert await party.snapshot() == after_first
    await party.still_trains(pending_rows=2)


async def test_forward_retry_returns_identical_bytes(party: Party) -> None:
    header = fwd(1, key=KEY)
    first = await party.forward(header, handles=handles(4, 5, 6))
    assert first.status_code == 200, first.text
    after_first = await party.snapshot()
    assert after_first.status["pending_step"] == 1
    retry = await party.forward(header, handles=handles(4, 5, 6))
    assert retry.content == first.content
    assert await party.snapshot() == after_first
    frame_ = codec.decode(first.content)
    assert frame_.header == {"job_id": JOB, "step": 1}
    assert frame_.tensor("activations", dtype="float32", ndim=2).shape == (3, OUT)
    await party.still_trains()


async def test_a_gradient_changes_the_embedding(party: Party) -> None:
    """Positive control: the snapshot comparison would see a parameter update."""
    await party.make_pending()
    before = await party.snapshot()
    resp = await party.backward(bwd(1), grad=grad())
    assert resp.status_code == 200, resp.text
    after = await party.snapshot()
    assert after.embedding != before.embedding
    assert after.status["applied_step"] == 1 and after.status["pending_step"] is None


async def test_embed_and_eval_forward_change_nothing(party: Party) -> None:
    before = await party.snapshot()
    for _ in range(2):
        assert (await party.embed(handles(0, 1, 2))).status_code == 200
    resp = await party.forward(fwd(5, train=False), handles=handles(0, 1))
    assert resp.status_code == 200, resp.text
    after = await party.snapshot()
    assert after.embedding == before.embedding
    assert after.status["pending_step"] is None


async def test_int32_handles_are_accepted(party: Party) -> None:
    a = await party.embed(PROBE)
    b = await party.embed(PROBE.astype(np.int32))
    assert a.status_code == b.status_code == 200
    assert a.content == b.content


async def test_checkpoint_restore_round_trip(party: Party) -> None:
    saved = await party.client.post(f"{U}/checkpoints", json={"tag": "t1"})
    assert saved.status_code == 200, saved.text
    before = await party.snapshot()
    await party.still_trains()
    restored = await party.client.post(f"{U}/restore", json={"tag": "t1"})
    assert restored.status_code == 200, restored.text
    assert restored.json()["sha256"] == saved.json()["sha256"]
    assert await party.snapshot() == before


async def test_a_failed_delete_deletes_nothing_and_a_valid_one_does(party: Party) -> None:
    assert_error(await party.client.delete("/v1/jobs/job2"), 404, ErrorCode.UNKNOWN_JOB)
    assert (await party.status())["applied_step"] == 0
    resp = await party.client.delete(U)
    assert resp.status_code == 204
    assert_error(await party.client.get(U), 404, ErrorCode.UNKNOWN_JOB)
    assert_error(await party.embed(), 404, ErrorCode.UNKNOWN_JOB)
    health = await party.client.get("/v1/health")
    assert health.status_code == 200 and health.json()["jobs"] == 0


async def test_a_failed_prepare_creates_no_job(party: Party) -> None:
    for spec in (prepare_spec(job_id="job2", party="f1"), prepare_spec(job_id="job2", keys=[1])):
        resp = await party.client.put("/v1/jobs/job2", json=spec)
        assert 400 <= resp.status_code < 500
        assert_error(await party.client.get("/v1/jobs/job2"), 404, ErrorCode.UNKNOWN_JOB)
    resp = await party.client.put("/v1/jobs/job2", json=prepare_spec(job_id="job2"))
    assert resp.status_code == 201, resp.text

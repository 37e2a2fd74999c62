"""Bad input to the tree family at the party services (issue 20): malformed histograms or
ciphertexts, invalid tree parameters, a contract or request mixing families. Each is a clear
4xx with a machine-readable body, and changes nothing: the feature party's split table and its
answers for a prediction stay as they were."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from services.engine.gbdt import messages as msg
from services.engine.gbdt.errors import GbdtParamsError
from services.party.families.gbdt.feature_jobs import SPLITS_FILE
from services.party.families.gbdt.wire import Setup, serve_request
from services.protocol.messages import GbdtModelSpec, JobState
from tests.conftest import InProcess
from tests.party.test_protection import protected
from tests.party.test_training import train
from tests.party.trees_world import feature_app, feature_client, runs_of, tree_call, tree_spec
from tests.synthetic import Vertical


def _state(app: object, job_id: str) -> tuple[bytes, dict[str, tuple[int, int, bool]]]:
    state = app.state  # type: ignore[attr-defined]
    directory: Path = state.party.settings.data_dir / "jobs" / job_id
    return (directory / SPLITS_FILE).read_bytes(), dict(state.tree_roles.roles[job_id].splits)


@pytest.mark.parametrize("mode", ["plain", "ckks"])
async def test_malformed_tree_requests_are_refused_and_change_nothing(
    vertical: Vertical, in_process: InProcess, mode: str
) -> None:
    client = in_process(vertical)
    spec = tree_spec(vertical, mode)
    status = await train(client, spec)
    assert status.state is JobState.FINISHED, status.error
    peer = feature_client(client)
    app = feature_app(peer)
    job = spec.job_id
    refs = list(app.state.tree_roles.roles[job].splits)
    serve = serve_request(refs, np.arange(20, dtype=np.int64))
    before = (await tree_call(peer, job, "serve", serve)).content
    saved = _state(app, job)
    n = int(runs_of(client).runs[job].data.splits.shape[0])
    bad: dict[str, tuple[str, bytes]] = {
        "not a message": ("histograms", b"\\x00garbage"),
        "truncated": ("histograms", msg.encode({"kind": "histograms"}, [b"x" * 64])[:-10]),
        "plain: short vectors": (
            "histograms",
            msg.encode({"kind": "histograms", "mode": "plain", "nodes": 1}, [b"\\0" * 8] * 2),
        ),
        "ckks: garbage ciphertext": (
            "histograms",
            msg.encode(
                {"kind": "histograms", "mode": "ckks", "nodes": 1, "shapes": [[-1, 1]]},
                [b"\\x5e\\xa1" * 5000],
            ),
        ),
        "ckks: too many chunks": (
            "histograms",
            msg.encode(
                {"kind": "histograms", "mode": "ckks", "nodes": 1, "shapes": [[-1, 10**6]]}, []
            ),
        ),
        "submit: plain mode": (
            "submit",
            msg.encode({"kind": "submit", "mode": "plain", "nodes": 1}, [b"\0" * 8] * 2),
        ),
        "collect: no such ticket": ("collect", msg.encode({"kind": "collect", "ticket": 7})),
        "collect: huge ticket": ("collect", msg.encode({"kind": "collect", "ticket": 2**80})),
        "collect: not a number": ("collect", msg.encode({"kind": "collect", "ticket": "0"})),
        "split: no such candidate": (
            "split",
            msg.encode(
                {"kind": "split", "feature": 10**4, "bin": 0, "missing_left": False},
                [np.packbits(np.ones(n, bool)).tobytes()] * 2,
            ),
        ),
        "serve: unknown reference": ("serve", serve_request(["feedface"], np.arange(3))),
        "serve: handle out of range": ("serve", serve_request(refs, np.array([10**9]))),
        "setup: other parameters": (
            "setup",
            Setup(
                runs_of(client).runs[job].params.model_copy(update={"depth": 5}),
                np.arange(n, dtype=np.int64),
                np.arange(0, n - 10, dtype=np.int64),
                np.arange(n - 10, n, dtype=np.int64),
            ).encode(),
        ),
    }
    for name, (kind, body) in bad.items():
        r = await tree_call(peer, job, kind, body)
        assert 400 <= r.status_code < 500, (name, r.status_code, r.text)
        doc = r.json()
        assert doc["code"] in {"bad_request", "conflict", "unknown_handles"}, (name, doc)
        if r.status_code == 400 and kind != "serve":
            assert doc["detail"]["reason"] == "malformed_tree_message", (name, doc)
    # a garbage ciphertext in a submit: the background thread evaluates it, so the 400 comes
    # when its ticket is collected (plain mode: at once, there are no keys)
    head = {"kind": "submit", "mode": "ckks", "nodes": 1, "shapes": [[-1, 1]]}
    r = await tree_call(peer, job, "submit", msg.encode(head, [b"\x5e\xa1" * 5000]))
    if mode == "ckks":
        assert r.status_code == 200, r.text
        ticket = msg.decode(r.content, "submit")[0]["ticket"]
        r = await tree_call(peer, job, "collect", msg.encode({"kind": "collect", "ticket": ticket}))
    assert r.status_code == 400, r.text
    assert r.json()["detail"]["reason"] == "malformed_tree_message", r.text
    assert (await tree_call(peer, job, "layout", b"")).status_code == 400
    assert (await tree_call(peer, job, "nonsense", b"x")).status_code in (404, 422)
    assert _state(app, job) == saved, "no split was added or changed"
    assert (await tree_call(peer, job, "serve", serve)).content == before
    if mode == "ckks":  # as after a restart: the role is rebuilt from disk, without keys
        app.state.tree_roles.roles.clear()
        head = {"kind": "histograms", "mode": "ckks", "nodes": 1, "shapes": [[-1, 1]]}
        r = await tree_call(peer, job, "histograms", msg.encode(head, [b"x" * 64]))
        assert r.status_code == 409 and r.json()["code"] == "step_conflict", r.text
        r = await tree_call(peer, job, "collect", msg.encode({"kind": "collect", "ticket": 0}))
        assert r.status_code == 409 and r.json()["code"] == "step_conflict", r.text
        assert (await tree_call(peer, job, "serve", serve)).content == before


async def test_families_do_not_mix_at_a_party(vertical: Vertical, in_process: InProcess) -> None:
    """A tree request for an nn job, and a segment step for a tree job, are refused by name."""
    client = in_process(vertical)
    nn = protected(vertical, "plain", epochs=1)
    trees = tree_spec(vertical, "plain")
    for spec in (nn, trees):
        status = await train(client, spec)
        assert status.state is JobState.FINISHED, status.error
    peer = feature_client(client)
    r = await tree_call(peer, nn.job_id, "layout", msg.encode({"kind": "layout"}))
    assert r.status_code == 400 and r.json()["code"] == "family_not_implemented", r.text
    r = await peer._http.post(
        f"/v1/jobs/{trees.job_id}/embed",
        content=b"x",
        headers={"content-type": "application/x-splice-tensors"},
    )
    assert r.status_code in (400, 415), r.text
    with pytest.raises(Exception) as refused:
        await peer.embed(trees.job_id, np.arange(4, dtype=np.int64))
    assert "gbdt job" in str(refused.value)


def test_invalid_tree_parameters_are_refused_by_name() -> None:
    with pytest.raises(ValidationError, match="depth"):
        GbdtModelSpec(family="gbdt", depth=99)
    with pytest.raises(GbdtParamsError, match="invalid tree parameters"):
        Setup.decode(
            msg.encode({"kind": "setup", "params": {"depth": 0}}, [b"", b"", b""]), handles=10
        )

"""Training runs for benchmarks/leakage.py, recording what each party legitimately sees.

Both parties are party apps in this process, reached through ``httpx.ASGITransport`` (the
harness of tests/conftest.py). Hooks on the feature party's segment record every value it
holds after decoding (and, in ckks mode, decrypting with its own key) each message it receives:
the handles of every step, ``dL/dh`` when its bottom trains, its masked share of W's gradient
and the masked ``h W_A + R`` of every mix; at the end it keeps its own bottom, its share and
its encoded features. Hooks on the label party's links record the cut values ``z`` (and, in
plain mode, ``h``) it sees per handle. The evaluator's data (true labels, splits, handles by
board) is read from the label party's run.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import torch
from pydantic import SecretStr

from services.engine.keyed import JobKey
from services.party.app import create_app
from services.party.protection.ckks import CkksFeature, CkksLink
from services.party.protection.plain import PlainLink
from services.party.segment import SegmentJob
from services.party.settings import PartySettings
from services.protocol import codec
from services.protocol.messages import JobState, TrainingSpec, TrainingStatus
from services.protocol.peers import PartyClient, SegmentClient
from services.scenario.pcb_paste import ScenarioFiles

FEATURE, LABEL = "paste", "pcb"
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
MASTERS = {LABEL: "leakage-label-master", FEATURE: "leakage-feature-master"}
"""Key masters of the two parties (the attacker knows its own; the replay uses it)."""


@dataclass
class FeatureView:
    """Everything the feature party holds after the run."""

    handles: dict[int, I64] = field(default_factory=dict)
    dh: dict[int, F64] = field(default_factory=dict)
    share_grad: dict[int, F64] = field(default_factory=dict)
    mix: dict[int, F64] = field(default_factory=dict)
    x: F64 | None = None
    """Its encoded features, by handle."""
    h: F64 | None = None
    """Its final bottom's output, by handle (= x for an identity bottom)."""
    share: F64 | None = None
    """Its final share W_P (ckks), None in plain mode."""
    own_key: JobKey | None = None
    job: Any = None
    pending_mix: F64 | None = None


@dataclass
class LabelView:
    """The cut values the label party saw last for each handle (training forwards)."""

    z: dict[int, F64] = field(default_factory=dict)
    h: dict[int, F64] = field(default_factory=dict)


@dataclass
class Run:
    spec: TrainingSpec
    status: TrainingStatus
    feature: FeatureView
    label: LabelView
    labels: I64
    """True board labels (the test metric's)."""
    board_lot: I64
    splits: npt.NDArray[np.int8]
    seconds: float


@contextlib.contextmanager
def hooks(fv: FeatureView, lv: LabelView) -> Iterator[None]:
    """Record what each party sees for the duration of one run."""
    forward, grad, mix = SegmentJob.forward, SegmentJob._grad, SegmentJob.mix
    ckks_mix = CkksFeature.mix
    plain_fwd, ckks_fwd = PlainLink.forward, CkksLink.forward

    def spy_forward(
        self: SegmentJob, step: int, key: str, frame: codec.Frame, grad_step: int | None, t: bool
    ) -> bytes:
        out = forward(self, step, key, frame, grad_step, t)
        if t:
            fv.handles[step] = frame.tensor("handles", dtype=("int64", "int32"), ndim=1).copy()
        fv.job = self
        return out

    def spy_grad(self: SegmentJob, frame: codec.Frame, step: int) -> torch.Tensor | None:
        dh = grad(self, frame, step)
        if dh is not None:
            fv.dh[step] = dh.detach().double().numpy().copy()
        share = getattr(self.protection, "_share_grad", None)
        if share is not None:
            fv.share_grad[step] = np.array(share, dtype=np.float64)
        return dh

    def spy_ckks_mix(self: CkksFeature, masked: bytes, h: F64) -> F64:
        out = ckks_mix(self, masked, h)
        fv.pending_mix = out - h @ self.share.w  # the decrypted h W_A + R
        return out

    def spy_mix(self: SegmentJob, frame: codec.Frame, step: int | None, ref: str | None) -> bytes:
        fv.pending_mix = None
        out = mix(self, frame, step, ref)
        if step is not None and fv.pending_mix is not None:
            fv.mix[step] = fv.pending_mix
        return out

    def label_spy(orig: Any) -> Any:
        async def spy(self: Any, step: int, handles: I64, sent: Any) -> torch.Tensor:
            z = await orig(self, step, handles, sent)
            values = z.detach().double().numpy()
            for i, hd in enumerate(handles.tolist()):
                lv.z[hd] = values[i]
            if isinstance(self, PlainLink) and self._h is not None:
                for i, hd in enumerate(handles.tolist()):
                    lv.h[hd] = self._h[i]
            return z

        return spy

    patches: list[tuple[Any, str, Any]] = [
        (SegmentJob, "forward", spy_forward),
        (SegmentJob, "_grad", spy_grad),
        (SegmentJob, "mix", spy_mix),
        (CkksFeature, "mix", spy_ckks_mix),
        (PlainLink, "forward", label_spy(plain_fwd)),
        (CkksLink, "forward", label_spy(ckks_fwd)),
    ]
    saved = [(cls, name, cls.__dict__[name]) for cls, name, _ in patches]
    try:
        for cls, name, fn in patches:
            setattr(cls, name, fn)
        yield
    finally:
        for cls, name, fn in saved:
            setattr(cls, name, fn)


class Written(httpx.AsyncBaseTransport):
    """Reports the request body written, as a socket transport does (the trainer starts its
    local work then); ``ASGITransport`` alone never does."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        trace = request.extensions.get("trace")
        if trace is not None:
            await trace("http11.send_request_body.complete", {"request": request})
        return await self.inner.handle_async_request(request)


def _final_state(fv: FeatureView) -> None:
    job = fv.job
    assert job is not None, "the feature party never saw a forward"
    with torch.no_grad():
        job.model.eval()
        x = job.features.index_select(0, job.rows_by_handle.clamp_min(0))
        fv.x = x.double().numpy()
        fv.h = job.model(x).double().numpy()
    share = job.protection.state().get("w")
    fv.share = None if share is None else np.array(share, dtype=np.float64)
    fv.job = None


async def train(files: ScenarioFiles, spec: TrainingSpec, work: Path) -> Run:
    """One split training run in this process, recorded."""
    fv, lv = FeatureView(), LabelView()
    feature = create_app(
        PartySettings(
            name=FEATURE,
            table=files.paste_supplier,
            key_column=files.key_paste,
            data_dir=work / FEATURE,
            key_master=SecretStr(MASTERS[FEATURE]),
            he_workers=1,
            allow_plain_raw=True,
        )
    )
    inner = Written(httpx.ASGITransport(app=feature))

    def factory(url: str, _: PartySettings) -> SegmentClient:
        return SegmentClient(url, transport=inner, timeout=600.0)

    label = create_app(
        PartySettings(
            name=LABEL,
            table=files.pcb_maker,
            data_dir=work / LABEL,
            key_master=SecretStr(MASTERS[LABEL]),
        ),
        client_factory=factory,
    )
    t0 = time.perf_counter()
    try:
        with hooks(fv, lv):
            transport = httpx.ASGITransport(app=label)
            async with PartyClient(f"http://{LABEL}", transport=transport) as client:
                status = await client.train(spec, poll=0.2)
            _final_state(fv)
    finally:
        for app in (label, feature):
            await app.state.runs.shutdown()
            app.state.party.close()
    if status.state is not JobState.FINISHED:
        raise RuntimeError(f"training failed: {status.error}")
    run = label.state.runs.runs[spec.job_id]
    assert run.data is not None and run.true_labels is not None
    fv.own_key = JobKey.derive(MASTERS[FEATURE].encode(), spec.job_id)
    return Run(
        spec,
        status,
        fv,
        lv,
        np.asarray(run.true_labels.values, dtype=np.int64),
        np.asarray(run.data.handles[FEATURE], dtype=np.int64),
        run.data.splits,
        time.perf_counter() - t0,
    )

"""The label party's run of a ``gbdt`` job: aligned like every job (PSI, contract binding,
private job key), then boosted tree by tree through the feature parties' tree endpoints, a
checkpoint after every tree (a party restarted between trees resumes the job), progress per
tree (trees done, validation metric) and a model version at the end."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt

from services.engine.checkpoint import atomic_write
from services.engine.gbdt import booster, objectives
from services.engine.gbdt import messages as msg
from services.engine.gbdt.booster import Model
from services.engine.gbdt.checkpoint import dump_label, load_label
from services.engine.gbdt.errors import GbdtError, GbdtMessageError
from services.engine.gbdt.label import VerticalSource
from services.engine.gbdt.params import GbdtParams
from services.engine.gbdt.vertical import scores
from services.engine.training import split_rows
from services.party.families.gbdt.contribution import tree_contributions
from services.party.families.gbdt.wire import Setup, tree_params
from services.party.training.cuts import MAX_RESUMES, recoverable
from services.party.training.driver import SplitTrainer
from services.protocol.errors import BadRequest, SpliceError
from services.protocol.messages import (
    EpochMetrics,
    GbdtModelSpec,
    JobState,
    PreparedJob,
    TrainingStatus,
)
from services.protocol.terms import model_digest, spec_digest

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
LABEL_FILE = "gbdt-label.bin"
RETRY_SECONDS = 1.0


class TreeTrainer(SplitTrainer):
    """A ``gbdt`` job at the label party (the nn driver's alignment, its own training)."""

    model: Model | None = None
    source: VerticalSource | None = None
    params: GbdtParams | None = None

    async def _connect(self, prepared: dict[str, PreparedJob]) -> None:
        """No cut layer: the tree protocol's keys are set up per training (label.py)."""

    def names(self) -> list[str]:
        """Feature parties in protocol order (party ``p`` is ``names()[p - 1]``)."""
        return [fp.name for fp in self.spec.feature_parties]

    def sender(self, loop: asyncio.AbstractEventLoop) -> Callable[[int, str, bytes], bytes]:
        """The engine's blocking transport over the authenticated peer clients."""
        names = self.names()

        async def call(name: str, kind: str, payload: bytes) -> bytes:
            resp = await self.clients[name].request(
                "POST",
                f"/v1/jobs/{self.spec.job_id}/trees/{kind}",
                content=payload,
                media_type="application/octet-stream",
            )
            return resp.content

        def send(party: int, kind: str, payload: bytes) -> bytes:
            return asyncio.run_coroutine_threadsafe(
                call(names[party - 1], kind, payload), loop
            ).result()

        return send

    async def _train(self) -> None:
        assert self.data is not None and self.cut_dir is not None
        spec, data = self.spec, self.data
        if not isinstance(spec.model, GbdtModelSpec):
            raise BadRequest("a tree run needs a gbdt model")
        if not self.resume:  # a fresh run of this job id starts from no tree
            (self.cut_dir / LABEL_FILE).unlink(missing_ok=True)
        params = tree_params(spec.model, spec.task, spec.protection.mode, data.labels)
        self.params = params
        train, valid, test = split_rows(data.splits)
        self._set(state=JobState.TRAINING, epochs=params.trees)
        started = self._started = time.perf_counter()
        loop = asyncio.get_running_loop()
        send = self.sender(loop)
        failing_since: float | None = None
        while True:
            try:
                await asyncio.to_thread(self._boost, params, train, valid, send, loop)
                break
            except SpliceError as exc:
                now = time.monotonic()
                failing_since = failing_since or now
                if (
                    not recoverable(exc)
                    or now - failing_since > self.resume_timeout
                    or self.status.resumes >= MAX_RESUMES
                ):
                    raise
                await asyncio.sleep(RETRY_SECONDS)
                self._set(resumes=self.status.resumes + 1)
        test_metrics, found = await asyncio.to_thread(self._finish, params, test, valid)
        self._set(contributions=found)
        blob = (self.cut_dir / LABEL_FILE).read_bytes()
        self.artifacts = {spec.party: hashlib.sha256(blob).hexdigest()}
        for name in self.names():  # each feature party's split table, as it digests it
            reply = await self.clients[name].request(
                "POST",
                f"/v1/jobs/{spec.job_id}/trees/digest",
                content=msg.encode({"kind": "digest"}),
                media_type="application/octet-stream",
            )
            self.artifacts[name] = self._engine(partial(_digest, reply.content))
        digest = self.status.spec_digest or spec_digest(spec)
        self._set(
            state=JobState.FINISHED,
            test=test_metrics,
            train_seconds=time.perf_counter() - started,
            segment_digests=dict(self.artifacts),
            model_digest=model_digest(digest, dict(self.artifacts)),
        )

    def _boost(
        self,
        params: GbdtParams,
        train: I64,
        valid: I64,
        send: Callable[[int, str, bytes], bytes],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        """Set up every feature party, resume from the last tree checkpoint if any, boost."""
        assert self.data is not None and self.cut_dir is not None
        data, names = self.data, self.names()
        x = data.features.astype(np.float64)
        y = np.asarray(data.labels.values, dtype=np.float64)
        src = self.source = self._sources(params, train, valid, send)
        saved = self.cut_dir / LABEL_FILE
        start: Model | None = None
        if saved.is_file():
            start, own = self._engine(lambda: load_label(saved.read_bytes()))
            src.own_splits = own
        history = list(self.status.history)  # this thread's copy, pushed to the status
        base = objectives.init_score(params, y[train])
        raw_t, raw_v = np.tile(base, (train.shape[0], 1)), np.tile(base, (valid.shape[0], 1))
        if start is not None and start.rounds:  # the finished trees' scores, for the reports
            done = start.rounds
            per_t = self._engine(lambda: scores(src, len(names), done, x[train], train))
            per_v = np.zeros((len(done), 0, params.outputs))
            if valid.size:
                per_v = self._engine(lambda: scores(src, len(names), done, x[valid], valid))
            for r in range(len(done)):
                raw_t, raw_v = raw_t + per_t[r], raw_v + per_v[r]
                if r >= len(history):  # this label party restarted: the reports it lost
                    history.append(self._report(params, r + 1, y, train, valid, raw_t, raw_v, 0.0))
            restored = list(history)
            loop.call_soon_threadsafe(lambda: self._set(history=restored, epoch=len(restored)))

        def replay(rounds: list[list[Any]]) -> tuple[F64, F64]:
            done_t = scores(src, len(names), rounds, x[train], train)
            done_v = scores(src, len(names), rounds, x[valid], valid)
            return done_t, done_v

        def on_round(model: Model) -> None:
            nonlocal raw_t, raw_v
            t = time.perf_counter()
            atomic_write(saved, dump_label(model, src.own_splits))
            raw_t = raw_t + scores(src, len(names), model.rounds[-1:], x[train], train)[0]
            if valid.size:
                raw_v = raw_v + scores(src, len(names), model.rounds[-1:], x[valid], valid)[0]
            epoch = self._report(
                params, len(model.rounds), y, train, valid, raw_t, raw_v, time.perf_counter() - t
            )
            history.append(epoch)
            done = list(history)
            loop.call_soon_threadsafe(lambda: self._set(history=done, epoch=epoch.epoch))

        yv = y[valid] if valid.size else None
        model, _, _ = self._engine(
            lambda: booster.train(
                params,
                src,
                y[train],
                yv,
                src.row_seed,
                resume=start,
                replay=replay,
                on_round=on_round,
            )  # fmt: skip
        )
        self.model = model

    @staticmethod
    def _report(
        params: GbdtParams,
        trees: int,
        y: F64,
        train: I64,
        valid: I64,
        raw_t: F64,
        raw_v: F64,
        seconds: float,
    ) -> EpochMetrics:
        """The progress entry after ``trees`` trees: training loss, validation metric and loss."""
        validation: dict[str, float] = {}
        if valid.size:
            yv = y[valid]
            validation = {
                objectives.metric_name(params): objectives.metric(params, yv, raw_v),
                "loss": objectives.loss(params, yv, raw_v),
            }
        return EpochMetrics(
            epoch=trees,
            train_loss=objectives.loss(params, y[train], raw_t),
            validation=validation,
            seconds=seconds,
        )

    def _sources(
        self, params: GbdtParams, train: I64, valid: I64, send: Callable[[int, str, bytes], bytes]
    ) -> VerticalSource:
        """Set every feature party up for the job (again, after a restart: same rows, same
        parameters) and build the label party's source (layouts, keys in ckks mode)."""
        assert self.data is not None
        data, names = self.data, self.names()
        for p, name in enumerate(names, start=1):
            setup = Setup(params, data.handles[name].astype(np.int64), train, valid)
            self._engine(partial(send, p, "setup", setup.encode()))
        x = data.features.astype(np.float64)
        return self._engine(  # type: ignore[no-any-return]
            lambda: VerticalSource(params, x, train, valid, len(names), send, self.key)
        )

    async def reload_trees(self, status: TrainingStatus) -> None:
        """A run this label party finished before it restarted, ready to serve again: rows from
        the saved alignment, the feature parties set up again, the model of its last tree
        checkpoint (cut to the rounds early stopping kept); nothing trains."""
        await self._realign()
        assert self.data is not None and self.cut_dir is not None
        if not isinstance(self.spec.model, GbdtModelSpec):
            raise BadRequest("a tree run needs a gbdt model")
        params = tree_params(
            self.spec.model, self.spec.task, self.spec.protection.mode, self.data.labels
        )
        train, valid, _ = split_rows(self.data.splits)
        send = self.sender(asyncio.get_running_loop())
        blob = (self.cut_dir / LABEL_FILE).read_bytes()

        def load() -> None:
            src = self._sources(params, train, valid, send)
            model, own = self._engine(partial(load_label, blob))
            src.own_splits = own
            model.rounds = model.rounds[: model.best_rounds]
            self.params, self.source, self.model = params, src, model

        await asyncio.to_thread(load)
        self.status = status

    def _finish(
        self, params: GbdtParams, test: I64, valid: I64
    ) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
        """The test metric (true labels) and each party's contribution on validation rows."""
        data, model, src = self.data, self.model, self.source
        assert data is not None and model is not None and src is not None
        x = data.features.astype(np.float64)
        labels = self.true_labels if self.true_labels is not None else data.labels
        y = np.asarray(labels.values, dtype=np.float64)
        names = self.names()
        out: dict[str, float] = {}
        found: dict[str, dict[str, float]] = {}
        if test.size:
            raw = np.tile(model.base, (test.shape[0], 1))
            raw += self._engine(lambda: scores(src, len(names), model.rounds, x[test], test)).sum(0)
            out[objectives.metric_name(params)] = objectives.metric(params, y[test], raw)
        if valid.size:
            found = self._engine(
                lambda: tree_contributions(model, src, names, x[valid], valid, y[valid])
            )
        return out, found

    @staticmethod
    def _engine(work: Callable[[], Any]) -> Any:
        """Run engine code; its domain errors become the service's 400."""
        try:
            return work()
        except GbdtError as exc:
            raise BadRequest(f"tree protocol: {exc}", detail={"reason": exc.code}) from None


def _digest(body: bytes) -> str:
    """The sha256 a feature party answers for its split table."""
    head, _ = msg.decode(body, "digest")
    digest: str = msg.field(head, "sha256", str, "digest")
    if len(digest) != 64:
        raise GbdtMessageError("digest: not a sha256")
    return digest

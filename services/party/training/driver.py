"""Split training driven by the label party.

Per step the label party sends every feature party, concurrently, one frame: the handles of the
next batch plus the gradient for that party's previous forward. While those requests are in
flight it runs its own bottom segment in a worker thread. Then it runs the top, back-propagates,
steps its own optimizer and keeps each party's cut gradient for the next request. One round trip
per step; the remaining gradient of an epoch is flushed with a standalone backward.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import torch
from safetensors.torch import save as st_save

from services.engine import tasks
from services.engine.dataset import KeyIndex, LabelData, build_label_data, index_keys
from services.engine.segments import TopModel, build_bottom, build_optimizer, derived_seed
from services.engine.split import epoch_batches
from services.engine.tabular import TableError
from services.engine.training import EarlyStopping, split_rows
from services.protocol.errors import SpliceError
from services.protocol.messages import (
    EpochMetrics,
    JobState,
    PrepareJob,
    TrainingSpec,
    TrainingStatus,
)
from services.protocol.peers import SegmentClient

log = logging.getLogger("splice.training")
EVAL_CHUNK = 8192


@dataclass(slots=True)
class _Meter:
    """Training-step accounting across epochs (evaluation excluded)."""

    step: int = 0
    samples: int = 0
    seconds: float = 0.0
    bytes: int = 0


@dataclass(slots=True)
class _Owed:
    """Local work of a step deferred into the next one: own bottom backward, optimizer step."""

    own_cut: torch.Tensor | None
    own_grad: torch.Tensor | None


async def _until_written(
    written: Mapping[str, asyncio.Event], requests: asyncio.Future[list[npt.NDArray[np.float32]]]
) -> None:
    """Return once every request body is written, or the requests ended (say, failed)."""
    waits = [asyncio.ensure_future(e.wait()) for e in written.values()]
    everything = asyncio.ensure_future(asyncio.gather(*waits))
    try:
        pending: list[asyncio.Future[Any]] = [everything, requests]
        await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    finally:
        everything.cancel()
        for w in waits:
            w.cancel()


def _digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 of a state dict as safetensors bytes."""
    return hashlib.sha256(st_save({k: v.contiguous() for k, v in state.items()})).hexdigest()


def _expand(cut: torch.Tensor, inverse: npt.NDArray[np.int64] | None) -> torch.Tensor:
    """Rows of a feature party's answer in batch order (identity without deduplication)."""
    return cut if inverse is None else cut.index_select(0, torch.from_numpy(inverse))


def _grad_array(grad: torch.Tensor | None, like: torch.Tensor) -> npt.NDArray[np.float32]:
    """A cut gradient as a contiguous float32 array (zeros if the cut did not reach the loss)."""
    g = torch.zeros_like(like) if grad is None else grad
    out: npt.NDArray[np.float32] = np.ascontiguousarray(g.detach().numpy(), dtype=np.float32)
    return out


class SplitTrainer:
    """One training run at the label party."""

    def __init__(self, spec: TrainingSpec, table: pa.Table, clients: Mapping[str, SegmentClient]):
        self.spec = spec
        self.table = table
        self.clients = dict(clients)
        self.status = TrainingStatus(
            job_id=spec.job_id, state=JobState.PENDING, task=spec.task, epochs=spec.epochs
        )
        self.data: LabelData | None = None
        self.artifacts: dict[str, str] = {}
        """sha256 of every party's best checkpoint (the model version's artifacts)."""
        self.on_change: Callable[[TrainingStatus], None] | None = None
        self._dedup = {
            fp.name: spec.model.bottom[fp.name].dropout == 0
            and not spec.model.bottom[fp.name].batch_norm
            for fp in spec.feature_parties
        }
        self.own: torch.nn.Module | None = None
        self.top: TopModel | None = None

    def _set(self, **changes: object) -> None:
        before = self.status.state
        self.status = self.status.model_copy(update=changes)
        if self.on_change is not None and (self.status.state is not before or "history" in changes):
            self.on_change(self.status)

    async def run(self) -> TrainingStatus:
        """Align, train, evaluate; never raises (failures land in the status)."""
        try:
            await self._align()
            await self._train()
        except (SpliceError, TableError) as exc:
            log.warning("job %s failed: %s", self.spec.job_id, exc)
            self._set(state=JobState.FAILED, error=str(exc))
        except Exception as exc:  # the run must end with a status, whatever happened
            log.exception("job %s failed unexpectedly", self.spec.job_id)
            self._set(state=JobState.FAILED, error=f"internal error: {type(exc).__name__}")
        finally:
            self._set(**self._traffic())
        return self.status

    def _traffic(self) -> dict[str, int]:
        """Status fields for the bytes exchanged so far."""
        sent, received = self._bytes()
        return {"bytes_sent": sent, "bytes_received": received}

    def _bytes(self) -> tuple[int, int]:
        sent = sum(c.traffic.sent for c in self.clients.values())
        received = sum(c.traffic.received for c in self.clients.values())
        return sent, received

    # --- alignment ---------------------------------------------------------------------------

    async def _align(self) -> None:
        self._set(state=JobState.ALIGNING)
        spec = self.spec
        indexes: dict[str, KeyIndex] = {
            fp.name: index_keys(self.table, fp.key_column) for fp in spec.feature_parties
        }

        async def prepare(name: str) -> tuple[str, npt.NDArray[np.bool_]]:
            answer = await self.clients[name].prepare(
                PrepareJob(
                    job_id=spec.job_id,
                    party=name,
                    segment=spec.model.bottom[name],
                    optimizer=spec.model.optimizer,
                    seed=spec.seed,
                    keys=indexes[name].keys,
                    wire_dtype=spec.wire_dtype,
                )
            )
            if len(answer.found) != len(indexes[name].keys):
                raise SpliceError(f"party {name} answered alignment for the wrong number of keys")
            return name, np.asarray(answer.found, dtype=bool)

        found = dict(await asyncio.gather(*(prepare(fp.name) for fp in spec.feature_parties)))
        data = build_label_data(self.table, spec, indexes, found)
        if data.rows.shape[0] == 0:
            raise SpliceError("no row of the label party is held by every feature party")
        self.data = data
        train, val, test = split_rows(data.splits)
        rows = {"label_rows": self.table.num_rows, "aligned": int(data.rows.shape[0])}
        rows |= {"train": len(train), "validation": len(val), "test": len(test)}
        self._set(rows=rows)
        own_spec = spec.model.bottom.get(spec.party)
        cuts = {fp.name: spec.model.bottom[fp.name].out for fp in spec.feature_parties}
        if own_spec is not None and data.features.shape[1] > 0:
            seed = derived_seed(spec.seed, "bottom", spec.party)
            self.own = build_bottom(data.features.shape[1], own_spec, seed)
            cuts[spec.party] = own_spec.out
        self.top = TopModel(
            cuts, spec.model.top, data.labels.out_dim, derived_seed(spec.seed, "top")
        )

    # --- training ----------------------------------------------------------------------------

    def _own_cut(self, rows: npt.NDArray[np.int64], train: bool) -> torch.Tensor | None:
        if self.own is None or self.data is None:
            return None
        self.own.train(train)
        x = torch.from_numpy(self.data.features[rows])
        with torch.set_grad_enabled(train):
            out: torch.Tensor = self.own(x)
        return out

    async def _train(self) -> None:
        assert self.data is not None and self.top is not None
        spec, data, top, own = self.spec, self.data, self.top, self.own
        params = [*top.parameters(), *(own.parameters() if own is not None else [])]
        optimizer = build_optimizer(iter(params), spec.model.optimizer)
        torch.manual_seed(derived_seed(spec.seed, "train", spec.party))
        train, val, test = split_rows(data.splits)
        self._set(state=JobState.TRAINING, steps_per_epoch=-(-len(train) // spec.batch_size))
        stopper = EarlyStopping(spec.patience)
        best: dict[str, torch.Tensor] = {}
        meter = _Meter()
        started = time.perf_counter()
        for epoch in range(spec.epochs):
            t0 = time.perf_counter()
            before = sum(self._bytes())
            loss = await self._epoch(epoch, train, optimizer, meter)
            meter.bytes += sum(self._bytes()) - before
            metrics = await self._evaluate(val)
            record = EpochMetrics(
                epoch=epoch, train_loss=loss, validation=metrics, seconds=time.perf_counter() - t0
            )
            if stopper.update(epoch, metrics[tasks.PRIMARY_METRIC[spec.task]]):
                best = self._snapshot()
                saved = await asyncio.gather(
                    *(c.checkpoint(spec.job_id, "best") for c in self.clients.values())
                )
                pairs = zip(self.clients, saved, strict=True)
                self.artifacts = {f"{n}/best": info.sha256 for n, info in pairs}
                self.artifacts[f"{spec.party}/best"] = _digest(best)
            self._set(
                history=[*self.status.history, record],
                best_epoch=stopper.best_epoch,
                samples_per_second=meter.samples / max(meter.seconds, 1e-9),
                train_samples=meter.samples,
                train_bytes=meter.bytes,
                train_seconds=time.perf_counter() - started,
                **self._traffic(),
            )
            if stopper.should_stop:
                break
        await asyncio.gather(*(c.restore(spec.job_id, "best") for c in self.clients.values()))
        self._restore(best)
        self._set(
            state=JobState.FINISHED,
            test=await self._evaluate(test),
            train_seconds=time.perf_counter() - started,
        )

    async def _epoch(
        self,
        epoch: int,
        train: npt.NDArray[np.int64],
        optimizer: torch.optim.Optimizer,
        meter: _Meter,
    ) -> float:
        """One epoch of steps; returns the mean training loss.

        Only the top's forward and backward sit on the critical path. One autograd pass gives
        the cut gradients (sent with the next request) and the top's parameter gradients; the
        label party's own bottom backward, its optimizer step and its next own bottom forward run
        in a worker thread while the next requests are in flight. Nothing remote depends on them,
        so the overlap changes no result.
        """
        assert self.data is not None and self.top is not None
        spec, data, top = self.spec, self.data, self.top
        top.train()
        total = 0.0
        pending: dict[str, tuple[int, npt.NDArray[np.float32]]] = {}
        owed: _Owed | None = None  # the previous step's deferred local work
        for batch in epoch_batches(train, spec.batch_size, spec.seed, epoch):
            s0 = time.perf_counter()
            meter.step += 1
            sent = {name: self._rows_to_send(name, batch) for name in self.clients}
            written = {name: asyncio.Event() for name in self.clients}
            requests = asyncio.gather(
                *(
                    self.clients[name].forward(
                        spec.job_id,
                        meter.step,
                        sent[name][0],
                        grad_step=pending[name][0] if name in pending else None,
                        grad=pending[name][1] if name in pending else None,
                        sent=written[name],
                    )
                    for name in self.clients
                )
            )
            # Compute locally once the requests are on the wire, on this thread: a worker
            # thread would fight the event loop for the GIL and slow the round trip.
            await _until_written(written, requests)
            own_cut = self._local_work(optimizer, owed, batch)
            remote = await requests
            cuts = {
                name: torch.from_numpy(h).requires_grad_()
                for name, h in zip(self.clients, remote, strict=True)
            }
            inputs = {name: _expand(cut, sent[name][1]) for name, cut in cuts.items()}
            own_leaf = None if own_cut is None else own_cut.detach().requires_grad_()
            if own_leaf is not None:
                inputs[spec.party] = own_leaf
            loss = tasks.loss(spec.task, top(inputs), tasks.target_tensor(data.labels, batch))
            leaves = [*cuts.values(), *([own_leaf] if own_leaf is not None else [])]
            params = [p for p in top.parameters() if p.requires_grad]
            grads = torch.autograd.grad(loss, [*leaves, *params], allow_unused=True)
            for p, g in zip(params, grads[len(leaves) :], strict=True):
                p.grad = g
            for i, name in enumerate(cuts):
                pending[name] = (meter.step, _grad_array(grads[i], cuts[name]))
            own_grad = grads[len(cuts)] if own_leaf is not None else None
            owed = _Owed(own_cut, own_grad)
            total += loss.item() * batch.shape[0]
            meter.samples += batch.shape[0]
            meter.seconds += time.perf_counter() - s0
            self._set(step=meter.step, epoch=epoch)
        s0 = time.perf_counter()
        self._local_work(optimizer, owed, None)
        await self._flush(pending)
        meter.seconds += time.perf_counter() - s0
        return total / max(len(train), 1)

    def _rows_to_send(
        self, name: str, rows: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64] | None]:
        """Handles to send a feature party for ``rows``, and how to expand its answer.

        Many label rows may name one feature row (many boards, one paste lot). A bottom segment
        without batch norm or dropout maps each feature row independently, so computing each
        distinct row once is exact: the answer is expanded by index and autograd sums the
        duplicates' gradients per row. Fewer bytes, less feature-party compute, and the party
        no longer sees how often each of its rows occurs in a batch.
        """
        assert self.data is not None
        handles = self.data.handles[name][rows]
        if not self._dedup[name]:
            return handles, None
        unique, inverse = np.unique(handles, return_inverse=True)
        return unique.astype(np.int64, copy=False), inverse.astype(np.int64, copy=False)

    def _local_work(
        self,
        optimizer: torch.optim.Optimizer,
        owed: _Owed | None,
        rows: npt.NDArray[np.int64] | None,
    ) -> torch.Tensor | None:
        """Finish the previous step locally, then run the own bottom for ``rows``."""
        if owed is not None:
            if owed.own_cut is not None and owed.own_grad is not None:
                torch.autograd.backward(owed.own_cut, owed.own_grad)
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return None if rows is None else self._own_cut(rows, True)

    async def _flush(self, pending: dict[str, tuple[int, npt.NDArray[np.float32]]]) -> None:
        await asyncio.gather(
            *(self.clients[n].backward(self.spec.job_id, s, g) for n, (s, g) in pending.items())
        )
        pending.clear()

    def _snapshot(self) -> dict[str, torch.Tensor]:
        assert self.top is not None
        state = {f"top.{k}": v.clone() for k, v in self.top.state_dict().items()}
        if self.own is not None:
            state |= {f"own.{k}": v.clone() for k, v in self.own.state_dict().items()}
        return state

    def _restore(self, state: dict[str, torch.Tensor]) -> None:
        assert self.top is not None
        if not state:
            return
        self.top.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("top.")})
        if self.own is not None:
            self.own.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("own.")})

    async def _evaluate(self, rows: npt.NDArray[np.int64]) -> dict[str, float]:
        """Metrics of the joint model on ``rows`` (evaluation mode, no state change)."""
        assert self.data is not None and self.top is not None
        data, top = self.data, self.top
        outputs: list[torch.Tensor] = []
        top.eval()
        for start in range(0, rows.shape[0], EVAL_CHUNK):
            chunk = rows[start : start + EVAL_CHUNK]
            sent = {name: self._rows_to_send(name, chunk) for name in self.clients}
            remote = await asyncio.gather(
                *(c.embed(self.spec.job_id, sent[n][0]) for n, c in self.clients.items())
            )
            inputs = {
                n: _expand(torch.from_numpy(h), sent[n][1])
                for n, h in zip(self.clients, remote, strict=True)
            }
            own_cut = self._own_cut(chunk, False)
            if own_cut is not None:
                inputs[self.spec.party] = own_cut
            with torch.no_grad():
                outputs.append(top(inputs))
        logits = torch.cat(outputs) if outputs else torch.zeros((0, data.labels.out_dim))
        return tasks.compute_metrics(data.labels, rows, tasks.predictions(self.spec.task, logits))

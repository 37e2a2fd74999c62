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
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import torch
from safetensors.torch import save as st_save

from services.engine import contribution, he, tasks
from services.engine.dataset import KeyIndex, LabelData, build_label_data, index_keys
from services.engine.psi import PsiPool
from services.engine.segments import TopModel, build_bottom, build_optimizer, derived_seed
from services.engine.split import distinct_rows, epoch_batches
from services.engine.tabular import TableError
from services.engine.training import EarlyStopping, split_rows
from services.party.training.align import private_alignment
from services.party.training.links import CutLink, connect
from services.protocol.errors import SpliceError
from services.protocol.messages import (
    EpochMetrics,
    JobState,
    PreparedJob,
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
    written: Mapping[str, asyncio.Event], requests: asyncio.Future[Any]
) -> None:
    """Return once every request body is written, or the requests ended (say, failed)."""
    waits = {asyncio.ensure_future(e.wait()) for e in written.values()}
    try:
        while waits and not requests.done():
            done, _ = await asyncio.wait({*waits, requests}, return_when=asyncio.FIRST_COMPLETED)
            waits -= done
    finally:
        for w in waits:
            w.cancel()


def _digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 of a state dict as safetensors bytes."""
    return hashlib.sha256(st_save({k: v.contiguous() for k, v in state.items()})).hexdigest()


def _expand(cut: torch.Tensor, inverse: npt.NDArray[np.int64] | None) -> torch.Tensor:
    """Rows of a feature party's answer in batch order (identity without deduplication)."""
    return cut if inverse is None else cut.index_select(0, torch.from_numpy(inverse))


RecordedKeys = Callable[[], Awaitable[dict[str, str]]]
"""Fetches the key fingerprints the registry holds for the job (governed runs)."""


class SplitTrainer:
    """One training run at the label party."""

    def __init__(
        self,
        spec: TrainingSpec,
        table: pa.Table,
        clients: Mapping[str, SegmentClient],
        *,
        pool: Callable[[], he.HePool] | None = None,
        recorded_keys: RecordedKeys | None = None,
        psi_pool: Callable[[], PsiPool] | None = None,
    ):
        self.spec = spec
        self.table = table
        self.clients = dict(clients)
        self.pool = pool
        self.recorded_keys = recorded_keys
        self.psi_pool = psi_pool
        self.links: dict[str, CutLink] = {}
        self.status = TrainingStatus(
            job_id=spec.job_id,
            state=JobState.PENDING,
            task=spec.task,
            epochs=spec.epochs,
            mode=spec.protection.mode,
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
        self.key_handles: dict[str, dict[str, int]] = {}
        """Per feature party, the handle of each of this party's keys the alignment shared
        (what serving maps a request's keys through; no key travels)."""

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
        counts: dict[str, int] = {}
        indexes: dict[str, KeyIndex] = {
            fp.name: index_keys(self.table, fp.key_column) for fp in spec.feature_parties
        }

        async def prepare(name: str) -> tuple[str, PreparedJob]:
            answer = await self.clients[name].prepare(
                PrepareJob(
                    job_id=spec.job_id,
                    party=name,
                    segment=spec.model.bottom[name],
                    optimizer=spec.model.optimizer,
                    seed=spec.seed,
                    keys=indexes[name].keys if spec.alignment == "keys" else [],
                    alignment=spec.alignment,
                    wire_dtype=spec.wire_dtype,
                    protection=spec.protection,
                    interactive=spec.model.top.interactive,
                    interactive_optimizer=spec.model.interactive_optimizer,
                    batch_size=spec.batch_size,
                    contract_id=spec.contract_id,
                )
            )
            if spec.alignment == "keys" and len(answer.found) != len(indexes[name].keys):
                raise SpliceError(f"party {name} answered alignment for the wrong number of keys")
            return name, answer

        prepared = dict(await asyncio.gather(*(prepare(fp.name) for fp in spec.feature_parties)))
        if spec.alignment == "psi":
            psi_pool = self.psi_pool() if self.psi_pool is not None else None
            handle_of_key = {
                name: await private_alignment(
                    spec.job_id, name, self.clients[name], indexes[name].keys, psi_pool, counts
                )
                for name in prepared
            }
            found = {n: h >= 0 for n, h in handle_of_key.items()}
        else:
            found = {n: np.asarray(p.found, dtype=bool) for n, p in prepared.items()}
            handle_of_key = {n: np.where(f, np.arange(f.shape[0]), -1) for n, f in found.items()}
        self.key_handles = {
            n: {k: int(h) for k, h in zip(indexes[n].keys, handle_of_key[n], strict=True) if h >= 0}
            for n in prepared
        }
        await self._connect(prepared)
        data = build_label_data(self.table, spec, indexes, found)
        if spec.alignment == "psi":  # key positions -> the per-job handles the PSI agreed
            data.handles = {n: handle_of_key[n][h] for n, h in data.handles.items()}
        if data.rows.shape[0] == 0:
            raise SpliceError("no row of the label party is held by every feature party")
        self.data = data
        train, val, test = split_rows(data.splits)
        rows = {"label_rows": self.table.num_rows, "aligned": int(data.rows.shape[0]), **counts}
        rows |= {"train": len(train), "validation": len(val), "test": len(test)}
        self._set(rows=rows)
        own_spec = spec.model.bottom.get(spec.party)
        cuts: dict[str, int] = {}
        if own_spec is not None and data.features.shape[1] > 0:
            seed = derived_seed(spec.seed, "bottom", spec.party)
            self.own = build_bottom(data.features.shape[1], own_spec, seed)
            cuts[spec.party] = own_spec.out
        self.top = TopModel(
            cuts,
            spec.model.top,
            data.labels.out_dim,
            derived_seed(spec.seed, "top"),
            external=[fp.name for fp in spec.feature_parties],
        )

    async def _connect(self, prepared: dict[str, PreparedJob]) -> None:
        """One link per feature party; in ckks mode check each key bundle against the record."""
        spec = self.spec
        ckks = spec.protection.mode == "ckks"
        recorded = await self.recorded_keys() if ckks and self.recorded_keys else None
        pool = self.pool() if ckks and self.pool is not None else None
        if ckks and pool is None:
            pool = he.HePool(1)
        for name, answer in prepared.items():
            self.links[name] = await connect(spec, name, self.clients[name], answer, pool, recorded)
        self._set(key_bytes=sum(link.key_bytes for link in self.links.values()))

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
        test_metrics = await self._evaluate(test)
        self._set(contributions=await self._contributions(val))
        self._set(
            state=JobState.FINISHED,
            test=test_metrics,
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
        owed: _Owed | None = None  # the previous step's deferred local work
        for batch in epoch_batches(train, spec.batch_size, spec.seed, epoch):
            s0 = time.perf_counter()
            meter.step += 1
            sent = {name: self._rows_to_send(name, batch) for name in self.links}
            written = {name: asyncio.Event() for name in self.links}
            requests = asyncio.gather(
                *(
                    link.forward(meter.step, sent[name][0], written[name])
                    for name, link in self.links.items()
                )
            )
            # Compute locally once the requests are on the wire, on this thread: a worker
            # thread would fight the event loop for the GIL and slow the round trip.
            await _until_written(written, requests)
            own_cut = self._local_work(optimizer, owed, batch)
            remote = await requests
            cuts = {name: z.requires_grad_() for name, z in zip(self.links, remote, strict=True)}
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
            for i, (name, cut) in enumerate(cuts.items()):
                grad = grads[i] if grads[i] is not None else torch.zeros_like(cut)
                self.links[name].backward(meter.step, grad, batch.shape[0])
            own_grad = grads[len(cuts)] if own_leaf is not None else None
            owed = _Owed(own_cut, own_grad)
            total += loss.item() * batch.shape[0]
            meter.samples += batch.shape[0]
            meter.seconds += time.perf_counter() - s0
            self._set(step=meter.step, epoch=epoch)
        s0 = time.perf_counter()
        self._local_work(optimizer, owed, None)
        await asyncio.gather(*(link.flush() for link in self.links.values()))
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
        return distinct_rows(handles)

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

    def _snapshot(self) -> dict[str, torch.Tensor]:
        assert self.top is not None
        state = {f"top.{k}": v.clone() for k, v in self.top.state_dict().items()}
        if self.own is not None:
            state |= {f"own.{k}": v.clone() for k, v in self.own.state_dict().items()}
        for name, link in self.links.items():
            state |= {f"link.{name}.{k}": torch.from_numpy(v) for k, v in link.state().items()}
        return state

    def _restore(self, state: dict[str, torch.Tensor]) -> None:
        assert self.top is not None
        if not state:
            return
        self.top.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("top.")})
        if self.own is not None:
            self.own.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("own.")})
        for name, link in self.links.items():
            prefix = f"link.{name}."
            link.load(
                {k[len(prefix) :]: v.numpy() for k, v in state.items() if k.startswith(prefix)}
            )

    async def _inputs(self, rows: npt.NDArray[np.int64]) -> dict[str, torch.Tensor]:
        """Every party's input to the top for ``rows`` (evaluation mode, no state change)."""
        parts: dict[str, list[torch.Tensor]] = {}
        for start in range(0, rows.shape[0], EVAL_CHUNK):
            chunk = rows[start : start + EVAL_CHUNK]
            sent = {name: self._rows_to_send(name, chunk) for name in self.links}
            remote = await asyncio.gather(
                *(link.embed(sent[n][0]) for n, link in self.links.items())
            )
            for n, z in zip(self.links, remote, strict=True):
                parts.setdefault(n, []).append(_expand(z, sent[n][1]))
            own_cut = self._own_cut(chunk, False)
            if own_cut is not None:
                parts.setdefault(self.spec.party, []).append(own_cut.detach())
        return {n: torch.cat(ts) for n, ts in parts.items()}

    def _score(self, rows: npt.NDArray[np.int64], inputs: dict[str, torch.Tensor]) -> float:
        """The primary metric of the top on given inputs."""
        return self._metrics(rows, inputs)[tasks.PRIMARY_METRIC[self.spec.task]]

    def _metrics(
        self, rows: npt.NDArray[np.int64], inputs: dict[str, torch.Tensor]
    ) -> dict[str, float]:
        assert self.data is not None and self.top is not None
        self.top.eval()
        with torch.no_grad():
            logits = (
                self.top(inputs) if rows.shape[0] else torch.zeros((0, self.data.labels.out_dim))
            )
        return tasks.compute_metrics(
            self.data.labels, rows, tasks.predictions(self.spec.task, logits)
        )

    async def _evaluate(self, rows: npt.NDArray[np.int64]) -> dict[str, float]:
        """Metrics of the joint model on ``rows`` (evaluation mode, no state change)."""
        return self._metrics(rows, await self._inputs(rows))

    async def _contributions(self, rows: npt.NDArray[np.int64]) -> dict[str, dict[str, float]]:
        """Each party's exact Shapley value and leave-one-out on ``rows`` (validation): absent
        parties' inputs are replaced by their mean over ``rows``."""
        inputs = await self._inputs(rows)
        parties = sorted(inputs)
        if rows.shape[0] == 0 or len(parties) > contribution.MAX_PARTIES:
            return {}
        baseline = {p: x.mean(dim=0, keepdim=True).expand_as(x) for p, x in inputs.items()}

        def value(coalition: frozenset[str]) -> float:
            mixed = {p: inputs[p] if p in coalition else baseline[p] for p in parties}
            score = self._score(rows, mixed)
            return score if np.isfinite(score) else 0.0

        values = contribution.coalition_values(parties, value)
        return {
            "shapley": contribution.shapley(parties, values),
            "leave_one_out": contribution.leave_one_out(parties, values),
        }

"""Split training driven by the label party.

Per step the label party sends every feature party, concurrently, one frame: the handles of the
next batch plus the gradient for that party's previous forward. While those requests are in
flight it runs its own bottom segment in a worker thread. Then it runs the top, back-propagates,
steps its own optimizer and keeps each party's cut gradient for the next request. One round trip
per step; the remaining gradient of an epoch is flushed with a standalone backward.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import torch

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
        self.own: torch.nn.Module | None = None
        self.top: TopModel | None = None

    def _set(self, **changes: object) -> None:
        self.status = self.status.model_copy(update=changes)

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
            self._set(bytes_sent=self._bytes()[0], bytes_received=self._bytes()[1])
        return self.status

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
                await asyncio.gather(
                    *(c.checkpoint(spec.job_id, "best") for c in self.clients.values())
                )
            self._set(
                history=[*self.status.history, record],
                best_epoch=stopper.best_epoch,
                samples_per_second=meter.samples / max(meter.seconds, 1e-9),
                train_samples=meter.samples,
                train_bytes=meter.bytes,
                train_seconds=time.perf_counter() - started,
                bytes_sent=self._bytes()[0],
                bytes_received=self._bytes()[1],
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

        The label party's optimizer step for step t runs in a worker thread together with its
        own bottom forward for step t+1, while step t+1's requests are in flight: nothing remote
        depends on it, so this overlap changes no result.
        """
        assert self.data is not None and self.top is not None
        spec, data, top = self.spec, self.data, self.top
        top.train()
        total = 0.0
        pending: dict[str, tuple[int, npt.NDArray[np.float32]]] = {}
        owed = False  # an optimizer step of the previous batch not yet taken
        for batch in epoch_batches(train, spec.batch_size, spec.seed, epoch):
            s0 = time.perf_counter()
            meter.step += 1
            requests = [
                self.clients[name].forward(
                    spec.job_id,
                    meter.step,
                    data.handles[name][batch],
                    grad_step=pending[name][0] if name in pending else None,
                    grad=pending[name][1] if name in pending else None,
                )
                for name in self.clients
            ]
            remote, own_cut = await asyncio.gather(
                asyncio.gather(*requests),
                asyncio.to_thread(self._local_work, optimizer, owed, batch),
            )
            cuts = {
                name: torch.from_numpy(h).requires_grad_()
                for name, h in zip(self.clients, remote, strict=True)
            }
            inputs: dict[str, torch.Tensor] = dict(cuts)
            if own_cut is not None:
                inputs[spec.party] = own_cut
            loss = tasks.loss(spec.task, top(inputs), tasks.target_tensor(data.labels, batch))
            loss.backward()  # type: ignore[no-untyped-call]
            owed = True
            for name, cut in cuts.items():
                assert cut.grad is not None
                pending[name] = (meter.step, cut.grad.numpy())
            total += loss.item() * batch.shape[0]
            meter.samples += batch.shape[0]
            meter.seconds += time.perf_counter() - s0
            self._set(step=meter.step, epoch=epoch)
        s0 = time.perf_counter()
        self._local_work(optimizer, owed, None)
        await self._flush(pending)
        meter.seconds += time.perf_counter() - s0
        return total / max(len(train), 1)

    def _local_work(
        self, optimizer: torch.optim.Optimizer, owed: bool, rows: npt.NDArray[np.int64] | None
    ) -> torch.Tensor | None:
        if owed:
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
            remote = await asyncio.gather(
                *(
                    c.embed(self.spec.job_id, data.handles[n][chunk])
                    for n, c in self.clients.items()
                )
            )
            inputs = {n: torch.from_numpy(h) for n, h in zip(self.clients, remote, strict=True)}
            own_cut = self._own_cut(chunk, False)
            if own_cut is not None:
                inputs[self.spec.party] = own_cut
            with torch.no_grad():
                outputs.append(top(inputs))
        logits = torch.cat(outputs) if outputs else torch.zeros((0, data.labels.out_dim))
        return tasks.compute_metrics(data.labels, rows, tasks.predictions(self.spec.task, logits))

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
from functools import partial

import numpy as np
import numpy.typing as npt
import torch

from services.engine import tasks
from services.engine.content import weights_digest
from services.engine.segments import build_optimizer
from services.engine.split import distinct_rows, epoch_batches
from services.engine.tabular import TableError
from services.engine.training import EarlyStopping, min_epochs, split_rows
from services.party.training.cuts import (
    MAX_RESUMES,
    Cuts,
    Interrupted,
    Progress,
    ResumeWindow,
    recoverable,
    resume_window,
)
from services.party.training.label_run import LabelRun
from services.party.training.recovery import latest_cut
from services.party.training.steps import (
    Owed,
    contributions,
    evaluation_inputs,
    expand_rows,
    restore_snapshot,
    snapshot,
    state_digest,
    top_metrics,
    until_written,
)
from services.party.training.warm import check_started
from services.protocol.errors import ErrorCode, SpliceError
from services.protocol.messages import (
    EpochMetrics,
    JobState,
    TrainingStatus,
    nn_model,
)
from services.protocol.terms import model_digest, spec_digest

log = logging.getLogger("splice.training")


class SplitTrainer(LabelRun):
    """One training run at the label party (neural segments): alignment from
    :class:`LabelRun`, then steps, epochs, evaluation."""

    async def run(self) -> TrainingStatus:
        """Align, train, evaluate; never raises (failures land in the status)."""
        try:
            await (self._realign() if self.resume else self._align())
            await self._train()
        except (SpliceError, TableError) as exc:
            log.warning("job %s failed: %s", self.spec.job_id, exc)
            if self.status.cancelled is not None:  # a call the stop cut short: the stop counts
                self._set(state=JobState.FAILED, error=self._stopped())
            else:
                self._set(state=JobState.FAILED, error=str(exc), failed_party=self._at_fault(exc))
        except asyncio.CancelledError:
            if self.status.cancelled is not None:
                self._set(state=JobState.FAILED, error=self._stopped())
                raise
            error = f"interrupted at step {self.status.step}: the label party stopped"
            self._set(state=JobState.FAILED, error=error, failed_party=self.spec.party)
            raise
        except Exception as exc:  # the run must end with a status, whatever happened
            log.exception("job %s failed unexpectedly", self.spec.job_id)
            error = f"internal error: {type(exc).__name__}"
            self._set(state=JobState.FAILED, error=error, failed_party=self.spec.party)
        finally:
            self._set(**self._traffic())
        return self.status

    def _stopped(self) -> str:
        """The error of a run the registry stopped (its reason, whatever failed after)."""
        return f"stopped at step {self.status.step}: {self.status.cancelled}"

    # --- training ----------------------------------------------------------------------------

    def _own_cut(self, rows: npt.NDArray[np.int64], train: bool) -> torch.Tensor | None:
        if self.own is None or self.data is None:
            return None
        self.own.train(train)
        x = torch.from_numpy(np.take(self.data.features, rows, axis=0))
        with torch.set_grad_enabled(train):
            out: torch.Tensor = self.own(x)
        return out

    async def _train(self) -> None:
        assert self.data is not None and self.top is not None
        spec, data, top, own = self.spec, self.data, self.top, self.own
        state = torch.nn.ModuleDict({"top": top} | ({"own": own} if own is not None else {}))
        params = [*top.parameters(), *(own.parameters() if own is not None else [])]
        optimizer = build_optimizer(iter(params), nn_model(spec.model).optimizer)
        torch.manual_seed(self.key.seed63("dropout", spec.party))
        train, val, test = split_rows(data.splits)
        self._set(state=JobState.TRAINING, steps_per_epoch=-(-len(train) // spec.batch_size))
        steps = -(-len(train) // spec.batch_size)
        self.class_weights = tasks.class_weights(data.labels, train)
        progress = Progress(stopper=EarlyStopping(spec.patience, min_epochs(spec.epochs, steps)))
        best: dict[str, torch.Tensor] = {}
        started = self._started = time.perf_counter()
        cuts = Cuts(spec.job_id, self.clients, self.links, self.cut_dir)
        saved = latest_cut(self.cut_dir) if self.resume and self.cut_dir is not None else None
        if saved is None:
            started_at = await cuts.take(progress, state, optimizer, best)
            if self.champion is not None:  # every party holds its part of the champion
                check_started(self.champion, spec.job_id, started_at)
        else:  # this label party restarted: every party goes back to its last cut
            cuts.adopt(*saved)
            restarted = SpliceError("the label party restarted", code=ErrorCode.PEER_UNAVAILABLE)
            window = await self._resume_window()
            progress, best = await cuts.resume(restarted, state, optimizer, window)
            self._set(resumes=self.status.resumes + 1, history=progress.history, step=progress.step)
        while True:
            try:
                best = await self._epochs(progress, best, cuts, state, optimizer, train, val)
                break
            except SpliceError as exc:
                if not recoverable(exc) or self.status.resumes >= MAX_RESUMES:
                    raise
                window = await self._resume_window()
                progress, best = await cuts.resume(exc, state, optimizer, window)
                self._set(
                    resumes=self.status.resumes + 1, history=progress.history, step=progress.step
                )
        self.artifacts = progress.artifacts
        segments = dict(progress.segments)
        restore_snapshot(best, top, own, self.links)
        while True:  # the best model everywhere, then the test split (no state changes)
            try:
                await asyncio.gather(
                    *(c.restore(spec.job_id, "best") for c in self.clients.values())
                )
                test_metrics = await self._evaluate(test, self.true_labels)
                self._set(contributions=await self._contributions(val))
                break
            except SpliceError as exc:
                if not recoverable(exc) or self.status.resumes >= MAX_RESUMES:
                    raise
                await cuts.reach_all(exc, await self._resume_window(), tag="best")
                self._set(resumes=self.status.resumes + 1)
        digest = self.status.spec_digest or spec_digest(spec)
        self._set(
            state=JobState.FINISHED,
            test=test_metrics,
            train_seconds=time.perf_counter() - started,
            segment_digests=segments,
            model_digest=model_digest(digest, segments),
        )

    async def _resume_window(self) -> ResumeWindow:
        return await resume_window(self.spec.job_id, self.resume_timeout, self.training_deadline)

    async def _epochs(
        self,
        progress: Progress,
        best: dict[str, torch.Tensor],
        cuts: Cuts,
        state: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        train: npt.NDArray[np.int64],
        val: npt.NDArray[np.int64],
    ) -> dict[str, torch.Tensor]:
        """Epochs from ``progress`` on, with a cut after each one; the best snapshot."""
        spec, top = self.spec, self.top
        assert top is not None
        while progress.epoch < self.epochs and not progress.stopper.should_stop:
            epoch = progress.epoch
            t0, before = time.perf_counter(), sum(self._bytes())
            loss = await self._epoch(epoch, train, optimizer, progress, cuts, state, best)
            progress.bytes += sum(self._bytes()) - before
            metrics = await self._evaluate(val)
            record = EpochMetrics(
                epoch=epoch, train_loss=loss, validation=metrics, seconds=time.perf_counter() - t0
            )
            if progress.stopper.choose(epoch, metrics, tasks.PRIMARY_METRIC[spec.task]):
                best = snapshot(top, self.own, self.links)
                saved = await asyncio.gather(
                    *(c.checkpoint(spec.job_id, "best") for c in self.clients.values())
                )
                pairs = list(zip(self.clients, saved, strict=True))
                progress.artifacts = {f"{n}/best": info.sha256 for n, info in pairs}
                progress.artifacts[f"{spec.party}/best"] = state_digest(best)
                progress.segments = {n: info.segment_digest or "" for n, info in pairs}
                progress.segments[spec.party] = weights_digest(best)
                self.artifacts = progress.artifacts
            progress.history = [*progress.history, record]
            progress.epoch, progress.batch, progress.loss_sum = epoch + 1, 0, 0.0
            self._set(
                history=progress.history,
                best_epoch=progress.stopper.best_epoch,
                samples_per_second=progress.samples / max(progress.seconds, 1e-9),
                train_samples=progress.samples,
                train_bytes=progress.bytes,
                train_seconds=time.perf_counter() - self._started,
                **self._traffic(),
            )
            await cuts.take(progress, state, optimizer, best)
        return best

    async def _epoch(
        self,
        epoch: int,
        train: npt.NDArray[np.int64],
        optimizer: torch.optim.Optimizer,
        progress: Progress,
        cuts: Cuts,
        state: torch.nn.Module,
        best: dict[str, torch.Tensor],
    ) -> float:
        """One epoch of steps from ``progress.batch`` on; returns the mean training loss.

        Only the top's forward and backward sit on the critical path. One autograd pass gives
        the cut gradients (sent with the next request) and the top's parameter gradients; the
        label party's own bottom backward, its optimizer step and its next own bottom forward run
        in a worker thread while the next requests are in flight. Nothing remote depends on them,
        so the overlap changes no result. Every ``checkpoint_every`` steps the run settles (own
        work done, gradients flushed) and takes a consistent cut.
        """
        assert self.data is not None and self.top is not None
        spec, data, top = self.spec, self.data, self.top
        top.train()
        owed: Owed | None = None  # the previous step's deferred local work
        batches = epoch_batches(train, spec.batch_size, spec.seed, epoch)
        for index, batch in enumerate(batches):
            if index < progress.batch:
                continue  # trained before the cut this run resumed from
            if self.stopping:  # shutting down: hand back a settled step, no gradient in flight
                await self._settle(optimizer, owed, progress)
                raise Interrupted(
                    f"interrupted after step {progress.step}: the label party is shutting down"
                )
            s0 = time.perf_counter()
            progress.step += 1
            sent = {name: self._rows_to_send(name, batch) for name in self.links}
            written = {name: asyncio.Event() for name in self.links}
            requests = asyncio.gather(
                *(
                    link.forward(progress.step, sent[name][0], written[name])
                    for name, link in self.links.items()
                )
            )
            # Compute locally once the requests are on the wire, on this thread: a worker
            # thread would fight the event loop for the GIL and slow the round trip.
            await until_written(written, requests)
            own_cut = self._local_work(optimizer, owed, batch)
            remote = await requests
            cuts_in = {name: z.requires_grad_() for name, z in zip(self.links, remote, strict=True)}
            inputs = {name: expand_rows(cut, sent[name][1]) for name, cut in cuts_in.items()}
            own_leaf = None if own_cut is None else own_cut.detach().requires_grad_()
            if own_leaf is not None:
                inputs[spec.party] = own_leaf
            target = tasks.target_tensor(data.labels, batch)
            loss = tasks.loss(spec.task, top(inputs), target, self.class_weights)
            leaves = [*cuts_in.values(), *([own_leaf] if own_leaf is not None else [])]
            params = [p for p in top.parameters() if p.requires_grad]
            grads = torch.autograd.grad(loss, [*leaves, *params], allow_unused=True)
            for p, g in zip(params, grads[len(leaves) :], strict=True):
                p.grad = g
            for i, (name, cut) in enumerate(cuts_in.items()):
                grad = grads[i] if grads[i] is not None else torch.zeros_like(cut)
                self.links[name].backward(progress.step, grad, batch.shape[0])
            own_grad = grads[len(cuts_in)] if own_leaf is not None else None
            owed = Owed(own_cut, own_grad)
            progress.loss_sum += loss.item() * batch.shape[0]
            progress.samples += batch.shape[0]
            progress.batch = index + 1
            progress.seconds += time.perf_counter() - s0
            self._set(step=progress.step, epoch=epoch)
            every = spec.checkpoint_every
            if every is not None and progress.step % every == 0:
                await self._settle(optimizer, owed, progress)
                owed = None
                await cuts.take(progress, state, optimizer, best)
        await self._settle(optimizer, owed, progress)
        return progress.loss_sum / max(len(train), 1)

    async def _settle(
        self, optimizer: torch.optim.Optimizer, owed: Owed | None, progress: Progress
    ) -> None:
        """Finish the deferred local work and flush every party's last gradient."""
        s0 = time.perf_counter()
        self._local_work(optimizer, owed, None)
        await asyncio.gather(*(link.flush() for link in self.links.values()))
        progress.seconds += time.perf_counter() - s0

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
        owed: Owed | None,
        rows: npt.NDArray[np.int64] | None,
    ) -> torch.Tensor | None:
        """Finish the previous step locally, then run the own bottom for ``rows``."""
        if owed is not None:
            if owed.own_cut is not None and owed.own_grad is not None:
                torch.autograd.backward(owed.own_cut, owed.own_grad)
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return None if rows is None else self._own_cut(rows, True)

    async def _inputs(self, rows: npt.NDArray[np.int64]) -> dict[str, torch.Tensor]:
        """Every party's input to the top for ``rows`` (evaluation mode, no state change)."""
        own = partial(self._own_cut, train=False)
        return await evaluation_inputs(rows, self.links, self._rows_to_send, own, self.spec.party)

    def _score(self, rows: npt.NDArray[np.int64], inputs: dict[str, torch.Tensor]) -> float:
        """The contribution metric of the top on given inputs."""
        return self._metrics(rows, inputs)[tasks.CONTRIBUTION_METRIC[self.spec.task]]

    def _metrics(
        self,
        rows: npt.NDArray[np.int64],
        inputs: dict[str, torch.Tensor],
        labels: tasks.Labels | None = None,
    ) -> dict[str, float]:
        """Metrics on ``rows`` against the training labels (randomised under label privacy),
        or against ``labels``."""
        assert self.data is not None and self.top is not None
        return top_metrics(self.top, labels or self.data.labels, self.spec.task, rows, inputs)

    async def _evaluate(
        self, rows: npt.NDArray[np.int64], labels: tasks.Labels | None = None
    ) -> dict[str, float]:
        """Metrics of the joint model on ``rows`` (evaluation mode, no state change)."""
        return self._metrics(rows, await self._inputs(rows), labels)

    async def _contributions(self, rows: npt.NDArray[np.int64]) -> dict[str, dict[str, float]]:
        """Each party's exact Shapley value and leave-one-out on ``rows`` (validation)."""
        inputs = await self._inputs(rows)
        return contributions(inputs, rows.shape[0], lambda mixed: self._score(rows, mixed))

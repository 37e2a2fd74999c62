"""Training runs this party drives as label party, each an asyncio task."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import httpx

from services.engine.dataset import index_keys
from services.engine.source import TableSource
from services.party import job_keys
from services.party.binding import DataBinding
from services.party.families import family_of
from services.party.registry_link import RegistryLink
from services.party.settings import PartySettings
from services.party.state import PartyState
from services.party.training.align import check_own_sets
from services.party.training.cuts import recoverable
from services.party.training.driver import SplitTrainer
from services.party.training.recovery import (
    MODEL_FILE,
    finished_runs,
    interrupted_runs,
    load_model,
    save_outcome,
    save_run,
)
from services.party.training.reporting import report_progress
from services.party.training.warm import Champion
from services.protocol import correlation
from services.protocol.errors import BadRequest, Conflict, ErrorCode, NotFound, SpliceError
from services.protocol.messages import JobState, TrainingSpec, TrainingStatus
from services.protocol.peers import SegmentClient
from services.protocol.retry import RetryPolicy
from services.protocol.tls import cleartext_over_network

log = logging.getLogger("splice.training")

ClientFactory = Callable[[str, PartySettings], SegmentClient]
SHUTDOWN_GRACE_SECONDS = 10.0
RELOAD_RETRIES = RetryPolicy(backoff=1.0, backoff_cap=60.0)
"""Waits between attempts to serve a finished run again after a restart (it never gives up)."""


def default_client(url: str, settings: PartySettings) -> SegmentClient:
    """A segment client for a feature party URL, with the party's timeouts and retries."""
    return SegmentClient(
        url,
        timeout=httpx.Timeout(
            connect=settings.peer_connect_timeout_seconds,
            read=settings.peer_timeout_seconds,
            write=settings.peer_write_timeout_seconds,
            pool=settings.peer_pool_timeout_seconds,
        ),
        retries=settings.peer_retries,
        backoff=settings.peer_backoff_seconds,
        backoff_cap=settings.peer_backoff_cap_seconds,
        verify=settings.client_tls(),
        stream=settings.peer_stream,
    )


class TrainingRuns:
    """Runs by job id. A finished run stays queryable until the process ends."""

    def __init__(
        self,
        state: PartyState,
        client_factory: ClientFactory = default_client,
        registry: RegistryLink | None = None,
    ) -> None:
        self.state = state
        self.client_factory = client_factory
        self.registry = registry
        self.runs: dict[str, SplitTrainer] = {}
        self._tasks: set[asyncio.Task[TrainingStatus]] = set()
        self._tasks_other: set[asyncio.Task[None]] = set()
        self._queues: dict[str, asyncio.Queue[TrainingStatus]] = {}
        self._training: dict[str, asyncio.Task[TrainingStatus]] = {}

    def start(self, spec: TrainingSpec, *, resume: bool = False) -> TrainingStatus:
        """Validate and start a run in the background (``resume``: a run this party started
        before it restarted, continued from its last cut)."""
        if spec.job_id in self.runs:
            raise Conflict(f"training {spec.job_id!r} already exists", code=ErrorCode.JOB_EXISTS)
        if spec.party != self.state.settings.name:
            raise Conflict(
                f"this is party {self.state.settings.name!r}; the spec names {spec.party!r}",
                code=ErrorCode.CONFLICT,
            )
        if self.registry is not None and spec.contract_id is None:
            raise BadRequest("this party enforces contracts: the spec needs a contract_id")
        insecure = [
            str(fp.url) for fp in spec.feature_parties if cleartext_over_network(str(fp.url))
        ]
        if self.registry is not None and insecure and not self.state.settings.allow_insecure_http:
            raise BadRequest(
                "registry tokens would travel in cleartext to these feature parties: use https "
                "(or allow_insecure_http on a trusted network)",
                detail={"urls": insecure},
            )
        if not resume and spec.alignment == "psi":  # refuse an oversize set before any work
            keys = {
                fp.name: index_keys(self.state.table, fp.key_column).keys
                for fp in spec.feature_parties
            }
            check_own_sets(spec, keys, self.state.settings.psi_max_keys)
        trainer = self._trainer(spec, resume=resume)
        if not resume:
            assert trainer.cut_dir is not None
            save_run(trainer.cut_dir, spec)
            job_keys.keep(self.state.settings, trainer.cut_dir, trainer.key)
        if self.registry is not None:
            trainer.on_change = self._reporter(trainer)
        self.runs[spec.job_id] = trainer
        task = asyncio.create_task(self._run(trainer), name=f"training-{spec.job_id}")
        self._training[spec.job_id] = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return trainer.status

    def _trainer(self, spec: TrainingSpec, *, resume: bool) -> SplitTrainer:
        """A run of ``spec`` with its clients (authenticated under a registry)."""
        table = self.state.table
        champion = None
        if spec.warm_start is not None:  # the recent window: the rows after the champion's
            table = TableSource(table=table.read().slice(spec.warm_start.from_row))
            if not resume:
                champion = self._champion(spec)
        clients = {
            fp.name: self.client_factory(str(fp.url), self.state.settings)
            for fp in spec.feature_parties
        }
        if self.registry is not None:
            assert spec.contract_id is not None
            for fp in spec.feature_parties:
                clients[fp.name].use_auth(
                    self.registry.outgoing(str(fp.url), spec.contract_id, spec.job_id)
                )
        recorded = deadline = None
        if self.registry is not None:
            link, job_id, contract_id = self.registry, spec.job_id, spec.contract_id
            assert contract_id is not None

            async def recorded_keys() -> dict[str, str]:
                return await link.key_fingerprints(job_id)

            async def training_deadline() -> datetime | None:
                org = link.settings.org_id
                if org is None:
                    return None
                standing = await link.authorizer.standing_of(contract_id, org, job_id)
                return standing.training_deadline

            recorded, deadline = recorded_keys, training_deadline
        cut_dir = self.state.settings.data_dir / "trainings" / spec.job_id
        key = job_keys.job_key(self.state.settings, cut_dir, spec.job_id, fresh=not resume)
        return family_of(spec.model.family).trainer(
            spec,
            table,
            clients,
            key=key,
            pool=lambda: self.state.pool,
            recorded_keys=recorded,
            psi_pool=lambda: self.state.psi_pool,
            cut_dir=cut_dir,
            resume_timeout=self.state.settings.resume_timeout_seconds,
            training_deadline=deadline,
            resume=resume,
            psi_cap=self.state.settings.psi_max_keys,
            label_secret=job_keys.label_secret(
                self.state.settings, spec.contract_id or f"job:{spec.job_id}"
            ),
            champion=champion,
        )

    def _champion(self, spec: TrainingSpec) -> Champion:
        """The finished job ``spec`` warm-starts from: same contract, same model (409
        ``warm_start_refused`` otherwise)."""
        assert spec.warm_start is not None
        wanted = spec.warm_start.job_id
        theirs = self.runs.get(wanted)
        directory = self.state.settings.data_dir / "trainings" / wanted
        binding = DataBinding.load(directory)
        why = None
        if theirs is None or theirs.status.state is not JobState.FINISHED or binding is None:
            why = "it is not a finished job of this party"
        elif (theirs.spec.contract_id, theirs.spec.model) != (spec.contract_id, spec.model):
            why = "its contract or model differs"
        elif not (directory / MODEL_FILE).is_file():
            why = "its model is not on this party's disk"
        if why is not None or binding is None:
            raise Conflict(
                f"job {spec.job_id} cannot warm-start from {wanted}: {why}",
                code=ErrorCode.WARM_START_REFUSED,
                detail={"warm_start": wanted},
            )
        assert theirs is not None
        segments = {n: d for n, d in theirs.status.segment_digests.items() if n in theirs.clients}
        return Champion(load_model(directory), binding, segments)

    def recover(self) -> list[str]:
        """Resume every run this label party started and that never ended (the process crashed
        or was stopped mid-run); answers their job ids."""
        resumed: list[str] = []
        for spec in interrupted_runs(self.state.settings.data_dir / "trainings"):
            if spec.job_id in self.runs:
                continue
            try:
                self.start(spec, resume=True)
            except SpliceError as exc:
                log.warning("cannot resume training %s: %s", spec.job_id, exc)
                cut_dir = self.state.settings.data_dir / "trainings" / spec.job_id
                save_outcome(cut_dir, JobState.FAILED, f"not resumed after a restart: {exc}")
            else:
                log.warning("resuming training %s after a restart", spec.job_id)
                resumed.append(spec.job_id)
        root = self.state.settings.data_dir / "trainings"
        for spec, status, directory in finished_runs(root, lambda s: family_of(s).model_file):
            if spec.job_id not in self.runs:
                self._serve_again(spec, status, directory)
        return resumed

    def _serve_again(self, spec: TrainingSpec, status: TrainingStatus, directory: Path) -> None:
        """Load a run this party finished before it restarted, so its model serves again (in the
        background: its feature parties may not answer yet)."""
        trainer = self._trainer(spec, resume=True)
        self.runs[spec.job_id] = trainer

        async def reload() -> None:
            correlation.bind_job(spec.job_id)
            family, failures = family_of(spec.model.family), 0
            while True:
                try:
                    await family.reload(trainer, status, directory)
                    log.info("training %s serves again after a restart", spec.job_id)
                    return
                except SpliceError as exc:
                    if not recoverable(exc):
                        log.warning("cannot serve %s after a restart: %s", spec.job_id, exc)
                        trainer.unavailable = exc
                        return
                await asyncio.sleep(RELOAD_RETRIES.wait(failures))
                failures += 1

        task = asyncio.create_task(reload(), name=f"reload-{spec.job_id}")
        self._tasks_other.add(task)
        task.add_done_callback(self._tasks_other.discard)

    def _reporter(self, trainer: SplitTrainer) -> Callable[[TrainingStatus], None]:
        """Report state changes and epochs to the registry, in order, without blocking training."""
        link = self.registry
        assert link is not None
        queue: asyncio.Queue[TrainingStatus] = asyncio.Queue()

        async def drain() -> None:
            while True:
                status = await queue.get()
                stopped = await report_progress(link, status, trainer.artifacts)
                if stopped is not None and trainer.status.cancelled is None:
                    self.cancel(trainer, stopped)
                queue.task_done()

        task = asyncio.create_task(drain(), name=f"report-{trainer.spec.job_id}")
        self._tasks_other.add(task)
        task.add_done_callback(self._tasks_other.discard)
        self._queues[trainer.spec.job_id] = queue

        def report(status: TrainingStatus) -> None:
            if trainer.stopping and status.state is JobState.FAILED:
                return  # a shutdown, not a failure: the run resumes at the next start
            queue.put_nowait(status)

        return report

    async def _run(self, trainer: SplitTrainer) -> TrainingStatus:
        correlation.bind_job(trainer.spec.job_id)  # this task's logs and peer calls carry it
        try:
            return await trainer.run()
        finally:
            state, cut_dir = trainer.status.state, trainer.cut_dir
            assert cut_dir is not None
            if state is JobState.FINISHED:  # serves after a restart
                family_of(trainer.spec.model.family).save_finished(trainer)
            elif state is JobState.FAILED and not trainer.stopping:  # not resumed at restart
                save_outcome(cut_dir, state, trainer.status.error)
            if trainer.status.state is not JobState.FINISHED:  # a finished model may serve
                await asyncio.gather(*(c.aclose() for c in trainer.clients.values()))
            queue = self._queues.pop(trainer.spec.job_id, None)
            if queue is not None:
                await queue.join()

    def cancel(self, trainer: SplitTrainer, reason: str) -> None:
        """Stop a run the registry cancelled: it ends FAILED with the registry's reason and is
        not resumed at a restart."""
        log.warning("training %s was stopped at the registry: %s", trainer.spec.job_id, reason)
        trainer.status = trainer.status.model_copy(update={"cancelled": reason})
        task = self._training.get(trainer.spec.job_id)
        if task is not None and not task.done():
            task.cancel()

    def get(self, job_id: str) -> TrainingStatus:
        """Status of run ``job_id``."""
        try:
            return self.runs[job_id].status
        except KeyError:
            raise NotFound(
                f"no training {job_id!r} at this party", code=ErrorCode.UNKNOWN_JOB
            ) from None

    def serving(self, job_id: str) -> SplitTrainer | None:
        """The finished run of ``job_id`` (its model can serve predictions), if this process
        holds one; the reason a run reloaded after a restart cannot serve is raised (e.g. 409
        ``data_changed``)."""
        run = self.runs.get(job_id)
        if run is not None and run.unavailable is not None:
            raise run.unavailable
        return run if run is not None and run.status.state is JobState.FINISHED else None

    def latest_finished(self, name: str) -> SplitTrainer | None:
        """The most recently started finished run under contract ``name`` (or, for runs without
        a contract, of job ``name``): what an open (ungoverned) party serves. If that run cannot
        serve after a restart, why is raised."""
        found = [
            r
            for r in self.runs.values()
            if (r.status.state is JobState.FINISHED or r.unavailable is not None)
            and name in (r.spec.contract_id, r.spec.job_id)
        ]
        if found and found[-1].unavailable is not None:
            raise found[-1].unavailable
        return found[-1] if found else None

    def active(self) -> int:
        """Runs still going."""
        done = {JobState.FINISHED, JobState.FAILED}
        return sum(1 for r in self.runs.values() if r.status.state not in done)

    async def shutdown(self, grace: float = SHUTDOWN_GRACE_SECONDS) -> None:
        """Stop every run still going (the process is stopping): each finishes its step in
        flight and ends FAILED with an "interrupted" error; runs still busy after ``grace``
        seconds are cancelled (also FAILED, interrupted)."""
        for run in self.runs.values():
            run.stopping = True
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        for task in [*self._tasks, *self._tasks_other]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._tasks_other, return_exceptions=True)
        finished = [r for r in self.runs.values() if r.status.state is JobState.FINISHED]
        await asyncio.gather(
            *(c.aclose() for r in finished for c in r.clients.values()), return_exceptions=True
        )


__all__ = ["TrainingRuns", "default_client"]

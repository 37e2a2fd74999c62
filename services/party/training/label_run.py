"""The label party's run state and its alignment: what a training run holds, and how it finds
its rows and links before any step (a fresh PSI alignment, or the one it saved before a restart).

:class:`services.party.training.driver.SplitTrainer` trains on top of it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import torch

from services.engine import he, tasks
from services.engine.dataset import KeyIndex, LabelData, build_label_data, index_keys
from services.engine.keyed import JobKey
from services.engine.psi import PsiPool
from services.engine.segments import TopModel
from services.engine.source import TableSource
from services.engine.training import split_rows
from services.party.binding import DataBinding
from services.party.protection import LabelLink, connect
from services.party.training.align import align_all
from services.party.training.bound import bind_label_data, rescaled, saved_alignment
from services.party.training.privacy import private_labels
from services.party.training.recovery import save_alignment
from services.party.training.steps import (
    label_modules,
    restore_snapshot,
)
from services.party.training.warm import Champion, start_from
from services.protocol.errors import SpliceError
from services.protocol.fine_tune import tuned_spec
from services.protocol.messages import (
    MAX_PSI_KEYS,
    JobState,
    PreparedJob,
    TrainingSpec,
    TrainingStatus,
    nn_model,
)
from services.protocol.peers import SegmentClient
from services.protocol.terms import spec_digest

log = logging.getLogger("splice.training")


RecordedKeys = Callable[[], Awaitable[dict[str, str]]]
"""Fetches the key fingerprints the registry holds for the job (governed runs)."""


class LabelRun:
    """One run at the label party: its state, its status, its alignment."""

    def __init__(
        self,
        spec: TrainingSpec,
        table: pa.Table | TableSource,
        clients: Mapping[str, SegmentClient],
        *,
        key: JobKey | None = None,
        pool: Callable[[], he.HePool] | None = None,
        recorded_keys: RecordedKeys | None = None,
        psi_pool: Callable[[], PsiPool] | None = None,
        cut_dir: Path | None = None,
        resume_timeout: float = 0.0,
        training_deadline: Callable[[], Awaitable[datetime | None]] | None = None,
        resume: bool = False,
        psi_cap: int = MAX_PSI_KEYS,
        label_secret: bytes | None = None,
        champion: Champion | None = None,
    ):
        self.spec = tuned_spec(spec)  # a retraining job: the policy's batch size and rates
        self.terms_spec = spec
        """The spec as the contract states it (what the feature parties are asked to check)."""
        self.table = table
        self.champion = champion
        """A retraining job's starting point (``spec.warm_start``): the champion's model and
        binding at this party (None: fresh weights, or a resumed run whose cuts hold them)."""
        self.epochs = spec.epochs if spec.warm_start is None else spec.warm_start.epochs
        self.clients = dict(clients)
        self.key = key if key is not None else JobKey.generate()
        """This party's private key for the job (services/engine/keyed.py): its initial
        weights, its interactive shares, the defence noise and dropout come from it."""
        self.pool = pool
        self.recorded_keys = recorded_keys
        self.psi_pool = psi_pool
        self.cut_dir = cut_dir
        """Where the label party writes its side of each consistent cut (None: memory only)."""
        self.resume_timeout = resume_timeout
        """How long to wait for an unreachable feature party before the run fails."""
        self.resume = resume
        """Continue a run this label party started before it restarted (from ``cut_dir``)."""
        self.psi_cap = psi_cap
        """This party's own ceiling on any PSI set (its ``psi_max_keys`` setting)."""
        self.label_secret = label_secret or self.key.stream("label-dp").bytes(32)
        """Keys the randomised response of each row (the contract's, so retraining reuses it)."""
        self.true_labels: tasks.Labels | None = None
        """The labels before label privacy (the test metric only)."""
        self.training_deadline = training_deadline
        """The contract's training deadline (asked when a wait starts): no wait runs past it."""
        self.stopping = False
        """Set when the process stops: the run ends after the step in flight."""
        self._started = 0.0
        self.links: dict[str, LabelLink] = {}
        self.status = TrainingStatus(
            job_id=spec.job_id,
            state=JobState.PENDING,
            task=spec.task,
            epochs=spec.epochs if spec.warm_start is None else spec.warm_start.epochs,
            mode=spec.protection.mode,
            spec_digest=spec_digest(spec),
        )
        self.data: LabelData | None = None
        self.artifacts: dict[str, str] = {}
        """sha256 of every party's best checkpoint (the model version's artifacts)."""
        self.on_change: Callable[[TrainingStatus], None] | None = None
        self._dedup = (
            {
                fp.name: nn_model(spec.model).bottom[fp.name].dropout == 0
                and not nn_model(spec.model).bottom[fp.name].batch_norm
                for fp in spec.feature_parties
            }
            if spec.model.family == "nn"
            else {}
        )
        self.own: torch.nn.Module | None = None
        self.top: TopModel | None = None
        self.class_weights: torch.Tensor | None = None
        """A multiclass job's class weights (from the training labels, set when training starts)."""
        self.key_handles: dict[str, dict[str, int]] = {}
        """Per feature party, the handle of each of this party's keys the alignment shared
        (what serving maps a request's keys through; no key travels)."""
        self.binding: DataBinding | None = None
        """What the job uses of this party's table (digest, encoder), once aligned."""
        self.unavailable: SpliceError | None = None
        """Why a finished run reloaded after a restart cannot serve (say, its data changed)."""

    def _set(self, **changes: object) -> None:
        before = self.status.state
        self.status = self.status.model_copy(update=changes)
        if self.on_change is not None and (self.status.state is not before or "history" in changes):
            self.on_change(self.status)

    def _at_fault(self, exc: Exception) -> str:
        """The party a failure is due to: the feature party whose call failed or refused, else
        this label party (its table, its checks)."""
        peer = exc.peer if isinstance(exc, SpliceError) else None
        by_url = {c.base_url: name for name, c in self.clients.items()}
        return by_url.get(peer or "", self.spec.party)

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

        psi_pool = self.psi_pool() if self.psi_pool is not None else None
        keys = {name: index.keys for name, index in indexes.items()}
        prepared, handle_of_key = await align_all(
            self.terms_spec, self.clients, keys, psi_pool, counts, self.psi_cap
        )
        await self._aligned(indexes, handle_of_key, prepared, counts)
        if self.cut_dir is not None:  # by key: a restarted party finds its rows again by key
            assert self.binding is not None
            save_alignment(self.cut_dir, handle_of_key, prepared, keys)
            self.binding.save(self.cut_dir)

    async def reload(self, status: TrainingStatus, model: dict[str, torch.Tensor]) -> None:
        """A run this label party finished before it restarted, ready to serve again: rows and
        links from the saved alignment, the model it finished with; nothing trains."""
        await self._realign()
        assert self.top is not None
        restore_snapshot(model, self.top, self.own, self.links)
        self.status = status

    async def _realign(self) -> None:
        """After this label party restarted: the alignment it saved, not a new one, on the table
        content it was bound to (409 ``data_changed`` otherwise), each key's handle found by
        key."""
        self._set(state=JobState.ALIGNING)
        indexes = {
            fp.name: index_keys(self.table, fp.key_column) for fp in self.spec.feature_parties
        }
        self.binding, handle_of_key, prepared = saved_alignment(
            self.cut_dir, self.table, self.spec.job_id, indexes
        )
        await self._aligned(indexes, handle_of_key, prepared, {})

    async def _aligned(
        self,
        indexes: dict[str, KeyIndex],
        handle_of_key: dict[str, npt.NDArray[np.int64]],
        prepared: dict[str, PreparedJob],
        counts: dict[str, int],
    ) -> None:
        """Links, rows and modules once every key's handle is known (-1: not shared)."""
        spec = self.spec
        self.key_handles = {
            n: {k: int(h) for k, h in zip(indexes[n].keys, handle_of_key[n], strict=True) if h >= 0}
            for n in prepared
        }
        await self._connect(prepared)
        found = {n: h >= 0 for n, h in handle_of_key.items()}
        saved = None if self.binding is None else self.binding.feature_encoder
        if saved is None and self.champion is not None:  # encode as the champion did
            saved = self.champion.binding.feature_encoder
        data = build_label_data(self.table, spec, indexes, found, encoder=saved)
        # key positions -> the handles the alignment agreed (the identity without PSI)
        data.handles = {n: handle_of_key[n][h] for n, h in data.handles.items()}
        if data.rows.shape[0] == 0:
            raise SpliceError("no row of the label party is held by every feature party")
        if self.binding is None:
            self.binding = bind_label_data(self.table, spec, data)
        else:  # the target scale the model was trained with, whatever the row order now
            data.labels = rescaled(data.labels, self.binding)
        self.true_labels, spent = private_labels(spec, data, self.label_secret)
        if spent is not None:
            self._set(label_privacy=spent.as_dict())
        self.data = data
        train, val, test = split_rows(data.splits)
        rows = {"label_rows": self.table.num_rows, "aligned": int(data.rows.shape[0]), **counts}
        rows |= {"train": len(train), "validation": len(val), "test": len(test)}
        self._set(rows=rows)
        if spec.model.family != "nn":  # another family's run builds its own model
            return
        self.own, self.top = label_modules(spec, data, self.key)
        if self.champion is not None and not self.resume:  # warm start: the champion's weights
            start_from(self.champion, spec.job_id, self.top, self.own, self.links)

    async def _connect(self, prepared: dict[str, PreparedJob]) -> None:
        """One link per feature party, in the job's protection mode (a mode with keys checks
        each party's key bundle against the fingerprints the registry recorded)."""
        spec = self.spec
        keyed = any(answer.key_fingerprint is not None for answer in prepared.values())
        recorded = await self.recorded_keys() if keyed and self.recorded_keys else None
        own_pool: list[he.HePool] = []

        def pool() -> he.HePool:
            if self.pool is not None:
                return self.pool()
            if not own_pool:
                own_pool.append(he.HePool(1))
            return own_pool[0]

        for name, answer in prepared.items():
            self.links[name] = await connect(
                spec, name, self.clients[name], self.key, answer, pool, recorded
            )
        links = self.links.values()
        warnings = [w for link in links for w in link.warnings]
        for warning in warnings:
            log.warning("job %s: %s", spec.job_id, warning)
        self._set(
            key_bytes=sum(link.key_bytes for link in links),
            share_bits={
                n: b for n, link in self.links.items() if (b := link.share_bits) is not None
            },
            warnings=warnings,
        )

"""A party's process-wide state: its table (loaded once) and its jobs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from services.engine.dataset import party_features
from services.engine.tabular import key_strings, read_table
from services.party.segment import SegmentJob
from services.party.settings import PartySettings
from services.protocol.errors import BadRequest, Conflict, ErrorCode, NotFound
from services.protocol.messages import PreparedJob, PrepareJob


@dataclass(slots=True)
class PartyState:
    """Everything a running party service holds in memory."""

    settings: PartySettings
    _table: pa.Table | None = None
    jobs: dict[str, SegmentJob] = field(default_factory=dict)

    @property
    def table(self) -> pa.Table:
        """The party's own table, read on first use."""
        if self._table is None:
            self._table = read_table(self.settings.table)
        return self._table

    def job(self, job_id: str) -> SegmentJob:
        """The job ``job_id`` or :class:`NotFound`."""
        try:
            return self.jobs[job_id]
        except KeyError:
            raise NotFound(
                f"job {job_id!r} is not prepared at this party",
                code=ErrorCode.UNKNOWN_JOB,
                detail={"job_id": job_id},
            ) from None

    def prepare(self, spec: PrepareJob) -> PreparedJob:
        """Create this party's segment for ``spec``; align its rows with the label party's keys."""
        if spec.job_id in self.jobs:
            raise Conflict(f"job {spec.job_id!r} already exists", code=ErrorCode.JOB_EXISTS)
        if spec.party != self.settings.name:
            raise BadRequest(
                f"this is party {self.settings.name!r}, not {spec.party!r}",
                detail={"party": self.settings.name},
            )
        key_col = self.settings.key_column
        if key_col is None:
            raise BadRequest("this party has no key column configured; it cannot serve features")
        table = self.table
        keys = key_strings(table, key_col)
        position: dict[str, int] = {}
        for row, key in enumerate(keys):
            if position.setdefault(key, row) != row:
                raise BadRequest(f"key {key_col!r} is not unique in this party's table")
        encoder, features, _ = party_features(table, {key_col})
        if encoder is None:
            raise BadRequest("this party's table has no feature columns")
        rows_by_handle = np.fromiter(
            (position.get(k, -1) for k in spec.keys), dtype=np.int64, count=len(spec.keys)
        )
        job = SegmentJob(
            spec,
            encoder,
            features,
            rows_by_handle,
            self.settings.data_dir / "jobs" / spec.job_id,
            self.settings.max_batch_rows,
        )
        self.jobs[spec.job_id] = job
        return PreparedJob(
            job_id=spec.job_id,
            party=spec.party,
            in_features=int(features.shape[1]),
            out_features=spec.segment.out,
            found=[bool(r >= 0) for r in rows_by_handle],
            feature_names=encoder.feature_names,
        )

    def delete(self, job_id: str) -> None:
        """Forget a job (its checkpoints stay on disk)."""
        self.job(job_id)
        del self.jobs[job_id]

    def __iter__(self) -> Iterator[SegmentJob]:
        return iter(self.jobs.values())

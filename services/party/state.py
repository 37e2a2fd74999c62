"""A party's process-wide state: its table (loaded once) and its jobs."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from services.engine import he
from services.engine.checkpoint import atomic_write
from services.engine.dataset import party_features
from services.engine.interactive import feature_share_init
from services.engine.keyed import JobKey
from services.engine.psi import PsiPool
from services.engine.psi.serving import serving_scalar
from services.engine.segments import cut_width
from services.engine.source import TableSource
from services.engine.tabular import key_strings
from services.party import job_keys
from services.party.alignment import PsiAlignment
from services.party.binding import DataBinding, data_changed
from services.party.live_table import VERSIONS_DIR, LiveTable
from services.party.protection import feature_protection, keeps_secret
from services.party.segment import HANDLES_FILE, SegmentJob
from services.party.serving_book import ServingBook
from services.party.serving_store import STORE_FILE, ServingStore
from services.party.settings import PartySettings
from services.party.warm_start import champion_of, warm
from services.protocol.errors import BadRequest, Conflict, ErrorCode, Forbidden, NotFound
from services.protocol.messages import PreparedJob, PrepareJob, ProtectionSpec

log = logging.getLogger("splice.party")

JOB_FILE = "job.json"
"""A job's PrepareJob, saved at preparation so a restarted party can reload the job."""
BEST_TAG = "best"
"""The checkpoint a reloaded job starts from: a finished job's model is its best one."""
CONTRACT_FILE = "contract.json"
"""The contract id and version a job was prepared under (new table versions are checked against
that contract's schema)."""
KEYS_FILE = "ckks-keys.bin"
"""A ckks job's secret and public keys (the party's own disk, mode 0600): the job survives a
restart of this party."""


@dataclass(slots=True)
class PartyState:
    """Everything a running party service holds in memory."""

    settings: PartySettings
    _live: LiveTable | None = None
    jobs: dict[str, SegmentJob] = field(default_factory=dict)
    _pool: he.HePool | None = None
    _psi_pool: PsiPool | None = None
    _serving_store: ServingStore | None = None
    _book_lock: threading.Lock = field(default_factory=threading.Lock)
    _warming: set[str] = field(default_factory=set)

    @property
    def psi_pool(self) -> PsiPool:
        """This party's PSI workers (both cores by default)."""
        if self._psi_pool is None:
            self._psi_pool = PsiPool(self.settings.he_workers)
        return self._psi_pool

    @property
    def serving_store(self) -> ServingStore:
        """Round counts and live handles of this party's jobs (opened on first use)."""
        if self._serving_store is None:
            self._serving_store = ServingStore(self.settings.data_dir / STORE_FILE)
        return self._serving_store

    @property
    def pool(self) -> he.HePool:
        """This party's CKKS workers (started on the first ckks job)."""
        if self._pool is None:
            self._pool = he.HePool(self.settings.he_workers)
        return self._pool

    @property
    def started_pool(self) -> he.HePool | None:
        """The CKKS workers if a ckks job started them (metrics read it without starting it)."""
        return self._pool

    def close(self) -> None:
        """Stop the CKKS workers."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._psi_pool is not None:
            self._psi_pool.close()
            self._psi_pool = None
        if self._serving_store is not None:
            self._serving_store.close()
            self._serving_store = None

    @property
    def live(self) -> LiveTable:
        """The party's table and the versions appended since, opened on first use (a CSV file
        is read into memory; of a Parquet file only the metadata until a version is added)."""
        if self._live is None:
            self._live = LiveTable(
                self.settings.table, self.settings.key_column, self.settings.data_dir / VERSIONS_DIR
            )
        return self._live

    @property
    def table(self) -> TableSource:
        """The party's own table at its current version."""
        return self.live.source()

    def add_version(self, rows: pa.Table) -> int:
        """Append checked ``rows`` as the table's next version (written to disk first) and give
        every loaded job their encoded features and key book entries; the new version."""
        with self._book_lock:  # a book being built sees the table and its jobs' rows alike
            start = self.live.boundaries[-1]
            version = self.live.append(rows)
            for job in self.jobs.values():
                job.extend(rows, start)
                if job.book is not None:
                    job.book.cover(job.keys_by_row, self.live.boundaries)
        return version

    def serving_book(self, job: SegmentJob) -> ServingBook:
        """The job's serving key book, built on first use over the whole live table (a thread
        may build it ahead: :meth:`warm_book`)."""
        with self._book_lock:
            if job.book is None:
                cap = self.settings.psi_max_keys
                limit = min(job.spec.psi_limits.get(job.spec.label_party or "", cap), cap)
                scalar = serving_scalar(job.job_key.stream("psi", "serving").bytes(64))
                book = ServingBook(
                    job.job_id, scalar, self.psi_pool, limit=limit, store=self.serving_store
                )
                book.cover(job.keys_by_row, self.live.boundaries)
                job.book = book
            return job.book

    def warm_book(self, job: SegmentJob) -> None:
        """Build the job's key book in a worker thread now (its first serving call), so the
        first round for a new key does not wait for a large table's hashing."""
        if job.book is not None or job.job_id in self._warming:
            return
        self._warming.add(job.job_id)

        def build() -> None:
            try:
                self.serving_book(job)
            except Exception as exc:  # the first round builds it again and reports the error
                log.warning("serving key book of job %s not built ahead: %s", job.job_id, exc)
            finally:
                self._warming.discard(job.job_id)

        threading.Thread(target=build, name=f"book-{job.job_id}", daemon=True).start()

    def job(self, job_id: str) -> SegmentJob:
        """The job ``job_id`` (reloaded from disk after a restart) or :class:`NotFound`."""
        job = self.jobs.get(job_id)
        if job is None and (self._job_dir(job_id) / JOB_FILE).is_file():
            job = self._reload(job_id)
        if job is None:
            raise NotFound(
                f"job {job_id!r} is not prepared at this party",
                code=ErrorCode.UNKNOWN_JOB,
                detail={"job_id": job_id},
            )
        return job

    def _job_dir(self, job_id: str) -> Path:
        return self.settings.data_dir / "jobs" / job_id

    def _reload(self, job_id: str) -> SegmentJob:
        """Rebuild a job this process did not prepare (it restarted) from its saved spec, data
        binding and alignment: rows by key in the table as it is now, which must hold the same
        content (409 ``data_changed`` otherwise); segment and optimizer start fresh, or from the
        best checkpoint of a finished job; the label party restores a checkpoint."""
        directory = self._job_dir(job_id)
        spec = PrepareJob.model_validate_json((directory / JOB_FILE).read_bytes())
        binding = DataBinding.load(directory)
        if binding is None:
            raise Conflict(
                f"job {job_id!r} has no record of the data it was prepared on: it cannot reload",
                code=ErrorCode.CONFLICT,
            )
        binding.verify(self.live.at(binding.table_version), job_id)
        stored_file = directory / KEYS_FILE
        stored = stored_file.read_bytes() if stored_file.is_file() else None
        key = job_keys.job_key(self.settings, directory, job_id, fresh=False)
        self._build(spec, key, persist=False, stored=stored, binding=binding)
        job = self.jobs[job_id]
        if spec.alignment == "psi":
            handles = directory / HANDLES_FILE
            if not handles.is_file():
                del self.jobs[job_id]
                raise Conflict(f"job {job_id!r} was not aligned before the restart")
            try:
                job.load_handles(json.loads(handles.read_bytes()))
            except KeyError as exc:
                del self.jobs[job_id]
                raise data_changed(self.settings.name, job_id, f"key {exc} is gone") from exc
        job.load_live_handles()
        if (job.checkpoint_dir / f"{BEST_TAG}.safetensors").is_file():
            # a finished job serves its best model; a training run restores its cut after this
            job.restore(BEST_TAG)
        return job

    def record_contract(self, job_id: str, contract_id: str, version: int) -> None:
        """Note the contract version job ``job_id`` was prepared under (its directory)."""
        doc = {"contract_id": contract_id, "version": version}
        atomic_write(self._job_dir(job_id) / CONTRACT_FILE, json.dumps(doc).encode())

    def exists(self, job_id: str) -> bool:
        """Whether job ``job_id`` is prepared here (in memory, or on disk before a restart)."""
        return job_id in self.jobs or (self._job_dir(job_id) / JOB_FILE).is_file()

    def prepare(self, spec: PrepareJob) -> PreparedJob:
        """Create this party's segment for ``spec``; align its rows with the label party's keys."""
        if self.exists(spec.job_id):
            raise Conflict(f"job {spec.job_id!r} already exists", code=ErrorCode.JOB_EXISTS)
        self._check_party(spec)
        key = job_keys.job_key(self.settings, self._job_dir(spec.job_id), spec.job_id, fresh=True)
        return self._build(spec, key, persist=True)

    def _check_party(self, spec: PrepareJob) -> None:
        if spec.party != self.settings.name:
            raise BadRequest(
                f"this is party {self.settings.name!r}, not {spec.party!r}",
                detail={"party": self.settings.name},
            )

    def _build(
        self,
        spec: PrepareJob,
        job_key: JobKey,
        *,
        persist: bool,
        stored: bytes | None = None,
        binding: DataBinding | None = None,
    ) -> PreparedJob:
        self._check_party(spec)
        key_col = self.settings.key_column
        if key_col is None:
            raise BadRequest("this party has no key column configured; it cannot serve features")
        table = self.table
        table.require([key_col], "key")
        keys = key_strings(table.read([key_col]), key_col)
        position: dict[str, int] = {}
        for row, key in enumerate(keys):
            if position.setdefault(key, row) != row:
                raise BadRequest(f"key {key_col!r} is not unique in this party's table")
        champion = champion_of(spec, self.job) if binding is None else None
        saved = None if binding is None else binding.feature_encoder
        if champion is not None:  # a retraining job encodes as its champion did
            saved = champion.encoder
        encoder, features, _ = party_features(
            table, {key_col}, columns=spec.columns, encoder=saved, bins=spec.segment.numeric_bins
        )
        if encoder is None:
            raise BadRequest("this party's table has no feature columns")
        if binding is None:  # what the job uses of the table, to find it again after a restart
            used = [key_col, *(c.name for c in encoder.state.columns)]
            binding = DataBinding.of(
                self.settings.name, table, used, encoder=encoder, table_version=self.live.version
            )
        psi = None
        if spec.alignment == "psi":
            rows_by_handle = np.zeros(0, dtype=np.int64)  # set by the PSI's last message
            cap = self.settings.psi_max_keys
            limits = spec.psi_limits
            psi = PsiAlignment(
                spec.job_id,
                keys,
                position,
                self.psi_pool,
                max_own=min(limits.get(spec.party, cap), cap),
                max_peer=min(limits.get(spec.label_party or "", cap), cap),
            )
        else:
            rows_by_handle = np.fromiter(
                (position.get(k, -1) for k in spec.keys), dtype=np.int64, count=len(spec.keys)
            )
        d, m = cut_width(spec.segment, int(features.shape[1])), spec.interactive
        trainable = spec.segment.kind != "identity"
        if spec.family != "nn":  # rows only: the family's own routes use them (families/)
            spec = spec.model_copy(update={"protection": ProtectionSpec(mode="plain")})
        elif (
            not trainable and spec.protection.mode == "plain" and not self.settings.allow_plain_raw
        ):
            raise Forbidden(
                "an identity bottom in plain mode would send this party's encoded features in "
                "the clear: use ckks, or set allow_plain_raw on this party",
                detail={"field": "segment.kind"},
            )
        share = feature_share_init(job_key, spec.party, d, m)
        if stored is None and not persist and keeps_secret(spec.protection.mode):
            raise Conflict(
                f"job {spec.job_id!r} ran in {spec.protection.mode} mode and its keys are not "
                "on this party's disk after its restart: it cannot resume",
                code=ErrorCode.CONFLICT,
            )
        protection = feature_protection(spec, share, lambda: self.pool, stored, trainable=trainable)
        job = SegmentJob(
            spec,
            encoder,
            features,
            rows_by_handle,
            job_key,
            self._job_dir(spec.job_id),
            self.settings.max_batch_rows,
            protection,
            psi,
            position,
            binding.digest,
            keys,
            key_col,
        )
        job.store = self.serving_store
        if champion is not None:
            warm(job, champion)
        self.jobs[spec.job_id] = job
        if persist:
            self.serving_store.forget(spec.job_id)  # a job of that id before starts clean
            # what a restarted process needs to reload the job
            directory = self._job_dir(spec.job_id)
            secret = protection.secret()
            if secret is not None:  # e.g. the ckks secret key, on this party's own disk (0600)
                atomic_write(directory / KEYS_FILE, secret)
            job_keys.keep(self.settings, directory, job_key)
            # a fresh preparation starts clean: the alignment and checkpoints of a deleted job
            # of that id would be mistaken for this one's (a stale step-<n> outranks new cuts)
            (directory / HANDLES_FILE).unlink(missing_ok=True)
            for stale in [*directory.glob("*.safetensors"), *directory.glob("gbdt-*.bin")]:
                stale.unlink(missing_ok=True)  # (gbdt-*: a tree job's setup and split table)
            binding.save(directory)
            atomic_write(directory / JOB_FILE, spec.model_dump_json().encode())
        return PreparedJob(
            job_id=spec.job_id,
            party=spec.party,
            in_features=int(features.shape[1]),
            out_features=d,
            found=[bool(r >= 0) for r in rows_by_handle],
            feature_names=encoder.feature_names,
            mode=spec.protection.mode,
            trainable=trainable,
            **protection.prepared(),
        )

    def delete(self, job_id: str) -> None:
        """Forget a job (its checkpoints stay on disk; a restart does not bring it back)."""
        if not self.exists(job_id):
            self.job(job_id)  # NotFound
        self.jobs.pop(job_id, None)
        (self._job_dir(job_id) / JOB_FILE).unlink(missing_ok=True)
        (self._job_dir(job_id) / KEYS_FILE).unlink(missing_ok=True)
        job_keys.forget(self._job_dir(job_id))

    def __iter__(self) -> Iterator[SegmentJob]:
        return iter(self.jobs.values())

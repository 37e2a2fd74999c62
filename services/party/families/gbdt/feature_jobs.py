"""The feature party's tree role per job: built from the job's aligned rows (prepared and
PSI-aligned like an ``nn`` job) and the label party's ``setup``, answering the engine's tree
protocol (:class:`services.engine.gbdt.feature.FeatureParty`). Its split table is written to the
job's directory after every split, so a restarted process answers for the splits it made."""

from __future__ import annotations

import hashlib
import threading

import numpy as np

from services.engine.checkpoint import atomic_write
from services.engine.gbdt.errors import GbdtError
from services.engine.gbdt.feature import FeatureParty
from services.engine.gbdt.messages import decode, encode
from services.party.families.gbdt.wire import Setup, parse_serve, same_terms
from services.party.segment import SegmentJob
from services.protocol.errors import BadRequest, Conflict, ErrorCode, Forbidden, SpliceError
from services.protocol.messages import GbdtModelSpec

SETUP_FILE = "gbdt-setup.bin"
SPLITS_FILE = "gbdt-splits.bin"


def tree_error(exc: GbdtError) -> SpliceError:
    """A tree-family domain error as the 400 every service answers (code in ``detail``)."""
    return BadRequest(str(exc), detail={"reason": exc.code})


class TreeRoles:
    """The tree role of every gbdt job at this feature party (one lock per job)."""

    def __init__(self) -> None:
        self.roles: dict[str, FeatureParty] = {}
        self._jobs: dict[str, SegmentJob] = {}
        """The prepared job each role was built for (a job deleted and prepared again under
        its id is another job: its role is built again)."""
        self._lock = threading.Lock()

    def handle(self, job: SegmentJob, kind: str, payload: bytes) -> bytes:
        """Answer one tree request of ``job`` (blocking: run it in a worker thread)."""
        if job.spec.family != "gbdt":
            raise BadRequest(
                f"job {job.job_id} is a {job.spec.family} job, not a tree job",
                code=ErrorCode.FAMILY_NOT_IMPLEMENTED,
                detail={"job_id": job.job_id, "family": job.spec.family},
            )
        with self._lock:
            try:
                if kind == "setup":
                    return self._setup(job, payload)
                role = self._role(job)
                keyless = role.params.protection == "ckks" and role.evaluator is None
                if kind in ("histograms", "submit", "collect") and keyless:
                    # this process restarted since the keys came: the label party sets it up
                    # again (409 step_conflict is what it resumes from)
                    raise Conflict(
                        f"tree job {job.job_id} has no keys in this process: send them again",
                        code=ErrorCode.STEP_CONFLICT,
                        detail={"job_id": job.job_id},
                    )
                if kind == "serve":
                    return self._serve(job, role, payload)
                if kind == "digest":  # the artifact of this party's side of the model
                    decode(payload, "digest")
                    table = hashlib.sha256(role.checkpoint()).hexdigest()
                    return encode({"kind": "digest", "sha256": table})
                answer = role.handle(kind, payload)
                if kind == "split":  # the split table is the role's only state
                    atomic_write(job.checkpoint_dir / SPLITS_FILE, role.checkpoint())
                return answer
            except GbdtError as exc:
                raise tree_error(exc) from None

    @staticmethod
    def _serve(job: SegmentJob, role: FeatureParty, payload: bytes) -> bytes:
        """Left bits of this party's splits for a prediction's rows (by alignment handle; the
        rows join the serving window for drift, as an embed's do)."""
        refs, handles = parse_serve(payload)
        rows = job.rows_of(handles)
        job.served.add(rows.numpy())
        return role.resolve_rows(refs, job.features.numpy()[rows.numpy()].astype(np.float64))

    def _setup(self, job: SegmentJob, payload: bytes) -> bytes:
        saved = job.checkpoint_dir / SETUP_FILE
        if self._jobs.get(job.job_id) is job or saved.is_file():
            if saved.is_file() and saved.read_bytes() == payload:  # the label party resumes
                self._role(job)
                return encode({"kind": "setup", "ready": True, "resumed": True})
            raise Conflict(
                f"tree job {job.job_id} was set up with other rows or parameters",
                code=ErrorCode.CONFLICT,
                detail={"job_id": job.job_id},
            )
        setup = Setup.decode(payload, int(job.rows_by_handle.shape[0]))
        terms = job.spec.terms
        if terms is not None:  # the contract's tree parameters, nothing else
            model = terms.model
            wrong = (
                ["model.family"]
                if not isinstance(model, GbdtModelSpec)
                else same_terms(setup.params, model, terms.protection.mode)
            )
            if wrong:
                raise Forbidden(
                    f"tree job {job.job_id} differs from the signed contract at {', '.join(wrong)}",
                    code=ErrorCode.CONTRACT_MISMATCH,
                    detail={"fields": [f"model.{w}" for w in wrong]},
                )
        self.roles[job.job_id], self._jobs[job.job_id] = self._build(job, setup), job
        atomic_write(saved, payload)
        return encode({"kind": "setup", "ready": True, "resumed": False})

    def _role(self, job: SegmentJob) -> FeatureParty:
        role = self.roles.get(job.job_id)
        if role is not None and self._jobs.get(job.job_id) is job:
            return role
        saved = job.checkpoint_dir / SETUP_FILE
        if not saved.is_file():
            raise Conflict(
                f"tree job {job.job_id} is not set up: the label party sends setup first",
                code=ErrorCode.CONFLICT,
            )
        setup = Setup.decode(saved.read_bytes(), int(job.rows_by_handle.shape[0]))
        role = self._build(job, setup)
        splits = job.checkpoint_dir / SPLITS_FILE
        if splits.is_file():  # this process restarted: the splits it made before
            role.restore(splits.read_bytes())
        self.roles[job.job_id], self._jobs[job.job_id] = role, job
        return role

    @staticmethod
    def _build(job: SegmentJob, setup: Setup) -> FeatureParty:
        rows = job.rows_by_handle.numpy()[setup.handles]
        x = job.features.numpy()[rows].astype(np.float64)
        # histogram workers started as subprocesses (forking from a multi-threaded server, as
        # uvicorn's thread pool and the PSI pool make it, could hand a child a lock another
        # thread held); a job too small for them evaluates in this process's background thread:
        # either way ``submit`` answers at once (docs/adr/0012, fourth speed pass)
        return FeatureParty(
            setup.params, x, setup.train, setup.valid, job.job_key, background=True, spawn=True
        )

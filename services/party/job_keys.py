"""Where a party keeps its private job keys (services/engine/keyed.py).

Each job's key lives in the job's own folder on this party's disk (``job-key.bin``, mode 0600,
written atomically), beside its checkpoints: a restarted party resumes and serves with the same
key, and the key never leaves the party. With ``key_master`` configured (a harness that runs
every party, such as ``splice pilot``), keys are derived from it and the job id instead, so the
harness can build the same initial weights for its centralized baseline.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from services.engine.checkpoint import atomic_write
from services.engine.keyed import KEY_BYTES, JobKey
from services.party.settings import PartySettings
from services.protocol.errors import Conflict, ErrorCode

JOB_KEY_FILE = "job-key.bin"


def job_key(settings: PartySettings, directory: Path, job_id: str, *, fresh: bool) -> JobKey:
    """This party's key for ``job_id``: a new one (``fresh``; :func:`keep` writes it once the
    job exists) or the one kept in ``directory``; :class:`Conflict` when a kept key is missing
    or unreadable."""
    master = settings.key_master
    if master is not None:
        return JobKey.derive(master.get_secret_value().encode(), job_id)
    path = directory / JOB_KEY_FILE
    if fresh:
        return JobKey.generate()
    try:
        secret = path.read_bytes()
    except OSError as exc:
        raise Conflict(
            f"job {job_id!r}: this party's job key is not readable ({type(exc).__name__}); "
            "the job cannot continue",
            code=ErrorCode.CONFLICT,
        ) from exc
    if len(secret) != KEY_BYTES:
        raise Conflict(f"job {job_id!r}: this party's job key is damaged", code=ErrorCode.CONFLICT)
    return JobKey(secret)


def keep(settings: PartySettings, directory: Path, key: JobKey) -> None:
    """Write a new job's key beside its checkpoints (0600, atomically); nothing to keep when it
    derives from the configured master."""
    if settings.key_master is None:
        atomic_write(directory / JOB_KEY_FILE, key.secret)


def label_secret(settings: PartySettings, scope: str) -> bytes:
    """The secret that keys the randomised response of this party's labels under ``scope`` (a
    contract id, else a job id): one per contract, so every job of a contract trains on the
    same randomised labels and retraining spends no further privacy budget."""
    master = settings.key_master
    if master is not None:
        return JobKey.derive(master.get_secret_value().encode(), f"label-dp:{scope}").secret
    path = settings.data_dir / "label-privacy" / f"{hashlib.sha256(scope.encode()).hexdigest()}.key"
    try:
        secret = path.read_bytes()
        if len(secret) == KEY_BYTES:
            return secret
    except FileNotFoundError:
        pass
    secret = JobKey.generate().secret
    atomic_write(path, secret)
    return secret


def forget(directory: Path) -> None:
    """Delete a job's key (the job is deleted)."""
    (directory / JOB_KEY_FILE).unlink(missing_ok=True)

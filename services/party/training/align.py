"""The label party's side of private alignment with one feature party (ECDH PSI).

No key travels: the label party sends its blinded distinct keys, gets them re-blinded together
with the feature party's blinded keys, learns which of its keys are shared, and tells the
feature party the shared positions of its list in handle order (docs/adr/0002-psi-alignment.md).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from services.engine import psi
from services.protocol.errors import ErrorCode, PeerError, SpliceError, Unprocessable
from services.protocol.fine_tune import tuned
from services.protocol.messages import (
    MAX_PSI_KEYS,
    JobTerms,
    PreparedJob,
    PrepareJob,
    TrainingSpec,
)
from services.protocol.peers import SegmentClient
from services.protocol.terms import prepare_for, segment_fields, terms_document


def psi_bounds(spec: TrainingSpec, peer: str, cap: int) -> tuple[int, int]:
    """The most distinct keys this (label) party and feature party ``peer`` may bring to their
    PSI: the job's ``psi_limits`` (the contract's), never above this party's own ``cap``."""
    limits = spec.psi_limits
    return min(limits.get(spec.party, cap), cap), min(limits.get(peer, cap), cap)


def check_own_sets(spec: TrainingSpec, keys: Mapping[str, list[str]], cap: int) -> None:
    """Refuse (422 ``psi_set_too_large``) before any work when this party's distinct keys for a
    feature party exceed its limit."""
    for name, listed in keys.items():
        own, _ = psi_bounds(spec, name, cap)
        count = len(set(listed))
        if count > own:
            raise Unprocessable(
                f"this party references {count} distinct {name} keys; the contract allows "
                f"it {own} in a PSI",
                code=ErrorCode.PSI_SET_TOO_LARGE,
                detail={"party": spec.party, "peer": name, "keys": count, "limit": own},
            )


async def private_alignment(
    spec: TrainingSpec,
    name: str,
    client: SegmentClient,
    keys: list[str],
    pool: psi.PsiPool | None,
    counts: dict[str, int],
    cap: int,
) -> npt.NDArray[np.int64]:
    """The handle of each of ``keys`` at party ``name`` (-1: not shared); fills ``counts``
    with the sizes both sides learn (what the registry may record)."""
    job_id = spec.job_id
    own, peer = psi_bounds(spec, name, cap)
    try:
        label = psi.LabelParty(job_id, keys, pool, max_own=own, max_peer=peer)
    except psi.PsiLimitError as exc:
        raise Unprocessable(str(exc), code=ErrorCode.PSI_SET_TOO_LARGE) from exc
    reply = await client.psi(job_id, label.start().encode())
    try:
        message = psi.decode(reply)
        if not isinstance(message, psi.FeatureReply):
            raise psi.PsiMalformedError("expected the feature party's reply (step 2)")
        notice, alignment = label.finish(message)
    except psi.PsiLimitError as exc:
        raise Unprocessable(f"party {name}: {exc}", code=ErrorCode.PSI_SET_TOO_LARGE) from exc
    except psi.PsiError as exc:
        raise PeerError(f"party {name} sent an unusable PSI reply: {exc}") from exc
    answer = json.loads(await client.psi(job_id, notice.encode()))
    if not isinstance(answer, dict) or answer.get("shared") != alignment.size:
        raise PeerError(f"party {name} disagrees on the intersection size")
    counts[f"{name}_keys"] = alignment.peer_size
    counts[f"{name}_shared"] = alignment.size
    counts["label_keys"] = alignment.local_size
    handles = np.full(len(keys), -1, dtype=np.int64)
    for i, key in enumerate(keys):
        h = alignment.handle(key)
        if h is not None:
            handles[i] = h
    return handles


def prepare_job(spec: TrainingSpec, name: str, keys: list[str]) -> PrepareJob:
    """What feature party ``name`` is asked to prepare for ``spec`` (``keys`` travel only when
    the alignment is by keys, not PSI).

    A spec naming every party's columns (a contract's job) states its terms, and the request
    is derived from them as every party derives it (``services.protocol.terms.prepare_for``);
    an open-mode spec without columns asks for every column of the party's table."""
    sent = keys if spec.alignment == "keys" else []
    doc = terms_document(spec)
    if all(columns is not None for columns in doc["columns"].values()):
        return prepare_for(
            JobTerms.model_validate(doc),
            name,
            job_id=spec.job_id,
            seed=spec.seed,
            contract_id=spec.contract_id,
            keys=sent,
            alignment=spec.alignment,
            wire_dtype=spec.wire_dtype,
            warm_start=None if spec.warm_start is None else spec.warm_start.job_id,
            batch_size=None if spec.warm_start is None else spec.warm_start.batch_size,
            lr_factor=1.0 if spec.warm_start is None else spec.warm_start.lr_factor,
        )
    prepare = PrepareJob.model_validate(
        {
            **segment_fields(spec.model, name),
            "job_id": spec.job_id,
            "party": name,
            "seed": spec.seed,
            "keys": sent,
            "alignment": spec.alignment,
            "wire_dtype": spec.wire_dtype,
            "protection": spec.protection,
            "batch_size": spec.batch_size,
            "contract_id": spec.contract_id,
            "label_party": spec.party,
            "psi_limits": spec.psi_limits,
            "columns": next(fp.columns for fp in spec.feature_parties if fp.name == name),
            "warm_start": None if spec.warm_start is None else spec.warm_start.job_id,
        }
    )  # a retraining job: the fine-tune's batch size and learning rates
    if spec.warm_start is None:
        return prepare
    return tuned(prepare, spec.warm_start.batch_size, spec.warm_start.lr_factor)


async def align_all(
    spec: TrainingSpec,
    clients: Mapping[str, SegmentClient],
    keys: dict[str, list[str]],
    pool: psi.PsiPool | None,
    counts: dict[str, int],
    cap: int = MAX_PSI_KEYS,
) -> tuple[dict[str, PreparedJob], dict[str, npt.NDArray[np.int64]]]:
    """Prepare the job at every feature party, then align: each party's answer and the handle
    of each of this party's ``keys`` there (-1: not shared; key positions without PSI).
    ``cap`` is this party's own ceiling on any PSI set."""
    if spec.alignment == "psi":
        check_own_sets(spec, keys, cap)

    async def prepare(name: str) -> tuple[str, PreparedJob]:
        answer = await clients[name].prepare(prepare_job(spec, name, keys[name]))
        if spec.alignment == "keys" and len(answer.found) != len(keys[name]):
            raise SpliceError(f"party {name} answered alignment for the wrong number of keys")
        return name, answer

    prepared = dict(await asyncio.gather(*(prepare(fp.name) for fp in spec.feature_parties)))
    if spec.alignment == "psi":
        handle_of_key = {
            name: await private_alignment(spec, name, clients[name], keys[name], pool, counts, cap)
            for name in prepared
        }
    else:  # handles are key positions
        handle_of_key = {
            n: np.where(np.asarray(p.found, dtype=bool), np.arange(len(p.found)), -1)
            for n, p in prepared.items()
        }
    return prepared, handle_of_key

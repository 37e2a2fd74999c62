"""The label party's side of private alignment with one feature party (ECDH PSI).

No key travels: the label party sends its blinded distinct keys, gets them re-blinded together
with the feature party's blinded keys, learns which of its keys are shared, and tells the
feature party the shared positions of its list in handle order (docs/adr/0002-psi-alignment.md).
"""

from __future__ import annotations

import json

import numpy as np
import numpy.typing as npt

from services.engine import psi
from services.protocol.errors import PeerError
from services.protocol.peers import SegmentClient


async def private_alignment(
    job_id: str,
    name: str,
    client: SegmentClient,
    keys: list[str],
    pool: psi.PsiPool | None,
    counts: dict[str, int],
) -> npt.NDArray[np.int64]:
    """The handle of each of ``keys`` at party ``name`` (-1: not shared); fills ``counts``
    with the sizes both sides learn (what the registry may record)."""
    label = psi.LabelParty(job_id, keys, pool)
    reply = await client.psi(job_id, label.start().encode())
    try:
        message = psi.decode(reply)
        if not isinstance(message, psi.FeatureReply):
            raise psi.PsiMalformedError("expected the feature party's reply (step 2)")
        notice, alignment = label.finish(message)
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

"""A feature party's side of a job's private alignment (ECDH PSI, docs/adr/0002-psi-alignment.md).

The label party sends its blinded keys; this party answers them re-blinded together with its own
blinded keys; the label party then names the positions of this party's list that are shared, in
handle order. From then on rows are named by handle only. A retried message (same bytes) gets
the stored answer; any other reuse of a step is a conflict.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from services.engine import psi
from services.protocol.errors import BadRequest, Conflict, ErrorCode, SpliceError, Unprocessable


def psi_failure(exc: psi.PsiError) -> SpliceError:
    """A PSI refusal as a 4xx the caller can read."""
    if isinstance(exc, psi.PsiReplayError):
        return Conflict(f"PSI message refused: {exc}", code=ErrorCode.STEP_CONFLICT)
    if isinstance(exc, psi.PsiLimitError):
        return Unprocessable(f"PSI refused: {exc}", code=ErrorCode.PSI_SET_TOO_LARGE)
    return BadRequest(
        f"PSI message refused: {exc}",
        code=ErrorCode.BAD_REQUEST,
        detail={"kind": type(exc).__name__},
    )


class PsiAlignment:
    """This party's PSI state for one job."""

    def __init__(
        self,
        job_id: str,
        keys: Sequence[str],
        position: Mapping[str, int],
        pool: psi.PsiPool,
        *,
        max_own: int,
        max_peer: int,
    ) -> None:
        self.job_id = job_id
        try:  # this party's own set is checked before anything is hashed
            self.feature = psi.FeatureParty(job_id, keys, pool, max_own=max_own, max_peer=max_peer)
        except psi.PsiError as exc:
            raise psi_failure(exc) from exc
        self.position = position
        self._answers: dict[str, tuple[bytes, npt.NDArray[np.int64] | None]] = {}
        self.counts: dict[str, int] | None = None
        self.keys: list[str] = []
        """Once aligned: the shared keys in handle order (what a restarted party finds its rows
        by; the label party never learns them)."""

    def receive(self, body: bytes) -> tuple[bytes, npt.NDArray[np.int64] | None]:
        """Answer one PSI message: the reply frame (step 1), or the JSON counts and the rows of
        this party's table by handle (step 3)."""
        digest = hashlib.sha256(body).hexdigest()
        if digest in self._answers:
            return self._answers[digest]
        try:
            message = psi.decode(body)
            if message.job_id != self.job_id:
                raise psi.PsiJobMismatch("the message names another job")
            if isinstance(message, psi.BlindedKeys):
                answer: tuple[bytes, npt.NDArray[np.int64] | None] = (
                    self.feature.reply(message).encode(),
                    None,
                )
            elif isinstance(message, psi.Intersection):
                alignment = self.feature.finish(message)
                self.keys = list(alignment.keys)
                rows = np.fromiter(
                    (self.position[k] for k in alignment.keys), np.int64, count=alignment.size
                )
                self.counts = {
                    "label_keys": alignment.peer_size,
                    "feature_keys": alignment.local_size,
                    "shared": alignment.size,
                }
                answer = (json.dumps(self.counts).encode(), rows)
            else:
                raise psi.PsiMalformedError("a feature party only takes steps 1 and 3")
        except psi.PsiError as exc:
            raise psi_failure(exc) from exc
        self._answers[digest] = answer
        return answer

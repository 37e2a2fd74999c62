"""Private set intersection (ECDH / DH-PSI over ristretto255) for entity alignment.

The label party L learns which of its distinct keys the feature party F holds; F learns ``|X|``
and exactly the shared keys it must serve. Both name shared rows by per-job opaque handles
``0..k-1``. See :mod:`.protocol` for the calls, :mod:`.messages` for the wire frames,
:mod:`.group` for the blinding map, :mod:`.pool` for using several cores, and ``docs/psi.md``.

    with PsiPool(2) as pool:
        label, feature = LabelParty(job, xs, pool), FeatureParty(job, ys, pool)
        reply = feature.reply(label.start())
        notice, label_alignment = label.finish(reply)
        feature_alignment = feature.finish(notice)
"""

from services.engine.psi.errors import (
    PsiCountError,
    PsiDuplicateError,
    PsiError,
    PsiJobMismatch,
    PsiLimitError,
    PsiMalformedError,
    PsiPointError,
    PsiReplayError,
    PsiWorkerError,
)
from services.engine.psi.messages import BlindedKeys, FeatureReply, Intersection, Message, decode
from services.engine.psi.pool import PsiPool
from services.engine.psi.protocol import Alignment, FeatureParty, LabelParty

__all__ = [
    "Alignment",
    "BlindedKeys",
    "FeatureParty",
    "FeatureReply",
    "Intersection",
    "LabelParty",
    "Message",
    "PsiCountError",
    "PsiDuplicateError",
    "PsiError",
    "PsiJobMismatch",
    "PsiLimitError",
    "PsiMalformedError",
    "PsiPointError",
    "PsiPool",
    "PsiReplayError",
    "PsiWorkerError",
    "decode",
]

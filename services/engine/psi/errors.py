"""Errors raised by the PSI library: one hierarchy, each with a stable code.

Every failure that untrusted input (a message from the other party) can cause surfaces as a
:class:`PsiError` subclass, raised before any secret-dependent work and before the session
advances, so a refused message leaves the session as it was. The party service maps ``code`` to
an HTTP 4xx answer.
"""

from __future__ import annotations


class PsiError(Exception):
    """Base class for every error of the PSI library."""

    code = "psi_error"


class PsiMalformedError(PsiError):
    """A message or blob cannot be parsed: truncated, oversized, bad framing or point size."""

    code = "psi_malformed"


class PsiPointError(PsiError):
    """A point is not a ristretto255 group element (or is the identity)."""

    code = "psi_invalid_point"


class PsiDuplicateError(PsiError):
    """A list that must hold distinct points (or positions) holds one twice."""

    code = "psi_duplicate"


class PsiCountError(PsiError):
    """A list has the wrong number of entries, too many, or a position out of range."""

    code = "psi_wrong_count"


class PsiLimitError(PsiCountError):
    """A set is larger than the contract lets that party bring to the PSI (checked before any
    exponentiation, on this party's own set and on the count the peer announces)."""

    code = "psi_set_too_large"


class PsiJobMismatch(PsiError):
    """A message belongs to another job or to another session of this job."""

    code = "psi_wrong_job"


class PsiReplayError(PsiError):
    """A message repeats a step this session already consumed, or arrives out of order."""

    code = "psi_replayed_step"


class PsiWorkerError(PsiError):
    """A worker process died; the pool restarts it on the next call."""

    code = "psi_worker_failed"

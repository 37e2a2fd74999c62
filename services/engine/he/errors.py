"""Errors raised by the HE kernel: one hierarchy, each with a stable code.

Every failure the kernel can see in untrusted input (a blob or key bundle from the other party)
surfaces as a :class:`HeError` subclass; SEAL's own exceptions are caught and re-raised as one of
these, so a bad message can never take the process down with an unexpected exception type.
"""

from __future__ import annotations


class HeError(Exception):
    """Base class for every error of the HE kernel."""

    code = "he_error"


class HeParamsError(HeError):
    """Encryption parameters or a key bundle are invalid or do not fit the layer."""

    code = "he_bad_params"


class HeBlobError(HeError):
    """A ciphertext blob is malformed: truncated, oversized, garbage or of the wrong kind."""

    code = "he_malformed_ciphertext"


class HeKeyMismatch(HeError):
    """A blob belongs to another key (fingerprint) or does not decrypt under this key."""

    code = "he_key_mismatch"


class HeRangeError(HeError):
    """A plaintext operand or mask is out of the range the parameters can carry."""

    code = "he_out_of_range"


class HeWorkerError(HeError):
    """A worker process failed or died; the pool restarts it on the next call."""

    code = "he_worker_failed"

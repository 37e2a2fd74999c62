"""Stable error codes and the error body every Splice service answers with.

Services raise :class:`SpliceError` subclasses; each app factory maps them to HTTP once. Clients
parse the body back into the same hierarchy with :func:`error_from_body`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict


class ErrorCode(StrEnum):
    """Machine-readable error codes. Values are part of the wire contract: never rename one."""

    BAD_REQUEST = "bad_request"
    VALIDATION = "validation_error"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    MALFORMED_TENSORS = "malformed_tensors"
    SHAPE_MISMATCH = "shape_mismatch"
    DTYPE_MISMATCH = "dtype_mismatch"
    NON_FINITE = "non_finite"
    UNKNOWN_JOB = "unknown_job"
    JOB_EXISTS = "job_exists"
    UNKNOWN_HANDLES = "unknown_handles"
    STEP_CONFLICT = "step_conflict"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    PEER_UNAVAILABLE = "peer_unavailable"
    PEER_ERROR = "peer_error"
    INTERNAL = "internal_error"
    ALREADY_BOOTSTRAPPED = "already_bootstrapped"
    INVALID_INVITATION = "invalid_invitation"
    INVALID_TOKEN = "invalid_token"
    INVALID_TRANSITION = "invalid_transition"
    KEY_CONFLICT = "key_conflict"
    SCHEMA_VIOLATION = "schema_violation"
    NOTHING_DEPLOYED = "nothing_deployed"
    NO_PREVIOUS_DEPLOYMENT = "no_previous_deployment"
    MODEL_NOT_DEPLOYED = "model_not_deployed"
    MODEL_NOT_LOADED = "model_not_loaded"
    KEY_NOT_ALIGNED = "key_not_aligned"
    METERING_UNAVAILABLE = "metering_unavailable"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    RATE_LIMITED = "rate_limited"
    PSI_SET_TOO_LARGE = "psi_set_too_large"
    KEY_LIMIT_REACHED = "key_limit_reached"
    CONTRACT_MISMATCH = "contract_mismatch"
    FAMILY_NOT_IMPLEMENTED = "family_not_implemented"
    MODEL_IMMUTABLE = "model_immutable"
    SEGMENT_MISMATCH = "segment_mismatch"
    DATA_CHANGED = "data_changed"
    SPEC_MISMATCH = "spec_mismatch"
    RESOURCE_TAKEN = "resource_taken"
    ROWS_REFUSED = "rows_refused"
    OUTCOMES_REFUSED = "outcomes_refused"
    RETRAINING_NOT_ALLOWED = "retraining_not_allowed"
    WARM_START_REFUSED = "warm_start_refused"
    SHADOW_LIMIT_REACHED = "shadow_limit_reached"


class ErrorBody(BaseModel):
    """JSON body of every non-2xx answer."""

    model_config = ConfigDict(extra="forbid")

    code: str
    message: str
    detail: Any = None


class SpliceError(Exception):
    """Base of every domain error. ``status`` is the HTTP status the app factory maps it to."""

    status: int = 400
    code: ErrorCode = ErrorCode.BAD_REQUEST
    peer: str | None = None
    """The base URL of the peer service whose answer (or silence) this is, when a service
    client raised it: who is at fault."""

    def __init__(self, message: str, *, detail: Any = None, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        if code is not None:
            self.code = code

    def body(self) -> ErrorBody:
        """The error as the wire body."""
        return ErrorBody(code=self.code.value, message=self.message, detail=self.detail)

    def __str__(self) -> str:
        return f"{self.code.value}: {self.message}"


class BadRequest(SpliceError):
    """The request is well-formed HTTP but its content is invalid."""

    status = 400
    code = ErrorCode.BAD_REQUEST


class MalformedTensors(SpliceError):
    """A binary body is not a valid tensor frame."""

    status = 400
    code = ErrorCode.MALFORMED_TENSORS


class UnsupportedMediaType(SpliceError):
    """The body's content type is not the one the endpoint takes."""

    status = 415
    code = ErrorCode.UNSUPPORTED_MEDIA_TYPE


class PayloadTooLarge(SpliceError):
    """The body exceeds the service's limit."""

    status = 413
    code = ErrorCode.PAYLOAD_TOO_LARGE


class NotFound(SpliceError):
    """A named resource does not exist."""

    status = 404
    code = ErrorCode.NOT_FOUND


class Conflict(SpliceError):
    """The request contradicts the current state (replayed step, existing job, ...)."""

    status = 409
    code = ErrorCode.CONFLICT


class Unprocessable(SpliceError):
    """The request parses, but its content cannot be used (unknown columns, unaligned keys)."""

    status = 422
    code = ErrorCode.VALIDATION


class Unavailable(SpliceError):
    """The service cannot serve the request now (e.g. it cannot meter it); retry later."""

    status = 503
    code = ErrorCode.METERING_UNAVAILABLE


class Unauthenticated(SpliceError):
    """No valid credentials."""

    status = 401
    code = ErrorCode.UNAUTHENTICATED


class Forbidden(SpliceError):
    """Valid credentials, but not allowed to do this."""

    status = 403
    code = ErrorCode.FORBIDDEN


class RateLimited(SpliceError):
    """The caller sent more requests than its limit allows; retry after ``retry_after`` s."""

    status = 429
    code = ErrorCode.RATE_LIMITED

    def __init__(self, message: str, *, retry_after: int = 1, detail: Any = None) -> None:
        super().__init__(message, detail=detail)
        self.retry_after = max(1, retry_after)


class DeadlineExceeded(SpliceError):
    """The caller's deadline (``X-Splice-Deadline``) passed before the work could be done."""

    status = 504
    code = ErrorCode.DEADLINE_EXCEEDED


class PeerError(SpliceError):
    """A peer service answered with an error or could not be reached."""

    status = 502
    code = ErrorCode.PEER_ERROR


_BY_STATUS: dict[int, type[SpliceError]] = {
    400: BadRequest,
    401: Unauthenticated,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: Unprocessable,
    504: DeadlineExceeded,
}


def error_from_body(status: int, body: ErrorBody) -> SpliceError:
    """Rebuild a client-side exception from a peer's error answer."""
    cls = _BY_STATUS.get(status, PeerError)
    try:
        code: ErrorCode | None = ErrorCode(body.code)
    except ValueError:
        code = None
    err = cls(body.message, detail=body.detail, code=code)
    err.status = status
    return err

"""Per-step frames: headers of the binary training messages."""

from __future__ import annotations

from typing import Annotated

from pydantic import (
    Field,
    model_validator,
)

from services.protocol.messages.base import EventId, IdempotencyKey, JobId, Step, Strict

# --- feature party: per-step frames (headers of binary messages) --------------------------------


class ForwardHeader(Strict):
    """Header of a forward frame; tensors: ``handles`` (int64[B]) and optionally ``grad``.

    When ``grad_step`` is set, ``grad`` (float[B', out]) is the gradient for the forward of step
    ``grad_step`` and is applied before this forward: one round trip per training step.

    In ckks mode the gradient travels as two uint8 ciphertext blobs, ``grad_w`` (``Enc(h^T dz +
    R')``, this party's masked share of W's gradient) and ``grad_h`` (``Enc(dz~ W^T)``), and the
    answer carries ``enc_h`` (``Enc(h)``) and ``enc_w`` (``Enc(W_P)``) instead of ``activations``.
    """

    job_id: JobId
    step: Step
    idempotency_key: IdempotencyKey
    train: bool = True
    grad_step: Step | None = None


class BackwardHeader(Strict):
    """Header of a backward frame; tensor ``grad`` (float[B, out]) for the forward of ``step``."""

    job_id: JobId
    step: Step
    idempotency_key: IdempotencyKey


class EmbedHeader(Strict):
    """Header of an embed frame (evaluation, no state change); tensor ``handles`` (int64[B]).

    In ckks mode the answer is ``enc_h`` and ``ref`` names it for the :class:`MixHeader` that
    follows (the party keeps the few latest embeddings by ``ref``).
    """

    job_id: JobId
    ref: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] | None = None
    usage_event: EventId | None = Field(
        default=None,
        description="The usage event of the prediction this embed serves (label party's id): "
        "the feature party records it for the registry's reconciliation.",
    )
    shadow: bool = Field(
        default=False,
        description="Shadow scoring (issue 18): the label party compares a finished model "
        "version of the contract with the deployed one on the recent outcome window; not a "
        "sale, so nothing is recorded or metered, and the rows do not count as served.",
    )


class MixHeader(Strict):
    """ckks mode, second message of a forward or an embed: tensor ``masked`` (uint8 blob,
    ``Enc(h W_A + R)``). The party decrypts it, adds ``h W_P`` and answers tensor ``mixed``
    (float64[B, m]). Names the training ``step`` or the embed ``ref`` it completes."""

    job_id: JobId
    step: Step | None = None
    ref: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] | None = None
    shadow: bool = Field(default=False, description="Completes a shadow embed (EmbedHeader).")

    @model_validator(mode="after")
    def _one(self) -> MixHeader:
        if (self.step is None) == (self.ref is None):
            raise ValueError("a mix names exactly one of step or ref")
        return self


class ActivationsHeader(Strict):
    """Header of the answer to forward/embed; tensor ``activations`` (float[B, out])."""

    job_id: JobId
    step: Step | None = None


class StepAck(Strict):
    """Answer to a backward."""

    job_id: JobId
    step: Step
    applied: bool


class CheckpointRequest(Strict):
    """Ask a party to save (or restore) its segment and optimizer state under ``tag``."""

    tag: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class CheckpointInfo(Strict):
    """What a party saved or restored: ``sha256`` of the file, ``segment_digest`` of the weights
    that serve (``services.engine.content.weights_digest``; stable across saves)."""

    job_id: JobId
    tag: str
    step: int
    sha256: str
    segment_digest: str | None = None

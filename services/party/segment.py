"""A feature party's side of one job: its bottom segment, its aligned rows, its step ledger.

The ledger makes every state change idempotent: a retried request (same step, same idempotency
key) gets the stored answer; any other request for an already-used step is a conflict. Every input
is validated before anything changes, so a rejected request leaves the job exactly as it was.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import torch

from services.engine.checkpoint import atomic_write, load_checkpoint, save_checkpoint
from services.engine.content import weights_digest
from services.engine.drift import Window, drift, report
from services.engine.interactive import F64
from services.engine.keyed import JobKey
from services.engine.segments import build_bottom, build_optimizer
from services.engine.tabular import FeatureEncoder, key_strings
from services.party.alignment import PsiAlignment
from services.party.protection import FeatureProtection
from services.party.serving_book import ServingBook
from services.party.serving_store import ServingStore
from services.protocol import codec
from services.protocol.errors import BadRequest, Conflict, ErrorCode, NotFound
from services.protocol.messages import (
    ActivationsHeader,
    CheckpointInfo,
    PrepareJob,
    StepAck,
)

HANDLES_FILE = "handles.json"
"""A PSI-aligned job's shared keys in handle order, saved once the alignment finished: a
restarted party finds each handle's row by its key, never by its position."""
CUT_PREFIX = "step-"
"""Tags of consistent checkpoints (``step-<n>``); a party keeps the newest two."""


@dataclass(slots=True)
class _Pending:
    step: int
    output: torch.Tensor
    h: F64
    """The output as float64, for the step's one mix (modes that mix)."""
    mixed: _Answer | None = None


@dataclass(slots=True)
class _Answer:
    step: int
    key: str
    body: bytes


class SegmentJob:
    """State of one job at a feature party."""

    def __init__(
        self,
        spec: PrepareJob,
        encoder: FeatureEncoder,
        features: npt.NDArray[np.float32],
        rows_by_handle: npt.NDArray[np.int64],
        key: JobKey,
        checkpoint_dir: Path,
        max_batch_rows: int,
        protection: FeatureProtection,
        psi: PsiAlignment | None = None,
        position: Mapping[str, int] | None = None,
        data_digest: str | None = None,
        keys_by_row: list[str] | None = None,
        key_column: str = "",
    ) -> None:
        self.spec = spec
        self.job_id = spec.job_id
        self.encoder = encoder
        self.features = torch.from_numpy(features)
        self.rows_by_handle = torch.from_numpy(rows_by_handle)
        self.checkpoint_dir = checkpoint_dir
        self.max_batch_rows = max_batch_rows
        self.model = build_bottom(features.shape[1], spec.segment, key, spec.party)
        self.optimizer = build_optimizer(self.model.parameters(), spec.optimizer)
        self.out_features = protection.width
        self.lock = asyncio.Lock()
        torch.manual_seed(key.seed63("dropout", spec.party))
        self._pending: _Pending | None = None
        self._last_forward: _Answer | None = None
        self._last_backward: _Answer | None = None
        self._last_ref_mix: _Answer | None = None
        self.applied_step = -1
        self.protection = protection
        """The job's protection mode, this party's side (services/party/protection/)."""
        self.psi = psi
        """psi alignment: rows are known once the PSI's last message arrived."""
        self.position: dict[str, int] = dict(position or {})
        """Row of each key in this party's table as this process read it."""
        self.data_digest = data_digest
        """Digest of the table content the job is bound to (``binding.DataBinding``)."""
        self._segment_digest: str | None = None
        self.job_key = key
        """This party's private key of the job (never sent)."""
        self.keys_by_row: list[str] = keys_by_row or []
        """Each row's key in the live table (the serving key book's input)."""
        self.book: ServingBook | None = None
        """The serving key book (``services.party.serving_book``), built on first use."""
        self._handle_of_row: dict[int, int] | None = None
        self._key_column = key_column
        self.n_train = int(self.rows_by_handle.shape[0])
        """Handles of the training's alignment (its rows are the training window)."""
        self.served = Window()
        """Rows embedded for predictions lately (the serving window)."""
        self.store: ServingStore | None = None
        """Where serving rounds' handles are kept (set by the party state)."""

    # --- validation helpers ------------------------------------------------------------------

    def align(self, body: bytes) -> tuple[bytes, bool]:
        """One PSI message of this job's alignment: the answer, and whether it was the last
        (then the answer is JSON counts and the rows by handle are fixed)."""
        if self.psi is None:
            raise BadRequest("this job was aligned by key list: no PSI")
        answer, rows = self.psi.receive(body)
        if rows is not None:
            self.rows_by_handle = torch.from_numpy(rows)
            self.n_train = int(rows.shape[0])
            self._handle_of_row = None
            atomic_write(self.checkpoint_dir / HANDLES_FILE, json.dumps(self.psi.keys).encode())
        return answer, rows is not None

    def load_handles(self, keys: list[str]) -> None:
        """The shared keys of a finished PSI alignment in handle order, saved before a restart:
        each handle's row is its key's row in the table as it is now (KeyError: a key is
        gone)."""
        rows = [self.position[k] for k in keys]
        self.rows_by_handle = torch.tensor(rows, dtype=torch.int64)
        self.n_train = len(rows)
        self.psi = None

    def extend(self, rows: pa.Table, start: int) -> None:
        """A new version of the live table appended ``rows`` at row ``start``: encode them with
        the job's fitted encoder (as every earlier row) and find them by key."""
        key_col = self.spec_key_column
        if start != self.features.shape[0]:
            raise Conflict(f"job {self.job_id} holds {self.features.shape[0]} rows, not {start}")
        encoded = torch.from_numpy(self.encoder.transform(rows))
        keys = key_strings(rows, key_col)
        self.features = torch.cat([self.features, encoded])
        for i, k in enumerate(keys):
            self.position[k] = start + i
        self.keys_by_row.extend(keys)

    @property
    def spec_key_column(self) -> str:
        """The key column of this party's table (as the job's data binding read it)."""
        return self._key_column

    def assign(self, rows: list[int]) -> list[int]:
        """The handle of each table row a serving round matched: the one it has, else the next
        one (saved, so a restarted party answers the same handles)."""
        if self._handle_of_row is None:
            self._handle_of_row = {
                int(r): h for h, r in enumerate(self.rows_by_handle.tolist()) if r >= 0
            }
        known, added, out = self._handle_of_row, list[int](), list[int]()
        for row in rows:
            handle = known.get(row)
            if handle is None:
                handle = known[row] = self.rows_by_handle.shape[0] + len(added)
                added.append(row)
            out.append(handle)
        if added:
            first = int(self.rows_by_handle.shape[0])
            if self.store is not None:  # durable before the handles are answered
                try:
                    self.store.add_live(self.job_id, first, [self.keys_by_row[r] for r in added])
                except BaseException:
                    self._handle_of_row = None
                    raise
            self.rows_by_handle = torch.cat(
                [self.rows_by_handle, torch.tensor(added, dtype=torch.int64)]
            )
        return out

    def load_live_handles(self) -> None:
        """The handles serving rounds gave before a restart, after the training's (KeyError: a
        key is gone)."""
        keys = [] if self.store is None else self.store.live_keys(self.job_id)
        if keys:
            rows = torch.tensor([self.position[k] for k in keys], dtype=torch.int64)
            self.rows_by_handle = torch.cat([self.rows_by_handle, rows])
            self._handle_of_row = None

    def rows_of(self, handles: npt.NDArray[Any]) -> torch.Tensor:
        """This party's table rows of ``handles`` (checked as for a segment batch)."""
        return self._rows(handles)

    def _rows(self, handles: npt.NDArray[Any]) -> torch.Tensor:
        if self.psi is not None and self.psi.counts is None:
            raise Conflict(
                "the job's rows are not aligned yet (PSI pending)", code=ErrorCode.CONFLICT
            )
        if handles.shape[0] == 0:
            raise BadRequest("a batch needs at least one handle")
        if handles.shape[0] > self.max_batch_rows:
            raise BadRequest(
                f"batch of {handles.shape[0]} rows exceeds the limit of {self.max_batch_rows}",
                detail={"limit": self.max_batch_rows},
            )
        idx = torch.from_numpy(handles.astype(np.int64, copy=False))
        n = self.rows_by_handle.shape[0]
        bad = (idx < 0) | (idx >= n)
        if not bool(bad.any()):
            rows = self.rows_by_handle.index_select(0, idx)
            bad = rows < 0
            if not bool(bad.any()):
                return rows
        raise BadRequest(
            f"{int(bad.sum())} handle(s) name no aligned row of this job",
            code=ErrorCode.UNKNOWN_HANDLES,
            detail={"count": int(bad.sum())},
        )

    def _awaiting(self, step: int) -> _Pending:
        pending = self._pending
        if pending is None or pending.step != step:
            have = None if pending is None else pending.step
            raise Conflict(
                f"no forward of step {step} awaits a gradient (pending: {have})",
                code=ErrorCode.STEP_CONFLICT,
                detail={"step": step, "pending": have},
            )
        return pending

    def _grad(self, frame: codec.Frame, step: int) -> torch.Tensor | None:
        """The gradient for the forward of ``step``, checked and decoded by the protection
        (None when this party's bottom has nothing to train)."""
        pending = self._awaiting(step)
        rows, width = pending.output.shape
        return self.protection.receive(frame, int(rows), int(width))

    def _check_new_step(self, step: int, key: str, last: _Answer | None) -> bytes | None:
        if last is not None and last.step == step and last.key == key:
            return last.body
        if step <= self.applied_step or (last is not None and step <= last.step):
            raise Conflict(
                f"step {step} was already used in this job",
                code=ErrorCode.STEP_CONFLICT,
                detail={"step": step, "applied": self.applied_step},
            )
        return None

    # --- operations -------------------------------------------------------------------------

    def _apply(self, step: int, grad: torch.Tensor | None) -> None:
        assert self._pending is not None
        self.protection.apply()
        if grad is not None:
            self.optimizer.zero_grad(set_to_none=True)
            torch.autograd.backward(self._pending.output, grad)
            self.optimizer.step()
        self._pending = None
        self.applied_step = step
        self._segment_digest = None

    def forward(
        self, step: int, key: str, frame: codec.Frame, grad_step: int | None, train: bool
    ) -> bytes:
        """Apply a piggybacked gradient (if any), then compute activations for ``handles``."""
        cached = self._check_new_step(step, key, self._last_forward)
        if cached is not None:
            return cached
        rows = self._rows(frame.tensor("handles", dtype=("int64", "int32"), ndim=1))
        grad = None
        if grad_step is not None:
            if grad_step >= step:
                raise BadRequest("grad_step must precede step", detail={"grad_step": grad_step})
            grad = self._grad(frame, grad_step)
        elif self._pending is not None and train:
            raise Conflict(
                f"step {self._pending.step} still awaits its gradient",
                code=ErrorCode.STEP_CONFLICT,
                detail={"pending": self._pending.step},
            )
        if grad_step is not None:
            self._apply(grad_step, grad)
        trains = train and self.protection.trains
        self.model.train(train)
        with torch.set_grad_enabled(trains and self.protection.trainable):
            out = self.model(self.features.index_select(0, rows))
        header = ActivationsHeader(job_id=self.job_id, step=step).model_dump()
        body = self.protection.forward_answer(header, out)
        if trains:
            self._pending = _Pending(step, out, out.detach().numpy().astype(np.float64))
        self._last_forward = _Answer(step, key, body)
        return body

    def mix(self, frame: codec.Frame, step: int | None, ref: str | None) -> bytes:
        """Modes that mask ``z`` (ckks): decrypt ``Enc(h W_A + R)`` for the forward of ``step``
        (or the embed ``ref``) and add ``h W_P``. One mix per forward or embed: a retry of the
        same blob gets the same answer, a different blob is a conflict (it would let the caller
        probe ``h``)."""
        if not self.protection.needs_ref:
            raise BadRequest(f"this job runs in {self.protection.mode} mode: nothing to mix")
        masked = codec.blob_of(frame, "masked")
        if step is not None:
            pending = self._awaiting(step)
            if pending.mixed is not None:
                if pending.mixed.key == _digest(masked):
                    return pending.mixed.body
                raise Conflict(f"step {step} was already mixed", code=ErrorCode.STEP_CONFLICT)
            h = pending.h
        else:
            assert ref is not None
            last = self._last_ref_mix
            if last is not None and last.key == f"{ref}:{_digest(masked)}":
                return last.body  # a retried mix of an embed already consumed
            h = self.protection.recall(ref)
        mixed = self.protection.mix(masked, h)
        body = codec.encode(
            ActivationsHeader(job_id=self.job_id, step=step).model_dump(), {"mixed": mixed}
        )
        if step is not None and self._pending is not None:
            self._pending.mixed = _Answer(step, _digest(masked), body)
        elif ref is not None:
            self.protection.forget(ref)
            self._last_ref_mix = _Answer(-1, f"{ref}:{_digest(masked)}", body)
        return body

    def backward(self, step: int, key: str, frame: codec.Frame) -> StepAck:
        """Apply the gradient for the forward of ``step`` and take an optimizer step."""
        cached = self._check_new_step(step, key, self._last_backward)
        if cached is not None:
            return StepAck.model_validate_json(cached)
        grad = self._grad(frame, step)
        self._apply(step, grad)
        ack = StepAck(job_id=self.job_id, step=step, applied=True)
        self._last_backward = _Answer(step, key, ack.model_dump_json().encode())
        return ack

    def embed(self, frame: codec.Frame, ref: str | None = None, served: bool = False) -> bytes:
        """Activations in evaluation mode (ckks: ``Enc(h)``, kept under ``ref`` for its mix);
        ``served``: for a prediction (its rows join the serving window)."""
        rows = self._rows(frame.tensor("handles", dtype=("int64", "int32"), ndim=1))
        if served:
            self.served.add(rows.numpy())
        if self.protection.needs_ref and ref is None:
            raise BadRequest(f"a {self.protection.mode} embed needs a ref for its mix")
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            out = self.model(self.features.index_select(0, rows))
        self.model.train(was_training)
        header = ActivationsHeader(job_id=self.job_id).model_dump()
        return self.protection.embed_answer(header, out, ref)

    def _path(self, tag: str) -> Path:
        return self.checkpoint_dir / f"{tag}.safetensors"

    def checkpoint(self, tag: str) -> CheckpointInfo:
        """Save segment and optimizer state under ``tag``."""
        if self._pending is not None:
            raise Conflict(
                f"step {self._pending.step} awaits its gradient; checkpoint after it",
                code=ErrorCode.STEP_CONFLICT,
            )
        extra = {f"share.{k}": torch.from_numpy(v) for k, v in self.protection.state().items()}
        digest = save_checkpoint(
            self._path(tag), self.model, self.optimizer, {"step": self.applied_step}, extra
        )
        if tag.startswith(CUT_PREFIX):  # consistent cuts: keep the newest two
            cuts = sorted(
                self.checkpoint_dir.glob(f"{CUT_PREFIX}*.safetensors"),
                key=lambda p: (
                    int(p.stem[len(CUT_PREFIX) :]) if p.stem[len(CUT_PREFIX) :].isdigit() else -1
                ),
            )
            for old in cuts[:-2]:
                old.unlink(missing_ok=True)
        return CheckpointInfo(
            job_id=self.job_id,
            tag=tag,
            step=self.applied_step,
            sha256=digest,
            segment_digest=self.segment_digest(),
        )

    def restore(self, tag: str) -> CheckpointInfo:
        """Restore segment and optimizer state saved under ``tag``."""
        path = self._path(tag)
        if not path.is_file():
            raise NotFound(f"no checkpoint {tag!r} for job {self.job_id}", detail={"tag": tag})
        extra: dict[str, torch.Tensor] = {}
        meta, digest = load_checkpoint(path, self.model, self.optimizer, extra)
        share = {k[6:]: v.numpy() for k, v in extra.items() if k.startswith("share.")}
        if share:
            self.protection.load(share)
        self.protection.discard()
        step = int(meta["step"])
        self._pending = None
        self._last_forward = self._last_backward = None
        self.applied_step = step
        self._segment_digest = None
        return CheckpointInfo(
            job_id=self.job_id,
            tag=tag,
            step=step,
            sha256=digest,
            segment_digest=self.segment_digest(),
        )

    def segment_digest(self) -> str:
        """Digest of the weights this party serves for the job: its bottom segment's state and,
        in ckks mode, its share ``W_P`` (which never leaves it)."""
        if self._segment_digest is None:
            tensors: dict[str, object] = {
                f"model.{k}": v for k, v in self.model.state_dict().items()
            }
            share = self.protection.state().get("w")
            if share is not None:  # a mode whose party trains a share of W (ckks)
                tensors["share.w"] = share
            self._segment_digest = weights_digest(tensors)
        return self._segment_digest

    def drift(self) -> dict[str, Any]:
        """Drift of this party's features between the training rows and the rows served lately
        (scores only; ``services.engine.drift``)."""
        served = self.served.values()
        train_rows = self.rows_by_handle[: self.n_train]
        train_rows = train_rows[train_rows >= 0]
        train = self.features.index_select(0, train_rows).numpy()
        serve = (
            np.zeros((0, train.shape[1]), np.float32)
            if served is None
            else self.features.index_select(0, torch.from_numpy(served.astype(np.int64))).numpy()
        )
        columns = drift(self.encoder.feature_names, train, serve)
        return report(self.spec.party, columns, int(train.shape[0]), int(serve.shape[0]))

    def status(self) -> dict[str, Any]:
        """A summary for operators (no data)."""
        return {
            "job_id": self.job_id,
            "party": self.spec.party,
            "applied_step": self.applied_step,
            "pending_step": None if self._pending is None else self._pending.step,
            "aligned_rows": int((self.rows_by_handle >= 0).sum()),
            "in_features": int(self.features.shape[1]),
            "out_features": self.out_features,
            "mode": self.protection.mode,
            "trainable": self.protection.trainable,
            "alignment": "keys" if self.psi is None else "psi",
            "columns": [c.name for c in self.encoder.state.columns],
            "data_digest": self.data_digest,
            "segment_digest": self.segment_digest(),
        }


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _cut_step(path: Path) -> int:
    n = path.stem[len(CUT_PREFIX) :]
    return int(n) if n.isdigit() else -1

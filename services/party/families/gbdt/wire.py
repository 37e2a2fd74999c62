"""Messages of the tree family between party services that the engine's protocol lacks:
``setup`` (label -> feature party: the job's rows and parameters) and ``serve`` (the left bits
of the party's splits for a prediction's rows, named by alignment handle), ``digest`` (the
sha256 of the party's split table: its artifact in the model version). Framed like every tree
message (:mod:`services.engine.gbdt.messages`: JSON header + byte sections, never pickle).

The request kinds a feature party answers on ``POST /v1/jobs/{job_id}/trees/{kind}``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from services.engine.gbdt import messages as msg
from services.engine.gbdt.errors import GbdtMessageError
from services.engine.gbdt.params import GbdtParams
from services.engine.tasks import Labels
from services.protocol.messages import GbdtModelSpec, Task

I64 = npt.NDArray[np.int64]
KINDS = (
    "setup",
    "layout",
    "keys",
    "allowed",
    "histograms",
    "submit",
    "collect",
    "split",
    "resolve",
    "serve",
    "digest",
)
"""What ``{kind}`` may be (anything else is a 404 from the route's pattern)."""
KIND_PATTERN = "^(" + "|".join(KINDS) + ")$"
MAX_ROWS = 50_000_000


@dataclass(frozen=True)
class Setup:
    """The rows of a tree job at a feature party: ``handles[i]`` is job row ``i``'s handle (the
    PSI alignment's), ``train``/``valid`` index job rows."""

    params: GbdtParams
    handles: I64
    train: I64
    valid: I64

    def encode(self) -> bytes:
        """The ``setup`` message."""
        head = {"kind": "setup", "params": self.params.model_dump(mode="json")}
        arrays = (self.handles, self.train, self.valid)
        return msg.encode(head, [a.astype("<i8").tobytes() for a in arrays])

    @classmethod
    def decode(cls, payload: bytes, handles: int) -> Setup:
        """Parse and check a ``setup`` message (``handles``: how many the alignment shared)."""
        head, sections = msg.decode(payload, "setup")
        params = GbdtParams.parse(head.get("params"))
        if len(sections) != 3 or any(len(s) % 8 for s in sections):
            raise GbdtMessageError("setup: three int64 vectors expected")
        rows, train, valid = (np.frombuffer(s, dtype="<i8").astype(np.int64) for s in sections)
        n = rows.shape[0]
        if not 0 < n <= MAX_ROWS or (rows.size and (rows.min() < 0 or rows.max() >= handles)):
            raise GbdtMessageError("setup: handles out of the alignment's range")
        for part in (train, valid):
            if part.size and (part.min() < 0 or part.max() >= n or np.any(np.diff(part) <= 0)):
                raise GbdtMessageError("setup: row indices must be increasing job rows")
        if train.size < 2 or np.intersect1d(train, valid).size:
            raise GbdtMessageError("setup: training and validation rows must be disjoint")
        return cls(params, rows, train, valid)


def tree_params(model: GbdtModelSpec, task: Task, protection: str, labels: Labels) -> GbdtParams:
    """The engine's parameters of a job: the contract's model section, its task and
    protection mode (and the number of classes, from the labels)."""
    objective = {Task.BINARY: "binary", Task.MULTICLASS: "multiclass"}.get(task, "regression")
    return GbdtParams.parse(
        {
            **model.model_dump(exclude={"family"}),
            "objective": objective,
            "num_class": len(labels.classes) if objective == "multiclass" else 1,
            "protection": protection,
        }
    )


def same_terms(params: GbdtParams, model: GbdtModelSpec, protection: str) -> list[str]:
    """Fields of ``params`` that differ from the contract's model section and protection."""
    want = {**model.model_dump(exclude={"family"}), "protection": protection}
    have = params.model_dump()
    return sorted(k for k, v in want.items() if have.get(k) != v)


def serve_request(refs: list[str], handles: I64) -> bytes:
    """``serve``: the left bits of splits ``refs`` for the rows of ``handles``."""
    return msg.encode({"kind": "serve", "refs": refs}, [handles.astype("<i8").tobytes()])


def parse_serve(payload: bytes) -> tuple[list[str], I64]:
    """Check a ``serve`` request: its split references and handles."""
    head, sections = msg.decode(payload, "serve")
    refs = head.get("refs")
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        raise GbdtMessageError("serve: refs must be a list of strings")
    if len(sections) != 1 or len(sections[0]) % 8 or not sections[0]:
        raise GbdtMessageError("serve: one non-empty int64 handle vector expected")
    return refs, np.frombuffer(sections[0], dtype="<i8").astype(np.int64)

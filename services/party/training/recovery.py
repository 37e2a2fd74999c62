"""What a label party keeps on disk so a run survives the label party's own restart.

Under ``data_dir/trainings/<job>/`` (beside the consistent cuts the run takes):

* ``run.json``: the run's :class:`TrainingSpec`, written when the run starts;
* ``alignment.safetensors``: after alignment, each feature party's handle for every key of this
  party's key column (-1: not shared), the keys themselves (a restarted party maps its rows by
  key, never by position) and what each feature party answered to ``prepare`` (so the rows and
  the links are rebuilt exactly, without aligning again);
* ``data.json``: the digest of the table content the run uses, its fitted encoder
  (``services/party/binding.py``);
* ``outcome.json``: the run's final state, written when it finished or failed for good (with
  the finished run's status);
* ``model.safetensors``: a finished run's model (this party's side: top, own bottom, each
  link's interactive weights or share).

A run with ``run.json`` and no ``outcome.json`` was cut short by a crash or a shutdown: the next
process start resumes it from its last cut (``step-<n>.safetensors``); a finished run is loaded
again to serve predictions. Every file is written atomically.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from safetensors import SafetensorError
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save
from safetensors.torch import load as st_load_torch
from safetensors.torch import save as st_save_torch

from services.engine.checkpoint import atomic_write
from services.party.binding import BINDING_FILE
from services.protocol.messages import JobState, PreparedJob, TrainingSpec, TrainingStatus

RUN_FILE = "run.json"
ALIGNMENT_FILE = "alignment.safetensors"
OUTCOME_FILE = "outcome.json"
MODEL_FILE = "model.safetensors"
_CUT = re.compile(r"step-(\d+)\.safetensors")


def save_run(directory: Path, spec: TrainingSpec) -> None:
    """Record a new run as started (forgetting what an earlier run of the job id left)."""
    for stale in (OUTCOME_FILE, ALIGNMENT_FILE, MODEL_FILE, BINDING_FILE):
        (directory / stale).unlink(missing_ok=True)
    for cut in directory.glob("step-*.safetensors"):
        cut.unlink(missing_ok=True)
    atomic_write(directory / RUN_FILE, spec.model_dump_json().encode())


def save_outcome(directory: Path, state: JobState, error: str | None) -> None:
    """Record a run as failed for good: it is not resumed."""
    doc = {"state": state.value, "error": error}
    atomic_write(directory / OUTCOME_FILE, json.dumps(doc).encode())


def save_finished(directory: Path, status: TrainingStatus, model: dict[str, torch.Tensor]) -> None:
    """Record a run as finished, with its model (what serving loads after a restart)."""
    atomic_write(
        directory / MODEL_FILE, st_save_torch({k: v.contiguous() for k, v in model.items()})
    )
    doc = {"state": status.state.value, "error": None, "status": status.model_dump(mode="json")}
    atomic_write(directory / OUTCOME_FILE, json.dumps(doc).encode())


def save_outcome_status(directory: Path, status: TrainingStatus) -> None:
    """Record a run as ended with its final status, its model kept elsewhere in ``directory``
    (a family whose checkpoint is its model)."""
    doc = {
        "state": status.state.value,
        "error": status.error,
        "status": status.model_dump(mode="json"),
    }
    atomic_write(directory / OUTCOME_FILE, json.dumps(doc).encode())


def finished_runs(
    root: Path, model_file: Callable[[str], str] = lambda _: MODEL_FILE
) -> list[tuple[TrainingSpec, TrainingStatus, Path]]:
    """The finished runs under ``root`` that can serve again: spec, final status, directory
    (``model_file``: the file a family's finished model is in, by family name)."""
    found: list[tuple[TrainingSpec, TrainingStatus, Path]] = []
    for outcome in root.glob(f"*/{OUTCOME_FILE}"):
        directory = outcome.parent
        try:
            doc = json.loads(outcome.read_bytes())
            if doc.get("state") != JobState.FINISHED.value:
                continue
            spec = TrainingSpec.model_validate_json((directory / RUN_FILE).read_bytes())
            if not (directory / model_file(spec.model.family)).exists():
                continue
            status = TrainingStatus.model_validate(doc["status"])
        except (OSError, ValueError, KeyError):
            continue
        found.append((spec, status, directory))
    return found


def load_model(directory: Path) -> dict[str, torch.Tensor]:
    """What :func:`save_finished` wrote as the run's model."""
    return st_load_torch((directory / MODEL_FILE).read_bytes())


def interrupted_runs(root: Path) -> list[TrainingSpec]:
    """Specs of the runs under ``root`` that started and never ended (oldest first)."""
    found: list[tuple[float, TrainingSpec]] = []
    for run in root.glob(f"*/{RUN_FILE}"):
        if (run.parent / OUTCOME_FILE).exists():
            continue
        try:
            found.append((run.stat().st_mtime, TrainingSpec.model_validate_json(run.read_bytes())))
        except (OSError, ValueError):
            continue  # unreadable: nothing to resume from
    return [spec for _, spec in sorted(found, key=lambda item: item[0])]


def save_alignment(
    directory: Path,
    handles: dict[str, npt.NDArray[np.int64]],
    prepared: dict[str, PreparedJob],
    keys: dict[str, list[str]],
) -> None:
    """Each feature party's handle per key (-1: not shared), the keys (same order) and its
    ``prepare`` answer."""
    tensors = {name: np.ascontiguousarray(h, dtype=np.int64) for name, h in handles.items()}
    answers = {
        name: answer.model_copy(update={"found": []}).model_dump(mode="json")
        for name, answer in prepared.items()
    }
    blob = st_save(tensors, metadata={"prepared": json.dumps(answers), "keys": json.dumps(keys)})
    atomic_write(directory / ALIGNMENT_FILE, blob)


def load_alignment(
    directory: Path,
) -> tuple[dict[str, npt.NDArray[np.int64]], dict[str, PreparedJob], dict[str, list[str]]] | None:
    """What :func:`save_alignment` wrote (None if the run never got that far)."""
    path = directory / ALIGNMENT_FILE
    if not path.exists():
        return None
    raw = path.read_bytes()
    try:
        tensors = st_load(raw)
        meta = _metadata(raw)
        answers = json.loads(meta["prepared"])
        keys = {str(k): [str(x) for x in v] for k, v in json.loads(meta["keys"]).items()}
    except (SafetensorError, ValueError, KeyError, AttributeError, TypeError) as exc:
        raise ValueError(f"{path} is unreadable: {exc}") from exc
    prepared = {name: PreparedJob.model_validate(doc) for name, doc in answers.items()}
    handles = {name: t.astype(np.int64, copy=False) for name, t in tensors.items()}
    return handles, prepared, keys


def latest_cut(directory: Path) -> tuple[str, bytes] | None:
    """The tag and bytes of the newest consistent cut the run saved, if any."""
    cuts = [
        (int(m.group(1)), p)
        for p in directory.glob("step-*.safetensors")
        if (m := _CUT.fullmatch(p.name))
    ]
    if not cuts:
        return None
    step, path = max(cuts)
    return f"step-{step}", path.read_bytes()


def _metadata(blob: bytes) -> dict[str, str]:
    size = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + size])
    meta = header.get("__metadata__", {})
    if not isinstance(meta, dict):
        raise ValueError("no metadata")
    return {str(k): str(v) for k, v in meta.items()}

"""Atomic checkpoints of a segment and its optimizer, as safetensors plus JSON metadata.

No pickle: tensors go into a safetensors file, everything else (optimizer hyper-parameters, step
counters) into its JSON metadata. Files are written to a temporary name, fsynced and renamed, so a
crash leaves either the old checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn


def _optimizer_tensors(
    opt: torch.optim.Optimizer,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    state_meta: dict[str, dict[str, Any]] = {}
    for pid, pstate in sd["state"].items():
        scalars: dict[str, Any] = {}
        for name, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{pid}.{name}"] = value.detach().clone().contiguous()
            else:
                scalars[name] = value
        state_meta[str(pid)] = scalars
    return tensors, {"param_groups": sd["param_groups"], "state": state_meta}


def save_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    meta: dict[str, Any],
    extra: dict[str, torch.Tensor] | None = None,
) -> str:
    """Write model + optimizer + ``meta`` (+ ``extra`` tensors) atomically to ``path``; return
    the file's sha256."""
    return atomic_write(path, checkpoint_blob(model, optimizer, meta, extra))


def checkpoint_blob(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    meta: dict[str, Any],
    extra: dict[str, torch.Tensor] | None = None,
) -> bytes:
    """Model + optimizer + ``meta`` (+ ``extra`` tensors) as safetensors bytes."""
    tensors = {f"model.{k}": v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    tensors |= {f"extra.{k}": v.detach().clone().contiguous() for k, v in (extra or {}).items()}
    opt_tensors, opt_meta = _optimizer_tensors(optimizer)
    tensors.update(opt_tensors)
    return st_save(tensors, metadata={"meta": json.dumps(meta), "optim": json.dumps(opt_meta)})


def atomic_write(path: Path, blob: bytes) -> str:
    """Write ``blob`` to ``path`` atomically (temporary file, fsync, rename, fsync of the
    directory); return its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power cut
    finally:
        os.close(dir_fd)
    return hashlib.sha256(blob).hexdigest()


def load_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    extra: dict[str, torch.Tensor] | None = None,
) -> tuple[dict[str, Any], str]:
    """Restore model and optimizer from ``path``; return its ``meta`` and sha256. The checkpoint's
    extra tensors are put into ``extra`` when given."""
    blob = path.read_bytes()
    return restore_blob(blob, model, optimizer, extra), hashlib.sha256(blob).hexdigest()


def restore_blob(
    blob: bytes,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    extra: dict[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Restore model and optimizer from :func:`checkpoint_blob` bytes; return its ``meta``."""
    tensors = st_load(blob)
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + n])["__metadata__"]
    meta: dict[str, Any] = json.loads(header["meta"])
    opt_meta = json.loads(header["optim"])
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    if extra is not None:
        extra.update({k[6:]: v for k, v in tensors.items() if k.startswith("extra.")})
    state: dict[int, dict[str, Any]] = {}
    for pid, scalars in opt_meta["state"].items():
        state[int(pid)] = dict(scalars)
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": opt_meta["param_groups"]})
    return meta

"""Helpers of the label party's training steps (kept out of the driver to keep it short)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from safetensors.torch import save as st_save

from services.engine import contribution, tasks
from services.engine.dataset import LabelData
from services.engine.keyed import JobKey
from services.engine.segments import TopModel, build_bottom
from services.party.protection import LabelLink
from services.protocol.messages import Task, TrainingSpec, nn_model


@dataclass(slots=True)
class Owed:
    """Local work of a step deferred into the next one: own bottom backward, optimizer step."""

    own_cut: torch.Tensor | None
    own_grad: torch.Tensor | None


async def until_written(
    written: Mapping[str, asyncio.Event], requests: asyncio.Future[Any]
) -> None:
    """Return once every request body is written, or the requests ended (say, failed)."""
    waits = {asyncio.ensure_future(e.wait()) for e in written.values()}
    try:
        while waits and not requests.done():
            done, _ = await asyncio.wait({*waits, requests}, return_when=asyncio.FIRST_COMPLETED)
            waits -= done
    finally:
        for w in waits:
            w.cancel()


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 of a state dict as safetensors bytes."""
    return hashlib.sha256(st_save({k: v.contiguous() for k, v in state.items()})).hexdigest()


def expand_rows(cut: torch.Tensor, inverse: npt.NDArray[np.int64] | None) -> torch.Tensor:
    """Rows of a feature party's answer in batch order (identity without deduplication)."""
    return cut if inverse is None else cut.index_select(0, torch.from_numpy(inverse))


def contributions(
    inputs: dict[str, torch.Tensor], rows: int, score: Callable[[dict[str, torch.Tensor]], float]
) -> dict[str, dict[str, float]]:
    """Each party's exact Shapley value and leave-one-out of ``score`` on ``inputs`` (``rows``
    rows): absent parties' inputs are replaced by their mean over the rows."""
    parties = sorted(inputs)
    if rows == 0 or len(parties) > contribution.MAX_PARTIES:
        return {}
    baseline = {p: x.mean(dim=0, keepdim=True).expand_as(x) for p, x in inputs.items()}

    def value(coalition: frozenset[str]) -> float:
        mixed = {p: inputs[p] if p in coalition else baseline[p] for p in parties}
        result = score(mixed)
        return result if np.isfinite(result) else 0.0

    values = contribution.coalition_values(parties, value)
    return {
        "shapley": contribution.shapley(parties, values),
        "leave_one_out": contribution.leave_one_out(parties, values),
    }


def snapshot(
    top: torch.nn.Module, own: torch.nn.Module | None, links: Mapping[str, LabelLink]
) -> dict[str, torch.Tensor]:
    """The label party's model (top, own bottom, each link's W or W_A) as one state dict."""
    state = {f"top.{k}": v.clone() for k, v in top.state_dict().items()}
    if own is not None:
        state |= {f"own.{k}": v.clone() for k, v in own.state_dict().items()}
    for name, link in links.items():
        state |= {f"link.{name}.{k}": torch.from_numpy(v) for k, v in link.state().items()}
    return state


def restore_snapshot(
    state: dict[str, torch.Tensor],
    top: torch.nn.Module,
    own: torch.nn.Module | None,
    links: Mapping[str, LabelLink],
) -> None:
    """Load a :func:`snapshot` (nothing when it is empty)."""
    if not state:
        return
    top.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("top.")})
    if own is not None:
        own.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("own.")})
    for name, link in links.items():
        prefix = f"link.{name}."
        link.load({k[len(prefix) :]: v.numpy() for k, v in state.items() if k.startswith(prefix)})


def label_modules(
    spec: TrainingSpec, data: LabelData, key: JobKey
) -> tuple[torch.nn.Module | None, TopModel]:
    """The label party's own bottom (None without own features) and the top, drawn from its
    private job key (so a restarted party rebuilds them the same before loading a cut, and no
    feature party can compute them)."""
    own_spec = nn_model(spec.model).bottom.get(spec.party)
    own: torch.nn.Module | None = None
    cuts: dict[str, int] = {}
    if own_spec is not None and data.features.shape[1] > 0:
        own = build_bottom(data.features.shape[1], own_spec, key, spec.party)
        cuts[spec.party] = own_spec.out
    top = TopModel(
        cuts,
        nn_model(spec.model).top,
        data.labels.out_dim,
        key,
        external=[fp.name for fp in spec.feature_parties],
    )
    return own, top


def top_metrics(
    top: TopModel,
    labels: tasks.Labels,
    task: Task,
    rows: npt.NDArray[np.int64],
    inputs: dict[str, torch.Tensor],
) -> dict[str, float]:
    """The task's metrics of the top on given inputs (evaluation mode, no gradients)."""
    top.eval()
    with torch.no_grad():
        logits = top(inputs) if rows.shape[0] else torch.zeros((0, labels.out_dim))
    return tasks.compute_metrics(labels, rows, tasks.predictions(task, logits))


EVAL_CHUNK = 8192
"""Rows per evaluation call to each feature party."""


async def evaluation_inputs(
    rows: npt.NDArray[np.int64],
    links: Mapping[str, LabelLink],
    rows_to_send: Callable[
        [str, npt.NDArray[np.int64]], tuple[npt.NDArray[np.int64], npt.NDArray[np.int64] | None]
    ],
    own_cut: Callable[[npt.NDArray[np.int64]], torch.Tensor | None],
    party: str,
) -> dict[str, torch.Tensor]:
    """Every party's input to the top for ``rows``, in chunks (evaluation mode)."""
    parts: dict[str, list[torch.Tensor]] = {}
    for start in range(0, rows.shape[0], EVAL_CHUNK):
        chunk = rows[start : start + EVAL_CHUNK]
        sent = {name: rows_to_send(name, chunk) for name in links}
        remote = await asyncio.gather(*(link.embed(sent[n][0]) for n, link in links.items()))
        for n, z in zip(links, remote, strict=True):
            parts.setdefault(n, []).append(expand_rows(z, sent[n][1]))
        own = own_cut(chunk)
        if own is not None:
            parts.setdefault(party, []).append(own.detach())
    return {n: torch.cat(ts) for n, ts in parts.items()}

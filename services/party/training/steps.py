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

from services.engine import contribution
from services.party.training.links import CutLink


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
    top: torch.nn.Module, own: torch.nn.Module | None, links: Mapping[str, CutLink]
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
    links: Mapping[str, CutLink],
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

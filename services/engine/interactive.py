"""The feature parties' interactive weights ``W_i`` (d x m), kept as additive shares.

``W = W_A + W_P``: the label party A holds ``W_A``, the feature party P holds ``W_P``. Both start
as uniform inits scaled by ``1/sqrt(2)`` (so the sum has ``nn.Linear``'s init variance), each
drawn from its holder's private job key (services/engine/keyed.py): A cannot compute ``W_P`` and
P cannot compute ``W_A``, so neither can solve ``dL/dh = dL/dz W^T`` for the other's values.
Each share follows SGD with momentum and weight decay on its own share of the gradient. Those
rules are linear, so the sum follows exactly the update of ``W`` on the true gradient: in plain
mode A applies it to ``W`` directly, in CKKS mode the shares move separately
(docs/adr/0001-ckks-interactive-layer.md).

In CKKS mode A chooses P's share of every gradient: P receives ``G' = g + R'`` and A absorbs
``-R'``. :class:`OffsetShare` picks ``R'`` so that A's share after each step is its initial share
plus a *fresh* uniform offset in ``+-2**share_bits``. A's share therefore never accumulates the
gradient (P's does), and neither share grows: what P learns of W's trajectory is hidden by a fresh
uniform offset per step (statistical distance per coordinate at most ``|dW| / 2**(share_bits+1)``).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from services.engine.keyed import JobKey, KeyedStream
from services.protocol.messages import OptimizerSpec

F64 = npt.NDArray[np.float64]


def _uniform(key: JobKey, path: tuple[str, ...], d: int, m: int) -> F64:
    bound = 1.0 / math.sqrt(d) / math.sqrt(2.0)
    return key.stream(*path).uniform(-bound, bound, (d, m))


def label_share_init(key: JobKey, party: str, d: int, m: int) -> F64:
    """A's initial share of party ``party``'s interactive weights (from A's job key)."""
    return _uniform(key, ("interactive", party, "label"), d, m)


def feature_share_init(key: JobKey, party: str, d: int, m: int) -> F64:
    """P's initial share (from P's job key)."""
    return _uniform(key, ("interactive", party, "feature"), d, m)


class SgdShare:
    """One share of ``W`` with its momentum buffer (torch.optim.SGD's rule, dampening 0)."""

    def __init__(self, w: F64, spec: OptimizerSpec) -> None:
        self.w: F64 = np.array(w, dtype=np.float64)
        self.lr, self.momentum, self.decay = spec.lr, spec.momentum, spec.weight_decay
        self.v: F64 | None = None

    def step(self, grad: F64) -> None:
        """``v = mu v + (g + lambda w)``; ``w -= lr v`` (the first step sets ``v = g``)."""
        g = grad + self.decay * self.w if self.decay else grad
        self.v = g.copy() if self.v is None or not self.momentum else self.momentum * self.v + g
        self.w = self.w - self.lr * self.v

    def state(self) -> dict[str, F64]:
        """Tensors to checkpoint."""
        out = {"w": self.w.copy()}
        if self.v is not None:
            out["v"] = self.v.copy()
        return out

    def load(self, state: dict[str, F64]) -> None:
        """Restore :meth:`state`."""
        self.w = np.array(state["w"], dtype=np.float64)
        self.v = np.array(state["v"], dtype=np.float64) if "v" in state else None


class OffsetShare(SgdShare):
    """A's share in CKKS mode: picks the mask ``R'`` of P's gradient share each step.

    :meth:`next_mask` returns ``R'`` and :meth:`commit` applies A's update ``g_A = -R'``, chosen
    so that after the step ``w == w0 + O`` for a fresh ``O`` uniform in ``+-2**share_bits``.
    """

    def __init__(self, w: F64, spec: OptimizerSpec, share_bits: int, rng: KeyedStream) -> None:
        super().__init__(w, spec)
        self.w0 = self.w.copy()
        self.bound = float(2.0**share_bits)
        self.rng = rng
        self._next: tuple[F64, F64] | None = None

    def mask_bound(self) -> float:
        """Largest ``|R'|`` :meth:`next_mask` can return (for the kernel's mask check)."""
        span = 2 * self.bound + np.abs(self.w0).max(initial=0.0)
        return float((1 + self.momentum) * span / self.lr + self.decay * span)

    def next_mask(self) -> F64:
        """``R'`` for this step, landing this share on ``w0 + O`` once :meth:`commit` runs
        (nothing changes before: a step that fails after this call leaves the share as it was)."""
        target = self.w0 + self.rng.uniform(-self.bound, self.bound, self.w.shape)
        v_new = (self.w - target) / self.lr
        prev = self.v if self.v is not None and self.momentum else np.zeros_like(self.w)
        g_a = v_new - self.momentum * prev if self.v is not None else v_new
        r: F64 = np.asarray((self.decay * self.w if self.decay else 0.0) - g_a, dtype=np.float64)
        self._next = (target, v_new)
        return r

    def commit(self) -> None:
        """Apply the update :meth:`next_mask` prepared."""
        assert self._next is not None
        self.w, self.v = self._next
        self._next = None

    def state(self) -> dict[str, F64]:
        """Tensors to checkpoint (with the initial share the offsets are drawn around)."""
        return super().state() | {"w0": self.w0.copy()}

    def load(self, state: dict[str, F64]) -> None:
        """Restore :meth:`state`."""
        super().load(state)
        self.w0 = np.array(state["w0"], dtype=np.float64)

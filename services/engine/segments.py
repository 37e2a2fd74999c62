"""Model segments: a party's bottom MLP, the label party's top, and their centralized union.

Weights are initialised from a seed derived from (job seed, party name), so a split job and its
centralized equivalent start from identical weights.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from services.protocol.messages import Activation, OptimizerSpec, SegmentSpec, TopSpec


def derived_seed(seed: int, *names: str) -> int:
    """A 63-bit seed derived from the job seed and a path of names."""
    h = hashlib.blake2b(seed.to_bytes(8, "little"), digest_size=8)
    for n in names:
        h.update(b"\x00" + n.encode())
    return int.from_bytes(h.digest(), "little") >> 1


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's global RNG seeded, restoring the previous state after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def activation(name: Activation) -> nn.Module:
    """The activation module for a spec name."""
    cls: type[nn.Module] = {
        "relu": nn.ReLU,
        "gelu": nn.GELU,
        "tanh": nn.Tanh,
        "sigmoid": nn.Sigmoid,
        "leaky_relu": nn.LeakyReLU,
        "identity": nn.Identity,
    }[name]
    return cls()


def build_bottom(in_features: int, spec: SegmentSpec, seed: int) -> nn.Sequential:
    """A party's bottom segment: hidden layers and an activated output of width ``spec.out``."""
    layers: list[nn.Module] = []
    width = in_features
    with seeded(seed):
        for h in [*spec.hidden, spec.out]:
            layers.append(nn.Linear(width, h))
            if spec.batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(activation(spec.activation))
            if spec.dropout > 0:
                layers.append(nn.Dropout(spec.dropout))
            width = h
    return nn.Sequential(*layers)


class TopModel(nn.Module):
    """Interactive layer (one linear map per party, summed) followed by the top MLP.

    Parties named in ``external`` have no linear map here: their input to :meth:`forward` is
    already ``z_i = h_i W_i``, computed by the protection layer from shared weights
    (services/engine/interactive.py). Every part is seeded by its own name, so a split job's top
    and its centralized equivalent start from identical weights.
    """

    def __init__(
        self,
        cut_widths: Mapping[str, int],
        spec: TopSpec,
        out_dim: int,
        seed: int,
        external: Sequence[str] = (),
    ):
        super().__init__()
        self.order = sorted(cut_widths)
        self.external = sorted(external)
        linears: dict[str, nn.Module] = {}
        for p in self.order:
            with seeded(derived_seed(seed, "interactive", p)):
                linears[p] = nn.Linear(cut_widths[p], spec.interactive, bias=False)
        self.interactive = nn.ModuleDict(linears)
        self.bias = nn.Parameter(torch.zeros(spec.interactive))
        with seeded(derived_seed(seed, "mlp")):
            layers: list[nn.Module] = [activation(spec.activation)]
            width = spec.interactive
            for h in spec.hidden:
                layers.append(nn.Linear(width, h))
                layers.append(activation(spec.activation))
                if spec.dropout > 0:
                    layers.append(nn.Dropout(spec.dropout))
                width = h
            layers.append(nn.Linear(width, out_dim))
        self.mlp = nn.Sequential(*layers)

    def forward(self, cuts: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Map each own party's cut activations and each external party's ``z`` to logits."""
        z: torch.Tensor = self.bias
        for p in self.order:
            z = z + self.interactive[p](cuts[p])
        for p in self.external:
            z = z + cuts[p]
        out: torch.Tensor = self.mlp(z)
        return out


class JointModel(nn.Module):
    """Every bottom segment and the top in one module: the centralized equivalent of a job."""

    def __init__(self, bottoms: Mapping[str, nn.Module], top: TopModel):
        super().__init__()
        self.bottoms = nn.ModuleDict(dict(bottoms))
        self.top = top

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Logits for one batch given each party's encoded features."""
        return self.top({p: m(inputs[p]) for p, m in self.bottoms.items()})  # type: ignore[no-any-return]


def build_optimizer(params: Iterator[nn.Parameter], spec: OptimizerSpec) -> torch.optim.Optimizer:
    """The optimizer a spec names, over ``params``."""
    plist = list(params)
    # foreach: one multi-tensor kernel per update instead of a Python loop over parameters
    if spec.name == "sgd":
        return torch.optim.SGD(
            plist,
            lr=spec.lr,
            momentum=spec.momentum,
            weight_decay=spec.weight_decay,
            foreach=True,
        )
    if spec.name == "adamw":
        return torch.optim.AdamW(plist, lr=spec.lr, weight_decay=spec.weight_decay, foreach=True)
    return torch.optim.Adam(plist, lr=spec.lr, weight_decay=spec.weight_decay, foreach=True)

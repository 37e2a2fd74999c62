"""Model segments: a party's bottom MLP, the label party's top, and their centralized union.

Weights are drawn from the owning party's private job key (services/engine/keyed.py), one keyed
stream per layer, with ``nn.Linear``'s default distribution (uniform in ``+-1/sqrt(fan_in)`` for
weights and biases). A peer cannot compute them; a harness that knows every party's job key (the
pilot's centralized baseline) builds the identical model.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import nn

from services.engine.keyed import JobKey, KeyedStream
from services.protocol.messages import Activation, OptimizerSpec, SegmentSpec, TopSpec


def derived_seed(seed: int, *names: str) -> int:
    """A 63-bit seed derived from the public job seed and a path of names (local runs only:
    nothing a peer must not predict comes from it)."""
    h = hashlib.blake2b(seed.to_bytes(8, "little"), digest_size=8)
    for n in names:
        h.update(b"\x00" + n.encode())
    return int.from_bytes(h.digest(), "little") >> 1


def init_linear(layer: nn.Linear, stream: KeyedStream) -> None:
    """``nn.Linear``'s default initialisation (weight and bias uniform in ``+-1/sqrt(fan_in)``),
    drawn from ``stream``."""
    bound = 1.0 / math.sqrt(layer.in_features) if layer.in_features > 0 else 0.0
    with torch.no_grad():
        w = stream.uniform(-bound, bound, tuple(layer.weight.shape))
        layer.weight.copy_(torch.from_numpy(w))
        if layer.bias is not None:
            b = stream.uniform(-bound, bound, tuple(layer.bias.shape))
            layer.bias.copy_(torch.from_numpy(b))


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


def cut_width(spec: SegmentSpec, in_features: int) -> int:
    """Width of a bottom's output: ``spec.out``, or the input width for an identity bottom."""
    return in_features if spec.kind == "identity" else spec.out


def build_bottom(in_features: int, spec: SegmentSpec, key: JobKey, party: str) -> nn.Sequential:
    """Party ``party``'s bottom segment: hidden layers and an activated output of width
    ``spec.out``, initialised from its job ``key`` (an empty module for an identity bottom)."""
    layers: list[nn.Module] = []
    if spec.kind == "identity":
        return nn.Sequential()
    width = in_features
    for i, h in enumerate([*spec.hidden, spec.out]):
        linear = nn.Linear(width, h)
        init_linear(linear, key.stream("bottom", party, str(i)))
        layers.append(linear)
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
    (services/engine/interactive.py). Every part is drawn from the label party's job ``key``
    under its own name, so a split job's top and its centralized equivalent start identically.
    """

    def __init__(
        self,
        cut_widths: Mapping[str, int],
        spec: TopSpec,
        out_dim: int,
        key: JobKey,
        external: Sequence[str] = (),
    ):
        super().__init__()
        self.order = sorted(cut_widths)
        self.external = sorted(external)
        linears: dict[str, nn.Module] = {}
        for p in self.order:
            linear = nn.Linear(cut_widths[p], spec.interactive, bias=False)
            init_linear(linear, key.stream("interactive", p))
            linears[p] = linear
        self.interactive = nn.ModuleDict(linears)
        self.bias = nn.Parameter(torch.zeros(spec.interactive))
        layers: list[nn.Module] = [activation(spec.activation)]
        width = spec.interactive
        for i, h in enumerate([*spec.hidden, out_dim]):
            linear = nn.Linear(width, h)
            init_linear(linear, key.stream("mlp", str(i)))
            layers.append(linear)
            if i < len(spec.hidden):
                layers.append(activation(spec.activation))
                if spec.dropout > 0:
                    layers.append(nn.Dropout(spec.dropout))
            width = h
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
    """The optimizer a spec names, over ``params`` (a module without parameters gets a no-op
    SGD over a single frozen placeholder, so checkpoints keep one shape)."""
    plist = list(params)
    if not plist:
        return torch.optim.SGD([nn.Parameter(torch.zeros(0), requires_grad=False)], lr=spec.lr)
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

"""Protection of the cut layer: defence, CKKS, label privacy."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    Field,
)

from services.protocol.messages.base import Strict

# --- protection of the cut layer ----------------------------------------------------------------

ProtectionMode = Literal["plain", "ckks"]


class DefenceSpec(Strict):
    """Label-leakage defence on what feature parties receive (both modes, on by default).

    Each example's gradient ``dL/dz`` (per-example loss scale) is clipped to ``max_norm`` and
    Gaussian noise of standard deviation ``noise_multiplier * max_norm`` is added per coordinate
    before anything derived from it leaves the label party.
    """

    enabled: bool = True
    max_norm: float = Field(default=4.0, gt=0.0, le=1e6, allow_inf_nan=False)
    noise_multiplier: float = Field(default=0.25, ge=0.0, le=100.0, allow_inf_nan=False)


class CkksSpec(Strict):
    """CKKS parameters of the protected interactive layer (see services/engine/he/params.py).

    ``share_bits``: the label party re-randomises its share of each ``W_i`` every step by a fresh
    offset uniform in ``+-2**share_bits`` (what the feature party learns about W's trajectory is
    hidden at that scale; docs/threat-model.md states the bound).
    """

    poly_modulus_degree: Literal[8192, 16384] = 8192
    coeff_mod_bit_sizes: list[Annotated[int, Field(ge=20, le=60)]] = Field(
        default_factory=lambda: [60, 40, 60], min_length=3, max_length=8
    )
    input_scale_bits: int = Field(default=40, ge=20, le=60)
    output_scale_bits: int = Field(default=30, ge=20, le=60)
    mask_bits: int = Field(default=26, ge=8, le=50)
    share_bits: int = Field(default=10, ge=0, le=20)


LabelDpUnit = Literal["row", "key"]
"""What label privacy protects: one label-party row (a board), or everything under one feature
party join key (a paste lot)."""


class LabelDpSpec(Strict):
    """Label differential privacy of a job (docs/adr/0007-label-privacy.md).

    ``randomized_response``: the label party replaces each row's label by a randomised one once,
    before training (keeps it with probability ``e^eps / (e^eps + k - 1)`` for ``k`` classes), so
    every message and the model are post-processing: ``epsilon``-label-DP (``delta`` 0) per
    ``unit``, however long or often the contract's jobs train. For unit ``key`` the per-row
    epsilon is ``epsilon / (most rows under one key)`` (group privacy). ``none``: no label DP.
    """

    mechanism: Literal["none", "randomized_response"] = "none"
    epsilon: float = Field(default=4.0, gt=0.0, le=50.0, allow_inf_nan=False)
    delta: float = Field(default=0.0, ge=0.0, lt=1e-3, allow_inf_nan=False)
    unit: LabelDpUnit = "row"


class ProtectionSpec(Strict):
    """How the cut layer of a job is protected: ``plain`` or ``ckks``, the gradient defence,
    and the labels' differential privacy."""

    mode: ProtectionMode = "ckks"
    ckks: CkksSpec = Field(default_factory=CkksSpec)
    defence: DefenceSpec = Field(default_factory=DefenceSpec)
    label_dp: LabelDpSpec = Field(default_factory=LabelDpSpec)

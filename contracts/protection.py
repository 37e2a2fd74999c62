"""How the cut layer is protected, and the label-leakage defence.

``plain`` sends cut activations and gradients in the clear (for trusted pilots and tests);
``ckks`` encrypts each feature party's cut activations under its own CKKS key so the label party
computes the interactive layer on ciphertexts and sees only masked results. Both carry a
label-leakage defence: the gradients the label party sends back are clipped per example to
``max_norm`` and receive Gaussian noise of standard deviation ``noise_multiplier * max_norm``, so a
feature party cannot read labels off gradient norms or directions. It is on unless switched off.

The CKKS fields and their defaults are those of the wire message the label party sends
(``services.protocol.messages.CkksSpec``), and the rules are those of the CKKS kernel
(``services/engine/he/params.py``), restated here so that an agreed contract never names
parameters the kernel refuses. :meth:`CkksProtection.to_wire` and :meth:`PlainProtection.to_wire`
give the protection as a ``messages.ProtectionSpec`` document.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from contracts.base import Frozen
from contracts.errors import Issue, raise_issues

MAX_COEFF_MODULUS_BITS: dict[int, int] = {8192: 218, 16384: 438}
"""Largest total coefficient-modulus size per ring degree at 128-bit security (HE standard, SEAL's
TC128 table): the kernel's ring degrees only."""
KERNEL_GRAD_GAIN_BITS = 8
"""The kernel computes the backward on ``2**8 * D`` (not a contract field); a mask must be at
least 8 bits wider than that gain."""
MAX_MASK_BITS = 40
"""float64 precision caps masks at 40 bits whatever the headroom."""
MIN_SCALE_BITS = 20
"""Smallest scale (input, output and the label party's plaintexts) with useful precision."""

ScaleBits = Annotated[int, Field(ge=MIN_SCALE_BITS, le=60, strict=True)]


class LabelDefence(Frozen):
    """Per-example clipping and noise on the gradients returned to feature parties."""

    enabled: bool = True
    max_norm: Annotated[float, Field(gt=0.0, le=1e6, allow_inf_nan=False)] = 4.0
    noise_multiplier: Annotated[float, Field(ge=0.0, le=100.0, allow_inf_nan=False)] = 0.25

    def to_wire(self) -> dict[str, Any]:
        """As ``messages.DefenceSpec``."""
        return {
            "enabled": self.enabled,
            "max_norm": self.max_norm,
            "noise_multiplier": self.noise_multiplier,
        }


DEFAULT_LABEL_EPSILON = 6.0
"""The default label-privacy budget per board (docs/adr/0007-label-privacy.md: the frontier)."""


class LabelPrivacy(Frozen):
    """Label differential privacy: ``epsilon`` (and ``delta``) per ``unit``.

    ``randomized_response`` randomises each label once, before any training (a board keeps its
    label with probability ``e^eps / (e^eps + k - 1)``): every message a feature party receives
    and the model itself are post-processing, so the budget holds for every job of the contract
    however long it trains. ``unit: row`` protects one row of the label party's table (a board);
    ``unit: key`` everything under one feature-party join key (a paste lot), by group privacy:
    each row then gets ``epsilon / (most rows under one key)``. ``none`` switches it off.
    """

    mechanism: Literal["none", "randomized_response"] = "randomized_response"
    epsilon: Annotated[float, Field(gt=0.0, le=50.0, allow_inf_nan=False)] = DEFAULT_LABEL_EPSILON
    delta: Annotated[float, Field(ge=0.0, lt=1e-3, allow_inf_nan=False)] = 0.0
    unit: Literal["row", "key"] = "row"

    @model_validator(mode="after")
    def _pure(self) -> LabelPrivacy:
        if self.mechanism == "randomized_response" and self.delta != 0.0:
            raise_issues([(("delta",), "randomized response is pure epsilon-DP: delta is 0")])
        return self

    def to_wire(self) -> dict[str, Any]:
        """As ``messages.LabelDpSpec``."""
        return {
            "mechanism": self.mechanism,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "unit": self.unit,
        }


class PlainProtection(Frozen):
    """No encryption of the cut layer."""

    scheme: Literal["plain"]
    label_defence: LabelDefence = Field(default_factory=LabelDefence)
    label_privacy: LabelPrivacy = Field(default_factory=LabelPrivacy)

    def to_wire(self) -> dict[str, Any]:
        """As ``messages.ProtectionSpec``: mode ``plain``; ``ckks`` holds the (unused) defaults,
        so every protection has the same complete shape."""
        ckks = CkksProtection(scheme="ckks").ckks_wire()
        return {
            "mode": "plain",
            "ckks": ckks,
            "defence": self.label_defence.to_wire(),
            "label_dp": self.label_privacy.to_wire(),
        }


class CkksProtection(Frozen):
    """CKKS encryption of the cut layer (SEAL parameters), as the kernel takes them.

    ``coeff_mod_bit_sizes`` lists the bit sizes of the coefficient-modulus primes: the data
    primes, then the special (key-switching) prime, which is the last and at least as large as any
    other. The feature party encodes its activations at scale ``2**input_scale_bits``; after the
    one rescale results sit at ``2**output_scale_bits`` in the first prime, whose remaining
    *headroom* ``first prime - output_scale_bits - 1`` bits must hold every ``value + mask``. The
    label party masks results with uniform noise of ``mask_bits`` bits (the backward spreads a
    mask over several slots, hence 3 bits of the headroom in reserve) and re-randomises its share
    of each interactive weight by ``+-2**share_bits`` every step.
    """

    scheme: Literal["ckks"]
    poly_modulus_degree: Literal[8192, 16384] = 8192
    coeff_mod_bit_sizes: Annotated[
        list[Annotated[int, Field(ge=20, le=60, strict=True)]], Field(min_length=3, max_length=8)
    ] = Field(default_factory=lambda: [60, 40, 60])
    input_scale_bits: ScaleBits = 40
    output_scale_bits: ScaleBits = 30
    mask_bits: Annotated[int, Field(ge=8, le=50, strict=True)] = 26
    share_bits: Annotated[int, Field(ge=0, le=20, strict=True)] = 10
    label_defence: LabelDefence = Field(default_factory=LabelDefence)
    label_privacy: LabelPrivacy = Field(default_factory=LabelPrivacy)

    @model_validator(mode="after")
    def _kernel_rules(self) -> CkksProtection:
        raise_issues(ckks_issues(self))
        return self

    @property
    def slots(self) -> int:
        """Values one ciphertext holds: half the ring degree."""
        return self.poly_modulus_degree // 2

    @property
    def capacity_bits(self) -> int:
        """Headroom in the first prime: every decrypted ``value + mask`` stays below
        ``2**capacity_bits``."""
        return self.coeff_mod_bit_sizes[0] - self.output_scale_bits - 1

    def ckks_wire(self) -> dict[str, Any]:
        """The CKKS parameters as ``messages.CkksSpec``."""
        return {
            "poly_modulus_degree": self.poly_modulus_degree,
            "coeff_mod_bit_sizes": list(self.coeff_mod_bit_sizes),
            "input_scale_bits": self.input_scale_bits,
            "output_scale_bits": self.output_scale_bits,
            "mask_bits": self.mask_bits,
            "share_bits": self.share_bits,
        }

    def to_wire(self) -> dict[str, Any]:
        """As ``messages.ProtectionSpec``: mode ``ckks``, these parameters, the defence."""
        return {
            "mode": "ckks",
            "ckks": self.ckks_wire(),
            "defence": self.label_defence.to_wire(),
            "label_dp": self.label_privacy.to_wire(),
        }


def ckks_issues(p: CkksProtection) -> list[Issue]:
    """What the kernel would refuse in ``p`` (its ``HeParams`` rules), each at its field."""
    issues: list[Issue] = []
    bits, n = p.coeff_mod_bit_sizes, p.poly_modulus_degree
    limit = MAX_COEFF_MODULUS_BITS[n]
    if sum(bits) > limit:
        issues.append(
            (
                ("coeff_mod_bit_sizes",),
                f"total {sum(bits)} bits exceeds {limit}, the 128-bit-security limit for "
                f"poly_modulus_degree {n}",
            )
        )
    if bits[-1] < max(bits[:-1]):
        issues.append(
            (
                ("coeff_mod_bit_sizes", len(bits) - 1),
                f"the special (last) prime of {bits[-1]} bits must be at least as large as every "
                f"other prime (largest {max(bits[:-1])} bits)",
            )
        )
    room = sum(bits[:-1]) - bits[-2] - 2
    if p.input_scale_bits > room:
        issues.append(
            (
                ("input_scale_bits",),
                f"at most {room}: the input scale must leave room below the data modulus (data "
                f"primes {sum(bits[:-1])} bits less the rescaling prime {bits[-2]} less 2)",
            )
        )
    if p.output_scale_bits > bits[0] - 8:
        issues.append(
            (
                ("output_scale_bits",),
                f"at most {bits[0] - 8}: the output scale must leave 8 bits of the first prime "
                f"({bits[0]} bits)",
            )
        )
    weight_scale = p.output_scale_bits + bits[-2] - p.input_scale_bits
    if weight_scale < MIN_SCALE_BITS:
        issues.append(
            (
                ("input_scale_bits",),
                f"the label party's plaintext scale (output_scale_bits + rescaling prime - "
                f"input_scale_bits = {weight_scale} bits) must be at least {MIN_SCALE_BITS}",
            )
        )
    top = min(MAX_MASK_BITS, p.capacity_bits - 3)
    bottom = KERNEL_GRAD_GAIN_BITS + 8
    headroom = (
        f"the headroom first prime {bits[0]} - output_scale_bits {p.output_scale_bits} - 1 = "
        f"{p.capacity_bits} bits, less 3 for the backward's split masks"
    )
    if top < bottom:
        issues.append(
            (
                ("mask_bits",),
                f"no mask fits: {headroom}, leaves {top} bits, below the {bottom} the kernel "
                f"needs (its {KERNEL_GRAD_GAIN_BITS}-bit gradient gain + 8); lower "
                "output_scale_bits or widen the first prime",
            )
        )
    elif not bottom <= p.mask_bits <= top:
        issues.append(
            (
                ("mask_bits",),
                f"{p.mask_bits}-bit masks: must be in {bottom}..{top} ({headroom}, at most "
                f"{MAX_MASK_BITS}; at least the kernel's {KERNEL_GRAD_GAIN_BITS}-bit gradient "
                "gain + 8)",
            )
        )
    return issues


Protection = Annotated[PlainProtection | CkksProtection, Field(discriminator="scheme")]
"""``plain`` or ``ckks``, chosen by ``scheme``."""


def default_protection() -> CkksProtection:
    """CKKS with N=8192, primes [60, 40, 60], scales 2^40 in and 2^30 out, 26-bit masks, 10-bit
    share offsets, and the label defence on."""
    return CkksProtection(scheme="ckks")

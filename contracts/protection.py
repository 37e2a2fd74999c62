"""How the cut layer is protected, and the label-leakage defence.

``plain`` sends cut activations and gradients in the clear (for trusted pilots and tests);
``ckks`` encrypts each feature party's cut activations under its own CKKS key so the label party
computes the interactive layer on ciphertexts and sees only masked results. Both carry a
label-leakage defence: the gradients the label party sends back are clipped per example to
``max_norm`` and receive Gaussian noise of standard deviation ``noise_multiplier * max_norm``, so a
feature party cannot read labels off gradient norms or directions. It is on unless switched off.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from contracts.base import Frozen
from contracts.errors import Issue, raise_issues

MAX_COEFF_MODULUS_BITS: dict[int, int] = {4096: 109, 8192: 218, 16384: 438, 32768: 881}
"""Largest total coefficient-modulus size per ring degree at 128-bit security (HE standard)."""


class LabelDefence(Frozen):
    """Per-example clipping and noise on the gradients returned to feature parties."""

    enabled: bool = True
    max_norm: Annotated[float, Field(gt=0.0, le=1e6, allow_inf_nan=False)] = 1.0
    noise_multiplier: Annotated[float, Field(ge=0.0, le=100.0, allow_inf_nan=False)] = 0.5


class PlainProtection(Frozen):
    """No encryption of the cut layer."""

    scheme: Literal["plain"]
    label_defence: LabelDefence = Field(default_factory=LabelDefence)


class CkksProtection(Frozen):
    """CKKS encryption of the cut layer (SEAL parameters).

    ``coeff_mod_bit_sizes`` lists the bit sizes of the coefficient-modulus primes: the first and
    last are the special primes, the middle ones the rescaling primes (one multiplication level is
    needed). ``global_scale_bits`` is log2 of the encoding scale and must not exceed a middle prime.
    The label party masks each result with uniform noise of ``mask_bits`` bits before returning
    it for decryption; the mask must fit the headroom ``first prime - scale - 1``.
    """

    scheme: Literal["ckks"]
    poly_modulus_degree: Literal[4096, 8192, 16384, 32768] = 8192
    coeff_mod_bit_sizes: Annotated[
        list[Annotated[int, Field(ge=20, le=60)]], Field(min_length=3, max_length=32)
    ] = Field(default_factory=lambda: [60, 40, 60])
    global_scale_bits: Annotated[int, Field(ge=20, le=60)] = 40
    mask_bits: Annotated[int, Field(ge=0, le=40)] = 16
    label_defence: LabelDefence = Field(default_factory=LabelDefence)

    @model_validator(mode="after")
    def _secure(self) -> CkksProtection:
        issues: list[Issue] = []
        bits = self.coeff_mod_bit_sizes
        limit = MAX_COEFF_MODULUS_BITS[self.poly_modulus_degree]
        if sum(bits) > limit:
            issues.append(
                (
                    ("coeff_mod_bit_sizes",),
                    f"total {sum(bits)} bits exceeds {limit}, the 128-bit-security limit for "
                    f"poly_modulus_degree {self.poly_modulus_degree}",
                )
            )
        if self.global_scale_bits > min(bits[1:-1]):
            issues.append(
                (
                    ("global_scale_bits",),
                    f"scale of {self.global_scale_bits} bits exceeds the smallest rescaling prime "
                    f"({min(bits[1:-1])} bits)",
                )
            )
        headroom = bits[0] - self.global_scale_bits - 1
        if self.mask_bits > headroom:
            issues.append(
                (
                    ("mask_bits",),
                    f"{self.mask_bits}-bit masks do not fit the {headroom}-bit headroom "
                    f"(first prime {bits[0]} - scale {self.global_scale_bits} - 1)",
                )
            )
        raise_issues(issues)
        return self

    @property
    def slots(self) -> int:
        """Values one ciphertext holds: half the ring degree."""
        return self.poly_modulus_degree // 2


Protection = Annotated[PlainProtection | CkksProtection, Field(discriminator="scheme")]
"""``plain`` or ``ckks``, chosen by ``scheme``."""


def default_protection() -> CkksProtection:
    """CKKS with N=8192, primes [60, 40, 60], scale 2^40 and the label defence on."""
    return CkksProtection(scheme="ckks")

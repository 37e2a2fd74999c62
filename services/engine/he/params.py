"""CKKS parameters of one protected interactive layer, validated up front.

The defaults follow the packing study in ``shared/reference/he-packing``: ring degree 8192,
coefficient modulus ``[60, 40, 60]`` bits (128-bit security by the HE standard's table, which SEAL
enforces), one multiplicative level. The feature party encodes H at scale ``2**input_scale_bits``;
the label party encodes its plaintext operand so that, after the one rescale, results sit at
scale ``2**output_scale_bits`` in the last 60-bit prime q0. What is left of q0 is the headroom::

    capacity_bits = log2(q0) - output_scale_bits - 1     (|value + mask| stays below 2**that)

With the defaults capacity is ~29 bits. Masks are drawn in ``[-2**mask_bits, 2**mask_bits]`` with
``mask_bits = 26``, leaving the masked products room below ``2**29`` (the backward spreads a mask
over several slots and needs up to ``3 * 2**mask_bits``). The CKKS noise of one result slot has a
standard deviation of about ``2**-19`` (the rescale's rounding, measured).

Gradients ``H^T D`` are small numbers (D is a mean-loss gradient, ~1/B), so the backward computes
on ``2**grad_gain_bits * D``: the feature party divides the gain out after decrypting. That keeps
the ratio of value to mask (what the masks hide, :mod:`.masks`) and the relative precision alike
for both directions: backward masks are ``2**(mask_bits - grad_gain_bits)`` in gradient units.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from services.engine.he.errors import HeParamsError

RING_DEGREES: frozenset[int] = frozenset({8192, 16384})
MAX_COEFF_BITS: dict[int, int] = {8192: 218, 16384: 438}
"""Largest total coefficient modulus for 128-bit classical security (HE standard, SEAL TC128)."""

MAX_FEATURES = 4096
MAX_ROWS = 1 << 17
"""Largest batch one blob may carry (rows); bounds every blob size the kernel accepts."""
WEIGHT_BOUND = 4096.0
"""Largest ``|W_P|`` entry the feature party encrypts for the input gradient (a public bound the
label party uses to check that ``D W_P^T`` stays within the headroom)."""


def _pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def next_pow2(n: int) -> int:
    """Smallest power of two >= ``n`` (``n >= 1``)."""
    return 1 << max(0, (n - 1).bit_length())


@dataclass(frozen=True, slots=True)
class HeParams:
    """Encryption parameters and layer shape; the Galois keys depend on all of them.

    ``block_rows`` is the number of batch rows one ciphertext block holds (a power of two, at most
    ``poly_modulus_degree // 2``). A batch of B rows travels as ``ceil(B / block_rows)`` chunks;
    choose it as the job's batch size rounded up to a power of two (:meth:`for_layer`).
    """

    block_rows: int
    in_features: int
    out_features: int
    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = field(default=(60, 40, 60))
    input_scale_bits: int = 40
    output_scale_bits: int = 30
    mask_bits: int = 26
    grad_gain_bits: int = 8

    def __post_init__(self) -> None:
        object.__setattr__(self, "coeff_mod_bit_sizes", tuple(self.coeff_mod_bit_sizes))
        self._validate()

    @classmethod
    def for_layer(
        cls, batch_size: int, in_features: int, out_features: int, **overrides: Any
    ) -> HeParams:
        """Parameters for a layer ``in_features -> out_features`` trained with ``batch_size``."""
        degree = int(overrides.get("poly_modulus_degree", 8192))
        slots = degree // 2 if degree in RING_DEGREES else 4096
        block = min(slots, next_pow2(max(batch_size, next_pow2(max(out_features, 1)))))
        return cls(block, in_features, out_features, **overrides)

    @property
    def slots(self) -> int:
        """CKKS slots per ciphertext (half the ring degree)."""
        return self.poly_modulus_degree // 2

    @property
    def data_bits(self) -> tuple[int, ...]:
        """Bit sizes of the data primes (all but the special key-switching prime)."""
        return self.coeff_mod_bit_sizes[:-1]

    @property
    def weight_scale_bits(self) -> float:
        """log2 of the scale of the label party's plaintexts (W or D), nominal bit sizes."""
        return self.output_scale_bits + self.data_bits[-1] - self.input_scale_bits

    @property
    def weights_shift_bits(self) -> int:
        """The input gradient's trade of scales: ``W_P`` is encrypted at ``2**shift`` times the
        input scale and D encoded at ``2**-shift`` times the plaintext scale (same result scale).

        Key switching adds noise of fixed size to every rotated ``Enc(W_P)``, so a larger ``W_P``
        scale makes it smaller relative to W; D's encoding rounding grows in turn (measured in
        ``docs/he-kernel.md``). D's scale stays >= ``2**22`` (unless the plaintext scale itself
        is lower: then the shift is 0).
        """
        return max(0, min(5, int(self.weight_scale_bits) - 22))

    @property
    def capacity_bits(self) -> int:
        """Nominal headroom: every decrypted ``value + mask`` stays below ``2**capacity_bits``."""
        return self.data_bits[0] - self.output_scale_bits - 1

    @property
    def mask_bound(self) -> float:
        """Forward masks are drawn uniformly in ``[-mask_bound, mask_bound]``."""
        return float(2.0**self.mask_bits)

    @property
    def grad_gain(self) -> float:
        """The backward computes on ``gain * D`` (a fixed, public power of two)."""
        return float(2.0**self.grad_gain_bits)

    @property
    def grad_mask_bound(self) -> float:
        """Backward masks (in units of ``H^T D``) lie in ``[-grad_mask_bound, grad_mask_bound]``."""
        return self.mask_bound / self.grad_gain

    def _validate(self) -> None:
        n, bits = self.poly_modulus_degree, self.coeff_mod_bit_sizes
        ints = (
            self.block_rows,
            self.in_features,
            self.out_features,
            n,
            self.mask_bits,
            self.input_scale_bits,
            self.output_scale_bits,
            self.grad_gain_bits,
        )
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (*ints, *bits)):
            raise HeParamsError("HE parameters must be integers")
        if n not in RING_DEGREES:
            raise HeParamsError(
                f"poly_modulus_degree must be one of {sorted(RING_DEGREES)}, not {n}"
            )
        if len(bits) < 3 or any(not 20 <= b <= 60 for b in bits):
            raise HeParamsError(
                "coeff_mod_bit_sizes needs >= 3 primes of 20..60 bits (data primes + special prime)"
            )
        if sum(bits) > MAX_COEFF_BITS[n]:
            raise HeParamsError(
                f"coeff_mod_bit_sizes total {sum(bits)} bits exceeds {MAX_COEFF_BITS[n]}, the "
                f"128-bit security limit for N={n}"
            )
        if bits[-1] < max(bits[:-1]):
            raise HeParamsError("the special (last) prime must be at least as large as any other")
        if not 20 <= self.input_scale_bits <= sum(bits[:-1]) - bits[-2] - 2:
            raise HeParamsError("input_scale_bits must leave room below the data modulus")
        if not 20 <= self.output_scale_bits <= bits[0] - 8:
            raise HeParamsError("output_scale_bits must be >= 20 and leave >= 8 bits in q0")
        if self.weight_scale_bits < 20:
            raise HeParamsError(
                "output_scale_bits + rescale prime bits - input_scale_bits must be >= 20 "
                f"(plaintext precision), got {self.weight_scale_bits}"
            )
        if not 1 <= self.mask_bits <= min(40, self.capacity_bits - 3):
            raise HeParamsError(
                f"mask_bits must be in 1..{min(40, self.capacity_bits - 3)} (capacity "
                f"{self.capacity_bits} bits less 3 for the backward's split masks; float64 "
                "precision caps it at 40)"
            )
        if not 0 <= self.grad_gain_bits <= self.mask_bits - 8:
            raise HeParamsError(f"grad_gain_bits must be in 0..{self.mask_bits - 8}")
        if not 1 <= self.in_features <= MAX_FEATURES or not 1 <= self.out_features <= MAX_FEATURES:
            raise HeParamsError(f"in/out features must be in 1..{MAX_FEATURES}")
        if not _pow2(self.block_rows) or self.block_rows > self.slots:
            raise HeParamsError(f"block_rows must be a power of two <= {self.slots}")
        if next_pow2(self.out_features) > self.block_rows:
            raise HeParamsError("block_rows must be >= out_features rounded up to a power of two")

    def to_json(self) -> str:
        """Canonical JSON (sorted keys), as carried in the public bundle."""
        d = asdict(self)
        d["coeff_mod_bit_sizes"] = list(self.coeff_mod_bit_sizes)
        return json.dumps(d, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> HeParams:
        """Parse and validate parameters; any defect raises :class:`HeParamsError`."""
        try:
            raw = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise HeParamsError("HE parameters are not JSON") from exc
        if not isinstance(raw, dict) or set(raw) != set(cls.__dataclass_fields__):
            raise HeParamsError("HE parameters have missing or unknown fields")
        bits = raw.get("coeff_mod_bit_sizes")
        if not isinstance(bits, list):
            raise HeParamsError("coeff_mod_bit_sizes must be a list")
        try:
            return cls(**{**raw, "coeff_mod_bit_sizes": tuple(bits)})
        except TypeError as exc:
            raise HeParamsError(f"HE parameters are invalid: {exc}") from exc


def log2_capacity(q0: int, output_scale: float) -> float:
    """Exact headroom in bits for the last prime ``q0`` and the output scale."""
    return math.log2(q0 / 2.0 / output_scale)

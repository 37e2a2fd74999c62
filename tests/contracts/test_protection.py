"""The contract's protection is what the wire carries and what the CKKS kernel accepts."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from contracts import CkksProtection, LabelDefence, PlainProtection, read_contract
from contracts.protection import LabelPrivacy
from services.engine.he.errors import HeParamsError
from services.engine.he.params import HeParams
from services.protocol.messages import CkksSpec, DefenceSpec, LabelDpSpec, ProtectionSpec
from tests.contracts.util import JPY, PCB, STENCIL

CKKS_FIELDS = (
    "poly_modulus_degree",
    "coeff_mod_bit_sizes",
    "input_scale_bits",
    "output_scale_bits",
    "mask_bits",
)


def test_ckks_defaults_are_the_wire_defaults() -> None:
    wire = CkksSpec().model_dump(mode="json")
    assert CkksProtection(scheme="ckks").ckks_wire() == wire
    assert LabelDefence().to_wire() == DefenceSpec().model_dump(mode="json")
    assert set(wire) | {"scheme", "label_defence", "label_privacy"} == set(
        CkksProtection.model_fields
    )
    # label privacy: the contract's fields are the wire's; a contract turns it on by default
    privacy = LabelPrivacy().to_wire()
    assert set(privacy) == set(LabelDpSpec.model_fields)
    assert privacy["mechanism"] == "randomized_response" and LabelDpSpec().mechanism == "none"


def test_kernel_accepts_the_defaults() -> None:
    p = CkksProtection(scheme="ckks")
    params = HeParams(16, 16, 16, **{f: getattr(p, f) for f in CKKS_FIELDS})
    assert params.capacity_bits == p.capacity_bits == 29


PROTECTIONS: list[PlainProtection | CkksProtection] = [
    CkksProtection(scheme="ckks"),
    CkksProtection(
        scheme="ckks",
        poly_modulus_degree=16384,
        coeff_mod_bit_sizes=[60, 40, 40, 60],
        mask_bits=20,
        share_bits=0,
        label_defence=LabelDefence(enabled=False, max_norm=3.0, noise_multiplier=0.0),
    ),
    PlainProtection(scheme="plain"),
    PlainProtection(scheme="plain", label_defence=LabelDefence(max_norm=2.5)),
    *(read_contract(path).protection for path in (PCB, STENCIL, JPY)),
]


@pytest.mark.parametrize("protection", PROTECTIONS)
def test_to_wire_validates_as_the_protection_spec(
    protection: PlainProtection | CkksProtection,
) -> None:
    wire = protection.to_wire()
    spec = ProtectionSpec.model_validate(wire)
    assert spec.mode == protection.scheme
    assert spec.model_dump(mode="json") == wire  # complete, canonical shape
    assert spec.defence == DefenceSpec.model_validate(protection.label_defence.to_wire())
    if isinstance(protection, CkksProtection):
        assert spec.ckks.mask_bits == protection.mask_bits
        assert spec.ckks.coeff_mod_bit_sizes == protection.coeff_mod_bit_sizes
        assert spec.ckks.share_bits == protection.share_bits
    else:
        assert spec.ckks == CkksSpec()


@st.composite
def ckks_fields(draw: st.DrawFn) -> dict[str, Any]:
    """CKKS parameters inside the wire's field bounds, often near the kernel's limits."""
    first = draw(st.integers(20, 60))
    middle = draw(st.lists(st.integers(20, 60), min_size=1, max_size=6))
    special = draw(st.integers(20, 60))
    return {
        "poly_modulus_degree": draw(st.sampled_from([8192, 16384])),
        "coeff_mod_bit_sizes": [first, *middle, special],
        "input_scale_bits": draw(st.integers(20, 60)),
        "output_scale_bits": draw(st.integers(20, 60)),
        "mask_bits": draw(st.integers(8, 50)),
        "share_bits": draw(st.integers(0, 20)),
    }


def _kernel_accepts(fields: dict[str, Any]) -> bool:
    try:
        HeParams(16, 16, 16, **{f: fields[f] for f in CKKS_FIELDS})
    except HeParamsError:
        return False
    return True


def _contract_accepts(fields: dict[str, Any]) -> bool:
    try:
        CkksProtection(scheme="ckks", **fields)
    except ValidationError:
        return False
    return True


@settings(max_examples=400, deadline=None)
@given(ckks_fields())
def test_contract_rules_are_the_kernel_rules(fields: dict[str, Any]) -> None:
    assert _contract_accepts(fields) == _kernel_accepts(fields), fields


@pytest.mark.parametrize(
    "fields",
    [
        {"coeff_mod_bit_sizes": [60, 40, 40, 60]},
        {"poly_modulus_degree": 16384, "coeff_mod_bit_sizes": [60, 50, 50, 50, 60]},
        {"output_scale_bits": 25, "mask_bits": 30},
        {"input_scale_bits": 30, "output_scale_bits": 20},
    ],
)
def test_accepted_variants_build_kernel_parameters(fields: dict[str, Any]) -> None:
    full = {**CkksSpec().model_dump(), **fields}
    assert _contract_accepts(full) and _kernel_accepts(full)

"""Bad contracts are refused, each error naming the field it concerns."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.contracts.util import (
    JPY,
    STENCIL,
    Doc,
    assert_error,
    drop_at,
    errors_of,
    mutated,
    set_at,
)

Case = tuple[Callable[[Doc], object], str, str]


def _label(d: Doc) -> Doc:
    return dict(d["parties"][0])


COLS = "parties.1.feature_schema.columns"
PRICE = "commercial.price_per_prediction"

CASES: dict[str, Case] = {
    # structure
    "wrong version": (set_at("schema_version", 2), "schema_version", "1"),
    "parties not a list": (set_at("parties", "pcb"), "parties", "list"),
    "missing section": (drop_at("commercial"), "commercial", "missing"),
    "unknown top-level field": (set_at("signature", "x"), "signature", "unknown field"),
    "unknown party field": (set_at("parties.1.email", "a@b"), "parties.1.email", "unknown field"),
    "unknown column field": (set_at(f"{COLS}.0.scale", 2), f"{COLS}.0.scale", "unknown field"),
    "unknown protection field": (set_at("protection.key", "k"), "protection.key", "unknown field"),
    "unknown model field": (
        set_at("model.bottom.paste.width", 3),
        "model.bottom.paste.width",
        "unknown",
    ),
    "bad party name": (set_at("parties.1.name", "Paste"), "parties.1.name", "pattern"),
    "bad role": (set_at("parties.1.role", "buyer"), "parties.1.role", "'label' or 'feature'"),
    # parties
    "duplicate party": (
        lambda d: d["parties"].append(dict(d["parties"][1], org="other-org")),
        "parties.2.name",
        "duplicate party name 'paste'",
    ),
    "duplicate org": (set_at("parties.1.org", "lumen-pcb"), "parties.1.org", "already takes part"),
    "two label parties": (
        lambda d: d["parties"].append(dict(_label(d), name="pcb2", org="second-pcb")),
        "parties.2.role",
        "second label party",
    ),
    "no label party": (set_at("parties.0.role", "feature"), "parties", "role 'label'"),
    "no feature party": (lambda d: d["parties"].pop(1), "parties", "role 'feature'"),
    "feature party without key": (
        drop_at("parties.1.feature_schema.key_column"),
        "parties.1.feature_schema.key_column",
        "join key",
    ),
    "label party with key": (
        set_at("parties.0.feature_schema.key_column", "lot"),
        "parties.0.feature_schema.key_column",
        "label party",
    ),
    "feature party without columns": (
        set_at(COLS, []),
        "parties.1.feature_schema.columns",
        "at least",
    ),
    "owner org is a party under another name": (
        set_at("owner.org", "solvia-paste"),
        "owner.name",
        "'paste'",
    ),
    "owner name is a party of another org": (set_at("owner.name", "paste"), "owner.org", "solvia"),
    # feature schemas
    "duplicate column": (
        lambda d: d["parties"][1]["feature_schema"]["columns"].append(
            {"name": "powder_type", "type": "int"}
        ),
        f"{COLS}.13.name",
        "duplicate column",
    ),
    "bad column type": (set_at(f"{COLS}.1.type", "double"), f"{COLS}.1.type", "float"),
    "range reversed": (
        set_at(f"{COLS}.1.range", {"min": 93, "max": 85}),
        f"{COLS}.1.range.max",
        "below",
    ),
    "empty range": (set_at(f"{COLS}.1.range", {}), f"{COLS}.1.range", "min, max"),
    "range on category": (set_at(f"{COLS}.0.range", {"min": 0}), f"{COLS}.0.range", "numeric"),
    "category without categories": (
        drop_at(f"{COLS}.0.categories"),
        f"{COLS}.0.categories",
        "lists",
    ),
    "fill without value": (set_at(f"{COLS}.1.missing", "fill"), f"{COLS}.1.fill_value", "needs"),
    "fill value out of range": (
        set_at(f"{COLS}.12.fill_value", 99),
        f"{COLS}.12.fill_value",
        "outside",
    ),
    "mean of a category": (
        set_at(f"{COLS}.0.missing", "impute_mean"),
        f"{COLS}.0.missing",
        "numeric",
    ),
    "unknown missing policy": (
        set_at(f"{COLS}.1.missing", "ignore"),
        f"{COLS}.1.missing",
        "reject",
    ),
    "violation rate above 1": (
        set_at("parties.1.feature_schema.max_violation_rate", 1.5),
        "parties.1.feature_schema.max_violation_rate",
        "1",
    ),
    "key column is a label-party feature": (
        lambda d: d["parties"][0]["feature_schema"]["columns"].append(
            {"name": "paste_lot_id", "type": "category", "categories": ["a", "b"]}
        ),
        "parties.0.feature_schema.columns.11.name",
        "join key",
    ),
    # task
    "label column is a feature": (
        set_at("task.label.column", "line"),
        "task.label.column",
        "feature",
    ),
    "binary without positive class": (
        drop_at("task.label.positive_class"),
        "task.label.positive_class",
        "positive class",
    ),
    "positive class not a class": (
        set_at("task.label.positive_class", 2),
        "task.label.positive_class",
        "",
    ),
    "unknown task": (set_at("task.type", "ranking"), "task.type", "binary"),
    # model
    "bottom for unknown party": (
        set_at("model.bottom.ghost", {}),
        "model.bottom.ghost",
        "not a party",
    ),
    "no bottom for a feature party": (drop_at("model.bottom.paste"), "model.bottom", "'paste'"),
    # protection
    "unknown scheme": (set_at("protection.scheme", "paillier"), "protection.scheme", "'ckks'"),
    "missing scheme": (drop_at("protection.scheme"), "protection.scheme", "missing"),
    "insecure modulus": (
        set_at("protection.coeff_mod_bit_sizes", [60, 60, 60, 60]),
        "protection.coeff_mod_bit_sizes",
        "128-bit",
    ),
    "special prime not the largest": (
        set_at("protection.coeff_mod_bit_sizes", [60, 40, 50]),
        "protection.coeff_mod_bit_sizes.2",
        "special (last) prime",
    ),
    "too many primes": (
        set_at("protection.coeff_mod_bit_sizes", [30] * 9),
        "protection.coeff_mod_bit_sizes",
        "at most 8",
    ),
    "prime too small": (
        set_at("protection.coeff_mod_bit_sizes", [60, 19, 60]),
        "protection.coeff_mod_bit_sizes.1",
        "20",
    ),
    "input scale above the data modulus": (
        set_at("protection.input_scale_bits", 59),
        "protection.input_scale_bits",
        "at most 58",
    ),
    "plaintext scale too small": (
        set_at("protection.input_scale_bits", 55),
        "protection.input_scale_bits",
        "plaintext scale",
    ),
    "output scale leaves no room in the first prime": (
        set_at("protection.output_scale_bits", 53),
        "protection.output_scale_bits",
        "at most 52",
    ),
    "mask exceeds headroom": (
        set_at("protection.mask_bits", 27),
        "protection.mask_bits",
        "headroom",
    ),
    "mask below the gradient gain": (
        set_at("protection.mask_bits", 15),
        "protection.mask_bits",
        "16..26",
    ),
    "no mask fits": (
        set_at("protection.output_scale_bits", 44),
        "protection.mask_bits",
        "no mask fits",
    ),
    "integer field given a boolean": (
        set_at("protection.share_bits", True),
        "protection.share_bits",
        "integer",
    ),
    "share offset too wide": (
        set_at("protection.share_bits", 21),
        "protection.share_bits",
        "20",
    ),
    "old scale field": (
        set_at("protection.global_scale_bits", 40),
        "protection.global_scale_bits",
        "unknown field",
    ),
    "odd ring degree": (
        set_at("protection.poly_modulus_degree", 5000),
        "protection.poly_modulus_degree",
        "8192",
    ),
    "ring degree the kernel lacks": (
        set_at("protection.poly_modulus_degree", 32768),
        "protection.poly_modulus_degree",
        "16384",
    ),
    "negative noise": (
        set_at("protection.label_defence.noise_multiplier", -1),
        "protection.label_defence.noise_multiplier",
        "0",
    ),
    # money
    "negative price": (set_at(f"{PRICE}.amount", "-0.05"), f"{PRICE}.amount", "negative"),
    "float price": (set_at(f"{PRICE}.amount", 0.05), f"{PRICE}.amount", "not the number"),
    "integer price": (set_at(f"{PRICE}.amount", 1), f"{PRICE}.amount", "not the number"),
    "exponent price": (set_at(f"{PRICE}.amount", "1e-3"), f"{PRICE}.amount", '"0.001"'),
    "price with spaces": (set_at(f"{PRICE}.amount", " 0.05"), f"{PRICE}.amount", "plain decimal"),
    "sub-cent price": (set_at(f"{PRICE}.amount", "0.005"), f"{PRICE}.amount", "EUR allows 2"),
    "unknown currency": (set_at(f"{PRICE}.currency", "XYZ"), f"{PRICE}.currency", "ISO 4217"),
    "lower-case currency": (set_at(f"{PRICE}.currency", "eur"), f"{PRICE}.currency", "'EUR'"),
    # revenue share
    "shares below 100": (
        set_at("commercial.revenue_share.shares.oem", "14.9"),
        "commercial.revenue_share.shares",
        "99.9",
    ),
    "shares above 100": (
        set_at("commercial.revenue_share.shares.oem", "15.000001"),
        "commercial.revenue_share.shares",
        "not exactly 100",
    ),
    "share above 100 percent": (
        set_at("commercial.revenue_share.shares.oem", "100.5"),
        "commercial.revenue_share.shares.oem",
        "at most 100",
    ),
    "float share": (
        set_at("commercial.revenue_share.shares.oem", 15.0),
        "commercial.revenue_share.shares.oem",
        "",
    ),
    "share for a stranger": (
        lambda d: d["commercial"]["revenue_share"]["shares"].update(ghost="0"),
        "commercial.revenue_share.shares.ghost",
        "neither a party nor the owner",
    ),
    "unknown revenue scheme": (
        set_at("commercial.revenue_share.scheme", "equal"),
        "commercial.revenue_share.scheme",
        "'fixed'",
    ),
    # terms
    "validity reversed": (
        set_at("validity.end", "2025-01-01T00:00:00Z"),
        "validity.end",
        "not after start",
    ),
    "naive validity": (
        set_at("validity.start", "2026-01-01T00:00:00"),
        "validity.start",
        "timezone",
    ),
    "deadline after validity": (
        set_at("training.deadline", "2029-01-01T00:00:00Z"),
        "training.deadline",
        "validity period",
    ),
    "zero epochs": (set_at("training.max_epochs", 0), "training.max_epochs", "1"),
    "zero usage cap": (set_at("usage_cap.max_predictions", 0), "usage_cap.max_predictions", "1"),
    "unknown approver": (
        set_at("deployment.approvers", ["pcb", "bank"]),
        "deployment.approvers.1",
        "neither",
    ),
    "approver twice": (
        set_at("deployment.approvers", ["pcb", "pcb"]),
        "deployment.approvers.1",
        "twice",
    ),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_rejected_with_field_path(case: str) -> None:
    fn, loc, fragment = CASES[case]
    assert_error(errors_of(mutated(fn)), loc, fragment)


def test_floors_above_100_rejected() -> None:
    doc = mutated(lambda d: d["commercial"]["revenue_share"]["floors"].update(oem="60"), STENCIL)
    assert_error(errors_of(doc), "commercial.revenue_share.floors", "more than 100")


def test_jpy_price_has_no_minor_unit() -> None:
    doc = mutated(set_at(f"{PRICE}.amount", "8.5"), JPY)
    assert_error(errors_of(doc), f"{PRICE}.amount", "JPY allows 0")


def test_multiclass_needs_classes() -> None:
    doc = mutated(drop_at("task.label.classes"), JPY)
    assert_error(errors_of(doc), "task.label.classes", "lists its classes")


def test_label_party_without_columns_has_no_bottom() -> None:
    doc = mutated(set_at("parties.0.feature_schema.columns", []))
    assert_error(errors_of(doc), "model.bottom.pcb", "no feature columns")


def test_several_errors_are_all_reported() -> None:
    doc = mutated(
        lambda d: (
            set_at(f"{PRICE}.amount", 0.05)(d),
            set_at("parties.1.role", "buyer")(d),
            set_at("nonsense", 1)(d),
        )
    )
    locs = {e["loc"] for e in errors_of(doc)}
    assert {f"{PRICE}.amount", "parties.1.role", "nonsense"} <= locs

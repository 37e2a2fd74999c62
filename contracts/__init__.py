"""The Splice contract language: pydantic models, YAML/JSON loading, canonical digest.

See ``docs/contracts.md`` for the language field by field and ``contracts/examples/`` for
complete contracts.
"""

from contracts.commercial import Commercial, ContributionShares, FixedShares, RevenueShare, UsageCap
from contracts.errors import ContractValidationError, FieldError
from contracts.loader import (
    canonical_json,
    contract_digest,
    load_contract,
    parse_contract,
    read_contract,
    validate_contract,
)
from contracts.money import CURRENCY_MINOR_UNITS, Money, minor_unit_exponent, parse_plain_decimal
from contracts.protection import CkksProtection, LabelDefence, PlainProtection, Protection
from contracts.schema_types import FeatureColumn, FeatureSchema, ValueRange
from contracts.spec import CONTRACT_SCHEMA_VERSION, Contract, Owner, Party
from contracts.terms import Deployment, Label, TaskTerms, TrainingTerms, Validity

__all__ = [
    "CONTRACT_SCHEMA_VERSION",
    "CURRENCY_MINOR_UNITS",
    "CkksProtection",
    "Commercial",
    "Contract",
    "ContractValidationError",
    "ContributionShares",
    "Deployment",
    "FeatureColumn",
    "FeatureSchema",
    "FieldError",
    "FixedShares",
    "Label",
    "LabelDefence",
    "Money",
    "Owner",
    "Party",
    "PlainProtection",
    "Protection",
    "RevenueShare",
    "TaskTerms",
    "TrainingTerms",
    "UsageCap",
    "Validity",
    "ValueRange",
    "canonical_json",
    "contract_digest",
    "load_contract",
    "minor_unit_exponent",
    "parse_contract",
    "parse_plain_decimal",
    "read_contract",
    "validate_contract",
]

"""The contract: who takes part, what they commit to, how the model is trained, paid for and used.

Field-level rules live on each section's model; the rules that tie sections together (one label
party, bottoms for exactly the parties that bring features, shares naming known payees, the
deadline inside the validity period, ...) are checked here, each reported at the field it concerns.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from contracts.base import Frozen
from contracts.commercial import Commercial, FixedShares, UsageCap
from contracts.errors import Issue, Loc, raise_issues
from contracts.limits import AlignmentTerms, MonitoringTerms, ServingTerms
from contracts.protection import CkksProtection, Protection, default_protection
from contracts.schema_types import FeatureSchema
from contracts.terms import Deployment, TaskTerms, TrainingTerms, Validity
from services.protocol.messages import JobModel, ModelSpec, PartyName, Task, nn_model

CONTRACT_SCHEMA_VERSION = 1
MAX_FEATURE_PARTIES = 16

OrgId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")]
"""An organisation's id in the registry."""
OrgName = Annotated[str, Field(min_length=1, max_length=200)]
Role = Literal["label", "feature"]


class Owner(Frozen):
    """The organisation that owns the contract (typically the OEM buying the predictions).

    It may also be a data party: then ``name`` and ``org`` are that party's.
    """

    name: PartyName
    org: OrgId
    org_name: OrgName | None = None


class Party(Frozen):
    """A data party: the label party holds the labels, a feature party extra columns.

    A feature party's schema names its join ``key_column`` and at least one column; the label
    party's schema has no key column (its table carries the feature parties' keys) and may name an
    ``id_column``. These role rules are checked with the rest of the contract.
    """

    name: PartyName
    org: OrgId
    org_name: OrgName | None = None
    role: Role
    feature_schema: FeatureSchema


class Contract(Frozen):
    """A split-learning contract between one label party and one or more feature parties."""

    schema_version: Literal[1]
    title: Annotated[str, Field(min_length=1, max_length=200)]
    description: Annotated[str, Field(max_length=5000)] | None = None
    owner: Owner
    parties: Annotated[list[Party], Field(min_length=1, max_length=MAX_FEATURE_PARTIES + 1)]
    task: TaskTerms
    model: JobModel
    protection: Protection = Field(default_factory=default_protection)
    training: TrainingTerms
    commercial: Commercial
    validity: Validity
    usage_cap: UsageCap | None = None
    deployment: Deployment
    alignment: AlignmentTerms = Field(default_factory=AlignmentTerms)
    serving: ServingTerms = Field(default_factory=ServingTerms)
    monitoring: MonitoringTerms = Field(default_factory=MonitoringTerms)

    @model_validator(mode="after")
    def _cross_section(self) -> Contract:
        issues = [
            *_party_rules(self),
            *_owner_rules(self),
            *_label_rules(self),
            *_model_rules(self),
            *_payee_rules(self),
            *_limit_rules(self),
            *_privacy_rules(self),
        ]
        v, deadline = self.validity, self.training.deadline
        if not v.start < deadline <= v.end:
            issues.append(
                (
                    ("training", "deadline"),
                    f"deadline {deadline.isoformat()} lies outside the validity period "
                    f"({v.start.isoformat()} to {v.end.isoformat()})",
                )
            )
        raise_issues(issues)
        return self

    # --- derived views -----------------------------------------------------------------------

    @property
    def label_party(self) -> Party:
        """The party holding the labels."""
        return next(p for p in self.parties if p.role == "label")

    @property
    def feature_parties(self) -> list[Party]:
        """The parties bringing features, in contract order."""
        return [p for p in self.parties if p.role == "feature"]

    @property
    def payees(self) -> list[str]:
        """Names that may receive revenue or approve: every party, then the owner if not a party."""
        names = [p.name for p in self.parties]
        return names if self.owner.name in names else [*names, self.owner.name]

    def party(self, name: str) -> Party:
        """The party called ``name``; KeyError if there is none."""
        for p in self.parties:
            if p.name == name:
                return p
        raise KeyError(name)

    def model_spec(self) -> ModelSpec:
        """The joint ``nn`` model as the training protocol takes it (bottoms keyed by party
        name); 422 ``family_not_implemented`` for a tree contract."""
        return nn_model(self.model)

    def cut_widths(self) -> dict[str, int | None]:
        """Width of each party's cut layer: the ``out`` of its bottom segment (None for an
        identity bottom: its party's number of encoded features, known once it encodes them)."""
        if not isinstance(self.model, ModelSpec):
            return {}
        return {
            name: seg.out if seg.kind == "mlp" else None for name, seg in self.model.bottom.items()
        }


def _party_rules(c: Contract) -> list[Issue]:
    issues: list[Issue] = []
    names: dict[str, int] = {}
    orgs: dict[str, int] = {}
    labels = [i for i, p in enumerate(c.parties) if p.role == "label"]
    for i, p in enumerate(c.parties):
        if p.name in names:
            issues.append(
                (
                    ("parties", i, "name"),
                    f"duplicate party name {p.name!r} (also parties.{names[p.name]})",
                )
            )
        if p.org in orgs:
            issues.append(
                (
                    ("parties", i, "org"),
                    f"org {p.org!r} already takes part as parties.{orgs[p.org]}",
                )
            )
        names.setdefault(p.name, i)
        orgs.setdefault(p.org, i)
        if i not in labels[1:]:  # a second label party is reported once, at its role
            issues.extend(((("parties", i, *loc), msg) for loc, msg in _role_rules(p)))
    if not labels:
        issues.append((("parties",), "no party has role 'label'; exactly one must"))
    for i in labels[1:]:
        issues.append(
            (
                ("parties", i, "role"),
                f"a second label party; exactly one party has role 'label' (parties.{labels[0]})",
            )
        )
    if labels and len(labels) == len(c.parties):
        issues.append((("parties",), "no party has role 'feature'; at least one must"))
    return issues


def _role_rules(p: Party) -> list[Issue]:
    """What the party's role asks of its feature schema (paths relative to the party)."""
    fs = p.feature_schema
    issues: list[Issue] = []
    if p.role == "feature":
        if fs.key_column is None:
            issues.append(
                (("feature_schema", "key_column"), "a feature party names its join key column")
            )
        if not fs.columns:
            issues.append(
                (("feature_schema", "columns"), "a feature party commits at least one column")
            )
        if fs.id_column is not None:
            issues.append(
                (("feature_schema", "id_column"), "only the label party has an id_column")
            )
    elif fs.key_column is not None:
        issues.append(
            (
                ("feature_schema", "key_column"),
                "the label party has no join key of its own; its table carries each feature "
                "party's key_column",
            )
        )
    return issues


def _owner_rules(c: Contract) -> list[Issue]:
    o = c.owner
    for p in c.parties:
        if p.name == o.name and p.org != o.org:
            return [
                (("owner", "org"), f"owner {o.name!r} is the party of org {p.org!r}, not {o.org!r}")
            ]
        if p.org == o.org and p.name != o.name:
            return [
                (("owner", "name"), f"owner's org {o.org!r} is party {p.name!r}; use that name")
            ]
    return []


def _label_rules(c: Contract) -> list[Issue]:
    labels = [(i, p) for i, p in enumerate(c.parties) if p.role == "label"]
    if len(labels) != 1:
        return []  # reported by _party_rules
    li, lp = labels[0]
    issues: list[Issue] = []
    keys = {p.feature_schema.key_column for p in c.parties if p.role == "feature"}
    column = c.task.label.column
    if column in lp.feature_schema.column_names or column == lp.feature_schema.id_column:
        issues.append(
            (
                ("task", "label", "column"),
                f"{column!r} is also a feature or id column of {lp.name!r}",
            )
        )
    if column in keys:
        issues.append((("task", "label", "column"), f"{column!r} is a feature party's key column"))
    for j, col in enumerate(lp.feature_schema.columns):
        if col.name in keys:
            loc: Loc = ("parties", li, "feature_schema", "columns", j, "name")
            issues.append((loc, f"{col.name!r} is a feature party's join key, not a feature"))
    return issues


def _model_rules(c: Contract) -> list[Issue]:
    issues: list[Issue] = []
    if not isinstance(c.model, ModelSpec):
        return _tree_rules(c)
    by_name = {p.name: p for p in c.parties}
    for name in c.model.bottom:
        if name not in by_name:
            issues.append((("model", "bottom", name), f"{name!r} is not a party"))
        elif not by_name[name].feature_schema.columns:
            issues.append(
                (
                    ("model", "bottom", name),
                    f"party {name!r} commits no feature columns, so it has no bottom",
                )
            )
    for p in c.parties:
        if p.feature_schema.columns and p.name not in c.model.bottom:
            issues.append((("model", "bottom"), f"no bottom segment for party {p.name!r}"))
    if isinstance(c.protection, CkksProtection):
        # The kernel packs a layer into one ciphertext block of at most ``slots`` rows. With
        # today's bounds (widths <= 4096, N >= 8192) this always holds; it guards wider layers.
        slots = c.protection.slots
        for name, seg in c.model.bottom.items():
            if seg.kind == "mlp" and seg.out > slots:
                issues.append(
                    (
                        ("model", "bottom", name, "out"),
                        f"cut width {seg.out} exceeds the {slots} CKKS slots",
                    )
                )
        if c.model.top.interactive > slots:
            issues.append(
                (
                    ("model", "top", "interactive"),
                    f"width {c.model.top.interactive} exceeds the {slots} CKKS slots",
                )
            )
    return issues


def _tree_rules(c: Contract) -> list[Issue]:
    """A tree contract has no segments (each party bins its own columns); the cut-layer label
    defence and label DP are neural-family settings the tree protocol does not apply, so a tree
    contract that asks for them mixes families and is refused rather than silently weakened."""
    issues: list[Issue] = []
    if c.protection.label_defence.enabled:
        issues.append(
            (
                ("protection", "label_defence", "enabled"),
                "the label defence protects a neural cut layer; a gbdt model takes "
                "enabled: false (its gradients travel encrypted, docs/adr/0012)",
            )
        )
    if c.protection.label_privacy.mechanism != "none":
        issues.append(
            (
                ("protection", "label_privacy", "mechanism"),
                "label DP is not implemented for the gbdt family; it takes mechanism 'none'",
            )
        )
    return issues


def _privacy_rules(c: Contract) -> list[Issue]:
    lp = c.protection.label_privacy
    if lp.mechanism == "randomized_response" and c.task.type is Task.REGRESSION:
        return [
            (
                ("protection", "label_privacy", "mechanism"),
                "randomized response needs classes; a regression task takes mechanism 'none'",
            )
        ]
    return []


def _limit_rules(c: Contract) -> list[Issue]:
    names = {p.name for p in c.parties}
    return [
        (("alignment", "max_keys", name), f"{name!r} is not a party")
        for name in c.alignment.max_keys
        if name not in names
    ]


def _payee_rules(c: Contract) -> list[Issue]:
    issues: list[Issue] = []
    payees = set(c.payees)
    rs = c.commercial.revenue_share
    field = "shares" if isinstance(rs, FixedShares) else "floors"
    for name in c.commercial.payees:
        if name not in payees:
            issues.append(
                (
                    ("commercial", "revenue_share", field, name),
                    f"{name!r} is neither a party nor the owner",
                )
            )
    for i, name in enumerate(c.deployment.approvers):
        if name not in payees:
            issues.append(
                (("deployment", "approvers", i), f"{name!r} is neither a party nor the owner")
            )
    return issues


__all__ = ["CONTRACT_SCHEMA_VERSION", "Contract", "OrgId", "Owner", "Party", "Role"]

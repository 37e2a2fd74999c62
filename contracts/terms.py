"""Task and label semantics, training terms, validity and the deployment approval policy."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AwareDatetime, Field, model_validator

from contracts.base import Frozen
from contracts.errors import Issue, raise_issues
from services.protocol.messages import MAX_BATCH_SIZE, MAX_EPOCHS, ColumnName, PartyName, Task

LabelValue = bool | int | Annotated[str, Field(min_length=1, max_length=128)]
"""A value of the label column as it appears in the label party's table."""


class Label(Frozen):
    """The label column of the label party's table and what its values mean.

    ``positive_class`` (binary) is the value that counts as the event (e.g. a defect);
    ``classes`` (multiclass, optional for binary) lists every value; ``unit`` (regression) is the
    unit of the target.
    """

    column: ColumnName
    description: Annotated[str, Field(min_length=1, max_length=1000)]
    positive_class: LabelValue | None = None
    classes: Annotated[list[LabelValue], Field(min_length=2, max_length=1000)] | None = None
    unit: Annotated[str, Field(min_length=1, max_length=32)] | None = None


class TaskTerms(Frozen):
    """What the joint model predicts."""

    type: Task
    label: Label

    @model_validator(mode="after")
    def _semantics(self) -> TaskTerms:
        issues: list[Issue] = []
        lab = self.label
        if lab.classes is not None and len(set(lab.classes)) != len(lab.classes):
            issues.append((("label", "classes"), "classes must be distinct"))
        if self.type is Task.BINARY:
            if lab.positive_class is None:
                issues.append(
                    (("label", "positive_class"), "a binary task names its positive class")
                )
            if lab.classes is not None and len(lab.classes) != 2:
                issues.append((("label", "classes"), "a binary task has exactly two classes"))
            elif lab.classes is not None and lab.positive_class not in lab.classes:
                issues.append((("label", "positive_class"), "positive_class is not one of classes"))
        elif lab.positive_class is not None:
            issues.append(
                (
                    ("label", "positive_class"),
                    f"positive_class is for binary tasks, not {self.type}",
                )
            )
        if self.type is Task.MULTICLASS and lab.classes is None:
            issues.append((("label", "classes"), "a multiclass task lists its classes"))
        if self.type is Task.REGRESSION and lab.classes is not None:
            issues.append((("label", "classes"), "a regression task has no classes"))
        if self.type is not Task.REGRESSION and lab.unit is not None:
            issues.append(
                (("label", "unit"), f"a unit applies to regression targets, not to {self.type}")
            )
        raise_issues(issues)
        return self


class RetrainingPolicy(Frozen):
    """When the label party may open a new job under the contract after deployment (issue 18).

    ``on_alert``: when the monitoring alert is raised (live metric or drift past the contract's
    thresholds); ``cadence_days``: also on a schedule, at most this often. A retraining job is
    an ordinary job of the contract (same terms, same protection, the parties' live tables); its
    model version serves only after the approvals the contract requires, and rollback stays one
    call. Without a policy a retraining request is refused (409 ``retraining_not_allowed``).
    ``epochs``: a retraining job starts from the champion's weights and trains this many epochs
    on the recent window, in batches of ``batch_size`` with the learning rates times
    ``lr_factor`` (docs/adr/0013-retraining-and-alerts.md)."""

    on_alert: bool = True
    cadence_days: Annotated[int, Field(ge=1, le=366, strict=True)] | None = None
    epochs: Annotated[int, Field(ge=1, le=100, strict=True)] = 3
    """Epochs of a retraining job: it warm-starts from the deployed model (the champion) and
    trains on the recent window, the label party's rows added since the champion trained."""
    batch_size: Annotated[int, Field(ge=8, le=MAX_BATCH_SIZE, strict=True)] | None = None
    """The fine-tune's batch size (null: the training's). A recent window is small: at the
    training's batch size an epoch may be a single step; pick one that gives several."""
    lr_factor: Annotated[float, Field(ge=0.01, le=1.0)] = 1.0
    """Every learning rate of a retraining job (segments, top, interactive weights; every party
    alike) is the model's times this factor: a fine-tune starts from trained weights with a
    fresh optimizer state, and the full rate would undo what the champion learnt."""


class TrainingTerms(Frozen):
    """How every job of the contract trains, finished by ``deadline``.

    A job trains at most ``max_epochs`` epochs (1..1000) in batches of ``batch_size`` rows
    (1..65536), stopping early after ``patience`` epochs without a better validation metric; the
    label party's rows are split into ``validation_fraction`` and ``test_fraction`` (by row id)
    and training rows. These are the job's values, not defaults a job may change: a job asking
    for others is refused by every party.
    """

    max_epochs: Annotated[int, Field(ge=1, le=MAX_EPOCHS)]
    batch_size: Annotated[int, Field(ge=1, le=MAX_BATCH_SIZE)] = 256
    patience: Annotated[int, Field(ge=1, le=MAX_EPOCHS)] = 5
    validation_fraction: Annotated[float, Field(gt=0.0, lt=0.5)] = 0.15
    test_fraction: Annotated[float, Field(gt=0.0, lt=0.5)] = 0.15
    deadline: AwareDatetime
    retraining: RetrainingPolicy | None = None


class Validity(Frozen):
    """The contract is in force from ``start`` (inclusive) until ``end`` (exclusive)."""

    start: AwareDatetime
    end: AwareDatetime

    @model_validator(mode="after")
    def _ordered(self) -> Validity:
        if self.end <= self.start:
            raise_issues(
                [
                    (
                        ("end",),
                        f"end {self.end.isoformat()} is not after start {self.start.isoformat()}",
                    )
                ]
            )
        return self

    def contains(self, moment: datetime) -> bool:
        """True when the (timezone-aware) ``moment`` lies in the validity period."""
        return self.start <= moment < self.end


class Deployment(Frozen):
    """Who must sign off before a trained model serves predictions (party or owner names)."""

    approvers: Annotated[list[PartyName], Field(min_length=1, max_length=32)]

    @model_validator(mode="after")
    def _distinct(self) -> Deployment:
        seen: set[str] = set()
        issues: list[Issue] = []
        for i, name in enumerate(self.approvers):
            if name in seen:
                issues.append((("approvers", i), f"{name!r} is listed twice"))
            seen.add(name)
        raise_issues(issues)
        return self

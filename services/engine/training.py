"""Training-loop pieces shared by the split driver and the local (centralized) trainer."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import torch

from services.engine import tasks
from services.engine.averaging import WeightAverage
from services.engine.keyed import JobKey
from services.engine.schedule import PlateauSchedule, PlateauState, apply_scale, base_rates
from services.engine.segments import (
    JointModel,
    TopModel,
    build_bottom,
    build_optimizer,
    cut_width,
    derived_seed,
)
from services.engine.split import TEST, TRAIN, VALIDATION, epoch_batches
from services.engine.tasks import Labels
from services.protocol.messages import EpochMetrics, ModelSpec


@dataclass(slots=True)
class EarlyStopping:
    """Model selection and early stopping on the validation loss (docs/adr/0009).

    An epoch is the new best when its validation loss is lower than the best one by more than
    ``tolerance`` (relative), or within it and its primary metric is higher: a metric that
    saturates (validation AUC 1.0 from epoch 1 on a small set) cannot freeze the choice on an
    early, under-trained epoch, and the metric still decides between equal losses. NaN counts
    as no improvement. Training never stops before ``min_epochs``.
    """

    patience: int
    min_epochs: int = 0
    best: float = -math.inf
    """The primary metric of the chosen epoch."""
    best_epoch: int | None = None
    stale: int = 0
    best_loss: float = math.inf
    tolerance: float = 1e-4

    def update(self, epoch: int, score: float, loss: float = math.nan) -> bool:
        """Record an epoch's metric and loss; True when it is the best so far."""
        if math.isnan(loss):  # no loss known (an old caller): the metric alone decides
            better = not math.isnan(score) and score > self.best
        else:
            margin = self.tolerance * abs(self.best_loss) if math.isfinite(self.best_loss) else 0
            tied = abs(loss - self.best_loss) <= margin
            better = loss < self.best_loss - margin or (
                tied and not math.isnan(score) and score > self.best
            )
        if better:
            self.best, self.best_epoch, self.stale = score, epoch, 0
            self.best_loss = loss if not math.isnan(loss) else self.best_loss
            return True
        self.stale += 1
        return False

    @property
    def should_stop(self) -> bool:
        """True once ``patience`` epochs passed without improvement (never before
        ``min_epochs`` epochs)."""
        seen = (self.best_epoch if self.best_epoch is not None else -1) + 1 + self.stale
        return self.stale >= self.patience and seen >= self.min_epochs

    def choose(self, epoch: int, metrics: Mapping[str, float], primary: str) -> bool:
        """:meth:`update` with an epoch's validation metrics (the loss under ``"loss"``)."""
        return self.update(epoch, metrics.get(primary, math.nan), metrics.get("loss", math.nan))


MIN_STEPS = 300
"""Optimizer steps a job takes before early stopping may end it (see :func:`min_epochs`)."""


def min_epochs(epochs: int, steps_per_epoch: int) -> int:
    """Epochs before early stopping may end a job: enough for :data:`MIN_STEPS` steps (a small
    table gives few steps an epoch, and its validation set is small and noisy), at least 3,
    at most ``epochs``."""
    return min(epochs, max(3, -(-MIN_STEPS // max(steps_per_epoch, 1))))


def split_rows(splits: npt.NDArray[np.int8]) -> tuple[npt.NDArray[np.int64], ...]:
    """Row indices of the train, validation and test splits."""
    return tuple(np.flatnonzero(splits == s).astype(np.int64) for s in (TRAIN, VALIDATION, TEST))


@dataclass(slots=True)
class LocalResult:
    """Outcome of a local training run."""

    test: dict[str, float]
    history: list[EpochMetrics] = field(default_factory=list)
    best_epoch: int | None = None
    rate_changes: list[tuple[int, float]] = field(default_factory=list)
    """``(epoch, scale)`` decisions of a schedule (services/engine/schedule.py)."""
    train_seconds: float = 0.0
    samples_per_second: float = 0.0
    """Training samples per second of time spent in training steps (evaluation excluded)."""


def local_keys(seed: int, parties: Iterable[str], label_party: str | None) -> dict[str, JobKey]:
    """Job keys for a local run with no peer: derived from the public ``seed`` (the label
    party's, or ``"top"``'s, draws the top)."""
    names = [*parties, label_party or TOP_KEY]
    return {p: JobKey.public(seed, "local", p) for p in names}


TOP_KEY = "top"
"""The key name that draws the top of a local run without a label party."""


def build_joint(
    widths: Mapping[str, int],
    spec: ModelSpec,
    out_dim: int,
    keys: Mapping[str, JobKey],
    top_key: str,
    interactive: Mapping[str, npt.NDArray[np.float64]] | None = None,
) -> JointModel:
    """The centralized equivalent of a job over parties with the given input widths.

    ``keys`` holds every party's job key (bottoms are drawn from their owner's key, the top from
    ``keys[top_key]``, the label party's); ``interactive`` overrides parties' initial
    interactive weights (d x m), e.g. with the sum of a split job's initial shares.
    """
    bottoms = {p: build_bottom(w, spec.bottom[p], keys[p], p) for p, w in widths.items()}
    cuts = {p: cut_width(spec.bottom[p], w) for p, w in widths.items()}
    top = TopModel(cuts, spec.top, out_dim, keys[top_key])
    with torch.no_grad():
        for p, w in (interactive or {}).items():
            if p in widths:
                (weight,) = top.interactive[p].parameters()
                weight.copy_(torch.from_numpy(np.asarray(w).T))
    return JointModel(bottoms, top)


def _optimizers(
    model: JointModel, spec: ModelSpec, shared: list[str]
) -> list[torch.optim.Optimizer]:
    """The contract's optimizer, plus SGD for the interactive weights of ``shared`` parties."""
    inter = [p for name in shared for p in model.top.interactive[name].parameters()]
    ids = {id(w) for w in inter}
    rest = [w for w in model.parameters() if id(w) not in ids]
    opts = [build_optimizer(iter(rest), spec.optimizer)]
    if inter:
        opts.append(build_optimizer(iter(inter), spec.interactive_optimizer))
    return opts


def fit_local(
    inputs: Mapping[str, npt.NDArray[np.float32]],
    labels: Labels,
    splits: npt.NDArray[np.int8],
    spec: ModelSpec,
    *,
    epochs: int,
    batch_size: int,
    patience: int,
    seed: int,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
    label_party: str | None = None,
    interactive: Mapping[str, npt.NDArray[np.float64]] | None = None,
    keys: Mapping[str, JobKey] | None = None,
    schedule: PlateauSchedule | None = None,
    ema_decay: float = 0.0,
) -> LocalResult:
    """Train the joint model of ``inputs``' parties in one process; test the best epoch.

    With ``label_party`` set, every other party's interactive weights train with the
    ``interactive_optimizer`` (SGD), as in a split job where they are shared. ``keys`` are the
    parties' job keys (a harness that ran the split job knows them); without them the initial
    weights are drawn from keys derived from ``seed``. ``schedule``: reduce-on-plateau of every
    rate on the validation loss (services/engine/schedule.py; ``LocalResult.rate_changes``).
    ``ema_decay``: validation, selection and test use an exponential moving average of every
    weight (services/engine/averaging.py); 0 is off.
    """
    train, val, test = split_rows(splits)
    feats = {p: torch.from_numpy(np.ascontiguousarray(x)) for p, x in inputs.items()}
    widths = {p: x.shape[1] for p, x in inputs.items()}
    keys = keys if keys is not None else local_keys(seed, inputs, label_party)
    top_key = label_party if label_party is not None else TOP_KEY
    model = build_joint(widths, spec, labels.out_dim, keys, top_key, interactive)
    opts = _optimizers(model, spec, [p for p in inputs if p != label_party] if label_party else [])
    torch.manual_seed(derived_seed(seed, "train"))
    stopper = EarlyStopping(patience, min_epochs(epochs, -(-len(train) // batch_size)))
    plateau = PlateauState(schedule) if schedule is not None else None
    rates = base_rates(opts)
    weights = tasks.class_weights(labels, train)
    average = WeightAverage(model.parameters(), ema_decay) if ema_decay else None
    best_state = {k: v.clone() for k, v in model.state_dict().items()}
    result = LocalResult(test={})
    seen, step_seconds = 0, 0.0
    started = time.perf_counter()
    for epoch in range(epochs):
        t0 = time.perf_counter()
        model.train()
        total, count = 0.0, 0
        for rows in epoch_batches(train, batch_size, seed, epoch):
            s0 = time.perf_counter()
            idx = torch.from_numpy(rows)
            logits = model({p: x.index_select(0, idx) for p, x in feats.items()})
            loss = tasks.loss(labels.task, logits, tasks.target_tensor(labels, rows), weights)
            for opt in opts:
                opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            for opt in opts:
                opt.step()
            if average is not None:
                average.update()
            total += loss.item() * rows.shape[0]
            count += rows.shape[0]
            step_seconds += time.perf_counter() - s0
        seen += count
        with average.applied() if average is not None else nullcontext():
            val_metrics = evaluate(model, feats, labels, val)
            if stopper.choose(epoch, val_metrics, tasks.PRIMARY_METRIC[labels.task]):
                best_state = {k: v.clone() for k, v in model.state_dict().items()}
        metrics = EpochMetrics(
            epoch=epoch,
            train_loss=total / max(count, 1),
            validation=val_metrics,
            seconds=time.perf_counter() - t0,
        )
        result.history.append(metrics)
        if on_epoch is not None:
            on_epoch(metrics)
        if stopper.should_stop:
            break
        if plateau is not None:
            scale = plateau.after_epoch(epoch, val_metrics.get("loss", math.nan))
            if scale is not None:
                apply_scale(opts, rates, scale)
    result.rate_changes = plateau.changes if plateau is not None else []
    result.train_seconds = time.perf_counter() - started
    result.samples_per_second = seen / max(step_seconds, 1e-9)
    model.load_state_dict(best_state)
    result.best_epoch = stopper.best_epoch
    result.test = evaluate(model, feats, labels, test)
    return result


def evaluate(
    model: JointModel,
    feats: Mapping[str, torch.Tensor],
    labels: Labels,
    rows: npt.NDArray[np.int64],
) -> dict[str, float]:
    """Metrics of ``model`` on ``rows``."""
    model.eval()
    with torch.no_grad():
        idx = torch.from_numpy(rows)
        logits = model({p: x.index_select(0, idx) for p, x in feats.items()})
    return tasks.compute_metrics(labels, rows, tasks.predictions(labels.task, logits))

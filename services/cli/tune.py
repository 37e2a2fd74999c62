"""``splice pilot --tune N``: Optuna trials of the joint model's hyperparameters, each one a split
job on the pilot's real party processes, chosen on the validation split.

A trial's score is the validation loss of the epoch its job selected (the label party's own
selection, docs/adr/0009); the test split is never looked at until the chosen trial's test
metrics are reported. Label privacy is randomised response applied once per label table
(services/engine/label_dp.py), so trials retrain on the same randomised labels and spend no
further epsilon; the summary says so.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from services.protocol.messages import (
    OptimizerSpec,
    SegmentSpec,
    TrainingSpec,
    TrainingStatus,
    nn_model,
)

TUNABLE: tuple[str, ...] = (
    "widths", "lr", "interactive_lr", "batch", "epochs", "weight_decay", "dropout",
    "feature_bottom",
)  # fmt: skip
"""What ``--tune-params`` may name."""


class TuneError(ValueError):
    """A tuning argument is wrong; the message says which and why."""


@dataclass(frozen=True, slots=True)
class TuneConfig:
    """How many trials, within how many seconds, over which hyperparameters."""

    trials: int
    budget_seconds: float | None = None
    params: tuple[str, ...] = TUNABLE
    seed: int = 0


def tune_config(
    trials: int, budget_seconds: float | None = None, params: list[str] | None = None, seed: int = 0
) -> TuneConfig:
    """Validate tuning arguments (before anything starts)."""
    if trials < 1:
        raise TuneError(f"--tune needs at least 1 trial, not {trials}")
    if budget_seconds is not None and not (math.isfinite(budget_seconds) and budget_seconds > 0):
        raise TuneError(f"--tune-budget must be a positive number of seconds, not {budget_seconds}")
    chosen = tuple(params) if params else TUNABLE
    unknown = [p for p in chosen if p not in TUNABLE]
    if unknown:
        raise TuneError(f"unknown --tune-params {unknown}: choose from {list(TUNABLE)}")
    return TuneConfig(trials, budget_seconds, chosen, seed)


def suggest(
    trial: Any, base: TrainingSpec, params: tuple[str, ...], train_rows: int
) -> TrainingSpec:
    """The trial's spec: ``base`` with the chosen hyperparameters drawn by ``trial``."""
    model = nn_model(base.model)
    bottoms = dict(model.bottom)
    top = model.top
    opt = model.optimizer
    update: dict[str, Any] = {}
    if "widths" in params:
        width = trial.suggest_categorical("width", [32, 64, 128, 256])
        cut = trial.suggest_categorical("cut", [16, 32, 64])
        inter = trial.suggest_categorical("interactive", [16, 32, 64])
        top_width = trial.suggest_categorical("top", [32, 64, 128])
        bottoms = {
            n: s if s.kind == "identity" else s.model_copy(update={"hidden": [width], "out": cut})
            for n, s in bottoms.items()
        }
        top = top.model_copy(update={"interactive": inter, "hidden": [top_width]})
    if (
        "feature_bottom" in params
        and trial.suggest_categorical("feature_bottom", ["mlp", "identity"]) == "identity"
    ):
        # a feature party's encoded features as they are (docs/adr/0007: it then receives no
        # gradient, so the label defence's noise does not reach a part of the model)
        bottoms = {
            n: s if n == base.party else SegmentSpec(kind="identity") for n, s in bottoms.items()
        }
    if "dropout" in params:
        rate = trial.suggest_float("dropout", 0.0, 0.3)
        bottoms = {
            n: s if s.kind == "identity" else s.model_copy(update={"dropout": rate})
            for n, s in bottoms.items()
        }
        top = top.model_copy(update={"dropout": rate})
    if "lr" in params:
        opt = opt.model_copy(update={"lr": trial.suggest_float("lr", 3e-4, 2e-2, log=True)})
    inter_opt = model.interactive_optimizer
    if "interactive_lr" in params:
        # the feature parties' interactive weights (SGD, shared in ckks): ADR 0009 found their
        # rate is what a converged run needs most (0.8 with momentum 0.9 in the demo)
        rate = trial.suggest_float("interactive_lr", 0.03, 1.0, log=True)
        inter_opt = inter_opt.model_copy(update={"lr": rate})
    if "weight_decay" in params:
        decay = trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)
        opt = OptimizerSpec(name="adamw", lr=opt.lr, weight_decay=decay)
    if "batch" in params:
        update["batch_size"] = trial.suggest_categorical(
            "batch_size", batch_choices(base.batch_size, train_rows)
        )
    if "epochs" in params:
        update["epochs"] = trial.suggest_int("epochs", 10, 100)
    new_model = model.model_copy(
        update={"bottom": bottoms, "top": top, "optimizer": opt, "interactive_optimizer": inter_opt}
    )
    return base.model_copy(update={"model": new_model, **update})


def batch_choices(base: int, train_rows: int) -> list[int]:
    """Batch sizes a trial may take: half to eight times the untuned one, at least 8 steps an
    epoch, at most 2,048. Smaller batches than half the default would multiply a CKKS trial's
    time (its cost is per step, nearly flat in the batch) past any sensible budget."""
    cap = max(min(2048, train_rows // 8), 32)
    sizes = [base * f // 2 for f in (1, 2, 4, 8, 16) if 32 <= base * f // 2 <= cap]
    return sizes or [min(base, cap)]


@dataclass(slots=True)
class TrialResult:
    """One trial: its number, spec, status and validation loss."""

    number: int
    spec: TrainingSpec
    status: TrainingStatus
    loss: float


@dataclass(slots=True)
class Tuning:
    """Every trial run and the best one."""

    trials: list[TrialResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def best(self) -> TrialResult:
        """The trial with the lowest validation loss."""
        return min(self.trials, key=lambda t: t.loss)


def selected_loss(status: TrainingStatus) -> float:
    """The validation loss of the epoch a finished job selected (inf when it failed)."""
    if status.best_epoch is None or not status.history:
        return math.inf
    return float(status.history[status.best_epoch].validation.get("loss", math.inf))


CONVERGED: dict[str, Any] = {
    "width": 128, "cut": 32, "interactive": 32, "top": 64, "lr": 2e-3, "interactive_lr": 0.8,
    "epochs": 60, "dropout": 0.0, "weight_decay": 1e-6, "feature_bottom": "identity",
}  # fmt: skip
"""Trial 2: a larger model trained to convergence, the shape and rates ADR 0009 measured best
on the demo's data (feature parties' identity bottoms, the largest batch on offer): a second
known point before sampling."""


def converged_point(params: tuple[str, ...], batches: list[int]) -> dict[str, Any]:
    """Trial 2's values of the tuned hyperparameters (Optuna's names)."""
    names = {
        "widths": ("width", "cut", "interactive", "top"),
        "lr": ("lr",),
        "interactive_lr": ("interactive_lr",),
        "epochs": ("epochs",),
        "dropout": ("dropout",),
        "weight_decay": ("weight_decay",),
        "feature_bottom": ("feature_bottom",),
    }
    point = {k: CONVERGED[k] for p in params for k in names.get(p, ())}
    if "batch" in params:
        point["batch_size"] = max(batches)
    return point


def too_late(budget: float | None, elapsed: float, durations: list[float]) -> bool:
    """No new trial when a typical one (the median so far) would end past the budget; the
    first trial always runs."""
    if budget is None or not durations:
        return False
    return elapsed + statistics.median(durations) > budget


def run_trials(
    cfg: TuneConfig,
    base: TrainingSpec,
    train_rows: int,
    train: Callable[[TrainingSpec], TrainingStatus],
    report: Callable[[str], None],
) -> Tuning:
    """Run up to ``cfg.trials`` trials (fewer when the budget runs out: a trial starts only
    when a typical trial still fits in it); ``train`` runs one job and returns its final
    status. Trial 1 is the untuned configuration, trial 2 :data:`CONVERGED`, then Optuna's TPE
    (multivariate, a few random trials first: budgets allow tens of trials, not hundreds)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(
        seed=cfg.seed, n_startup_trials=min(10, max(3, cfg.trials // 4)), multivariate=True
    )
    study = optuna.create_study(direction="minimize", sampler=sampler)
    if cfg.trials > 1:
        study.enqueue_trial(
            converged_point(cfg.params, batch_choices(base.batch_size, train_rows)),
            skip_if_exists=True,
        )
    started = time.perf_counter()
    tuning = Tuning()
    durations: list[float] = []
    for n in range(cfg.trials):
        elapsed = time.perf_counter() - started
        if too_late(cfg.budget_seconds, elapsed, durations):
            report(
                f"tuning: time budget of {cfg.budget_seconds:.0f} s: {n} trials in "
                f"{elapsed:.0f} s, a typical trial ({statistics.median(durations):.0f} s) "
                "would not fit"
            )
            break
        # trial 1 is the untuned configuration: tuning never chooses worse than the defaults
        # on validation; the sampler proposes the others
        trial = study.ask() if n > 0 else None
        spec = base if trial is None else suggest(trial, base, cfg.params, train_rows)
        spec = spec.model_copy(update={"job_id": f"{base.job_id}-trial{n}"})
        t0 = time.perf_counter()
        status = train(spec)
        durations.append(time.perf_counter() - t0)
        loss = selected_loss(status)
        if trial is not None:
            if math.isfinite(loss):
                study.tell(trial, loss)
            else:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
        tuning.trials.append(TrialResult(n, spec, status, loss))
        params = "defaults" if trial is None else trial.params
        report(
            f"trial {n + 1}/{cfg.trials}: {params} -> validation loss {loss:.4f} "
            f"({durations[-1]:.0f} s, {status.state.value})"
        )
    tuning.seconds = time.perf_counter() - started
    if not any(math.isfinite(t.loss) for t in tuning.trials):
        raise TuneError("no tuning trial finished")
    return tuning


def contract_training(spec: TrainingSpec) -> dict[str, Any]:
    """The chosen configuration as a contract's ``model`` and ``training`` sections."""
    return {
        "model": spec.model.model_dump(mode="json"),
        "training": {
            "max_epochs": spec.epochs,
            "batch_size": spec.batch_size,
            "patience": spec.patience,
        },
    }


def tuning_summary(tuning: Tuning) -> dict[str, Any]:
    """What ``summary.json`` records of a tuning run."""
    best = tuning.best
    return {
        "trials": [
            {"number": t.number, "validation_loss": t.loss, "state": t.status.state.value,
             "batch_size": t.spec.batch_size, "epochs": t.spec.epochs,
             "model": t.spec.model.model_dump(mode="json")}
            for t in tuning.trials
        ],
        "best_trial": best.number,
        "best_validation_loss": best.loss,
        "seconds": round(tuning.seconds, 1),
        "contract": contract_training(best.spec),
        "label_privacy": "randomised response once per label table: trials spend no further "
        "epsilon (services/engine/label_dp.py)",
    }  # fmt: skip

"""A retraining job's fine-tune settings, applied by every party in lockstep (issue 18).

A retraining job (``TrainingSpec.warm_start``) is the contract's job: its terms, and so its spec
digest, are the contract's. What differs is how it trains from the champion's weights, which the
contract's retraining policy states (``training.retraining``): ``batch_size`` (a recent window
of a thousand rows at the training's batch of 2,048 is one step an epoch) and ``lr_factor``
(a fine-tune continues from a trained model with a fresh optimizer state: the full learning
rate would throw away what the champion learnt). The label party applies them to its own run
(:func:`tuned_spec`) and sends them in each feature party's ``PrepareJob`` (:func:`tuned`);
each feature party derives the same values from the contract it fetched itself and refuses a
job that differs (403 ``contract_mismatch``). The factor scales every learning rate: the
segments' and top's optimizer and the interactive weights' (in ckks mode both shares follow the
same rule, ``W_A`` at the label party and ``W_P`` at the feature party).
"""

from __future__ import annotations

from services.protocol.messages import OptimizerSpec, PrepareJob, TrainingSpec, nn_model


def scaled(opt: OptimizerSpec, factor: float) -> OptimizerSpec:
    """``opt`` with its learning rate times ``factor``."""
    return opt if factor == 1.0 else opt.model_copy(update={"lr": opt.lr * factor})


def tuned(prepare: PrepareJob, batch_size: int | None, lr_factor: float) -> PrepareJob:
    """A feature party's ``PrepareJob`` for a retraining job with the policy's settings."""
    if prepare.warm_start is None:
        return prepare
    return prepare.model_copy(
        update={
            "batch_size": batch_size or prepare.batch_size,
            "optimizer": scaled(prepare.optimizer, lr_factor),
            "interactive_optimizer": scaled(prepare.interactive_optimizer, lr_factor),
        }
    )


def tuned_spec(spec: TrainingSpec) -> TrainingSpec:
    """The spec a retraining job runs with at the label party (``spec`` itself otherwise)."""
    warm = spec.warm_start
    if warm is None or (warm.batch_size is None and warm.lr_factor == 1.0):
        return spec
    model = nn_model(spec.model)
    model = model.model_copy(
        update={
            "optimizer": scaled(model.optimizer, warm.lr_factor),
            "interactive_optimizer": scaled(model.interactive_optimizer, warm.lr_factor),
        }
    )
    return spec.model_copy(
        update={"batch_size": warm.batch_size or spec.batch_size, "model": model}
    )


__all__ = ["scaled", "tuned", "tuned_spec"]

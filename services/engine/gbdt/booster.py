"""The boosting loop at the label party: rounds of trees, row subsampling, early stopping."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from services.engine.gbdt import objectives
from services.engine.gbdt.grower import Source, Tree, grow
from services.engine.gbdt.params import GbdtParams

F64 = npt.NDArray[np.float64]


@dataclass
class Model:
    """The label party's model: base score, trees per round (one per output), and history."""

    params: GbdtParams
    base: F64
    rounds: list[list[Tree]] = field(default_factory=list)
    valid_loss: list[float] = field(default_factory=list)
    best_rounds: int = 0


Replay = Callable[[list[list[Tree]]], tuple[F64, F64]]
"""Per-round raw-score contributions (rounds x rows x outputs) of given rounds for the training
and validation rows (resumption); added round by round, as training adds them."""


def train(
    params: GbdtParams,
    src: Source,
    y: F64,
    y_valid: F64 | None = None,
    seed: int = 0,
    *,
    resume: Model | None = None,
    replay: Replay | None = None,
    on_round: Callable[[Model], None] | None = None,
) -> tuple[Model, F64, F64]:
    """Boost ``params.trees`` rounds (or until early stopping); returns the model and the raw
    scores of training and validation rows at the kept round. With ``resume`` (a model saved
    by ``on_round``, every round kept) it goes on from there: ``replay`` gives the finished
    rounds' scores again. Row samples are drawn per round from ``(seed, round)``, so a resumed
    run draws what an uninterrupted one would."""
    n, nv = y.shape[0], 0 if y_valid is None else y_valid.shape[0]
    k = params.outputs
    base = objectives.init_score(params, y)
    model = Model(params, base) if resume is None else resume
    raw, raw_v = np.tile(base, (n, 1)), np.tile(base, (nv, 1))
    best_loss, since = np.inf, 0
    if resume is not None and resume.rounds:
        if replay is None:
            raise ValueError("resuming needs the finished rounds' scores (replay)")
        done_t, done_v = replay(resume.rounds)
        for r in range(len(resume.rounds)):
            raw += done_t[r]
            raw_v += done_v[r]
        if resume.valid_loss:
            best_loss = min(resume.valid_loss)
            since = len(resume.valid_loss) - 1 - int(np.argmin(resume.valid_loss))
    best_raw, best_raw_v = raw.copy(), raw_v.copy()
    for r in range(len(model.rounds), params.trees):
        if (
            y_valid is not None
            and params.early_stopping_rounds
            and (since >= params.early_stopping_rounds)
        ):
            break
        g, h = objectives.grad_hess(params, y, raw)
        if params.row_subsample < 1.0:
            rng = np.random.default_rng([seed, r])
            sample = np.sort(rng.choice(n, max(2, int(n * params.row_subsample)), replace=False))
        else:
            sample = np.arange(n)
        trees = []
        for c in range(k):
            tree, out, out_v = grow(params, src, r * k + c, g[:, c], h[:, c], sample, n, nv)
            raw[:, c] += out
            raw_v[:, c] += out_v
            trees.append(tree)
        model.rounds.append(trees)
        if y_valid is None or params.early_stopping_rounds == 0:
            model.best_rounds = r + 1
            best_raw, best_raw_v = raw, raw_v
        else:
            loss = objectives.loss(params, y_valid, raw_v)
            model.valid_loss.append(loss)
            if loss < best_loss - 1e-12:
                best_loss, since, model.best_rounds = loss, 0, r + 1
                best_raw, best_raw_v = raw.copy(), raw_v.copy()
            else:
                since += 1
        if on_round is not None:
            on_round(model)
    if resume is not None and y_valid is not None and params.early_stopping_rounds:
        best_raw, best_raw_v = raw, raw_v  # approximate after a resume; the model is exact
    model.rounds = model.rounds[: model.best_rounds]
    return model, best_raw, best_raw_v

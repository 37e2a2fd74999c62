"""The boosting loop at the label party: rounds of trees, row subsampling, early stopping."""

from __future__ import annotations

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


def train(
    params: GbdtParams,
    src: Source,
    y: F64,
    y_valid: F64 | None = None,
    seed: int = 0,
) -> tuple[Model, F64, F64]:
    """Boost ``params.trees`` rounds (or until early stopping); returns the model and the raw
    scores of training and validation rows at the kept round."""
    n, nv = y.shape[0], 0 if y_valid is None else y_valid.shape[0]
    k = params.outputs
    base = objectives.init_score(params, y)
    model = Model(params, base)
    raw, raw_v = np.tile(base, (n, 1)), np.tile(base, (nv, 1))
    best_raw, best_raw_v = raw.copy(), raw_v.copy()
    rng = np.random.default_rng(seed)
    best_loss, since = np.inf, 0
    for r in range(params.trees):
        g, h = objectives.grad_hess(params, y, raw)
        if params.row_subsample < 1.0:
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
            continue
        loss = objectives.loss(params, y_valid, raw_v)
        model.valid_loss.append(loss)
        if loss < best_loss - 1e-12:
            best_loss, since, model.best_rounds = loss, 0, r + 1
            best_raw, best_raw_v = raw.copy(), raw_v.copy()
        else:
            since += 1
            if since >= params.early_stopping_rounds:
                break
    model.rounds = model.rounds[: model.best_rounds]
    return model, best_raw, best_raw_v

"""Screen small-table defaults on the centralized equivalent of the split job (issue 17).

For each training seed (the job's split and initial weights follow it) the pilot's own spec
(``PilotConfig.spec``) is built for a FATE table, then variants of its model and training are
trained with ``train_baseline`` (the engine the parties run; public-seed keys, or with
``--keys`` per-party keys as a pilot draws them, so that ``W`` starts as the sum of two shares).
``--defence`` simulates the default gradient defence on what a feature party's trainable bottom
receives. Reports test and validation figures of every variant, the label party alone under the
same variant, and pooled references (ridge, LightGBM, scikit-learn MLP) on the same rows.
Choose on validation loss, report test.

Variants change the *current* pilot default; ``previous`` rebuilds the tiny default before
docs/adr/0015's addendum (mlp feature bottoms, relu, no decay on the shared weights), against
which most variants named here were first measured (the addendum's tables).

    python benchmarks/screen_tiny.py --keys --defence --seeds 60 --only previous default \
        --out /tmp/screen.json

Weight averaging (services/engine/averaging.py): ``ema<decay>`` trains the default with every
weight averaged (validation, selection and test on the averaged weights),
``ema<decay>+<variant>`` a variant so. A ``@last`` suffix turns early stopping off and tests the
last epoch; ``@huber`` (after ``@last``) trains a regression on the Huber loss.
``--key-draws K`` draws K sets of the parties' keys per seed (paired across variants);
``--refs`` adds each variant's paired gap to pooled LightGBM (``gap_gbdt``, ``gap_se``).
``--no-label-only`` skips the label party alone (its figures then repeat the joint model's).

    python benchmarks/screen_tiny.py --keys --defence --seeds 5 --key-draws 20 --refs \
        --no-label-only --only default ema0.98 ema0.98+lr5e-4_p20e100 --out /tmp/screen.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality import FATE, default_data  # noqa: E402

from services.cli.baselines import LocalData, join_locally, train_baseline  # noqa: E402
from services.cli.defaults import NUMERIC_BINS, TINY  # noqa: E402
from services.cli.pilot import PilotConfig, job_keys_of, parse_party  # noqa: E402
from services.cli.pooled import pooled_gbdt, pooled_matrix, pooled_mlp  # noqa: E402
from services.engine import tasks, training  # noqa: E402
from services.engine.training import EarlyStopping, split_rows  # noqa: E402
from services.protocol.messages import DefenceSpec, TrainingSpec  # noqa: E402

Variant = Callable[[TrainingSpec], TrainingSpec]


class _Defended(torch.autograd.Function):
    """``z = h W^T`` whose ``dL/dh`` goes through the default gradient defence (clip to 4,
    Gaussian noise 1.0 per coordinate at the per-example scale), as a feature party's bottom
    receives it in a split job; ``dL/dW`` stays exact, as the label party computes it."""

    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(h, w)
        return h @ w.T

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = ctx.saved_tensors
        spec = DefenceSpec()
        n = float(g.shape[0])
        per = g * n
        per = per * (spec.max_norm / per.norm(dim=1, keepdim=True).clamp_min(1e-12)).clamp(max=1)
        per = per + torch.randn(per.shape) * (spec.noise_multiplier * spec.max_norm)
        return (per / n) @ w, g.T @ h


def defended_forward(label: str) -> Callable[[Any, Any], torch.Tensor]:
    def forward(self: Any, cuts: Any) -> torch.Tensor:
        z: torch.Tensor = self.bias
        for p in self.order:
            (w,) = self.interactive[p].parameters()
            trains = any(True for _ in self.parent_bottoms[p].parameters())
            if p != label and trains and torch.is_grad_enabled():
                z = z + _Defended.apply(cuts[p], w)
            else:
                z = z + self.interactive[p](cuts[p])
        out: torch.Tensor = self.mlp(z)
        return out

    return forward


def config(data: Path, name: str, seed: int) -> PilotConfig:
    """The pilot configuration ``benchmarks/quality.py`` runs for ``name`` and ``seed``."""
    case = FATE[name]
    hosts = case["features"]
    names = [f"host{i}" if len(hosts) > 1 else "host" for i in range(len(hosts))]
    return PilotConfig(
        label=parse_party(f"guest={data / case['label']}", label=True),
        features=[
            parse_party(f"{n}={data / f}", label=False) for n, f in zip(names, hosts, strict=True)
        ],
        key=case["key"],
        task=case["task"],
        out=Path("/tmp/unused"),
        seed=seed,
    )


def local_of(cfg: PilotConfig, spec: TrainingSpec) -> LocalData:
    return join_locally(
        spec,
        str(cfg.label.path),
        {f.name: str(f.path) for f in cfg.features},
        {f.name: cfg.feature_key(f) for f in cfg.features},
    )


def ridge(local: LocalData) -> float:
    """Ridge regression on the pooled encoded features, alpha chosen on validation (regression
    tasks; NaN for classification)."""
    from sklearn.linear_model import Ridge

    if local.data.labels.task is not tasks.Task.REGRESSION:
        return math.nan

    x, y = pooled_matrix(local), np.asarray(local.data.labels.values, dtype=np.float64)
    train, val, test = split_rows(local.data.splits)
    best = min(
        (float(np.mean((Ridge(alpha=a).fit(x[train], y[train]).predict(x[val]) - y[val]) ** 2)), a)
        for a in (0.1, 1.0, 10.0, 30.0, 100.0, 300.0)
    )
    pred = Ridge(alpha=best[1]).fit(x[train], y[train]).predict(x[test])
    return tasks.compute_metrics(local.data.labels, test, pred)["r2"]


def upd(spec: TrainingSpec, **training: Any) -> TrainingSpec:
    return spec.model_copy(update=training)


def model_upd(spec: TrainingSpec, bottom: dict[str, Any] | None = None,
              top: dict[str, Any] | None = None, opt: dict[str, Any] | None = None,
              **training: Any) -> TrainingSpec:  # fmt: skip
    m = spec.model
    assert m.family == "nn"
    new = m.model_copy(
        update={
            "bottom": {p: s.model_copy(update=bottom or {}) for p, s in m.bottom.items()},
            "top": m.top.model_copy(update=top or {}),
            "optimizer": m.optimizer.model_copy(update=opt or {}),
        }
    )
    return upd(spec, model=new, **training)


def tiny(spec: TrainingSpec, **changes: Any) -> TrainingSpec:
    """``spec`` with the model of the tiny-table defaults changed by ``changes``."""
    defaults = replace(TINY, numeric_bins=NUMERIC_BINS, **changes)
    parties = [spec.party, *(f.name for f in spec.feature_parties)]
    return upd(spec, model=defaults.model(parties, spec.party))


def feature_identity(spec: TrainingSpec, **rest: Any) -> TrainingSpec:
    """Every feature party's bottom ``identity`` (the label party's stays), then ``rest``."""
    spec = model_upd(spec, **rest)
    m = spec.model
    assert m.family == "nn"
    bottom = {
        p: s if p == spec.party else s.model_copy(update={"kind": "identity"})
        for p, s in m.bottom.items()
    }
    return upd(spec, model=m.model_copy(update={"bottom": bottom}))


def with_inter(spec: TrainingSpec, **opt: Any) -> TrainingSpec:
    """``spec`` with its interactive optimizer (SGD of the shared weights) changed."""
    m = spec.model
    assert m.family == "nn"
    inter = m.interactive_optimizer.model_copy(update=opt)
    return upd(spec, model=m.model_copy(update={"interactive_optimizer": inter}))


GELU = {"activation": "gelu"}
TANH = {"activation": "tanh"}


def variants() -> dict[str, Variant]:
    std = {"hidden": [64], "out": 32}
    return {
        "default": lambda s: s,
        "previous": lambda s: tiny(
            s, activation="relu", interactive_decay=0.0, feature_identity=False
        ),
        "identity_gelu": lambda s: tiny(s, interactive_decay=0.0),
        "default_lr2e-3": lambda s: model_upd(s, opt={"lr": 2e-3}),
        "wd0.1": lambda s: model_upd(s, opt={"weight_decay": 0.1}),
        "lr3e-4": lambda s: model_upd(s, opt={"lr": 3e-4}),
        "bins0": lambda s: model_upd(s, bottom={"numeric_bins": 0}),
        "p20e100": lambda s: upd(s, patience=20, epochs=100),
        "b64": lambda s: upd(s, batch_size=64),
        "drop0.5": lambda s: model_upd(s, bottom={"dropout": 0.5}, top={"dropout": 0.5}),
        "w16c8": lambda s: model_upd(s, bottom={"hidden": [16], "out": 8}, top={"hidden": [8]}),
        "wide": lambda s: model_upd(s, bottom=std, top={"hidden": [32]}),
        "wide_wd0.1": lambda s: model_upd(
            s, bottom=std, top={"hidden": [32]}, opt={"weight_decay": 0.1}
        ),
        "lr3e-3": lambda s: model_upd(s, opt={"lr": 3e-3}),
        "lr3e-3_b64": lambda s: model_upd(s, opt={"lr": 3e-3}, batch_size=64),
        "drop0.1": lambda s: model_upd(s, bottom={"dropout": 0.1}, top={"dropout": 0.1}),
        "drop0.2": lambda s: model_upd(s, bottom={"dropout": 0.2}, top={"dropout": 0.2}),
        "bins16": lambda s: model_upd(s, bottom={"numeric_bins": 16}),
        "gelu": lambda s: model_upd(s, bottom={"activation": "gelu"}, top={"activation": "gelu"}),
        "tanh": lambda s: model_upd(s, bottom={"activation": "tanh"}, top={"activation": "tanh"}),
        "bn": lambda s: model_upd(s, bottom={"batch_norm": True}),
        "inter32": lambda s: model_upd(s, top={"interactive": 32}),
        "b64_p20e100": lambda s: upd(s, batch_size=64, patience=20, epochs=100),
        "topdeep": lambda s: model_upd(s, top={"hidden": [16, 16]}),
        "idhost": lambda s: feature_identity(s),
        "idall": lambda s: model_upd(s, bottom={"kind": "identity"}),
        "idhost_inter32": lambda s: feature_identity(s, top={"interactive": 32}),
        "idhost_top32": lambda s: feature_identity(s, top={"interactive": 32, "hidden": [32]}),
        "idhost_b64": lambda s: feature_identity(s, batch_size=64),
        "idhost_wd0.1": lambda s: feature_identity(s, opt={"weight_decay": 0.1}),
        "idhost_gelu": lambda s: feature_identity(s, bottom=GELU, top=GELU),
        "idhost_tanh": lambda s: feature_identity(s, bottom=TANH, top=TANH),
        "idall_gelu": lambda s: model_upd(s, bottom={"kind": "identity"}, top=GELU),
        "idall_tanh": lambda s: model_upd(s, bottom={"kind": "identity"}, top=TANH),
        "idhost_gelu_lr3e-3": lambda s: feature_identity(
            s, bottom=GELU, top=GELU, opt={"lr": 3e-3}
        ),
        "idhost_gelu_top32": lambda s: feature_identity(
            s, bottom=GELU, top={**GELU, "hidden": [32]}
        ),
        "idall_gelu_top32": lambda s: model_upd(
            s, bottom={"kind": "identity"}, top={**GELU, "hidden": [32]}
        ),
        "idhost_gelu_drop0.2": lambda s: feature_identity(
            s, bottom={**GELU, "dropout": 0.2}, top={**GELU, "dropout": 0.2}
        ),
        "idhost_tanh_drop0.2": lambda s: feature_identity(
            s, bottom={**TANH, "dropout": 0.2}, top={**TANH, "dropout": 0.2}
        ),
        "ig_ilr0.3": lambda s: with_inter(feature_identity(s, bottom=GELU, top=GELU), lr=0.3),
        "ig_ilr0.03": lambda s: with_inter(feature_identity(s, bottom=GELU, top=GELU), lr=0.03),
        "ig_iwd0.01": lambda s: with_inter(
            feature_identity(s, bottom=GELU, top=GELU), weight_decay=0.01
        ),
        "ig_lr2e-3": lambda s: feature_identity(s, bottom=GELU, top=GELU, opt={"lr": 2e-3}),
        "ig_bins16": lambda s: feature_identity(s, bottom={**GELU, "numeric_bins": 16}, top=GELU),
        "ig_p20e100": lambda s: feature_identity(s, bottom=GELU, top=GELU, patience=20, epochs=100),
        "ig_w64": lambda s: feature_identity(s, bottom={**GELU, "hidden": [64]}, top=GELU),
        "ig_b64": lambda s: feature_identity(s, bottom=GELU, top=GELU, batch_size=64),
        "ig_iwd0.03": lambda s: with_inter(
            feature_identity(s, bottom=GELU, top=GELU), weight_decay=0.03
        ),
        "ig_iwd0.1": lambda s: with_inter(
            feature_identity(s, bottom=GELU, top=GELU), weight_decay=0.1
        ),
        "ig_iwd0.01_lr2e-3": lambda s: with_inter(
            feature_identity(s, bottom=GELU, top=GELU, opt={"lr": 2e-3}), weight_decay=0.01
        ),
        "ig_iwd0.01_ilr0.03": lambda s: with_inter(
            feature_identity(s, bottom=GELU, top=GELU), weight_decay=0.01, lr=0.03
        ),
        "idhost_drop0.1": lambda s: feature_identity(
            s, bottom={"dropout": 0.1}, top={"dropout": 0.1}
        ),
    }


LAST = "@last"
"""A variant name's suffix: no early stopping, the last epoch's (averaged) weights are tested."""


def ema_of(name: str) -> float:
    """The averaging decay a variant named ``ema<decay>[+<variant>]`` asks for (0: none)."""
    head = name.removesuffix(HUBER).removesuffix(LAST).split("+", 1)[0]
    return float(head[3:]) if head.startswith("ema") else 0.0


class _LastEpoch(EarlyStopping):
    """Every epoch is "the best" (so the last one is tested); never stops early."""

    def update(self, epoch: int, score: float, loss: float = math.nan) -> bool:
        self.best, self.best_epoch, self.stale = score, epoch, 0
        self.best_loss = loss
        return True


HUBER = "@huber"
"""A variant name's suffix: regression trains on the Huber loss (delta 1 on the standardised
target; validation loss and selection stay MSE)."""
_plain_loss = tasks.loss


def _huber_loss(
    task: Any, logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    if task is not tasks.Task.REGRESSION:
        return _plain_loss(task, logits, target, weights)
    return torch.nn.functional.huber_loss(logits.squeeze(1), target.float(), delta=1.0)


def resolve(name: str, known: dict[str, Variant]) -> Variant:
    """``ema<decay>+<variant>``: ``<variant>``'s spec change (with weights averaged)."""
    if name.endswith(HUBER):
        return resolve(name[: -len(HUBER)], known)
    if name.endswith(LAST):
        return resolve(name[: -len(LAST)], known)
    if name in known:
        return known[name]
    if ema_of(name):
        rest = name.split("+", 1)[1] if "+" in name else "default"
        return resolve(rest, known)
    raise SystemExit(f"unknown variant {name!r}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="student")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first", type=int, default=0)
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--refs", action="store_true", help="also pooled ridge, LightGBM, MLP")
    ap.add_argument("--keys", action="store_true", help="draw weights as a pilot does (job keys)")
    ap.add_argument("--defence", action="store_true", help="simulate the gradient defence")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--key-draws", type=int, default=1, help="key draws per seed (paired)")
    ap.add_argument("--no-label-only", action="store_true", help="skip the label party alone")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.defence:
        from services.engine import segments

        segments.TopModel.forward = defended_forward("guest")  # type: ignore[method-assign]
        original = training.JointModel.__init__

        def init(self: Any, bottoms: Any, top: Any) -> None:
            original(self, bottoms, top)
            top.parent_bottoms = dict(bottoms)

        training.JointModel.__init__ = init  # type: ignore[method-assign]
    known = variants() | {
        "drop0.2_p20e100": lambda s: model_upd(
            s, bottom={"dropout": 0.2}, top={"dropout": 0.2}, patience=20, epochs=100
        ),
        "lr5e-4_p20e100": lambda s: model_upd(s, opt={"lr": 5e-4}, patience=20, epochs=100),
        "idall_drop0.2": lambda s: model_upd(s, bottom={"kind": "identity"}, top={"dropout": 0.2}),
        "top32": lambda s: model_upd(s, top={"hidden": [32]}),
        "e40": lambda s: upd(s, epochs=40),
        "e100": lambda s: upd(s, epochs=100),
        "lr5e-4": lambda s: model_upd(s, opt={"lr": 5e-4}),
        "lr5e-4_e100": lambda s: model_upd(s, opt={"lr": 5e-4}, epochs=100),
        "lr5e-4_e150": lambda s: model_upd(s, opt={"lr": 5e-4}, epochs=150),
        "lr3e-4_p30e150": lambda s: model_upd(s, opt={"lr": 3e-4}, patience=30, epochs=150),
        "lr5e-4_p30e150": lambda s: model_upd(s, opt={"lr": 5e-4}, patience=30, epochs=150),
        "lr5e-4_ilr0.05_p20e100": lambda s: with_inter(
            model_upd(s, opt={"lr": 5e-4}, patience=20, epochs=100), lr=0.05
        ),
        "lr5e-4_drop0.2_p20e100": lambda s: model_upd(
            s,
            bottom={"dropout": 0.2},
            top={"dropout": 0.2},
            opt={"lr": 5e-4},
            patience=20,
            epochs=100,
        ),
        "top32_drop0.2": lambda s: model_upd(
            s, bottom={"dropout": 0.2}, top={"hidden": [32], "dropout": 0.2}
        ),
    }
    names = args.only or list(known)
    chosen = {k: resolve(k, known) for k in names}
    rows: list[dict[str, Any]] = []
    refs: dict[int, dict[str, float]] = {}
    started = time.perf_counter()
    draws = [
        (seed, k)
        for seed in range(args.first, args.first + args.seeds)
        for k in range(args.key_draws)
    ]
    for seed, draw in draws:
        cfg = config(default_data(), args.dataset, seed)
        base = cfg.spec({})
        row: dict[str, Any] = {"seed": seed, "draw": draw}
        local0 = local_of(cfg, base)
        metric = tasks.PRIMARY_METRIC[base.task]
        if args.refs:
            if seed not in refs:
                refs[seed] = {
                    "ridge": ridge(local0),
                    "gbdt": pooled_gbdt(local0, threads=1).test[metric],
                    "mlp": pooled_mlp(local0).test[metric],
                }
            row |= refs[seed]
        for name, make in chosen.items():
            spec = make(base)
            local = local_of(cfg, spec)
            parties = [spec.party, *(f.name for f in spec.feature_parties)]
            keys = None
            if args.keys:  # the split job's initial weights: W the sum of two private shares
                tag = f"{seed}" if draw == 0 else f"{seed}-{draw}"
                keys = job_keys_of({p: f"{p}-{tag}" for p in parties}, spec.job_id)
            ema = ema_of(name)
            last = name.removesuffix(HUBER).endswith(LAST)
            training.EarlyStopping = _LastEpoch if last else EarlyStopping  # type: ignore[misc]
            tasks.loss = _huber_loss if name.endswith(HUBER) else _plain_loss  # type: ignore[assignment]
            joint = train_baseline(local, spec, parties, keys=keys, ema_decay=ema)
            alone = (
                joint
                if args.no_label_only
                else train_baseline(local, spec, [spec.party], keys=keys, ema_decay=ema)
            )
            best = joint.history[joint.best_epoch or 0].validation
            row[name] = {
                "test": joint.test[metric],
                "val_loss": best["loss"],
                "label_only": alone.test[metric],
                "epoch": joint.best_epoch,
            }
        rows.append(row)
        Console(stderr=True).print(seed, draw, f"{time.perf_counter() - started:.0f}s")
    summary: dict[str, Any] = {}
    for key in rows[0]:
        if key in ("seed", "draw"):
            continue
        if isinstance(rows[0][key], dict):
            summary[key] = {
                f: round(statistics.fmean(r[key][f] for r in rows), 4)
                for f in ("test", "val_loss", "label_only")
            } | {"test_std": round(statistics.stdev(r[key]["test"] for r in rows), 4)}
            if "gbdt" in rows[0]:
                gaps = [r[key]["test"] - r["gbdt"] for r in rows]
                summary[key]["gap_gbdt"] = round(statistics.fmean(gaps), 4)
                summary[key]["gap_se"] = round(statistics.stdev(gaps) / len(gaps) ** 0.5, 4)
        else:
            summary[key] = round(statistics.fmean(r[key] for r in rows), 4)
    args.out.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()

"""Pilot outputs: the comparison table, ``summary.json`` and ``curves.png``."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from services.cli.pooled import Reference
from services.engine.tasks import PRIMARY_METRIC
from services.engine.training import LocalResult
from services.protocol.messages import EpochMetrics, TrainingSpec, TrainingStatus, nn_model

_REFERENCE_NAMES = {
    "pooled_gbdt": "pooled LightGBM (reference, grid by validation)",
    "pooled_mlp": "pooled scikit-learn MLP (reference)",
}

if TYPE_CHECKING:
    from services.cli.pilot import PilotConfig


def _curve(history: list[EpochMetrics], metric: str) -> list[float]:
    return [h.validation.get(metric, float("nan")) for h in history]


def plot_curves(path: Any, metric: str, runs: dict[str, list[EpochMetrics]]) -> None:
    """Validation metric and training loss per epoch for each run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))

    # centralized wide and pale, joint dashed on top: visible even where the two coincide
    def style(name: str) -> dict[str, Any]:
        if name.startswith("centralized"):
            return {"lw": 4.0, "alpha": 0.45}
        if name.startswith("joint"):
            return {"lw": 1.5, "ls": "--", "marker": "x"}
        return {"lw": 1.5, "marker": "."}

    ordered = sorted(runs.items(), key=lambda kv: kv[0].startswith("joint"))
    for name, hist in ordered:
        epochs = [h.epoch + 1 for h in hist]
        ax1.plot(epochs, _curve(hist, metric), label=name, **style(name))
        ax2.plot(epochs, [h.train_loss for h in hist], label=name, **style(name))
    ax1.set(title=f"validation {metric}", xlabel="epoch", ylabel=metric)
    ax2.set(title="training loss", xlabel="epoch", ylabel="loss")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def beats_majority(test: dict[str, float]) -> bool | None:
    """Whether a multiclass model beats predicting the majority class on the metrics that see
    every class (macro-F1 and balanced accuracy); None for other tasks."""
    if "majority_macro_f1" not in test:
        return None
    chance = 1.0 / max(sum(1 for k in test if k.startswith("auc_class_")), 2)
    return bool(
        test["macro_f1"] > test["majority_macro_f1"] + 0.01
        and test["balanced_accuracy"] > chance + 0.01
    )


def majority_check(test: dict[str, float]) -> list[str]:
    """What a multiclass model's test metrics say against the majority class, loudly when it
    does not beat it."""
    verdict = beats_majority(test)
    if verdict is None:
        return []
    figures = (
        f"macro-F1 {test['macro_f1']:.3f} (majority class {test['majority_macro_f1']:.3f}), "
        f"balanced accuracy {test['balanced_accuracy']:.3f}, accuracy {test['accuracy']:.3f} "
        f"(majority class {test['majority_accuracy']:.3f})"
    )
    if not verdict:
        return [
            "[bold red]WARNING: the joint model does NOT beat predicting the majority class[/]: "
            + figures
            + "; its contributions say nothing about the parties' data"
        ]
    lines = [f"multiclass: beats the majority class: {figures}"]
    if test["accuracy"] < test["majority_accuracy"]:
        lines.append(
            "accuracy is below the majority class's: training weighs the minority classes up "
            "(services/engine/tasks.py class_weights), trading accuracy for macro-F1"
        )
    return lines


def write_outputs(
    cfg: PilotConfig,
    spec: TrainingSpec,
    joint: TrainingStatus,
    label_only: LocalResult,
    centralized: LocalResult,
    console: Console,
    references: dict[str, Reference] | None = None,
) -> dict[str, Any]:
    """Print the comparison, write ``summary.json`` and ``curves.png``; return the summary."""
    metric = PRIMARY_METRIC[spec.task]
    refs = references or {}
    summary: dict[str, Any] = {
        "task": spec.task.value,
        "mode": spec.protection.mode,
        "defence": spec.protection.defence.model_dump(),
        "label_privacy": joint.label_privacy or {"mechanism": "none"},
        "epsilon": joint.label_privacy.get("epsilon"),
        "gradients_to_feature_parties": {
            fp.name: nn_model(spec.model).bottom[fp.name].kind != "identity"
            for fp in spec.feature_parties
        },
        "key_bytes": joint.key_bytes,
        "contributions": joint.contributions,
        "parties": [
            {"name": spec.party, "role": "label"},
            *({"name": fp.name, "role": "feature"} for fp in spec.feature_parties),
        ],
        "rows": joint.rows.get("aligned", 0),
        "row_counts": joint.rows,
        "metric": metric,
        "joint": joint.test[metric],
        "label_only": label_only.test[metric],
        "centralized": centralized.test[metric],
        **{name: ref.test[metric] for name, ref in refs.items()},
        "test_metrics": {
            "joint": joint.test,
            "label_only": label_only.test,
            "centralized": centralized.test,
            **{name: ref.test for name, ref in refs.items()},
        },
        "references": {
            name: {"chosen": ref.chosen, "seconds": round(ref.seconds, 2)}
            for name, ref in refs.items()
        },
        "train_seconds": joint.train_seconds,
        "samples_per_second": joint.samples_per_second,
        "centralized_samples_per_second": centralized.samples_per_second,
        "bytes_sent": joint.bytes_sent + joint.bytes_received,
        "bytes_by_direction": {
            "label_to_features": joint.bytes_sent,
            "features_to_label": joint.bytes_received,
        },
        "epochs": len(joint.history),
        "best_epoch": joint.best_epoch,
        "history": [
            {"epoch": h.epoch, "train_loss": h.train_loss, "validation": h.validation}
            for h in joint.history
        ],
        "batch_size": spec.batch_size,
        "wire_dtype": spec.wire_dtype,
        "columns": {
            spec.party: spec.columns,
            **{fp.name: fp.columns for fp in spec.feature_parties},
        },
        "beats_majority_class": beats_majority(joint.test),
        "spec_digest": joint.spec_digest,
        "model_digest": joint.model_digest,
        **cfg.extra,
    }
    (cfg.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_curves(
        cfg.out / "curves.png",
        metric,
        {
            "joint (split)": joint.history,
            "label party alone": label_only.history,
            "centralized": centralized.history,
        },
    )
    rows = joint.rows
    for fp in spec.feature_parties:
        if f"{fp.name}_shared" in rows:
            console.print(
                f"private alignment (PSI) with {fp.name}: {spec.party} references "
                f"{rows.get('label_keys', 0):,} keys, {fp.name} holds "
                f"{rows[f'{fp.name}_keys']:,}, {rows[f'{fp.name}_shared']:,} shared; no key "
                "crossed the wire"
            )
    table = Table(title=f"test {metric} on {summary['rows']} aligned rows ({spec.task.value})")
    table.add_column("model")
    table.add_column(metric, justify="right")
    table.add_column("vs joint", justify="right")
    for name, value in (
        ("joint (split, over HTTP)", summary["joint"]),
        (f"{spec.party} alone", summary["label_only"]),
        ("centralized (all data in one place)", summary["centralized"]),
        *((_REFERENCE_NAMES[name], summary[name]) for name in refs),
    ):
        table.add_row(name, f"{value:.4f}", f"{value - summary['joint']:+.4f}")
    console.print(table)
    for line in majority_check(joint.test):
        console.print(line)
    privacy = joint.label_privacy
    if privacy:
        console.print(
            f"label privacy: randomised response, epsilon {privacy['epsilon']} per "
            f"{'board' if privacy['unit'] == 'row' else 'key'} spent (delta {privacy['delta']}), "
            "for every message and for the model"
        )
    blind = [
        fp.name
        for fp in spec.feature_parties
        if nn_model(spec.model).bottom[fp.name].kind == "identity"
    ]
    if blind:
        console.print(f"{', '.join(blind)} received no gradient: an identity bottom trains nothing")
    console.print(
        f"split training: {summary['epochs']} epochs, {joint.train_seconds:.1f} s, "
        f"{joint.samples_per_second:,.0f} samples/s, "
        f"{summary['bytes_sent'] / 1e6:.1f} MB on the wire"
    )
    console.print(f"outputs: {cfg.out / 'summary.json'}  {cfg.out / 'curves.png'}")
    return summary

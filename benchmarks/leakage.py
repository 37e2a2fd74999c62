"""A reviewer's label-leakage suite on the demo's data: what each party learns, as measured.

The PCB maker (label party) and the paste supplier (feature party) train the demo's job (the
example contract's model and training: 24 epochs of batches of 2,048, the supplier's bottom
``identity``) in this process, through the party apps (benchmarks/leakage_capture.py). Hooks
record everything the supplier legitimately holds (the job spec, every message of every epoch
after decoding and decrypting it with its own key, its own bottom and share, its features) and
the cut values the PCB maker sees. Then benchmarks/leakage_attacks.py attacks, as the supplier:
per-batch norm / direction / principal scoring, per-lot accumulation over all epochs (sum norm,
sum principal direction), a spectral attack on each lot's per-epoch trajectory, its own state,
model completion with 10 / 50 / 200 known board labels beside the same head on its raw
features, and the replay of every stream it can regenerate; as the PCB maker, reconstruction of
the supplier's features from ``z`` with 5 / 20 / 50 known lots. AUCs are on board labels
(symmetric for label-free attacks) and on lot labels (the per-lot leakage).

Default: ckks with the contract's default protection and with protection off (3 training
seeds each: the acceptance of issue 16), plain mode both ways, and two controls on a trained
``mlp`` bottom in plain mode (protection off: the attacks' power; randomised response with unit
``key``: per-lot leakage under a lot-level budget). ``--frontier`` runs the frontier instead:
randomised response at epsilon 1-8 per board, unit key, and off, for both bottom kinds (plain
mode: ckks delivers the same values to ~1e-5, docs/benchmarks.md), ``--seeds`` seeds each.

    python benchmarks/leakage.py --out benchmarks/results/leakage.json
    python benchmarks/leakage.py --out benchmarks/results/leakage-frontier.json --frontier --seeds 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from leakage_attacks import LABEL_FREE, evaluate  # noqa: E402
from leakage_capture import FEATURE, LABEL, train  # noqa: E402

from contracts.loader import read_contract  # noqa: E402
from services.cli.demo import CONTRACT, DEMO_TRAINING  # noqa: E402
from services.protocol.messages import (  # noqa: E402
    FeaturePartyRef,
    LabelDpSpec,
    ProtectionSpec,
    SegmentSpec,
    Task,
    TrainingSpec,
)
from services.scenario.pcb_paste import ScenarioFiles, generate  # noqa: E402

FRONTIER_EPSILONS = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0)


@dataclass(frozen=True, slots=True)
class Setting:
    """One configuration: protection mode, the supplier's bottom kind, the label protection."""

    mode: str
    bottom: str
    protection: str
    """``default`` (the example contract's), ``off``, or ``rr<eps>[-key]``."""

    @property
    def name(self) -> str:
        return f"{self.mode}/{self.bottom}/{self.protection}"


def protection(setting: Setting) -> ProtectionSpec:
    """The setting's protection: the contract default's, with its mode and label privacy."""
    default = ProtectionSpec.model_validate(read_contract(CONTRACT).protection.to_wire())
    spec = default.model_copy(update={"mode": setting.mode})
    name = setting.protection
    if name == "default":
        return spec
    if name == "off":
        return spec.model_copy(
            update={
                "defence": spec.defence.model_copy(update={"enabled": False}),
                "label_dp": LabelDpSpec(mechanism="none"),
            }
        )
    eps, _, unit = name.removeprefix("rr").partition("-")
    dp = LabelDpSpec(
        mechanism="randomized_response", epsilon=float(eps), unit="key" if unit else "row"
    )
    return spec.model_copy(update={"label_dp": dp})


def training_spec(
    files: ScenarioFiles, setting: Setting, seed: int, args: argparse.Namespace
) -> TrainingSpec:
    model = DEMO_TRAINING.model()
    if setting.bottom == "mlp":
        bottom = {**model.bottom, FEATURE: SegmentSpec(hidden=[64], out=32)}
        model = model.model_copy(update={"bottom": bottom})
    return TrainingSpec(
        job_id="leakage",
        task=Task.BINARY,
        label_column=files.label_binary,
        party=LABEL,
        id_column=files.id_column,
        exclude_columns=[files.label_multiclass],
        feature_parties=[
            FeaturePartyRef(name=FEATURE, url=f"http://{FEATURE}", key_column=files.key_paste)
        ],
        model=model,
        epochs=args.epochs,
        batch_size=args.batch_size,
        patience=args.epochs,
        seed=seed,
        protection=protection(setting),
        alignment="keys",  # handles = key positions: the evaluator maps them to boards
    )


def lots(args: argparse.Namespace) -> int:
    """Paste lots of the scenario (the demo's: one per 50 boards, at least 50)."""
    return int(args.lots or max(50, args.boards // 50))


def plan(args: argparse.Namespace) -> list[tuple[Setting, int]]:
    """(setting, seeds) to run: the acceptance settings, or with ``--frontier`` the frontier
    (epsilon x the supplier's bottom kind, plain mode)."""
    seeds = args.seeds
    out = [
        (Setting("ckks", "identity", "default"), seeds),
        (Setting("ckks", "identity", "off"), seeds),
        (Setting("plain", "identity", "default"), 1),
        (Setting("plain", "identity", "off"), 1),
        (Setting("plain", "mlp", "off"), 1),  # the leaky control
        (Setting("plain", "mlp", "default"), 1),
        (Setting("plain", "mlp", f"rr{args.key_epsilon:g}-key"), 1),
    ]
    if args.frontier:
        out = []
        for bottom in ("identity", "mlp"):
            out.append((Setting("plain", bottom, "off"), seeds))
            for eps in FRONTIER_EPSILONS:
                out.append((Setting("plain", bottom, f"rr{eps:g}"), seeds))
            out.append((Setting("plain", bottom, f"rr{args.key_epsilon:g}-key"), seeds))
    if args.only:
        out = [(s, n) for s, n in out if s.name in args.only.split(",")]
    return out


def _mean(values: list[float]) -> float:
    v = [x for x in values if x is not None and not math.isnan(x)]
    return float(np.mean(v)) if v else math.nan


def aggregate(setting: Setting, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per attack of ``setting``: means over seeds, and each seed's value."""
    keys = ("board_auc", "lot_auc", "raw_auc", "advantage", "r2", "worst_batch")
    rows = []
    for i, first in enumerate(runs[0]["attacks"]):
        per_seed = [r["attacks"][i] for r in runs]
        row = {
            "mode": setting.mode,
            "bottom": setting.bottom,
            "protection": setting.protection,
            **{k: v for k, v in first.items() if k not in keys},
        }
        for k in keys:
            if k in first:
                mean = _mean([p.get(k) for p in per_seed])
                row[k] = None if math.isnan(mean) else mean
                row[f"{k}_per_seed"] = [p.get(k) for p in per_seed]
        rows.append(row)
    return rows


def headline(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The acceptance figures (ckks, default protection vs off, same seeds)."""
    on, off = results["ckks/identity/default"], results["ckks/identity/off"]
    free = [
        r["board_auc"]
        for r in on["attacks"]
        if r["family"] in LABEL_FREE and r["board_auc"] is not None
    ]
    adv = [r["advantage"] for r in on["attacks"] if r["family"] == "completion"]
    replays = [
        r["r2"]
        for s in results.values()
        for r in s["attacks"]
        if r["family"] == "replay" and r["r2"] is not None
    ]
    dp = on["label_privacy"]
    return {
        "max_attack_auc_on": max(free) if free else 0.5,
        "completion_advantage_on": max(adv),
        "replay_r2": max(replays) if replays else 0.0,
        "metric": "test auc of the joint model, true labels (mean over the same seeds)",
        "metric_on": on["metric"],
        "metric_off": off["metric"],
        "metric_drop": off["metric"] - on["metric"],
        "epsilon": dp.get("epsilon"),
        "delta": dp.get("delta"),
        "unit": dp.get("unit"),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="splice-leakage-") as tmp:
        work = Path(tmp)
        files = generate(work / "data", boards=args.boards, lots=lots(args), seed=7)
        for setting, seeds in plan(args):
            runs = []
            for seed in range(args.seed, args.seed + seeds):
                spec = training_spec(files, setting, seed, args)
                run = await train(files, spec, Path(tempfile.mkdtemp(dir=work)))
                runs.append(evaluate(run, args.draws))
                print(_line(setting, runs[-1]), flush=True)
            attacks = aggregate(setting, runs)
            rows += attacks
            results[setting.name] = {
                "metric": _mean([r["test_auc"] for r in runs]),
                "label_privacy": runs[0]["label_privacy"],
                "runs": [{k: v for k, v in r.items() if k != "attacks"} for r in runs],
                "attacks": attacks,
            }
            write(args.out, report(args, results, rows) | {"partial": True})
    return report(args, results, rows)


def write(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")


def report(
    args: argparse.Namespace, results: dict[str, dict[str, Any]], rows: list[dict[str, Any]]
) -> dict[str, Any]:
    """The JSON document: headline figures, parameters, settings and one row per attack."""
    out: dict[str, Any] = {"command": " ".join(["python", *sys.argv])}
    if "ckks/identity/default" in results and "ckks/identity/off" in results:
        out |= headline(results)
    out["parameters"] = {
        "boards": args.boards,
        "lots": lots(args),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "seeds": list(range(args.seed, args.seed + args.seeds)),
        "completion_draws": args.draws,
        "default_protection": protection(Setting("ckks", "identity", "default")).model_dump(),
    }
    out["settings"] = {
        k: {kk: v for kk, v in r.items() if kk != "attacks"} for k, r in results.items()
    }
    out["attacks"] = rows
    out["machine"] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_average": os.getloadavg(),
    }
    return out


def _line(setting: Setting, run: dict[str, Any]) -> str:
    free = [
        r["board_auc"]
        for r in run["attacks"]
        if r["family"] in LABEL_FREE and r.get("board_auc") is not None
    ]
    adv = [r["advantage"] for r in run["attacks"] if r["family"] == "completion"]
    return (
        f"{setting.name:>28} seed {run['seed']}: test auc {run['test_auc']:.4f} | "
        f"max label-free auc {max(free) if free else float('nan'):.3f} | "
        f"max completion advantage {max(adv):+.3f} | {run['train_seconds']} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--boards", type=int, default=20_000)
    parser.add_argument("--lots", type=int, default=None, help="paste lots (default: the demo's)")
    parser.add_argument("--epochs", type=int, default=DEMO_TRAINING.epochs)
    parser.add_argument("--batch-size", type=int, default=DEMO_TRAINING.batch_size)
    parser.add_argument("--seed", type=int, default=1, help="first training seed")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds (ckks settings)")
    parser.add_argument("--draws", type=int, default=20, help="known-label draws (completion)")
    parser.add_argument("--key-epsilon", type=float, default=6.0, help="budget of the unit-key run")
    parser.add_argument("--frontier", action="store_true", help="run the epsilon frontier")
    parser.add_argument("--only", default="", help="comma-separated setting names to run")
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    result = asyncio.run(main_async(args))
    result["seconds"] = round(time.perf_counter() - t0, 1)
    write(args.out, result)
    print(f"wrote {args.out} in {result['seconds']}s")


if __name__ == "__main__":
    main()

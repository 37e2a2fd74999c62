"""Screen changes of the demo's training configuration on the centralized equivalent.

Split training equals centralized training of the same architecture with protection off (the
epoch-by-epoch test in tests/party/test_training.py), so the pilot's own centralized baseline
(``join_locally``, ``train_baseline``) is a fast proxy for the demo's joint model. For each
scenario seed the demo's data (20,000 boards) and its split (training seed 7, the split of
``benchmarks/quality.py``'s pcb-paste rows) stay fixed; each draw is a fresh set of initial
weights (public job keys of the draw), the same for every variant, so the differences are
paired. A variant is a set of ``DemoTraining`` overrides (JSON), with under ``"model"`` a patch of
the model's JSON form (``{"model": {"top": {"hidden": [64, 64]}}}``); the first variant is the
reference.

Choose on validation (the chosen epoch's validation loss and AUC), never on the test rows; the
test AUC is reported beside them.

    nice -n 10 python benchmarks/demo_screen.py --scenario-seeds 7 8 --draws 4 \\
        --variants '{}' '{"dropout": 0.2}' '{"dropout": 0.2, "epochs": 45}' \\
        --out /tmp/screen.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from services.cli.baselines import join_locally, train_baseline
from services.cli.demo import DEMO_TRAINING, DemoTraining
from services.engine.keyed import JobKey
from services.protocol.messages import (
    ModelSpec,
    TrainingSpec,
)
from services.scenario.pcb_paste import ScenarioFiles, generate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from training_options import plain_demo_spec  # noqa: E402

SPLIT_SEED = 7
"""The training seed of benchmarks/quality.py's pcb-paste rows (``seed=7 + 0``): their split."""


def merged(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``patch`` merged in, recursively for mappings."""
    out = dict(base)
    for key, value in patch.items():
        old = out.get(key)
        both = isinstance(old, dict) and isinstance(value, dict)
        out[key] = merged(old, value) if both else value
    return out


def spec_of(files: ScenarioFiles, overrides: dict[str, Any]) -> TrainingSpec:
    """The demo's job on the scenario, protection off, with a variant's overrides:
    ``DemoTraining`` fields, and under ``"model"`` a patch of its ``ModelSpec`` (JSON form)."""
    fields = {k: v for k, v in overrides.items() if k != "model"}
    cfg = DemoTraining(**(DEMO_TRAINING.as_dict() | fields))
    model = ModelSpec.model_validate(
        merged(cfg.model().model_dump(mode="json"), overrides.get("model", {}))
    )
    return plain_demo_spec(files, cfg, job_id="screen", seed=SPLIT_SEED, model=model)


def one_draw(
    files: ScenarioFiles, variants: list[dict[str, Any]], draw: int
) -> dict[str, dict[str, float]]:
    """Every variant from the initial weights of ``draw``: validation and test figures."""
    keys = {p: JobKey.public(draw, "demo-screen", p) for p in ("pcb", "paste")}
    out: dict[str, dict[str, float]] = {}
    local = None
    for overrides in variants:
        spec = spec_of(files, overrides)
        if local is None:  # the encoding does not depend on the variants screened here
            local = join_locally(
                spec,
                str(files.pcb_maker),
                {"paste": str(files.paste_supplier)},
                {"paste": files.key_paste},
            )
        started = time.perf_counter()
        result = train_baseline(local, spec, ["pcb", "paste"], keys=keys)
        best = result.best_epoch if result.best_epoch is not None else -1
        chosen = result.history[best].validation
        out[json.dumps(overrides, sort_keys=True)] = {
            "val_loss": chosen["loss"],
            "val_auc": chosen["auc"],
            "test_auc": result.test["auc"],
            "epochs_run": len(result.history),
            "best_epoch": best,
            "seconds": round(time.perf_counter() - started, 1),
        }
    return out


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per scenario seed and variant: means, and paired differences against the reference."""
    groups: dict[tuple[int, str], list[dict[str, float]]] = defaultdict(list)
    reference: dict[tuple[int, int], dict[str, float]] = {}
    for row in rows:
        for i, (name, figures) in enumerate(row["variants"].items()):
            groups[(row["scenario_seed"], name)].append({**figures, "draw": row["draw"]})
            if i == 0:
                reference[(row["scenario_seed"], row["draw"])] = figures
    table = []
    for (scenario, name), runs in groups.items():
        entry: dict[str, Any] = {"scenario_seed": scenario, "variant": name, "draws": len(runs)}
        for f in ("val_loss", "val_auc", "test_auc", "epochs_run"):
            entry[f] = round(statistics.fmean(r[f] for r in runs), 5)
            diffs = [r[f] - reference[(scenario, int(r["draw"]))][f] for r in runs]
            entry[f"d_{f}"] = round(statistics.fmean(diffs), 5)
        table.append(entry)
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario-seeds", type=int, nargs="+", default=[7, 8])
    ap.add_argument("--draws", type=int, default=4)
    ap.add_argument("--first-draw", type=int, default=0)
    ap.add_argument("--boards", type=int, default=20000)
    ap.add_argument("--variants", nargs="+", default=["{}"], help="DemoTraining overrides (JSON)")
    ap.add_argument("--out", type=Path, required=True, help="JSON lines: draws, then a summary")
    args = ap.parse_args()
    variants = [json.loads(v) for v in args.variants]
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="splice-screen-"))
    rows: list[dict[str, Any]] = []
    with args.out.open("a") as sink:
        for scenario in args.scenario_seeds:
            files = generate(
                work / f"s{scenario}",
                boards=args.boards,
                lots=max(50, args.boards // 50),
                seed=scenario,
            )
            for draw in range(args.first_draw, args.first_draw + args.draws):
                row = {"scenario_seed": scenario, "draw": draw}
                row["variants"] = one_draw(files, variants, draw)
                rows.append(row)
                sink.write(json.dumps(row) + "\n")
                sink.flush()
                print(json.dumps(row), flush=True)
        for entry in summarise(rows):
            sink.write(json.dumps({"summary": entry}) + "\n")
            print(json.dumps(entry), flush=True)


if __name__ == "__main__":
    sys.exit(main())

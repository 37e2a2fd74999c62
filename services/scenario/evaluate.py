"""Measure how much each party's features add: joint vs single-party test AUC of a scenario.

Every model is trained with the project's engine (:func:`services.engine.training.fit_local`) on
the same rows: boards whose paste lot (and stencil) the suppliers list, inner-joined on the keys,
with the same hash-based train/validation/test split. Each party fits its own encoder on its own
table. Run ``python -m services.scenario.evaluate --help``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from services.engine.split import assign_splits
from services.engine.tabular import FeatureEncoder, feature_columns, key_strings, read_table
from services.engine.tasks import Labels, encode_labels
from services.engine.training import fit_local
from services.protocol.messages import ModelSpec, SegmentSpec, Task, TopSpec
from services.scenario.pcb_paste import ScenarioFiles, generate

Matrix = npt.NDArray[np.float32]


def _encode(table: pa.Table, rows: pa.Table, exclude: set[str]) -> Matrix:
    """Fit the party's encoder on its whole table, then encode the joined ``rows``."""
    columns, _ = feature_columns(table, exclude)
    return FeatureEncoder.fit(table, columns).transform(rows)


def _lookup(own: list[str], theirs: list[str]) -> npt.NDArray[np.int64]:
    """Row in ``theirs`` of each key in ``own``, -1 where the other party has no such key."""
    index = {k: i for i, k in enumerate(theirs)}
    return np.array([index.get(k, -1) for k in own], dtype=np.int64)


def party_inputs(
    files: ScenarioFiles, *, seed: int = 0
) -> tuple[dict[str, Matrix], Labels, npt.NDArray[np.int8]]:
    """Inner-joined, encoded inputs of each party ("pcb", "paste", "stencil"), labels, splits."""
    pcb = read_table(files.pcb_maker)
    suppliers = {"paste": (read_table(files.paste_supplier), files.key_paste)}
    if files.stencil_supplier is not None and files.key_stencil is not None:
        suppliers["stencil"] = (read_table(files.stencil_supplier), files.key_stencil)
    found = {
        p: _lookup(key_strings(pcb, key), key_strings(t, key)) for p, (t, key) in suppliers.items()
    }
    keep = np.flatnonzero(np.all([f >= 0 for f in found.values()], axis=0))
    rows = pcb.take(pa.array(keep))
    special = {files.id_column, files.label_binary, files.label_multiclass}
    inputs = {"pcb": _encode(pcb, rows, special | {key for _, key in suppliers.values()})}
    for p, (table, key) in suppliers.items():
        inputs[p] = _encode(table, table.take(pa.array(found[p][keep])), {key})
    labels = encode_labels(rows, files.label_binary, Task.BINARY)
    splits = assign_splits(key_strings(rows, files.id_column), seed, 0.15, 0.15)
    return inputs, labels, splits


def auc_of(
    inputs: dict[str, Matrix],
    labels: Labels,
    splits: npt.NDArray[np.int8],
    parties: Sequence[str],
    *,
    seed: int = 0,
    epochs: int = 40,
) -> float:
    """Test AUC of the engine's joint model over ``parties``' inputs only."""
    spec = ModelSpec(
        bottom={p: SegmentSpec(hidden=[64], out=32) for p in parties},
        top=TopSpec(interactive=16, hidden=[32]),
    )
    chosen = {p: inputs[p] for p in parties}
    result = fit_local(
        chosen, labels, splits, spec, epochs=epochs, batch_size=256, patience=6, seed=seed
    )
    return float(result.test["auc"])


def measure(
    files: ScenarioFiles, *, seeds: Sequence[int] = (0,), epochs: int = 40
) -> dict[str, float]:
    """Mean test AUC over training ``seeds`` of the joint model and of each party alone.

    With a stencil supplier, also of the PCB maker and paste supplier together ("pcb_paste").
    """
    combos: dict[str, list[str]] = {}
    total: dict[str, float] = {}
    for seed in seeds:
        inputs, labels, splits = party_inputs(files, seed=seed)
        combos = {"joint": list(inputs), "pcb_only": ["pcb"], "paste_only": ["paste"]}
        if "stencil" in inputs:
            combos |= {"pcb_paste": ["pcb", "paste"], "stencil_only": ["stencil"]}
        for name, parties in combos.items():
            auc = auc_of(inputs, labels, splits, parties, seed=seed, epochs=epochs)
            total[name] = total.get(name, 0.0) + auc
    return {name: total[name] / len(seeds) for name in combos}


def main(argv: Sequence[str] | None = None) -> None:
    """Generate a scenario into a temporary directory and print its AUCs as JSON."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--boards", type=int, default=20000)
    ap.add_argument("--lots", type=int, default=400)
    ap.add_argument("--seed", type=int, default=7, help="scenario seed")
    ap.add_argument("--train-seeds", type=int, nargs="+", default=[0], help="split/init seeds")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--third-party", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        files = generate(
            Path(tmp),
            boards=args.boards,
            lots=args.lots,
            seed=args.seed,
            third_party=args.third_party,
        )
        generated = time.perf_counter() - t0
        aucs = measure(files, seeds=args.train_seeds, epochs=args.epochs)
    report = {"generate_seconds": round(generated, 3)} | {k: round(v, 4) for k, v in aucs.items()}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

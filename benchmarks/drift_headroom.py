"""Does the demo's drift change what a trained model gets wrong? (issue 18, ADR 0013 section 4)

A pooled LightGBM proxy (no split learning: it only asks how much a fine-tune could gain) is
trained on the demo's training boards (``generate(seed=7)``), then scored on the newest third of
the later batch (``services.scenario.live.later_batch``, 1,500 boards) under each drift, and
again after a fine-tune: 60 more trees on the older two thirds (never on the judged rows).

    .venv/bin/python benchmarks/drift_headroom.py --out benchmarks/results/drift_headroom.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from sklearn.metrics import roc_auc_score

from services.scenario.live import later_batch
from services.scenario.pcb_paste import ScenarioFiles, generate

DRIFTS: tuple[tuple[str | None, float], ...] = (
    (None, 0.0),
    ("squeegee_pressure_n_mm", 2.0),
    ("reflow_peak_temp_c", -2.0),
)


def frame(files: ScenarioFiles, boards: Path, lots: Path) -> tuple[npt.NDArray[Any], Any]:
    """Boards joined with their lots: numeric features (strings as codes) and the label."""
    df = pacsv.read_csv(boards).join(pacsv.read_csv(lots), files.key_paste).combine_chunks()
    skip = {files.label_binary, files.label_multiclass, files.id_column, files.key_paste}
    cols = []
    for name in sorted(set(df.column_names) - skip):
        c = df.column(name)
        if pa.types.is_string(c.type):
            c = pc.dictionary_encode(c).combine_chunks().indices
        cols.append(np.asarray(pc.cast(c, pa.float64()).to_numpy(zero_copy_only=False)))
    y = np.asarray(df.column(files.label_binary).to_numpy(zero_copy_only=False)).astype(int)
    return np.column_stack(cols), y


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--boards", type=int, default=20000)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/drift_headroom.json"))
    args = parser.parse_args()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files = generate(work / "data", boards=args.boards, lots=max(50, args.boards // 50), seed=7)
        x, y = frame(files, files.pcb_maker, files.paste_supplier)
        params: dict[str, Any] = {"learning_rate": 0.05, "verbose": -1, "random_state": 0}
        champion = lgb.LGBMClassifier(n_estimators=200, num_leaves=15, **params).fit(x, y)
        for drift, shift in DRIFTS:
            batch = later_batch(
                work / f"later-{drift}", files, lots=30, boards=1500, drift=drift, shift=shift
            )
            xl, yl = frame(files, batch.boards, batch.lots)
            cut = 2 * len(yl) // 3
            tuned = lgb.LGBMClassifier(n_estimators=60, num_leaves=7, **params).fit(
                xl[:cut], yl[:cut], init_model=champion.booster_
            )
            row = {
                "drift": drift,
                "shift_sd": shift,
                "train_rows": cut,
                "judged_rows": len(yl) - cut,
                "champion_auc": round(
                    float(roc_auc_score(yl[cut:], champion.predict_proba(xl[cut:])[:, 1])), 4
                ),
                "fine_tuned_auc": round(
                    float(roc_auc_score(yl[cut:], tuned.predict_proba(xl[cut:])[:, 1])), 4
                ),
            }
            print(row)
            results.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"boards": args.boards, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()

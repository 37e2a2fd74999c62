"""Small generated vertical datasets for the core tests (no files from outside the repo)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv


@dataclass(frozen=True)
class Vertical:
    """A label table and feature tables joined by ``lot`` (many rows per lot) or ``part``."""

    label: Path
    features: dict[str, Path]
    keys: dict[str, str]


def make_vertical(
    folder: Path, *, rows: int = 2000, lots: int = 150, seed: int = 0, parties: int = 1
) -> Vertical:
    """A binary task whose signal needs the label party's and every feature party's columns.

    Keys repeat (many label rows reference one lot), some lots are unknown to the feature party,
    some feature rows are never referenced, and a text column and missing values are included.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    own = rng.normal(size=(rows, 3))
    logit = own[:, 0] * 0.8
    columns: dict[str, object] = {"row_id": [f"R{i:06d}" for i in range(rows)]}
    features: dict[str, Path] = {}
    keys: dict[str, str] = {}
    for p in range(parties):
        name = f"f{p}"
        key = "lot" if p == 0 else f"part{p}"
        n_items = lots + p * 17
        item_x = rng.normal(size=(n_items + 20, 4))
        of_row = rng.integers(0, n_items, rows)
        logit = logit + 1.5 * item_x[of_row, 0] * own[:, 1] + item_x[of_row, 1 + p % 3]
        # rows that reference an item the feature party does not hold
        ids = np.array([f"{key.upper()}-{i:05d}" for i in range(n_items + 20)])
        missing = rng.random(rows) < 0.03
        ref = np.where(missing, np.char.add("GONE-", of_row.astype(str)), ids[of_row])
        columns[key] = ref.tolist()
        cols: dict[str, object] = {key: ids.tolist()}
        for j in range(4):
            col = item_x[:, j].copy()
            if j == 3:
                col[rng.random(col.shape[0]) < 0.05] = np.nan
            cols[f"x{j}"] = col
        cols["grade"] = rng.choice(["A", "B", "C"], size=n_items + 20).tolist()
        path = folder / f"{name}.csv"
        pacsv.write_csv(pa.table(cols), path)
        features[name] = path
        keys[name] = key
    columns |= {"a": own[:, 0], "b": own[:, 1], "c": own[:, 2]}
    columns["line"] = rng.choice(["L1", "L2"], size=rows).tolist()
    y = (logit + rng.normal(scale=0.5, size=rows) > 0).astype(np.int64)
    columns["y"] = y
    label = folder / "label.csv"
    pacsv.write_csv(pa.table(columns), label)
    return Vertical(label, features, keys)

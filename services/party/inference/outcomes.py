"""Served predictions and their ground-truth outcomes at the label party, and the live metric.

Every predicted row is kept (SQLite in the party's data directory) under its *prediction id*,
``<event_id>:<row>`` (the usage event of the answer and the row's position in it), with the
model version that made it, its score and, when the request named them, the caller's own row
id (a board id). Outcomes arrive later, by prediction id or row id: a batch is checked whole
(unknown prediction, a row named twice, an outcome contradicting the one recorded, a value that
is not a class of the model), and one bad row refuses the batch (422 ``outcomes_refused``
listing each), nothing stored; an outcome equal to the recorded one is accepted again
(idempotent). The live metric of each model version is computed over its latest outcomes:
AUC, accuracy and calibration (binary), accuracy (multiclass), R² and MAE (regression).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import r2_score, roc_auc_score

from services.party.sqlite import open_store
from services.protocol.errors import Conflict, ErrorCode, Unprocessable
from services.protocol.messages import Outcome, Prediction, Task

STORE_FILE = "outcomes.sqlite"
_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS predictions (prediction_id TEXT PRIMARY KEY, contract_id TEXT "
    "NOT NULL, model_version INTEGER NOT NULL, row_id TEXT, served_at REAL NOT NULL, score REAL, "
    "label TEXT, outcome TEXT, outcome_at REAL)",
    "CREATE INDEX IF NOT EXISTS predictions_row ON predictions (contract_id, row_id)",
    "CREATE INDEX IF NOT EXISTS predictions_outcome ON predictions (contract_id, model_version, "
    "outcome_at)",
    "CREATE TABLE IF NOT EXISTS shadow_rows (contract_id TEXT NOT NULL, job_id TEXT NOT NULL, "
    "rows INTEGER NOT NULL, PRIMARY KEY (contract_id, job_id))",
]
_SHOWN = 50


@dataclass(frozen=True, slots=True)
class Recorded:
    """What a batch of outcomes did."""

    recorded: int
    unchanged: int


class OutcomeStore:
    """Served predictions and outcomes, by contract."""

    def __init__(self, path: Path) -> None:
        self._db = open_store(path, _SCHEMA)
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def served(
        self,
        contract_id: str,
        model_version: int,
        event_id: str,
        predictions: Sequence[Prediction],
        row_ids: Sequence[str] | None,
    ) -> None:
        """Keep the predicted rows of one answer."""
        now = time.time()
        rows = [
            (
                f"{event_id}:{i}",
                contract_id,
                model_version,
                None if row_ids is None else row_ids[i],
                now,
                p.probability if p.probability is not None else p.value,
                p.label,
            )
            for i, p in enumerate(predictions)
            if p.status == "predicted"
        ]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT OR IGNORE INTO predictions (prediction_id, contract_id, model_version,"
                    " row_id, served_at, score, label) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def record(
        self, contract_id: str, outcomes: Sequence[Outcome], classes: list[str] | None
    ) -> Recorded:
        """Store a batch of outcomes, all or none (:class:`Unprocessable` naming bad rows)."""
        problems: dict[int, str] = {}
        resolved: list[tuple[int, str, str]] = []
        seen: dict[str, int] = {}
        with self._lock:
            for i, item in enumerate(outcomes):
                value = _value(item.outcome, classes)
                if value is None:
                    want = "one of " + ", ".join(classes) if classes else "a number"
                    problems[i] = f"the outcome is not {want}"
                    continue
                found = self._find(contract_id, item)
                if found is None:
                    problems[i] = "no served prediction has this id under the contract"
                    continue
                pid, stored = found
                if pid in seen:
                    problems[i] = f"names the prediction of row {seen[pid]} again"
                    continue
                seen[pid] = i
                if stored is not None and stored != value:
                    problems[i] = f"contradicts the outcome recorded before ({stored})"
                    continue
                resolved.append((i, pid, value if stored is None else ""))
            if problems:
                raise Unprocessable(
                    f"{len(problems)} of {len(outcomes)} outcome(s) are refused; none is stored",
                    code=ErrorCode.OUTCOMES_REFUSED,
                    detail={
                        "refused": len(problems),
                        "problems": [
                            {"row": i, "reason": r} for i, r in sorted(problems.items())[:_SHOWN]
                        ],
                    },
                )
            fresh = [(v, time.time(), pid) for _, pid, v in resolved if v]
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "UPDATE predictions SET outcome=?, outcome_at=? WHERE prediction_id=?", fresh
                )
                self._db.execute("COMMIT")
            except sqlite3.Error:
                self._db.execute("ROLLBACK")
                raise
        return Recorded(len(fresh), len(resolved) - len(fresh))

    def _find(self, contract_id: str, item: Outcome) -> tuple[str, str | None] | None:
        if item.prediction_id is not None:
            row = self._db.execute(
                "SELECT prediction_id, outcome FROM predictions WHERE prediction_id=? AND "
                "contract_id=?",
                (item.prediction_id, contract_id),
            ).fetchone()
        else:
            row = self._db.execute(
                "SELECT prediction_id, outcome FROM predictions WHERE contract_id=? AND row_id=? "
                "ORDER BY served_at DESC LIMIT 1",
                (contract_id, item.row_id),
            ).fetchone()
        return None if row is None else (str(row[0]), row[1])

    def quality(
        self, contract_id: str, task: Task, window: int, classes: list[str] | None
    ) -> list[dict[str, Any]]:
        """Per model version (ascending): the metric over its latest ``window`` outcomes."""
        with self._lock:
            versions = [
                int(v)
                for (v,) in self._db.execute(
                    "SELECT DISTINCT model_version FROM predictions WHERE contract_id=? "
                    "ORDER BY model_version",
                    (contract_id,),
                )
            ]
            out = []
            for version in versions:
                rows = self._db.execute(
                    "SELECT score, label, outcome FROM predictions WHERE contract_id=? AND "
                    "model_version=? AND outcome IS NOT NULL ORDER BY outcome_at DESC LIMIT ?",
                    (contract_id, version, window),
                ).fetchall()
                (served,) = self._db.execute(
                    "SELECT COUNT(*) FROM predictions WHERE contract_id=? AND model_version=?",
                    (contract_id, version),
                ).fetchone()
                out.append(
                    {"model_version": version, "served": int(served), **metric(task, rows, classes)}
                )
        return out

    def outcomes_of(self, contract_id: str, row_ids: Sequence[str]) -> dict[str, str]:
        """The recorded outcome of each of ``row_ids`` that has one (its latest)."""
        found: dict[str, str] = {}
        with self._lock:
            for start in range(0, len(row_ids), 500):
                chunk = list(row_ids[start : start + 500])
                marks = ",".join("?" * len(chunk))
                for row_id, outcome in self._db.execute(
                    f"SELECT row_id, outcome FROM predictions WHERE contract_id=? AND row_id IN "
                    f"({marks}) AND outcome IS NOT NULL ORDER BY outcome_at",
                    (contract_id, *chunk),
                ):
                    found[str(row_id)] = str(outcome)
        return found

    def reserve_shadow(self, contract_id: str, job_id: str, rows: int, cap: int) -> int:
        """Count ``rows`` more shadow-scored rows of challenger ``job_id``; the total, or 409
        ``shadow_limit_reached`` (nothing counted) if it would pass ``cap``."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                found = self._db.execute(
                    "SELECT rows FROM shadow_rows WHERE contract_id=? AND job_id=?",
                    (contract_id, job_id),
                ).fetchone()
                used = 0 if found is None else int(found[0])
                if used + rows > cap:
                    raise Conflict(
                        f"challenger {job_id} has been shadow-scored on {used} rows; {rows} more "
                        f"would pass the cap of {cap} rows per challenger",
                        code=ErrorCode.SHADOW_LIMIT_REACHED,
                        detail={"job_id": job_id, "used": used, "rows": rows, "cap": cap},
                    )
                self._db.execute(
                    "INSERT INTO shadow_rows (contract_id, job_id, rows) VALUES (?, ?, ?) "
                    "ON CONFLICT (contract_id, job_id) DO UPDATE SET rows = rows + excluded.rows",
                    (contract_id, job_id, rows),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return used + rows


def _value(raw: str | float | bool, classes: list[str] | None) -> str | None:
    """The outcome as stored: a class name, or a finite number as text (regression)."""
    if classes is not None:
        names = [str(raw)]
        if isinstance(raw, bool):
            names.insert(0, str(int(raw)))
        elif isinstance(raw, float) and raw.is_integer():
            names.insert(0, str(int(raw)))
        return next((n for n in names if n in classes), None)
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not np.isfinite(raw):
        return None
    return repr(float(raw))


def metric(
    task: Task, rows: Sequence[tuple[Any, ...]], classes: list[str] | None = None
) -> dict[str, Any]:
    """The live metric of ``(score, label, outcome)`` rows."""
    n = len(rows)
    out: dict[str, Any] = {"outcomes": n}
    if n == 0:
        return out
    if task is Task.REGRESSION:
        y = np.array([float(r[2]) for r in rows])
        p = np.array([float(r[0]) for r in rows])
        out["mae"] = round(float(np.mean(np.abs(y - p))), 6)
        out["r2"] = round(float(r2_score(y, p)), 4) if n > 1 else None
        out["metric"], out["value"] = "r2", out["r2"]
        return out
    correct = np.array([r[1] == r[2] for r in rows])
    out["accuracy"] = round(float(correct.mean()), 4)
    out["metric"], out["value"] = "accuracy", out["accuracy"]
    if task is Task.BINARY and classes is not None and len(classes) == 2:
        scores = np.array([float(r[0]) for r in rows])
        y = np.array([r[2] == classes[1] for r in rows])  # label = classes[int(p >= 0.5)]
        if 0 < y.sum() < n:
            out["auc"] = round(float(roc_auc_score(y, scores)), 4)
            out["metric"], out["value"] = "auc", out["auc"]
        out["calibration"] = {
            "mean_predicted": round(float(scores.mean()), 4),
            "observed_rate": round(float(y.mean()), 4),
        }
    return out


__all__ = ["STORE_FILE", "OutcomeStore", "Recorded", "metric"]

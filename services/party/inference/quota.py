"""How many distinct join keys each caller has named in prediction requests this period.

A prediction request names, per feature party, a join key (a paste lot). Whether the feature
party holds that key is private: answering it for free would be a membership test of the
intersection. So every key a caller names counts, predicted or not, once per period, against the
contract's ``serving.max_keys_per_caller``; a request that would pass the limit is refused
before any work (429 ``key_limit_reached``, ``Retry-After`` until the period ends) and nothing
of it is recorded. The counts are durable (SQLite in the party's data directory), so a restart
does not reset them; keys are kept as SHA-256 digests of (contract, party, key).
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from services.party.sqlite import open_store
from services.protocol.errors import ErrorCode, RateLimited

Period = Literal["day", "month"]

_SCHEMA = """CREATE TABLE IF NOT EXISTS named_keys (
    contract_id TEXT NOT NULL,
    caller_org TEXT NOT NULL,
    period TEXT NOT NULL,
    digest BLOB NOT NULL,
    PRIMARY KEY (contract_id, caller_org, period, digest)
) WITHOUT ROWID"""


@dataclass(frozen=True, slots=True)
class KeyAllowance:
    """A caller's allowance in the current period."""

    used: int
    limit: int
    period: str
    resets_at: datetime


def period_of(now: datetime, period: Period) -> tuple[str, datetime]:
    """The label of the period holding ``now`` (UTC) and the moment it ends."""
    now = now.astimezone(UTC)
    if period == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start.strftime("%Y-%m-%d"), start + timedelta(days=1)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return start.strftime("%Y-%m"), end


def key_digests(contract_id: str, keys: Iterable[tuple[str, str]]) -> set[bytes]:
    """SHA-256 of each distinct (feature party, key) a request names under ``contract_id``."""
    return {
        hashlib.sha256(f"{contract_id}\x00{party}\x00{key}".encode()).digest()
        for party, key in keys
    }


class KeyQuota:
    """Durable per-caller counts of distinct keys named, by contract and period."""

    def __init__(self, path: Path) -> None:
        self._db = open_store(path, [_SCHEMA])
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def _known(self, scope: tuple[str, str, str], digests: set[bytes]) -> set[bytes]:
        """Which of ``digests`` the caller already named this period (in chunks of 500)."""
        ordered, known = list(digests), set[bytes]()
        for i in range(0, len(ordered), 500):
            chunk = ordered[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                "SELECT digest FROM named_keys WHERE contract_id=? AND caller_org=? AND period=? "
                f"AND digest IN ({marks})",
                (*scope, *chunk),
            )
            known.update(row[0] for row in rows)
        return known

    def admit(
        self,
        contract_id: str,
        caller_org: str,
        digests: set[bytes],
        *,
        limit: int,
        period: Period,
        now: datetime | None = None,
    ) -> KeyAllowance:
        """Count ``digests`` for the caller, all or none: :class:`RateLimited` (429
        ``key_limit_reached``) when the new ones would take it past ``limit``."""
        label, resets = period_of(now or datetime.now(UTC), period)
        scope = (contract_id, caller_org, label)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                (used,) = self._db.execute(
                    "SELECT COUNT(*) FROM named_keys WHERE contract_id=? AND caller_org=? "
                    "AND period=?",
                    scope,
                ).fetchone()
                known = self._known(scope, digests)
                new = digests - known
                if used + len(new) > limit:
                    self._db.execute("ROLLBACK")
                    wait = max(1, int((resets - (now or datetime.now(UTC))).total_seconds()))
                    raise KeyLimitReached(
                        f"this request names {len(new)} key(s) not named before this {period}; "
                        f"{used} of the contract's {limit} are used",
                        retry_after=wait,
                        detail={
                            "limit": limit,
                            "used": used,
                            "new_keys": len(new),
                            "period": label,
                            "resets_at": resets.isoformat(),
                        },
                    )
                self._db.executemany(
                    "INSERT INTO named_keys VALUES (?, ?, ?, ?)", ((*scope, d) for d in new)
                )
                self._db.execute("COMMIT")
            except sqlite3.Error:
                self._db.execute("ROLLBACK")
                raise
        return KeyAllowance(used + len(new), limit, label, resets)


class KeyLimitReached(RateLimited):
    """The caller named more distinct keys this period than the contract allows."""

    code = ErrorCode.KEY_LIMIT_REACHED


__all__ = ["KeyAllowance", "KeyLimitReached", "KeyQuota", "Period", "key_digests", "period_of"]

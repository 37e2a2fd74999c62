"""What one worker keeps between calls: contexts, prepared weights, uploads, deferred work."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from services.engine.he.contexts import PublicContext, SecretContext
from services.engine.he.errors import HeKeyMismatch

KEEP_WEIGHTS = 3
KEEP_INPUTS = 2


@dataclass
class State:
    """What one worker keeps between calls: contexts, prepared weights, loaded uploads."""

    publics: dict[str, PublicContext] = field(default_factory=dict)
    secrets: dict[str, SecretContext] = field(default_factory=dict)
    weights: OrderedDict[tuple[str, str], dict[Any, Any]] = field(default_factory=OrderedDict)
    inputs: OrderedDict[tuple[str, str], dict[tuple[int, int], Any]] = field(
        default_factory=OrderedDict
    )
    babies: OrderedDict[tuple[str, str], dict[tuple[int, int], dict[int, Any]]] = field(
        default_factory=OrderedDict
    )
    deferred: list[Callable[[], object]] = field(default_factory=list)

    def flush(self) -> None:
        """Run deferred work (in a worker: right after replying; in-process: before the next op)."""
        while self.deferred:
            try:
                self.deferred.pop(0)()
            except Exception:  # best effort: the op that needs it redoes the work and reports
                self.deferred.clear()

    def public(self, fp: str) -> PublicContext:
        """The evaluation context for key ``fp``."""
        try:
            return self.publics[fp]
        except KeyError:
            raise HeKeyMismatch(f"no public key {fp[:16]}… loaded in this worker") from None

    def secret(self, fp: str) -> SecretContext:
        """The secret context for key ``fp``."""
        try:
            return self.secrets[fp]
        except KeyError:
            raise HeKeyMismatch(f"no secret key {fp[:16]}… loaded in this worker") from None


def remember(cache: OrderedDict[Any, Any], key: Any, value: Any, keep: int) -> None:
    """Insert ``key`` as most recent and drop the oldest entries beyond ``keep``."""
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > keep:
        cache.popitem(last=False)

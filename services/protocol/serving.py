"""The usage event a prediction is being served for, as it travels to the feature parties.

The label party chooses a prediction's usage event id before it computes the answer and binds
it here (:func:`for_event`); every ``embed`` sent to a feature party while the answer is computed
names it in its header (``EmbedHeader.usage_event``), over HTTP and over the step stream alike.
The feature party records the serving call under that id and reports it to the registry on its
own, which reconciles both sides' counts per contract and period.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_event: ContextVar[str | None] = ContextVar("splice_usage_event", default=None)
_shadow: ContextVar[bool] = ContextVar("splice_shadow", default=False)


def current() -> str | None:
    """The usage event of the prediction being served, if any."""
    return _event.get()


def shadow() -> bool:
    """Whether the peer calls of this block score in shadow mode (no sale, nothing metered)."""
    return _shadow.get()


@contextmanager
def shadow_scoring() -> Iterator[None]:
    """Serve the block's embed and mix calls in shadow mode (``EmbedHeader.shadow``): a model
    version compared with the deployed one, not a prediction sold."""
    token = _shadow.set(True)
    try:
        yield
    finally:
        _shadow.reset(token)


@contextmanager
def for_event(event_id: str) -> Iterator[None]:
    """Serve the block's peer calls for usage event ``event_id``."""
    token = _event.set(event_id)
    try:
        yield
    finally:
        _event.reset(token)

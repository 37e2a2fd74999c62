"""Domain errors of the tree family (mapped to HTTP 4xx once, where a service exposes them)."""

from __future__ import annotations


class GbdtError(ValueError):
    """Base of every tree-family error; ``code`` is stable and machine-readable."""

    code = "gbdt_error"


class GbdtParamsError(GbdtError):
    """Tree parameters out of range or inconsistent."""

    code = "invalid_tree_params"


class GbdtMessageError(GbdtError):
    """A malformed histogram, ciphertext, split request or model message."""

    code = "malformed_tree_message"

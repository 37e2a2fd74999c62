"""Splice wire protocol: message types, the binary tensor codec and error bodies.

This package is shared by every service and the CLI. It imports neither FastAPI, torch nor a
database driver, so any party can depend on it without pulling in a web or ML stack.
"""

from services.protocol.version import PROTOCOL_VERSION

__all__ = ["PROTOCOL_VERSION"]

"""Binary tensor codec: a JSON header plus named tensors, framed as a safetensors file.

A frame is a standard safetensors file (an 8-byte little-endian header length, a JSON header
naming each tensor's dtype, shape and byte range, then the raw bytes). Splice puts its own message
header, as JSON, in the safetensors ``__metadata__`` under ``splice``. Decoding never executes
anything: it parses JSON and copies bytes, and safetensors validates every offset.

Floats may travel in a narrower *wire dtype* (``float16`` or ``bfloat16``) to halve the traffic;
decoding widens them back to ``float32``. numpy has no bfloat16, so it travels as the upper 16 bits
of the float32 pattern (round-to-nearest-even) in a ``uint16`` tensor, marked in the metadata.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from safetensors import SafetensorError
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from services.protocol.errors import BadRequest, ErrorCode, MalformedTensors
from services.protocol.version import PROTOCOL_VERSION

WireFloat = Literal["float32", "float16", "bfloat16"]

ALLOWED_DTYPES: frozenset[str] = frozenset(
    {"float32", "float64", "float16", "int64", "int32", "uint8", "uint16", "bool"}
)
"""dtypes a frame may carry. Anything else (objects, strings, complex) is refused."""

_META_KEY = "splice"
_WIRE_KEY = "splice.wire"
_HEADER_LIMIT = 1 << 20
_VERSION_KEY = "v"
_ST_DTYPES: frozenset[str] = frozenset({"F32", "F64", "F16", "I64", "I32", "U8", "U16", "BOOL"})
"""safetensors dtype codes of :data:`ALLOWED_DTYPES`; any other code is refused before loading."""


@dataclass(slots=True)
class Frame:
    """A decoded message: its JSON header and its tensors by name."""

    header: dict[str, Any]
    tensors: dict[str, npt.NDArray[Any]] = field(default_factory=dict)

    def tensor(
        self,
        name: str,
        *,
        dtype: str | tuple[str, ...],
        ndim: int | None = None,
        finite: bool = True,
    ) -> npt.NDArray[Any]:
        """Return tensor ``name`` after checking presence, dtype, rank and finiteness.

        Raises :class:`BadRequest` (missing) or :class:`MalformedTensors` with a precise reason
        and code (``dtype_mismatch``, ``shape_mismatch``, ``non_finite``).
        """
        if name not in self.tensors:
            raise BadRequest(f"tensor {name!r} is missing", detail={"tensor": name})
        arr = self.tensors[name]
        allowed = (dtype,) if isinstance(dtype, str) else dtype
        if arr.dtype.name not in allowed:
            raise MalformedTensors(
                f"tensor {name!r} has dtype {arr.dtype.name}, expected {' or '.join(allowed)}",
                code=ErrorCode.DTYPE_MISMATCH,
                detail={"tensor": name, "dtype": arr.dtype.name, "expected": list(allowed)},
            )
        if ndim is not None and arr.ndim != ndim:
            raise MalformedTensors(
                f"tensor {name!r} has {arr.ndim} dimensions, expected {ndim}",
                code=ErrorCode.SHAPE_MISMATCH,
                detail={"tensor": name, "shape": list(arr.shape), "ndim": ndim},
            )
        if finite and arr.dtype.kind == "f" and not bool(np.isfinite(arr).all()):
            raise MalformedTensors(
                f"tensor {name!r} contains NaN or infinity",
                code=ErrorCode.NON_FINITE,
                detail={"tensor": name},
            )
        return arr


def to_bfloat16_bits(arr: npt.NDArray[np.float32]) -> npt.NDArray[np.uint16]:
    """float32 -> bfloat16 bit patterns (uint16), rounding to nearest even; keeps the shape.

    NaN stays NaN (sign kept, quiet bit set): rounding its payload could carry into the exponent
    and turn it into infinity or zero.
    """
    a = np.asarray(arr, dtype=np.float32)
    bits = np.ascontiguousarray(a).reshape(-1).view(np.uint32)
    rounding = ((bits >> 16) & 1) + np.uint32(0x7FFF)
    out = ((bits + rounding) >> 16).astype(np.uint16)
    nan = np.isnan(bits.view(np.float32))
    out[nan] = ((bits[nan] >> 16) | np.uint32(0x0040)).astype(np.uint16)
    return out.reshape(a.shape)


def from_bfloat16_bits(bits: npt.NDArray[np.uint16]) -> npt.NDArray[np.float32]:
    """bfloat16 bit patterns (uint16) -> float32; keeps the shape."""
    wide = np.asarray(bits, dtype=np.uint16).astype(np.uint32)
    wide <<= 16
    return wide.view(np.float32)


def encode(
    header: Mapping[str, Any],
    tensors: Mapping[str, npt.NDArray[Any]] | None = None,
    *,
    wire_dtype: WireFloat = "float32",
) -> bytes:
    """Encode a header and tensors into one frame.

    Floating tensors are sent as ``wire_dtype``; integer and boolean tensors travel as they are.
    """
    if _VERSION_KEY in header:
        raise ValueError(f"header key {_VERSION_KEY!r} is reserved for the protocol version")
    wire: dict[str, str] = {}
    out: dict[str, npt.NDArray[Any]] = {}
    for name, arr in (tensors or {}).items():
        a = np.asarray(arr)
        if a.dtype.name not in ALLOWED_DTYPES:
            raise ValueError(f"dtype {a.dtype.name} of tensor {name!r} cannot travel")
        if a.dtype.kind == "f" and wire_dtype != "float32":
            if wire_dtype == "float16":
                with np.errstate(over="ignore"):  # beyond float16: infinity, refused on arrival
                    a = a.astype(np.float16)
            else:
                a = to_bfloat16_bits(a.astype(np.float32, copy=False))
            wire[name] = wire_dtype
        # not np.ascontiguousarray: it turns a 0-d array into a 1-d one
        out[name] = a if a.flags.c_contiguous else a.copy(order="C")
    metadata = {
        _META_KEY: json.dumps({_VERSION_KEY: PROTOCOL_VERSION, **header}, separators=(",", ":"))
    }
    if wire:
        metadata[_WIRE_KEY] = json.dumps(wire, separators=(",", ":"))
    return bytes(st_save(out, metadata=metadata))


def _read_metadata(body: bytes) -> dict[str, str]:
    if len(body) < 8:
        raise MalformedTensors("frame is shorter than its 8-byte length prefix")
    (n,) = struct.unpack("<Q", body[:8])
    if n > _HEADER_LIMIT or 8 + n > len(body):
        raise MalformedTensors("frame header length is out of bounds")
    try:
        raw = json.loads(body[8 : 8 + n])
    except (ValueError, RecursionError) as exc:  # bad UTF-8/JSON, huge ints, deep nesting
        raise MalformedTensors("frame header is not JSON") from exc
    meta = raw.get("__metadata__") if isinstance(raw, dict) else None
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise MalformedTensors("frame has no Splice metadata")
    for name, entry in raw.items():
        dtype = entry.get("dtype") if isinstance(entry, dict) else None
        if name != "__metadata__" and isinstance(dtype, str) and dtype not in _ST_DTYPES:
            raise MalformedTensors(f"tensor {name!r} has unsupported dtype {dtype}")
    return meta


def decode(body: bytes) -> Frame:
    """Decode a frame. Raises :class:`MalformedTensors` on anything that is not a valid frame."""
    meta = _read_metadata(body)
    try:
        header = json.loads(meta[_META_KEY])
        wire = json.loads(meta.get(_WIRE_KEY, "{}"))
    except (KeyError, ValueError, RecursionError) as exc:
        raise MalformedTensors("frame metadata is not a Splice header") from exc
    if not isinstance(header, dict) or not isinstance(wire, dict):
        raise MalformedTensors("frame metadata is not a Splice header")
    if header.get(_VERSION_KEY) != PROTOCOL_VERSION:
        raise MalformedTensors(
            f"protocol version {header.get(_VERSION_KEY)!r} is not supported (this side speaks "
            f"{PROTOCOL_VERSION})",
            detail={"supported": [PROTOCOL_VERSION]},
        )
    try:
        tensors = st_load(body)
    except (SafetensorError, ValueError, TypeError, KeyError) as exc:
        raise MalformedTensors(f"tensor data is invalid: {exc}") from exc
    for name, arr in tensors.items():
        if arr.dtype.name not in ALLOWED_DTYPES:
            raise MalformedTensors(f"tensor {name!r} has unsupported dtype {arr.dtype.name}")
        kind = wire.get(name)
        if kind == "float16" and arr.dtype == np.float16:
            tensors[name] = arr.astype(np.float32)
        elif kind == "bfloat16" and arr.dtype == np.uint16:
            tensors[name] = from_bfloat16_bits(arr)
        elif kind is not None:
            raise MalformedTensors(f"tensor {name!r} has wire dtype {kind!r} that does not fit")
    header.pop(_VERSION_KEY)
    return Frame(header=header, tensors=tensors)


def blob_tensor(blob: bytes) -> npt.NDArray[np.uint8]:
    """An opaque byte string (a ciphertext blob) as the uint8 tensor that carries it."""
    return np.frombuffer(blob, dtype=np.uint8)


def blob_of(frame: Frame, name: str) -> bytes:
    """The opaque byte string a frame's uint8 tensor ``name`` carries."""
    return frame.tensor(name, dtype="uint8", ndim=1).tobytes()

"""Property-based tests of the binary frame codec: round trips, wire dtypes, and hostile input.

``decode`` is the first thing that touches a peer's bytes, so beyond round trips the contract
is: anything that is not a valid frame raises :class:`MalformedTensors` (never another
exception), and nothing in a frame can make the decoder build arbitrary objects.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import warnings
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from safetensors.numpy import save as st_save

from services.protocol import codec
from services.protocol.codec import Frame, decode, encode, from_bfloat16_bits, to_bfloat16_bits
from services.protocol.errors import BadRequest, ErrorCode, MalformedTensors
from services.protocol.version import PROTOCOL_VERSION

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

DTYPES = ["float32", "float64", "int64", "int32", "uint8", "bool"]
INT_DTYPES = ["int64", "int32", "uint8", "bool"]
BF16_SAFE = float(np.float32(3.3e38))  # below the largest finite bfloat16

# --- strategies ---------------------------------------------------------------------------------

shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)
names = st.text(min_size=1, max_size=12).filter(lambda s: s != "__metadata__")


def arrays_of(dtype: str, **elements: Any) -> st.SearchStrategy[npt.NDArray[Any]]:
    """Arrays of ``dtype`` and any shape; ``elements`` tunes float element generation."""
    dt = np.dtype(dtype)
    width: Literal[16, 32, 64] = 64 if dt.itemsize == 8 else 32 if dt.itemsize == 4 else 16
    elems = st.floats(width=width, **elements) if dt.kind == "f" and elements else None
    return hnp.arrays(dt, shapes, elements=elems)


any_array = st.sampled_from(DTYPES).flatmap(arrays_of)
int_array = st.sampled_from(INT_DTYPES).flatmap(arrays_of)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
headers = st.dictionaries(st.text(max_size=10).filter(lambda k: k != "v"), json_values, max_size=5)


def same_array(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> bool:
    """Same dtype, shape and bytes (NaN payloads included)."""
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def torch_bf16_bits(x: npt.NDArray[np.float32]) -> npt.NDArray[np.uint16]:
    """Reference float32 -> bfloat16 rounding (torch rounds to nearest even)."""
    t = torch.from_numpy(np.array(x, dtype=np.float32)).to(torch.bfloat16)
    return t.view(torch.int16).numpy().view(np.uint16)


def frame_bytes(raw_header: dict[str, Any], data: bytes = b"") -> bytes:
    """A hand-made safetensors layout: length prefix, JSON header, data."""
    h = json.dumps(raw_header).encode()
    return struct.pack("<Q", len(h)) + h + data


def splice_meta(**header: Any) -> dict[str, str]:
    return {"splice": json.dumps({"v": PROTOCOL_VERSION, **header})}


def rejected(body: bytes) -> MalformedTensors:
    """Decode ``body`` and return the MalformedTensors it raised (any other outcome fails)."""
    with pytest.raises(MalformedTensors) as info:
        decode(body)
    assert info.value.code is ErrorCode.MALFORMED_TENSORS
    return info.value


def decodes_or_rejects(body: bytes) -> Frame | None:
    """Decode ``body``: a Frame, or None after MalformedTensors; anything else propagates."""
    try:
        frame = decode(body)
    except MalformedTensors:
        return None
    for arr in frame.tensors.values():
        assert isinstance(arr, np.ndarray)
        assert arr.dtype.name in codec.ALLOWED_DTYPES
    return frame


SAMPLE = encode(
    {"job_id": "j", "step": 3},
    {"handles": np.arange(5, dtype=np.int64), "grad": np.ones((5, 2), dtype=np.float32)},
)

# --- round trips --------------------------------------------------------------------------------


@FAST
@given(header=headers, tensors=st.dictionaries(names, any_array, max_size=4))
def test_round_trip_is_exact(header: dict[str, Any], tensors: dict[str, npt.NDArray[Any]]) -> None:
    frame = decode(encode(header, tensors))
    assert frame.header == header
    assert frame.tensors.keys() == tensors.keys()
    for name, arr in tensors.items():
        assert same_array(frame.tensors[name], arr), name


@FAST
@given(header=headers)
def test_header_only_round_trip(header: dict[str, Any]) -> None:
    assert decode(encode(header)) == Frame(header=header, tensors={})


@FAST
@given(arr=any_array)
def test_non_contiguous_and_scalar_inputs_keep_their_shape(arr: npt.NDArray[Any]) -> None:
    reversed_view = arr[::-1] if arr.ndim else arr
    out = decode(encode({}, {"a": reversed_view, "t": arr.T})).tensors
    assert same_array(out["a"], np.ascontiguousarray(reversed_view).reshape(arr.shape))
    assert same_array(out["t"], np.array(arr.T, order="C"))


def test_zero_dim_scalars_and_zero_size_dims() -> None:
    tensors: dict[str, npt.NDArray[Any]] = {
        "scalar": np.asarray(np.float32(2.5)),
        "int_scalar": np.array(7, dtype=np.int64),
        "empty": np.zeros((0,), dtype=np.int64),
        "empty_2d": np.zeros((3, 0), dtype=np.float32),
        "empty_3d": np.zeros((0, 2, 0), dtype=np.bool_),
    }
    out = decode(encode({}, tensors)).tensors
    for name, value in tensors.items():
        assert same_array(out[name], np.asarray(value)), name
    assert out["scalar"].shape == ()


@FAST
@given(arr=any_array)
def test_decoded_tensors_are_writable_and_owned(arr: npt.NDArray[Any]) -> None:
    out = decode(encode({}, {"x": arr})).tensors["x"]
    assert out.flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.from_numpy(out)  # warns (an error here) on a read-only array


@FAST
@given(
    arr=arrays_of("float32", min_value=-65504.0, max_value=65504.0)
    | arrays_of("float64", min_value=-65504.0, max_value=65504.0)
)
def test_float16_wire_rounds_like_numpy(arr: npt.NDArray[Any]) -> None:
    out = decode(encode({}, {"x": arr}, wire_dtype="float16")).tensors["x"]
    assert out.dtype == np.float32 and out.shape == arr.shape
    expected = arr.astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(out, expected)
    normal = np.abs(arr) >= np.finfo(np.float16).tiny
    rel = np.abs(out[normal] - arr[normal]) / np.abs(arr[normal])
    assert (rel <= 2.0**-11).all()


@FAST
@given(
    arr=arrays_of("float32", allow_subnormal=False, min_value=-BF16_SAFE, max_value=BF16_SAFE)
    | arrays_of("float64", allow_subnormal=False, min_value=-BF16_SAFE, max_value=BF16_SAFE)
)
def test_bfloat16_wire_is_within_its_precision(arr: npt.NDArray[Any]) -> None:
    out = decode(encode({}, {"x": arr}, wire_dtype="bfloat16")).tensors["x"]
    assert out.dtype == np.float32 and out.shape == arr.shape
    as32 = arr.astype(np.float32)
    normal = np.abs(as32) >= np.finfo(np.float32).tiny
    rel = np.abs(out[normal].astype(np.float64) - as32[normal]) / np.abs(as32[normal])
    assert (rel <= 2.0**-8).all()
    assert (np.abs(out[~normal] - as32[~normal]) <= 2.0**-133).all()  # bfloat16 subnormals
    assert np.array_equal(out.view(np.uint32) >> 16, torch_bf16_bits(as32).astype(np.uint32))


@FAST
@given(arr=int_array, wire=st.sampled_from(["float16", "bfloat16"]))
def test_integers_and_bools_ignore_the_wire_dtype(arr: npt.NDArray[Any], wire: str) -> None:
    body = encode({}, {"i": arr}, wire_dtype=wire)  # type: ignore[arg-type]
    assert same_array(decode(body).tensors["i"], arr)


@pytest.mark.parametrize("wire", ["float16", "bfloat16"])
def test_wire_dtype_halves_float_traffic(wire: str) -> None:
    x = np.random.default_rng(0).normal(size=(256, 32)).astype(np.float32)
    full = encode({}, {"x": x})
    narrow = encode({}, {"x": x}, wire_dtype=wire)  # type: ignore[arg-type]
    assert len(narrow) < 0.55 * len(full)


def test_special_values_survive_the_wire() -> None:
    x = np.array([np.inf, -np.inf, np.nan, -0.0, 0.0], dtype=np.float32)
    wires: tuple[codec.WireFloat, ...] = ("float32", "float16", "bfloat16")
    for wire in wires:
        out = decode(encode({}, {"x": x}, wire_dtype=wire)).tensors["x"]
        assert out[0] == np.inf and out[1] == -np.inf and np.isnan(out[2]), wire
        assert np.signbit(out[3]) and not np.signbit(out[4]), wire


# --- bfloat16 bit conversion --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("f32_bits", "bf16_bits"),
    [
        (0x3F800000, 0x3F80),  # 1.0 exact
        (0x3F808000, 0x3F80),  # 1 + 2^-8: tie, even neighbour is 1.0 -> down
        (0x3F818000, 0x3F82),  # 1 + 3*2^-8: tie, odd below -> up to even
        (0x3F808001, 0x3F81),  # just above a tie -> up
        (0x3F807FFF, 0x3F80),  # just below a tie -> down
        (0xBF808000, 0xBF80),  # negative tie -> even
        (0xBF818000, 0xBF82),
        (0x7F7FFFFF, 0x7F80),  # float32 max rounds to infinity
        (0x7F800000, 0x7F80),  # +inf
        (0xFF800000, 0xFF80),  # -inf
        (0x80000000, 0x8000),  # -0.0
        (0x00000001, 0x0000),  # smallest subnormal rounds to zero
        (0x00008000, 0x0000),  # subnormal tie -> even (zero)
        (0x00018000, 0x0002),  # subnormal tie -> even (up)
    ],
)
def test_bfloat16_rounds_to_nearest_even(f32_bits: int, bf16_bits: int) -> None:
    x = np.array([f32_bits], dtype=np.uint32).view(np.float32)
    assert int(to_bfloat16_bits(x)[0]) == bf16_bits


@FAST
@given(st.lists(st.integers(min_value=0, max_value=2**32 - 1), min_size=1, max_size=64))
def test_bfloat16_matches_torch_and_keeps_nan(patterns: list[int]) -> None:
    x = np.array(patterns, dtype=np.uint32).view(np.float32)
    got = to_bfloat16_bits(x)
    nan = np.isnan(x)
    np.testing.assert_array_equal(got[~nan], torch_bf16_bits(x[~nan]))
    back = from_bfloat16_bits(got)
    assert np.array_equal(np.isnan(back), nan), "NaN must stay NaN (not zero or infinity)"
    assert np.array_equal(np.signbit(back[nan]), np.signbit(x[nan]))


def test_bfloat16_bits_round_trip_every_pattern() -> None:
    bits = np.arange(2**16, dtype=np.uint32).astype(np.uint16)
    x = from_bfloat16_bits(bits)
    assert x.dtype == np.float32
    keep = ~np.isnan(x)
    np.testing.assert_array_equal(to_bfloat16_bits(x)[keep], bits[keep])
    assert np.isnan(from_bfloat16_bits(to_bfloat16_bits(x[~keep]))).all()


@pytest.mark.parametrize("shape", [(), (0,), (3,), (2, 0, 4), (2, 3)])
def test_bfloat16_helpers_keep_shape(shape: tuple[int, ...]) -> None:
    x = np.full(shape, 1.5, dtype=np.float32)
    bits = to_bfloat16_bits(x)
    assert bits.shape == shape and bits.dtype == np.uint16
    back = from_bfloat16_bits(bits)
    assert isinstance(back, np.ndarray) and back.shape == shape
    np.testing.assert_array_equal(back, x)


# --- decode rejects anything that is not a frame ------------------------------------------------


def test_empty_and_short_bodies() -> None:
    for body in (b"", b"\x00", b"\x02\x00\x00\x00\x00\x00\x00"):
        rejected(body)


def test_every_truncation_is_rejected() -> None:
    for cut in range(len(SAMPLE)):
        rejected(SAMPLE[:cut])


def test_trailing_bytes_are_rejected() -> None:
    rejected(SAMPLE + b"\x00")


@FAST
@given(st.binary(max_size=512))
def test_random_garbage_is_rejected(body: bytes) -> None:
    rejected(body)


@FAST
@given(st.binary(max_size=256))
def test_garbage_after_a_plausible_length_prefix_is_rejected(tail: bytes) -> None:
    rejected(struct.pack("<Q", len(tail)) + tail)


@FAST
@given(st.data())
def test_corrupted_frames_decode_or_raise_malformed(data: st.DataObject) -> None:
    body = bytearray(SAMPLE)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(body) - 1))
        body[i] = data.draw(st.integers(0, 255))
    decodes_or_rejects(bytes(body))


@pytest.mark.parametrize("length", [len(SAMPLE), 10**6, 2**20 + 1, 2**63, 2**64 - 1])
def test_header_length_beyond_the_body(length: int) -> None:
    rejected(struct.pack("<Q", length) + SAMPLE[8:])


@pytest.mark.parametrize(
    "raw",
    [
        b"[]",
        b'"text"',
        b"null",
        b"\xff\xfe\x00\x00",
        b'{"__metadata__": 5}',
        b'{"__metadata__": {"splice": 5}}',
        b"[" * 200_000,
        b'{"a": ' + b"9" * 5000 + b"}",
        b'{"__metadata__": {"splice": "' + b"[" * 100_000 + b'"}}',
    ],
    ids=[
        "list",
        "string",
        "null",
        "utf16",
        "meta-int",
        "meta-value-int",
        "deep",
        "huge-int",
        "deep-splice",
    ],
)
def test_header_that_is_not_a_frame_header(raw: bytes) -> None:
    rejected(struct.pack("<Q", len(raw)) + raw)


def test_safetensors_file_without_splice_metadata() -> None:
    arr = np.arange(4, dtype=np.float32)
    rejected(bytes(st_save({"x": arr})))
    rejected(bytes(st_save({"x": arr}, metadata={"other": "{}"})))


@pytest.mark.parametrize(
    "splice",
    [
        "not json",
        "[1, 2]",
        json.dumps({"job_id": "j"}),  # no version
        json.dumps({"v": "0"}),
        json.dumps({"v": "999"}),
        json.dumps({"v": int(PROTOCOL_VERSION)}),  # right number, wrong type
        json.dumps({"v": None}),
    ],
)
def test_wrong_or_missing_protocol_version(splice: str) -> None:
    body = bytes(st_save({"x": np.zeros(2, np.float32)}, metadata={"splice": splice}))
    rejected(body)


def test_version_error_names_the_supported_version() -> None:
    body = bytes(st_save({}, metadata={"splice": json.dumps({"v": "0"})}))
    assert rejected(body).detail == {"supported": [PROTOCOL_VERSION]}


@pytest.mark.parametrize("dtype", ["int8", "int16", "uint32", "uint64", "complex64"])
def test_unsupported_numpy_dtype_in_a_frame(dtype: str) -> None:
    body = bytes(st_save({"x": np.zeros(3, dtype=dtype)}, metadata=splice_meta()))
    assert "unsupported dtype" in rejected(body).message


@pytest.mark.parametrize("code", ["BF16", "F8_E4M3", "F8_E5M2", "I16", "C64", "U64", "O", "str"])
def test_unsupported_safetensors_dtype_code(code: str) -> None:
    body = frame_bytes(
        {"__metadata__": splice_meta(), "x": {"dtype": code, "shape": [2], "data_offsets": [0, 4]}},
        b"\x00" * 4,
    )
    rejected(body)


@pytest.mark.parametrize(
    "entry",
    [
        {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]},  # size does not match shape
        {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},  # beyond the data
        {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]},
        {"dtype": "F32", "shape": [2**62, 2**62], "data_offsets": [0, 8]},  # overflow
        {"dtype": "F32", "shape": "2", "data_offsets": [0, 8]},
        {"dtype": "F32", "shape": [2]},
        {"dtype": 7, "shape": [2], "data_offsets": [0, 8]},
        "tensor",
    ],
)
def test_inconsistent_tensor_entries(entry: object) -> None:
    rejected(frame_bytes({"__metadata__": splice_meta(), "x": entry}, b"\x00" * 8))


@pytest.mark.parametrize(
    ("wire", "arr"),
    [
        ({"x": "float16"}, np.zeros(2, np.int64)),  # marked float16 but int
        ({"x": "bfloat16"}, np.zeros(2, np.float32)),  # marked bfloat16 but not uint16
        ({"x": "int4"}, np.zeros(2, np.float32)),
        ({"x": ["float16"]}, np.zeros(2, np.float16)),
    ],
)
def test_wire_marker_that_does_not_fit(wire: dict[str, Any], arr: npt.NDArray[Any]) -> None:
    meta = {**splice_meta(), "splice.wire": json.dumps(wire)}
    rejected(bytes(st_save({"x": arr}, metadata=meta)))


def test_wire_marker_that_is_not_an_object() -> None:
    rejected(bytes(st_save({}, metadata={**splice_meta(), "splice.wire": "[]"})))
    rejected(bytes(st_save({}, metadata={**splice_meta(), "splice.wire": "{"})))


# --- no pickle, no objects ----------------------------------------------------------------------

UNPICKLED: list[str] = []


def _mark(tag: str) -> str:
    UNPICKLED.append(tag)
    return tag


class _Payload:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_mark, ("executed",))


def test_pickle_payloads_are_never_loaded() -> None:
    payload = pickle.dumps(_Payload())
    rejected(payload)
    # the same payload as a tensor's bytes or inside the header stays inert bytes / text
    meta = splice_meta(blob=payload.hex())
    frame = decode(bytes(st_save({"x": np.frombuffer(payload, np.uint8)}, metadata=meta)))
    assert frame.tensors["x"].dtype == np.uint8
    assert frame.tensors["x"].tobytes() == payload
    assert frame.header == {"blob": payload.hex()}
    # a numpy .npy object array (pickle inside) is not a frame either
    buf = io.BytesIO()
    np.save(buf, np.array([_Payload()], dtype=object), allow_pickle=True)
    rejected(buf.getvalue())
    assert UNPICKLED == []


@pytest.mark.parametrize(
    "value",
    [
        np.array([object()], dtype=object),
        np.array(["a", "b"]),
        np.zeros(2, np.complex128),
        np.zeros(2, np.int8),
    ],
    ids=["object", "str", "complex", "int8"],
)
def test_encode_refuses_what_cannot_travel(value: npt.NDArray[Any]) -> None:
    with pytest.raises(ValueError, match="cannot travel"):
        encode({}, {"x": value})


def test_encode_refuses_the_reserved_version_key() -> None:
    with pytest.raises(ValueError, match="reserved"):
        encode({"v": "2"})


@FAST
@given(st.data())
def test_decoded_values_are_only_plain_types(data: st.DataObject) -> None:
    header = data.draw(headers)
    tensors = data.draw(st.dictionaries(names, any_array, max_size=3))
    frame = decode(encode(header, tensors))
    plain = (type(None), bool, int, float, str, list, dict)

    def walk(value: object) -> None:
        assert isinstance(value, plain)
        if isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, dict):
            for k, v in value.items():
                assert isinstance(k, str)
                walk(v)

    walk(frame.header)
    assert all(type(a) is np.ndarray and not a.dtype.hasobject for a in frame.tensors.values())


# --- Frame.tensor -------------------------------------------------------------------------------


def _frame(**tensors: npt.NDArray[Any]) -> Frame:
    return decode(encode({}, tensors))


def test_tensor_returns_a_valid_tensor() -> None:
    frame = _frame(h=np.arange(3, dtype=np.int32), g=np.ones((3, 2), np.float32))
    np.testing.assert_array_equal(frame.tensor("h", dtype=("int64", "int32"), ndim=1), [0, 1, 2])
    assert frame.tensor("g", dtype="float32", ndim=2).shape == (3, 2)
    assert frame.tensor("g", dtype="float32").shape == (3, 2)


def test_tensor_missing() -> None:
    with pytest.raises(BadRequest) as info:
        _frame().tensor("grad", dtype="float32")
    assert info.value.code is ErrorCode.BAD_REQUEST
    assert info.value.detail == {"tensor": "grad"}


@pytest.mark.parametrize(
    ("arr", "dtype"),
    [
        (np.zeros(3, np.float64), ("int64", "int32")),
        (np.zeros((2, 2), np.int64), "float32"),
        (np.zeros(2, np.bool_), "int64"),
        (np.zeros(2, np.float64), "float32"),
    ],
)
def test_tensor_wrong_dtype(arr: npt.NDArray[Any], dtype: str | tuple[str, ...]) -> None:
    with pytest.raises(MalformedTensors) as info:
        _frame(x=arr).tensor("x", dtype=dtype)
    assert info.value.code is ErrorCode.DTYPE_MISMATCH
    assert info.value.status == 400


@pytest.mark.parametrize("shape", [(), (4,), (2, 2, 1)])
def test_tensor_wrong_ndim(shape: tuple[int, ...]) -> None:
    with pytest.raises(MalformedTensors) as info:
        _frame(x=np.zeros(shape, np.float32)).tensor("x", dtype="float32", ndim=2)
    assert info.value.code is ErrorCode.SHAPE_MISMATCH


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("wire", ["float32", "float16", "bfloat16"])
def test_tensor_non_finite(bad: float, wire: str) -> None:
    x = np.ones((2, 3), np.float32)
    x[1, 2] = bad
    frame = decode(encode({}, {"x": x}, wire_dtype=wire))  # type: ignore[arg-type]
    with pytest.raises(MalformedTensors) as info:
        frame.tensor("x", dtype="float32", ndim=2)
    assert info.value.code is ErrorCode.NON_FINITE
    assert info.value.status == 400
    assert np.isnan(frame.tensor("x", dtype="float32", finite=False)[1, 2]) == np.isnan(bad)


def test_tensor_finiteness_is_only_checked_for_floats() -> None:
    frame = _frame(i=np.array([2**62, -1], np.int64), b=np.array([True, False]))
    assert frame.tensor("i", dtype="int64").tolist() == [2**62, -1]
    assert frame.tensor("b", dtype="bool").tolist() == [True, False]


@FAST
@given(arr=arrays_of("float32"))
def test_tensor_accepts_exactly_the_finite_float_arrays(arr: npt.NDArray[np.float32]) -> None:
    assume(arr.ndim >= 1)
    frame = _frame(x=arr)
    if np.isfinite(arr).all():
        assert same_array(frame.tensor("x", dtype="float32", ndim=arr.ndim), arr)
    else:
        with pytest.raises(MalformedTensors):
            frame.tensor("x", dtype="float32", ndim=arr.ndim)

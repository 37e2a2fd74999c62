"""Thin, defensive wrappers around ``tenseal.sealapi``: contexts, (de)serialisation, checks.

``tenseal.sealapi`` (de)serialises only through file paths, so objects go through a private
directory on tmpfs (``/dev/shm`` when writable): written, read back, unlinked at once. Every SEAL
exception on untrusted bytes becomes a :class:`HeBlobError`/:class:`HeParamsError`; before SEAL sees
any bytes, their SEAL header is checked (magic, version, compression mode, declared size = actual
size), so a lying size field cannot make SEAL allocate or read past the data.
"""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import struct
import tempfile
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import tenseal.sealapi as sealapi

from services.engine.he.errors import HeBlobError, HeParamsError
from services.engine.he.params import HeParams

SEAL_MAGIC = 0xA15E
SEAL_HEADER = struct.Struct("<HBBBBHQ")
_COUNTER = itertools.count()
_DIR_LOCK = threading.Lock()
_DIRS: dict[int, str] = {}

T = TypeVar("T")


def _scratch_dir() -> str:
    pid = os.getpid()
    with _DIR_LOCK:
        if pid not in _DIRS:
            base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
            path = tempfile.mkdtemp(prefix="splice-he-", dir=base)
            _DIRS[pid] = path
            atexit.register(shutil.rmtree, path, True)
        return _DIRS[pid]


def _scratch_path() -> str:
    return os.path.join(_scratch_dir(), f"{threading.get_ident()}-{next(_COUNTER)}")


def dump(obj: Any) -> bytes:
    """Serialise a SEAL object (or ``Serializable``) with SEAL's default compression."""
    path = _scratch_path()
    try:
        obj.save(path)
        with open(path, "rb") as fh:
            return fh.read()
    finally:
        if os.path.exists(path):
            os.unlink(path)


def check_header(data: bytes | memoryview, what: str, limit: int) -> None:
    """Refuse bytes whose SEAL header is absent, foreign or disagrees with their length."""
    size = len(data)
    if size < SEAL_HEADER.size:
        raise HeBlobError(f"{what} is truncated ({size} bytes)")
    if size > limit:
        raise HeBlobError(f"{what} is oversized ({size} bytes, limit {limit})")
    magic, hsize, major, _minor, compr, reserved, declared = SEAL_HEADER.unpack_from(data, 0)
    if magic != SEAL_MAGIC or hsize != SEAL_HEADER.size or major not in (3, 4) or reserved:
        raise HeBlobError(f"{what} is not a SEAL object")
    if compr not in (0, 1, 2):
        raise HeBlobError(f"{what} uses an unknown compression mode")
    if declared != size:
        raise HeBlobError(f"{what} declares {declared} bytes but has {size} (truncated or padded)")


def load(
    factory: Callable[[], T],
    loader: Callable[[T, str], None],
    data: bytes | memoryview,
    what: str,
    limit: int,
    error: type[HeBlobError] | type[HeParamsError] = HeBlobError,
) -> T:
    """Load SEAL bytes into ``factory()`` via ``loader(obj, path)``; failures raise ``error``."""
    try:
        check_header(data, what, limit)
    except HeBlobError as exc:
        raise error(str(exc)) from None
    path = _scratch_path()
    obj = factory()
    try:
        with open(path, "wb") as fh:
            fh.write(data)
        loader(obj, path)
    except Exception as exc:  # SEAL raises ValueError/RuntimeError/std::logic_error wrappers
        raise error(f"{what} does not load under these parameters: {exc}") from None
    finally:
        if os.path.exists(path):
            os.unlink(path)
    return obj


def coeff_modulus(params: HeParams) -> list[Any]:
    """SEAL's primes for the parameters (deterministic for a SEAL version)."""
    return list(
        sealapi.CoeffModulus.Create(params.poly_modulus_degree, list(params.coeff_mod_bit_sizes))
    )


def encryption_parameters(params: HeParams) -> Any:
    """CKKS ``EncryptionParameters`` for ``params``."""
    parms = sealapi.EncryptionParameters(sealapi.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(params.poly_modulus_degree)
    parms.set_coeff_modulus(coeff_modulus(params))
    return parms


def make_context(parms: Any) -> Any:
    """A 128-bit-secure SEAL context; refuses parameters SEAL does not accept."""
    try:
        ctx = sealapi.SEALContext(parms, True, sealapi.SEC_LEVEL_TYPE.TC128)
    except Exception as exc:
        raise HeParamsError(f"SEAL refuses the parameters: {exc}") from None
    if not ctx.parameters_set():
        raise HeParamsError(f"SEAL refuses the parameters: {ctx.parameters_error_message()}")
    return ctx


def ciphertext_limit(params: HeParams) -> int:
    """Upper bound on the serialised size of one ciphertext at any level (2 polynomials)."""
    return 2 * params.poly_modulus_degree * len(params.data_bits) * 8 + 4096


def check_ciphertext(ct: Any, parms_id: Any, scale: float, what: str) -> None:
    """A loaded ciphertext must have 2 parts, the expected level and the expected scale."""
    if ct.size() != 2 or not ct.is_ntt_form():
        raise HeBlobError(f"{what} is not a fresh 2-part CKKS ciphertext")
    if list(ct.parms_id()) != list(parms_id):
        raise HeBlobError(f"{what} is at the wrong level or under other parameters")
    if not abs(ct.scale / scale - 1.0) < 1e-9:
        raise HeBlobError(f"{what} has scale {ct.scale:.6g}, expected {scale:.6g}")

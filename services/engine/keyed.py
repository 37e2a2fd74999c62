"""Private per-job randomness: a party's job key and the counter-based streams keyed by it.

Everything a peer must not predict (the label-leakage defence's noise, the label party's initial
interactive share, every party's initial weights, dropout) comes from a :class:`JobKey`: 32
bytes from the OS CSPRNG, drawn by each party for each job, kept on its own disk beside the job's
checkpoints and never sent. The job's public ``seed`` stays what it was: a reproducibility seed
for what every party may know (row splits, batch order).

A stream is AES-256 in counter mode. Its key is ``HMAC-SHA256(job key, "splice/keyed/v1" ||
path)`` for a path of names (``("defence", "paste")``) and its initial counter block is
``counter * 2**64``, so the noise of step ``t`` is ``stream("defence", "paste", counter=t)``:
reproducible after a restart from the job key alone, with no generator state to checkpoint,
and independent of every other path and step. Without the job key the streams are the output of
AES under an unknown 256-bit key: nothing a peer holds (the seed, the job id, its own key)
predicts them.

A harness that runs every party (``splice pilot``, the tests) may derive each party's job keys
from a per-party master secret it configured (:meth:`JobKey.derive`), so that its centralized
baseline starts from the same weights as the split job. :meth:`JobKey.public` derives a key
from public values and is only for local training that has no peer (baselines, benchmarks).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

KEY_BYTES = 32
"""A job key's size (256 bits)."""
_TAG = b"splice/keyed/v1"
_DERIVE_TAG = b"splice/job-key/v1"
_PUBLIC_TAG = b"splice/public-job-key/v1"
_DOUBLE = 2.0**-53


@dataclass(frozen=True, slots=True)
class JobKey:
    """One party's private key for one job."""

    secret: bytes

    def __post_init__(self) -> None:
        if len(self.secret) != KEY_BYTES:
            raise ValueError(f"a job key has {KEY_BYTES} bytes, not {len(self.secret)}")

    def __repr__(self) -> str:  # never print the secret
        return "JobKey(<secret>)"

    @classmethod
    def generate(cls) -> JobKey:
        """A fresh key from the OS CSPRNG."""
        return cls(secrets.token_bytes(KEY_BYTES))

    @classmethod
    def derive(cls, master: bytes, job_id: str) -> JobKey:
        """The key of job ``job_id`` under a party's configured master secret (harnesses)."""
        return cls(hmac.new(master, _DERIVE_TAG + b"\x00" + job_id.encode(), "sha256").digest())

    @classmethod
    def public(cls, seed: int, *names: str) -> JobKey:
        """A key anyone can compute from ``seed`` and ``names``: for local runs with no peer only
        (a baseline, a benchmark), never for a party of a split job."""
        h = hashlib.sha256(_PUBLIC_TAG + seed.to_bytes(8, "little", signed=False))
        for n in names:
            h.update(b"\x00" + n.encode())
        return cls(h.digest())

    def stream(self, *path: str, counter: int = 0) -> KeyedStream:
        """The stream at ``path`` and ``counter`` (a step number, say)."""
        if not 0 <= counter < 2**64:
            raise ValueError("a stream counter is a 64-bit unsigned integer")
        mac = hmac.new(self.secret, _TAG, "sha256")
        for name in path:
            mac.update(b"\x00" + name.encode())
        return KeyedStream(mac.digest(), counter)

    def seed63(self, *path: str) -> int:
        """A 63-bit seed for torch's generator (dropout), drawn from the stream at ``path``."""
        return int.from_bytes(self.stream(*path).bytes(8), "little") >> 1


class KeyedStream:
    """An AES-256-CTR keystream read as bytes, uniform or normal numbers (in order)."""

    def __init__(self, key: bytes, counter: int) -> None:
        nonce = (counter << 64).to_bytes(16, "big")
        self._enc = Cipher(algorithms.AES(key), modes.CTR(nonce)).encryptor()

    def bytes(self, n: int) -> bytes:
        """The next ``n`` bytes of the stream."""
        out: bytes = self._enc.update(bytes(n))
        return out

    def _unit(self, count: int) -> npt.NDArray[np.float64]:
        """``count`` doubles uniform in [0, 1) (53 random bits each)."""
        words = np.frombuffer(self.bytes(8 * count), dtype="<u8")
        out: npt.NDArray[np.float64] = (words >> np.uint64(11)).astype(np.float64) * _DOUBLE
        return out

    def uniform(self, low: float, high: float, shape: tuple[int, ...]) -> npt.NDArray[np.float64]:
        """Numbers uniform in ``[low, high)``."""
        count = math.prod(shape)
        return (low + (high - low) * self._unit(count)).reshape(shape)

    def normal(self, shape: tuple[int, ...]) -> npt.NDArray[np.float64]:
        """Standard normal numbers (Box-Muller on pairs of uniforms)."""
        count = math.prod(shape)
        half = (count + 1) // 2
        u = self._unit(2 * half)
        radius = np.sqrt(-2.0 * np.log1p(-u[:half]))  # 1 - u lies in (0, 1]
        angle = 2.0 * np.pi * u[half:]
        both = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])
        return both[:count].reshape(shape)


__all__ = ["KEY_BYTES", "JobKey", "KeyedStream"]

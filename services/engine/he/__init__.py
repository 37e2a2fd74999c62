"""CKKS kernel for the protected interactive layer (packed layout over ``tenseal.sealapi``).

The feature party P encrypts its bottom output H; the label party A computes ``Enc(H W + mask)``
and, from the same upload, ``Enc(H^T D + mask2)``; P decrypts masked results. For P's input
gradient P also encrypts its weight share W_P, and A computes ``Enc(D W_P^T + D W_A^T)``. See
:mod:`.feature` and :mod:`.label` for the calls, :mod:`.layout` for the packing, :mod:`.masks`
for what the masks hide (a stated statistical bound), :mod:`.params` for parameters and headroom,
:mod:`.pool` for using several cores.

Precision (defaults): forward absolute error below ~3e-5 per coordinate (CKKS noise std ~2e-6);
backward below ~1e-6 for batches up to 4096 (noise grows with sqrt(rows / next_pow2(m)) and is
divided by the gradient gain ``2**8``); input gradient below ~1e-7 for ``|D| <= 1``.
"""

from services.engine.he.bundle import PublicBundle, fingerprint
from services.engine.he.errors import (
    HeBlobError,
    HeError,
    HeKeyMismatch,
    HeParamsError,
    HeRangeError,
    HeWorkerError,
)
from services.engine.he.feature import decrypt_matrix, encrypt_rows, encrypt_weights
from services.engine.he.keys import HeKeys
from services.engine.he.label import (
    PreparedWeights,
    backward,
    forward,
    input_grad,
    prepare_weights,
)
from services.engine.he.masks import draw_mask
from services.engine.he.params import HeParams
from services.engine.he.pool import HePool, default_pool
from services.engine.he.shards import public_bundle

__all__ = [
    "HeBlobError",
    "HeError",
    "HeKeyMismatch",
    "HeKeys",
    "HeParams",
    "HeParamsError",
    "HePool",
    "HeRangeError",
    "HeWorkerError",
    "PreparedWeights",
    "PublicBundle",
    "backward",
    "decrypt_matrix",
    "default_pool",
    "draw_mask",
    "encrypt_rows",
    "encrypt_weights",
    "fingerprint",
    "forward",
    "input_grad",
    "prepare_weights",
    "public_bundle",
]

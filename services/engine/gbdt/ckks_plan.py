"""The packed layout of the encrypted histogram step (plain numpy, no SEAL).

Rows sit in the slots of ``chunks = ceil(rows / S)`` ciphertexts (``S = N/2`` complex slots; row
``r`` in chunk ``r // S``, slot ``r % S``), each slot holding ``g + i h`` of its row, zero outside
the node. A feature party's histogram is ``y = M^T x`` with ``M`` its 0/1 row x (feature, bin)
matrix: sparse, known only to it. Its width ``W`` is cut into power-of-two groups ``J <= S``
(binary decomposition of ``W``, so nothing is padded); each group is a rectangular diagonal
product, baby-step/giant-step::

    v = sum_g rot( sum_c sum_b rot(x_c, b) * roll(diag_{c, g*beta + b}, g*beta), g*beta )
    diag_{c,k}[i] = M_c[(i + k) mod S, i mod J],   y_j = sum_t v[j + t*J]  (log2(S/J) rotations)

so per node and group: ``chunks * J`` plaintext products, ``chunks * (beta - 1)`` baby rotations
(shared by all groups), ``J/beta - 1`` giant rotations and ``log2(S/J)`` folding rotations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
import numpy.typing as npt

from services.engine.gbdt.errors import GbdtParamsError

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
C128 = npt.NDArray[np.complex128]

POLY_DEGREE = 4096
COEFF_BITS = (54, 55)
"""One 54-bit data prime and a 55-bit special prime (key switching needs it at least as large):
109 bits, SEAL's 128-bit bound for N=4096."""
ENCODE_COST = 6
"""Encoding a diagonal costs about this many plaintext products (and additions; measured,
docs/adr/0012)."""
ROTATION_COST = 18
"""A rotation (key switch) costs about this many plaintext products (measured)."""
BAND_BETA = 8
"""Baby steps of the banded form (:meth:`HistPlan.band`); its giant steps are multiples."""
BAND_WINDOW = 256
"""At most this many diagonals in the banded form (bounds its giant-step keys)."""
DATA_BITS = 52
"""Products stay below ``2**52`` (the data prime is ~``2**54``; decoding needs < q/2)."""


@dataclass(frozen=True)
class Group:
    """One power-of-two block ``[offset, offset + size)`` of histogram slots."""

    offset: int
    size: int


@dataclass(frozen=True)
class Band:
    """The banded form of a small compact node (:meth:`HistPlan.band`): ``blocks`` blocks of
    ``block`` slots, each holding a ``window``-row stretch of the node's rows (and the
    ``width - 1`` rows after it), ``window`` diagonals."""

    block: int
    window: int
    blocks: int


@dataclass(frozen=True)
class HistPlan:
    """Layout of one feature party's encrypted histograms (both sides derive it identically)."""

    rows: int
    width: int
    poly_degree: int = POLY_DEGREE

    def __post_init__(self) -> None:
        if self.rows < 1 or self.width < 1:
            raise GbdtParamsError("an encrypted histogram needs rows and bins")
        if self.mask_bits < 8:
            raise GbdtParamsError(f"{self.rows} rows exceed the histogram's precision budget")

    @property
    def slots(self) -> int:
        """Complex slots per ciphertext."""
        return self.poly_degree // 2

    @property
    def chunks(self) -> int:
        """Ciphertexts per node upload."""
        return -(-self.rows // self.slots)

    @property
    def budget_bits(self) -> int:
        """Scale bits left once sums of ``rows`` values of |x| <= 1 fit below ``2**DATA_BITS``."""
        return DATA_BITS - math.ceil(math.log2(self.rows + 1))

    @property
    def mask_bits(self) -> int:
        """Scale bits of the 0/1 diagonals (their encoding error is summed over every row)."""
        return self.budget_bits // 2 - 3

    @property
    def g_bits(self) -> int:
        """Scale bits of the encrypted ``g + i h`` (key-switching noise is divided by it)."""
        return self.budget_bits - self.mask_bits

    @cached_property
    def groups(self) -> tuple[Group, ...]:
        """``width`` cut into blocks of at most ``slots``: full blocks, then what is left either
        in binary decomposition (nothing padded), as its largest power of two plus the rest
        padded to one power-of-two block, or padded to one block (zero columns cost a product
        per chunk each; every extra block costs ~10-20 rotations), whichever costs a dense
        node less."""
        full, offset, left = [], 0, self.width
        while left >= self.slots:
            full.append(Group(offset, self.slots))
            offset, left = offset + self.slots, left - self.slots
        binary, at, rest = list(full), offset, left
        while rest:
            size = 1 << (rest.bit_length() - 1)
            binary.append(Group(at, size))
            at, rest = at + size, rest - size
        if not left:
            return tuple(full)
        top = 1 << (left.bit_length() - 1)
        padded = [*full, Group(offset, top)]
        if left > top:
            padded.append(Group(offset + top, 1 << (left - top - 1).bit_length()))
        options = [tuple(binary), tuple(padded)]
        if 1 << (left - 1).bit_length() <= self.slots:  # or all of it padded to one block
            options.append((*full, Group(offset, 1 << (left - 1).bit_length())))
        return min(options, key=lambda gs: self._dense_cost(gs, self.chunks))

    def _dense_cost(self, groups: tuple[Group, ...], chunks: int) -> int:
        betas = [self.beta(g.size, chunks) for g in groups]
        shared = max(betas)
        rotations = chunks * (shared - 1)
        for g, own in zip(groups, betas, strict=True):
            rotations += g.size // max(own, min(shared, g.size)) - 1
            rotations += (self.slots // g.size).bit_length() - 1
        return chunks * sum(g.size for g in groups) + ROTATION_COST * rotations

    def beta(self, size: int, chunks: int) -> int:
        """Baby-step count minimising ``chunks * (beta - 1) + size / beta`` rotations."""
        return _beta(size, chunks)

    def group_beta(self, gi: int, chunks: int) -> int:
        """Baby steps of group ``gi``: its own optimum, or more where a larger group's baby
        rotations (shared by all groups) already exist: its giant steps then cost less."""
        return _group_beta(self, gi, chunks)

    @cached_property
    def steps(self) -> tuple[int, ...]:
        """Left rotations the evaluation needs (the Galois keys the label party generates)."""
        out: set[int] = set()
        for gi, grp in enumerate(self.groups):
            for beta in {self.group_beta(gi, c) for c in range(1, self.chunks + 1)}:
                out.update(range(1, beta))
                out.update(g * beta for g in range(1, grp.size // beta))
            step = grp.size
            while step < self.slots:
                out.add(step)
                step *= 2
        if self.chunks > 1:  # compact nodes exist: the banded form's babies, giants and folds
            out.update(range(1, BAND_BETA))
            out.update(range(BAND_BETA, BAND_WINDOW, BAND_BETA))
            step = 1 << self.width.bit_length()  # the smallest block: width + 1 slots or more
            while step < self.slots:
                out.add(step)
                step *= 2
        return tuple(sorted(out))

    def galois_elements(self) -> list[int]:
        """SEAL Galois elements ``3**step mod 2N`` of :attr:`steps`."""
        return [pow(3, s, 2 * self.poly_degree) for s in self.steps]

    def rotations(self, chunks: int) -> int:
        """Rotations of one node's evaluation over ``chunks`` ciphertexts."""
        babies = max(self.beta(g.size, chunks) for g in self.groups) - 1
        total = chunks * babies
        for gi, g in enumerate(self.groups):
            total += g.size // self.group_beta(gi, chunks) - 1
            total += (self.slots // g.size).bit_length() - 1
        return total

    def node_cost(self, chunks: int, compact: bool) -> float:
        """Feature-party cost of one node in plaintext products (measured ratios, ADR 0012)."""
        products = chunks * sum(g.size for g in self.groups)
        return products * (1 + (ENCODE_COST if compact else 0)) + ROTATION_COST * self.rotations(
            chunks
        )

    def compact(self, rows: int) -> bool:
        """Whether a node of ``rows`` rows is cheaper sent compacted (its rows only, diagonals
        encoded on the fly, rectangular or banded) than over every row's slots (pre-encoded
        diagonals)."""
        small = -(-rows // self.slots)
        if not 1 <= small < self.chunks:
            return False
        cost = self.node_cost(small, True)
        band = _band(self, rows)
        return min(cost, band[0] if band else cost) < self.node_cost(self.chunks, False)

    def band(self, rows: int) -> Band | None:
        """The banded form of a compact node of ``rows`` rows when it beats the rectangular one.

        Rows ``0 .. n-1`` fill ``blocks = S / block`` blocks, block ``u`` holding rows
        ``u * window + t (mod n)`` at its slots ``t < width + window - 1``; diagonal ``k <
        window`` has, in block ``u`` at slot ``c``, a 1 when row ``u * window + c + k (mod n)``
        has code ``c`` (each row counted once: ``u * window + k < n``). Then ``v[u * block + c]``
        sums the block's rows of code ``c``, and folding the blocks (``log2(blocks)``
        rotations) gives the histogram in slots ``0 .. width-1``, every slot a whole sum. About
        ``n * width / S`` diagonals instead of the rectangular form's ``width`` (per chunk):
        the cheap form for nodes of a few hundred rows."""
        if not self.compact(rows):
            return None
        band = _band(self, rows)
        return band[1] if band and band[0] < self.node_cost(-(-rows // self.slots), True) else None

    def results(self, rows: int | None) -> int:
        """Result ciphertexts of a node (``rows``: a compact node's rows, None: dense)."""
        return 1 if rows is not None and self.band(rows) else len(self.groups)

    def band_entries(self, codes: I64, band: Band) -> tuple[I64, I64, I64]:
        """The nonzero diagonals of a banded node whose rows have histogram slot indices
        ``codes`` (rows x features), sparse as :meth:`diagonal_entries`: row ``r`` with code
        ``c`` is the nonzero of diagonal ``k = t mod window`` at slot ``(t div window) * block +
        c``, ``t = (r - c) mod n`` (rolled by its giant step ``g * beta``)."""
        n = codes.shape[0]
        beta = min(BAND_BETA, band.window)
        r, f = np.nonzero(codes >= 0)
        c = codes[r, f]
        t = (r - c) % n
        k = t % band.window
        at = ((t // band.window) * band.block + c + (k // beta) * beta) % self.slots
        return _sparse(k, at, beta)

    def band_diagonals(self, codes: I64, band: Band) -> dict[tuple[int, int], C128]:
        """Pre-rotated nonzero diagonals ``(g, b) -> slot vector`` of a banded node
        (:meth:`band_entries`, dense)."""
        return self._dense(*self.band_entries(codes, band))

    def pack(self, values: npt.NDArray[np.complex128]) -> list[npt.NDArray[np.complex128]]:
        """Per-row complex values -> one slot vector per chunk (zero-padded); a banded node's
        rows in its blocks (:meth:`band`)."""
        n = values.shape[0]
        band = self.band(n) if n else None
        if band is not None:
            t = np.arange(self.width + band.window - 1)
            u = np.arange(band.blocks)[:, None]
            full = np.zeros((band.blocks, band.block), dtype=np.complex128)
            full[:, : t.size] = values[(u * band.window + t) % n]
            return [full.reshape(-1)]
        chunks = max(1, -(-values.shape[0] // self.slots))
        full = np.zeros(chunks * self.slots, dtype=np.complex128)
        full[: values.shape[0]] = values
        return list(full.reshape(chunks, self.slots))

    def diagonal_entries(
        self, codes: I64, chunk: int, grp: Group, beta: int
    ) -> tuple[I64, I64, I64]:
        """The nonzero diagonals of one chunk and group, sparse: their giant and baby steps
        ``(g, b)`` (one row each), and per nonzero entry (each a 1) its diagonal's row there and
        its slot.

        ``codes`` is (rows x features) of histogram slot indices of each row. Row ``r`` with
        code ``c`` (in the group) is the one nonzero of diagonal ``k = (r - c) mod J`` at slot
        ``i = (r - k) mod S`` (``i = c mod J``, ``i + k = r``): scattered directly, and rolled by
        its giant step ``g * beta``.
        """
        s, size = self.slots, grp.size
        part = codes[chunk * s : (chunk + 1) * s] - grp.offset
        r, f = np.nonzero((part >= 0) & (part < size))
        k = (r - part[r, f]) % size
        at = (r - k + (k // beta) * beta) % s
        return _sparse(k, at, beta)

    def diagonals(
        self, codes: I64, chunk: int, grp: Group, beta: int
    ) -> dict[tuple[int, int], C128]:
        """Pre-rotated nonzero diagonals ``(g, b) -> slot vector`` of one chunk and group
        (:meth:`diagonal_entries`, dense)."""
        return self._dense(*self.diagonal_entries(codes, chunk, grp, beta))

    def _dense(self, steps: I64, which: I64, at: I64) -> dict[tuple[int, int], C128]:
        diags = np.zeros((steps.shape[0], self.slots), dtype=np.complex128)
        diags[which, at] = 1.0
        return {(int(g), int(b)): d for (g, b), d in zip(steps, diags, strict=True)}

    def reference(self, codes: I64, x: npt.NDArray[np.complex128], grp: Group) -> F64:
        """What a group's evaluation computes, in numpy (for tests)."""
        out = np.zeros(grp.size, dtype=np.complex128)
        vecs = self.pack(x)
        beta = self.group_beta(self.groups.index(grp), len(vecs))
        for c, vec in enumerate(vecs):
            for (g, b), d in self.diagonals(codes, c, grp, beta).items():
                out += _fold(np.roll(np.roll(vec, -b) * d, -g * beta), grp.size)
        return out  # type: ignore[return-value]


def _sparse(k: I64, at: I64, beta: int) -> tuple[I64, I64, I64]:
    """Diagonal indices ``k`` of nonzero entries at slots ``at`` -> each distinct diagonal's
    ``(giant, baby)`` steps, and each entry's row in them and slot."""
    uniq, which = np.unique(k, return_inverse=True)
    steps = np.stack([uniq // beta, uniq % beta], axis=1).astype(np.int64)
    return steps, which.astype(np.int64), at.astype(np.int64)


def _fold(v: npt.NDArray[np.complex128], size: int) -> npt.NDArray[np.complex128]:
    out: npt.NDArray[np.complex128] = v.reshape(-1, size).sum(axis=0)
    return out


@lru_cache(maxsize=1 << 12)
def _beta(size: int, chunks: int) -> int:
    best, beta = 1, 1

    def cost(b: int) -> int:
        return chunks * (b - 1) + size // b

    while beta <= size:
        if cost(beta) < cost(best):
            best = beta
        beta *= 2
    return best


@lru_cache(maxsize=1 << 12)
def _group_beta(plan: HistPlan, gi: int, chunks: int) -> int:
    """:meth:`HistPlan.group_beta`, computed once per plan, group and chunk count (asked per
    node and chunk on both sides)."""
    size = plan.groups[gi].size
    shared = max(_beta(g.size, chunks) for g in plan.groups)
    return max(_beta(size, chunks), min(shared, size))


@lru_cache(maxsize=1 << 14)
def _band(plan: HistPlan, rows: int) -> tuple[float, Band] | None:
    """The cheapest banded layout of a node of ``rows`` rows and its cost in plaintext
    products, or None when no block size fits (``width + window <= block``); computed once
    per plan and size (the label party, the pool and the evaluator each ask per node)."""
    best: tuple[float, Band] | None = None
    block = 1 << plan.width.bit_length()
    while block <= plan.slots:
        blocks = plan.slots // block
        window = -(-rows // blocks)
        if window <= BAND_WINDOW and plan.width + window <= block:
            beta = min(BAND_BETA, window)
            rotations = beta - 1 + -(-window // beta) - 1 + blocks.bit_length() - 1
            cost = window * (1 + ENCODE_COST) + ROTATION_COST * rotations
            if best is None or cost < best[0]:
                best = (cost, Band(block, window, blocks))
        block *= 2
    return best

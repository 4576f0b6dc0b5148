"""The cell-key method: tier-2 cells perturbed by a function of the units in them.

As in the Australian Bureau of Statistics' TableBuilder and the UK 2021 census's flexible
tables, every privacy unit (an id's rows when the schema names an id column, else one row)
has a fixed random **record key**, and a cell's perturbation is looked up from the
**cell key**, the sum of the record keys of the units in the cell.  So the same set of
units always gets the same perturbation, whichever table, provider or dataset version
asks (asking again, or for another table with the same cell, gains nothing), while two
cells that differ by even one unit get unrelated perturbations: any sum or difference of
released cells carries their noise.  It is not differential privacy and draws nothing
from a random generator at query time.

**Record keys.**  The first 8 bytes of AES-CMAC (NIST SP 800-38B) under a key derived from
the dataset's 32-byte secret (HMAC-SHA256 of :data:`_KEY_LABEL`), of the unit's identity:
the id value, or, for a row, all its declared columns (so the key is a function of the
row's content: a new version that keeps a row keeps its key, wherever the row moved).
Identical rows share a key, and the cell key counts it as many times as they are there,
so it still depends on how many there are; numbering them apart would cost a sort of
all rows and change nothing that matters.  Each value is encoded in 8 bytes (64-bit
integers and IEEE doubles as they are, ``-0.0`` and NaN made canonical, booleans 0/1,
strings by the first 8 bytes of the SHA-256 of their UTF-8) plus a bitmap of nulls.
Without the secret (which never leaves the enterprise's key server unwrapped, except
into a tier-2 job) keys are unpredictable.

**Cell key.**  Each 64-bit record key is two 32-bit halves; the cell key is their sums
modulo 2**32, put together again.  Each lookup uses a uniform 64-bit number derived from it,
the first 8 bytes of SHA-256(label, NUL, cell key): label ``count`` for counts (and for the
number of values under a mean), ``sum:<column>`` for each summed column.

**Counts** (the p-table, :data:`COUNT_PTABLE`).  A count ``c`` of a cell whose unit with the
most rows has ``r`` of them (``r`` = 1 without an id column) is released as ``c + r * p``,
where ``p`` is uniform on the integers -L..L, L = min(:data:`MAX_COUNT_PERTURBATION`,
(c - floor) // r), ``floor`` being the platform's minimum cell size: a released count is
never below it.  Each row of the table is symmetric (zero mean exactly: the remainder of
2**64 that the 2L + 1 equal shares leave goes to p = 0); the full row (L = 2) has variance
2 and mean absolute perturbation 1.2.  Empty cells stay 0.

**Sums** (magnitude perturbation).  A sum is perturbed as a count of its largest
contribution would be: ``sum + x * d``, where ``x`` is the largest absolute contribution
of one unit in the cell and ``d`` is uniform on (-:data:`MAX_SUM_PERTURBATION`,
+:data:`MAX_SUM_PERTURBATION`) (zero mean, variance 4/3, mean absolute 1).  So whoever
subtracts cells to isolate one unit's value ``t`` (never more than ``x`` in absolute
value) gets it with noise of the order of ``x``, even for small integer values.  The result
is rounded to 10**(floor(log10(B)) - :data:`SUM_DIGITS`), B the column's largest declared
absolute bound: far finer than the noise, and coarse enough to remove the fine structure
of the lookup, which could otherwise tell apart candidate true values.

**Means** are the perturbed sum divided by the perturbed number of values (the count
perturbation applied to the values' count), so a mean times a count, or any other
combination of released figures, gives only perturbed sums.

Cell keys identical for different unit sets (a 2**-64 chance per pair) only make two
cells share a perturbation.  What the method does not protect against: averaging many
*different* derivations of one figure (each table that adds up to it differently brings
independent noise, so n of them narrow it by about the square root of n); attribute
disclosure (all units of a cell with the same value); and the secret's disclosure.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from bisect import bisect_right
from dataclasses import dataclass
from fractions import Fraction
from itertools import accumulate
from typing import Final

import numpy as np
import numpy.typing as npt
import polars as pl
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from analytics.schema import ColumnType, DatasetSchema

#: D: a count moves by at most this many times its unit with the most rows' row count.
MAX_COUNT_PERTURBATION: Final = 2
#: A sum moves by less than this many times its largest absolute unit contribution.
MAX_SUM_PERTURBATION: Final = 2.0
#: Perturbed sums are rounded to this many decimal places below the column's bound's.
SUM_DIGITS: Final = 6
#: Bytes of a dataset's cell-key secret.
SECRET_BYTES: Final = 32
#: Each lookup's uniform number has this many bits.
LOOKUP_BITS: Final = 64

_KEY_LABEL: Final = b"veil cell-key record keys v1"
_ROW_TAG: Final = b"veil:row:v1".ljust(16, b"\0")
_ID_TAG: Final = b"veil:id:v1".ljust(16, b"\0")
_LANE: Final = 2**32

Words = npt.NDArray[np.uint64]  # one 64-bit word per row
Blocks = npt.NDArray[np.uint8]  # one 16-byte block per row, shape (rows, 16)


# ---------------------------------------------------------------- record keys


def record_keys(frame: pl.DataFrame, schema: DatasetSchema, secret: bytes) -> Words:
    """Each row's unit's record key (unsigned 64-bit), in the frame's order.

    Rows of one id get the same key; without an id column each row is a unit.
    """
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"secret: expected {SECRET_BYTES} bytes")
    cmac = _Cmac(hmac.digest(secret, _KEY_LABEL, "sha256"))
    unit = schema.privacy_unit.id_column
    if unit is None:
        return _row_keys(frame, schema, cmac)
    # One key per distinct id, then each row gets its id's.
    ids = frame[unit].unique()
    block = _block(_field(ids, schema.column(unit).type), _nulls(ids))
    keys = pl.Series("key", _first_word(cmac.finish(cmac.start(_ID_TAG, len(ids)), block)))
    return _lookup(frame[unit], ids, keys)


def _row_keys(frame: pl.DataFrame, schema: DatasetSchema, cmac: _Cmac) -> Words:
    """CMAC of (tag, every declared value, the null bitmap): a function of the content."""
    words = [_field(frame[c.name], c.type) for c in schema.columns]
    for first in range(0, len(schema.columns), 64):  # one word of null flags per 64 columns
        word = np.zeros(frame.height, dtype=np.uint64)
        for bit, spec in enumerate(schema.columns[first : first + 64]):
            word |= _nulls(frame[spec.name]) << np.uint64(bit)
        words.append(word)
    if len(words) % 2:
        words.append(np.zeros(frame.height, dtype=np.uint64))
    state = cmac.start(_ROW_TAG, frame.height)
    for i in range(0, len(words) - 2, 2):
        state = cmac.step(state, _block(words[i], words[i + 1]))
    return _first_word(cmac.finish(state, _block(words[-2], words[-1])))


def _nulls(series: pl.Series) -> Words:
    return series.is_null().to_numpy().astype(np.uint64)


def _field(series: pl.Series, kind: ColumnType) -> Words:
    """A column's values as 64-bit words (nulls as 0; the null bitmap tells them apart)."""
    if kind is ColumnType.INTEGER:
        return series.cast(pl.Int64).fill_null(0).to_numpy().astype(np.int64).view(np.uint64)
    if kind is ColumnType.FLOAT:
        values = series.cast(pl.Float64).fill_null(0.0).to_numpy().astype(np.float64)
        values = np.where(values == 0.0, 0.0, values)  # -0.0 is 0.0
        values[np.isnan(values)] = np.nan  # one NaN
        return values.view(np.uint64)
    if kind is ColumnType.BOOLEAN:
        return series.fill_null(False).cast(pl.UInt64).to_numpy().astype(np.uint64)
    distinct = series.drop_nulls().unique()
    digests = [
        int.from_bytes(hashlib.sha256(value.encode()).digest()[:8], "little") for value in distinct
    ]
    return _lookup(series, distinct, pl.Series("word", digests, dtype=pl.UInt64))


def _lookup(series: pl.Series, keys: pl.Series, values: pl.Series) -> Words:
    """``values[i]`` for each element of ``series`` equal to ``keys[i]`` (0 if none): a hash
    join, much faster than a replacement for many distinct values."""
    table = pl.DataFrame({"k": keys, "v": values})
    found = pl.DataFrame({"k": series}).join(
        table, on="k", how="left", maintain_order="left", nulls_equal=True
    )
    return found["v"].fill_null(0).to_numpy().astype(np.uint64)


def _block(low: Words, high: Words) -> Blocks:
    """Two 64-bit words per row as one 16-byte block (little-endian)."""
    block = np.empty((len(low), 2), dtype="<u8")
    block[:, 0], block[:, 1] = low, high
    return block.view(np.uint8).reshape(-1, 16)


def _first_word(blocks: Blocks) -> Words:
    return np.ascontiguousarray(blocks[:, :8]).view("<u8")[:, 0].astype(np.uint64)


class _Cmac:
    """AES-CMAC (NIST SP 800-38B) of many messages of the same whole number of blocks at
    once: one AES pass over all rows per block (``tests/analytics/test_cellkey.py`` checks
    it against ``cryptography``'s CMAC)."""

    def __init__(self, key: bytes) -> None:
        # ECB is the bare block cipher applied to many blocks in one call: CMAC's chaining
        # is done here, row by row, not by a cipher mode.
        self._aes = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305
        zero = self._encrypt(np.zeros((1, 16), dtype=np.uint8))[0]
        doubled = (int.from_bytes(zero.tobytes(), "big") << 1) & (2**128 - 1)
        if zero[0] & 0x80:
            doubled ^= 0x87
        self._k1 = np.frombuffer(doubled.to_bytes(16, "big"), dtype=np.uint8)

    def _encrypt(self, blocks: Blocks) -> Blocks:
        out = self._aes.update(np.ascontiguousarray(blocks).tobytes())
        return np.frombuffer(out, dtype=np.uint8).reshape(-1, 16)

    def start(self, first: bytes, rows: int) -> Blocks:
        """The state after a first block that every message shares."""
        state = self._encrypt(np.frombuffer(first, dtype=np.uint8).reshape(1, 16))
        return np.repeat(state, rows, axis=0)

    def step(self, state: Blocks, block: Blocks) -> Blocks:
        return self._encrypt(state ^ block)

    def finish(self, state: Blocks, last: Blocks) -> Blocks:
        """The tags, ``last`` being each message's final (complete) block."""
        return self._encrypt(state ^ last ^ self._k1)


def cell_key(high_sum: int, low_sum: int) -> int:
    """The cell key from the sums of its units' record key halves (any size: reduced here)."""
    return (high_sum % _LANE) << 32 | (low_sum % _LANE)


def key_halves(keys: Words) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Record keys as their high and low 32-bit halves (signed 64-bit, to add up safely)."""
    return (keys >> np.uint64(32)).astype(np.int64), (keys & np.uint64(_LANE - 1)).astype(np.int64)


def lookup(key: int, label: str) -> int:
    """The uniform 64-bit number of ``key`` for the lookup ``label``."""
    digest = hashlib.sha256(label.encode() + b"\0" + key.to_bytes(8, "big")).digest()
    return int.from_bytes(digest[:8], "big")


# ---------------------------------------------------------------- the p-table


@dataclass(frozen=True)
class PTableRow:
    """Perturbations and their probabilities in units of 2**-64 (they add up to 2**64)."""

    perturbations: tuple[int, ...]
    weights: tuple[int, ...]

    def _moment(self, power: int) -> Fraction:
        pairs = zip(self.perturbations, self.weights, strict=True)
        return Fraction(sum(abs(p) ** power * w for p, w in pairs), 2**64)

    @property
    def mean(self) -> Fraction:
        pairs = zip(self.perturbations, self.weights, strict=True)
        return Fraction(sum(p * w for p, w in pairs), 2**64)

    @property
    def variance(self) -> Fraction:
        return self._moment(2) - self.mean**2

    @property
    def mean_abs(self) -> Fraction:
        return self._moment(1)

    def perturbation(self, uniform: int) -> int:
        """The perturbation a lookup number in [0, 2**64) selects."""
        return self.perturbations[bisect_right(list(accumulate(self.weights)), uniform)]


def _ptable_row(reach: int) -> PTableRow:
    share = 2**64 // (2 * reach + 1)
    perturbations = tuple(range(-reach, reach + 1))
    weights = [share] * len(perturbations)
    weights[reach] += 2**64 - share * len(perturbations)  # the remainder: no perturbation
    return PTableRow(perturbations, tuple(weights))


#: Row L: the perturbations of a count that may move by L units (0 .. D).
COUNT_PTABLE: Final = tuple(_ptable_row(reach) for reach in range(MAX_COUNT_PERTURBATION + 1))


def perturb_count(count: int, most_rows: int, key: int, floor: int) -> int:
    """``count`` perturbed (see the module docstring); never below ``floor`` unless 0."""
    if count <= 0:
        return 0
    step = max(1, most_rows)
    reach = min(MAX_COUNT_PERTURBATION, max(0, (count - floor) // step))
    return count + step * COUNT_PTABLE[reach].perturbation(lookup(key, "count"))


def perturb_sum(total: float, largest: float, key: int, column: str, bound: float) -> float:
    """``total`` perturbed by up to ``MAX_SUM_PERTURBATION * largest``, then rounded."""
    uniform = (lookup(key, f"sum:{column}") + 0.5) / 2**LOOKUP_BITS  # in (0, 1), symmetric
    value = total + abs(largest) * MAX_SUM_PERTURBATION * (2.0 * uniform - 1.0)
    return float(round(value, sum_digits(bound)))


def sum_digits(bound: float) -> int:
    """Decimal places of perturbed sums of a column whose largest absolute bound is ``bound``."""
    return SUM_DIGITS - math.floor(math.log10(bound)) if bound > 0 else SUM_DIGITS


def statement() -> dict[str, object]:
    """The perturbation's parameters as shown with every tier-2 result and preview."""
    full = COUNT_PTABLE[-1]
    return {
        "method": "cell-key",
        "count": {
            "max_change": MAX_COUNT_PERTURBATION,
            "variance": float(full.variance),
            "mean_abs_change": float(full.mean_abs),
            "in_units_of": "rows of the cell's unit with the most rows (1 without an id column)",
        },
        "sum": {
            "max_change": MAX_SUM_PERTURBATION,
            "variance": MAX_SUM_PERTURBATION**2 / 3,
            "mean_abs_change": MAX_SUM_PERTURBATION / 2,
            "in_units_of": "the largest absolute contribution of one unit in the cell",
        },
        "mean": "the perturbed sum divided by the perturbed count of its values",
        "consistent": "the same cell (the same units) always gets the same values",
    }

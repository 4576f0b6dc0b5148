"""The cell-key method's parts: record keys, the count p-table, the sum perturbation."""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import statistics
from fractions import Fraction

import numpy as np
import polars as pl
import pytest
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC

from analytics import cellkey
from analytics.schema import ColumnClass, ColumnSpec, ColumnType, DatasetSchema, PrivacyUnit

SECRET = bytes(range(32))
SCHEMA = DatasetSchema(
    columns=(
        ColumnSpec("line", ColumnType.STRING, ColumnClass.PUBLIC, categories=("a", "b")),
        ColumnSpec("n", ColumnType.INTEGER, ColumnClass.INTERNAL, 0, 100, nullable=True),
        ColumnSpec("x", ColumnType.FLOAT, ColumnClass.INTERNAL, -10, 10, nullable=True),
        ColumnSpec("ok", ColumnType.BOOLEAN, ColumnClass.INTERNAL, nullable=True),
    )
)


def rows(**columns: list[object]) -> pl.DataFrame:
    base: dict[str, list[object]] = {"line": ["a"], "n": [1], "x": [0.5], "ok": [True]}
    size = max(len(v) for v in columns.values()) if columns else 1
    data = {k: columns.get(k, v * size) for k, v in base.items()}
    return pl.DataFrame(
        data, schema={"line": pl.String, "n": pl.Int64, "x": pl.Float64, "ok": pl.Boolean}
    )


# ---------------------------------------------------------------- record keys


def test_the_batched_cmac_is_aes_cmac() -> None:
    key = os.urandom(32)
    messages = np.random.default_rng(7).integers(0, 256, (50, 4, 16), dtype=np.uint8)
    ours = cellkey._Cmac(key)
    state = ours.step(np.zeros((50, 16), np.uint8), messages[:, 0])
    for i in (1, 2):
        state = ours.step(state, messages[:, i])
    tags = ours.finish(state, messages[:, 3])
    for message, tag in zip(messages, tags, strict=True):
        reference = CMAC(algorithms.AES(key))
        reference.update(message.tobytes())
        assert reference.finalize() == tag.tobytes()


def test_a_row_key_is_the_cmac_of_its_encoded_values() -> None:
    frame = rows(line=["b"], n=[7], x=[-2.5], ok=[None])
    words = [
        int.from_bytes(hashlib.sha256(b"b").digest()[:8], "little"),
        7,
        int.from_bytes(np.float64(-2.5).tobytes(), "little"),
        0,  # a null boolean: 0, and bit 3 of the null bitmap
        0b1000,
        0,
    ]
    message = cellkey._ROW_TAG + b"".join(w.to_bytes(8, "little") for w in words)
    reference = CMAC(algorithms.AES(hmac.digest(SECRET, cellkey._KEY_LABEL, "sha256")))
    reference.update(message)
    expected = int.from_bytes(reference.finalize()[:8], "little")
    assert cellkey.record_keys(frame, SCHEMA, SECRET).tolist() == [expected]


def test_row_keys_follow_the_content_not_the_position() -> None:
    frame = rows(line=["a", "b", "a", "a"], n=[1, 2, 3, 1], x=[0.5, 1.5, None, 0.5])
    keys = cellkey.record_keys(frame, SCHEMA, SECRET).tolist()
    assert keys[0] == keys[3]  # identical rows: one key (the cell key counts both)
    assert len({keys[0], keys[1], keys[2]}) == 3
    shuffled = cellkey.record_keys(frame.reverse(), SCHEMA, SECRET).tolist()
    assert shuffled == keys[::-1]
    grown = pl.concat([frame, rows(line=["b"], n=[9])])  # a new version with one more row
    assert cellkey.record_keys(grown, SCHEMA, SECRET).tolist()[:4] == keys


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ({"n": [0]}, {"n": [None]}),  # null is not zero
        ({"x": [0.0]}, {"x": [None]}),
        ({"ok": [False]}, {"ok": [None]}),
        ({"line": ["a"]}, {"line": ["b"]}),
        ({"x": [1.0]}, {"x": [1.0000001]}),
    ],
)
def test_every_value_changes_the_key(
    one: dict[str, list[object]], other: dict[str, list[object]]
) -> None:
    first = cellkey.record_keys(rows(**one), SCHEMA, SECRET)
    second = cellkey.record_keys(rows(**other), SCHEMA, SECRET)
    assert first.tolist() != second.tolist()


def test_minus_zero_is_zero_and_the_secret_matters() -> None:
    zero = cellkey.record_keys(rows(x=[0.0]), SCHEMA, SECRET)
    assert cellkey.record_keys(rows(x=[-0.0]), SCHEMA, SECRET).tolist() == zero.tolist()
    other = cellkey.record_keys(rows(x=[0.0]), SCHEMA, bytes(32))
    assert other.tolist() != zero.tolist()
    with pytest.raises(ValueError, match="32 bytes"):
        cellkey.record_keys(rows(), SCHEMA, b"short")


def test_an_id_has_one_key_whatever_its_rows() -> None:
    schema = DatasetSchema(
        columns=(
            ColumnSpec("pid", ColumnType.STRING, ColumnClass.INTERNAL),
            ColumnSpec("v", ColumnType.INTEGER, ColumnClass.INTERNAL, 0, 9),
        ),
        privacy_unit=PrivacyUnit("pid", max_rows_per_id=5),
    )
    frame = pl.DataFrame({"pid": ["p1", "p2", "p1"], "v": [1, 2, 3]})
    keys = cellkey.record_keys(frame, schema, SECRET).tolist()
    assert keys[0] == keys[2] != keys[1]
    alone = pl.DataFrame({"pid": ["p1"], "v": [9]})
    assert cellkey.record_keys(alone, schema, SECRET).tolist() == [keys[0]]


def test_the_cell_key_adds_halves_modulo_2_to_the_32() -> None:
    keys = np.array([2**64 - 1, 2**32 + 5], dtype=np.uint64)
    high, low = cellkey.key_halves(keys)
    assert cellkey.cell_key(int(high.sum()), int(low.sum())) == (
        ((2**32 - 1 + 1) % 2**32) << 32 | ((2**32 - 1 + 5) % 2**32)
    )


# ---------------------------------------------------------------- the p-table


@pytest.mark.parametrize("reach", range(cellkey.MAX_COUNT_PERTURBATION + 1))
def test_each_ptable_row_is_symmetric_with_zero_mean(reach: int) -> None:
    row = cellkey.COUNT_PTABLE[reach]
    assert row.perturbations == tuple(range(-reach, reach + 1))
    assert sum(row.weights) == 2**64
    assert row.weights == row.weights[::-1]
    assert row.mean == 0
    assert abs(row.variance - Fraction(reach * (reach + 1), 3)) < Fraction(1, 2**60)


def test_the_full_row_has_the_documented_variance_and_mean_error() -> None:
    full = cellkey.COUNT_PTABLE[-1]
    assert float(full.variance) == pytest.approx(2.0, abs=1e-15)
    assert float(full.mean_abs) == pytest.approx(1.2, abs=1e-15)
    statement = cellkey.statement()
    assert statement["count"] == {
        "max_change": 2,
        "variance": pytest.approx(2.0),
        "mean_abs_change": pytest.approx(1.2),
        "in_units_of": "rows of the cell's unit with the most rows (1 without an id column)",
    }


def test_a_lookup_selects_by_the_cumulative_weights() -> None:
    row = cellkey.COUNT_PTABLE[2]
    share = row.weights[0]
    assert row.perturbation(0) == -2
    assert row.perturbation(share - 1) == -2
    assert row.perturbation(share) == -1
    assert row.perturbation(2**64 - 1) == 2


def test_counts_move_at_most_d_units_and_never_below_the_floor() -> None:
    moves = []
    for key in range(3000):
        for count, most in ((10, 1), (11, 1), (12, 1), (40, 1), (40, 3), (13, 2)):
            released = cellkey.perturb_count(count, most, key * 7919, floor=10)
            assert released >= 10
            assert abs(released - count) <= 2 * most
            assert (released - count) % most == 0
            if (count, most) == (40, 1):
                moves.append(released - count)
        assert cellkey.perturb_count(10, 1, key, floor=10) == 10  # at the floor: exact
        assert cellkey.perturb_count(0, 0, key, floor=10) == 0
    # The lookups are uniform: the full row's moments, from 3000 cell keys (6 sigma).
    assert abs(statistics.fmean(moves)) < 6 * math.sqrt(2 / 3000)
    assert statistics.pvariance(moves) == pytest.approx(2.0, abs=0.35)
    assert set(moves) == {-2, -1, 0, 1, 2}


def test_sums_move_less_than_twice_the_largest_contribution() -> None:
    changes = []
    for key in range(3000):
        released = cellkey.perturb_sum(1000.0, 40.0, key * 104729, "x", bound=100.0)
        assert abs(released - 1000.0) <= 80.0
        assert released == round(released, 4)  # 10**(floor(log10(100)) - 6)
        changes.append((released - 1000.0) / 40.0)
    assert abs(statistics.fmean(changes)) < 6 * math.sqrt((4 / 3) / 3000)
    assert statistics.pvariance(changes) == pytest.approx(4 / 3, abs=0.2)
    assert min(changes) < -1.9 and max(changes) > 1.9
    assert cellkey.perturb_sum(0.0, 0.0, 12345, "x", bound=100.0) == 0.0


def test_lookups_for_different_labels_are_unrelated() -> None:
    assert cellkey.lookup(99, "count") != cellkey.lookup(99, "sum:x")
    assert cellkey.lookup(99, "sum:x") != cellkey.lookup(99, "sum:y")
    assert cellkey.lookup(99, "count") == cellkey.lookup(99, "count")
    assert 0 <= cellkey.lookup(2**64 - 1, "count") < 2**64


def test_sum_digits_follow_the_declared_bound() -> None:
    assert cellkey.sum_digits(150.0) == 4
    assert cellkey.sum_digits(1e6) == 0
    assert cellkey.sum_digits(0.5) == 7

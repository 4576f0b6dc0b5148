"""A private query's rows handed to OpenDP as a scan of a file in memory, never on disk."""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl

from analytics import dp_scratch
from analytics.private_query import run_private_query
from analytics.query_document import parse_query
from analytics.schema import ColumnClass, ColumnSpec, ColumnType, DatasetSchema

SCHEMA = DatasetSchema(
    (
        ColumnSpec("line", ColumnType.STRING, ColumnClass.PUBLIC, categories=("a", "b")),
        ColumnSpec("temp", ColumnType.FLOAT, ColumnClass.INTERNAL, 0.0, 100.0),
    )
)
QUERY = parse_query(
    {"aggregates": [{"kind": "count"}, {"kind": "mean", "column": "temp"}], "group_by": ["line"]}
)


def _frame(rows: int) -> pl.DataFrame:
    return pl.DataFrame({"line": ["a", "b"] * (rows // 2), "temp": [40.0, 60.0] * (rows // 2)})


def test_the_scan_serializes_as_a_path_and_its_file_is_removed(memory_dir: Path) -> None:
    data = _frame(200_000).lazy()
    in_memory_plan = len(data.serialize())
    with dp_scratch.scanned(data, memory_dir) as scan:
        (written,) = list(memory_dir.iterdir())
        assert written.suffix == ".arrow"
        assert len(scan.serialize()) < in_memory_plan / 100  # the rows are not in the plan
        assert scan.collect().equals(data.collect())
    assert list(memory_dir.iterdir()) == []


def test_a_query_with_scratch_releases_the_same_calibrated_values(memory_dir: Path) -> None:
    frame = _frame(20_000)
    plain = run_private_query(frame, SCHEMA, QUERY, 1.0)
    scanned = run_private_query(frame, SCHEMA, QUERY, 1.0, scratch=memory_dir)
    assert scanned.epsilon == plain.epsilon
    for ours, theirs in zip(scanned.rows, plain.rows, strict=True):
        assert ours.group == theirs.group
        count = ours.values[0]  # a mean's interval depends on the noisy count: not compared
        assert count.noise_scale == theirs.values[0].noise_scale
        assert abs(count.value - 10_000) < 20 * count.noise_scale  # the data was really read
    assert list(memory_dir.iterdir()) == []


def test_a_directory_on_disk_is_never_written() -> None:
    on_disk = Path(__file__).resolve().parent  # the checkout: a disk, not a tmpfs
    assert not dp_scratch.in_memory(on_disk)
    before = sorted(on_disk.iterdir())
    data = _frame(1_000).lazy()
    with dp_scratch.scanned(data, on_disk) as kept:
        assert kept is data  # the rows stay in memory, in the plan
        assert sorted(on_disk.iterdir()) == before
    release = run_private_query(_frame(1_000), SCHEMA, QUERY, 1.0, scratch=on_disk)
    assert release.rows and sorted(on_disk.iterdir()) == before


def test_rows_that_do_not_fit_stay_in_memory(memory_dir: Path) -> None:
    assert not dp_scratch._fits(memory_dir, 1e18)  # more than any tmpfs has free
    assert dp_scratch._fits(memory_dir, 1_000)


def test_a_query_scans_parquet_written_to_memory(memory_dir: Path) -> None:
    buffer = io.BytesIO()
    _frame(20_000).write_parquet(buffer)
    with dp_scratch.parquet_file(buffer.getvalue(), memory_dir) as path:
        assert path is not None and path.parent == memory_dir
        release = run_private_query(pl.scan_parquet(path), SCHEMA, QUERY, 1.0)
    assert list(memory_dir.iterdir()) == []
    count = release.rows[0].values[0]
    assert abs(count.value - 10_000) < 20 * count.noise_scale  # the file was really read


def test_parquet_is_never_written_to_a_directory_on_disk() -> None:
    on_disk = Path(__file__).resolve().parent
    before = sorted(on_disk.iterdir())
    with dp_scratch.parquet_file(b"PAR1", on_disk) as path:
        assert path is None and sorted(on_disk.iterdir()) == before

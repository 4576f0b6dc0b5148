"""A benchmark run with the control plane on PostgreSQL (as ``make cluster-demo`` runs it):
the phases' row locks and JSON columns hold there too."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from cluster.postgres import PostgresServer
from sandbox.config.settings import Settings
from tests.nodes.test_collaborations import LOCAL, World, build_world, propose


@pytest.fixture(scope="module")
def pg_world(tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer) -> Iterator[World]:
    home = tmp_path_factory.mktemp("collab-pg")
    settings = Settings(
        data_dir=home / "cp", **{**LOCAL, "database_url": postgres.create_database()}
    )
    with contextlib.ExitStack() as stack:
        yield build_world(stack, home, settings, nodes=5)


@pytest.mark.slow  # six nodes on PostgreSQL, ~25 s (make test-slow); on SQLite in make test
def test_a_benchmark_is_released_with_the_control_plane_on_postgresql(pg_world: World) -> None:
    collaboration = propose(pg_world)
    pg_world.join(pg_world.members, collaboration)
    run = pg_world.provider.start_collaboration_run(collaboration)
    done = pg_world.rounds(collaboration, run["id"])
    assert done["status"] == "released", done
    assert done["survivors"] == 5 and done["release"]["dominance_checked"] is True


@pytest.mark.slow  # two nodes on PostgreSQL, ~12 s (make test-slow); on SQLite in make test
def test_a_supply_chain_analysis_is_released_with_the_control_plane_on_postgresql(
    tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer
) -> None:
    """The two-party phases, their locks and the deletion of the sealed messages."""
    from tests.nodes.test_pair_analyses import build_pair_world

    home = tmp_path_factory.mktemp("pairs-pg")
    settings = Settings(
        data_dir=home / "cp", **{**LOCAL, "database_url": postgres.create_database()}
    )
    with contextlib.ExitStack() as stack:
        world = build_pair_world(stack, home, settings)
        collaboration = world.propose()
        world.approve("oem", collaboration)
        world.approve("supplier", collaboration)
        run = world.provider.start_collaboration_run(collaboration)
        done = world.rounds(collaboration, run["id"])
    assert done["status"] == "released", done
    assert {row["group"]["family"] for row in done["release"]["rows"]} >= {"axle", "brake"}

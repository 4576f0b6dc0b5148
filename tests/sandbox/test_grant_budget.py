"""Lowering a grant's budget never leaves more spent than the new budget."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import update

from policies.errors import InvalidRequest
from policies.grants import EPSILON_UNIT, Grant, GrantChange, change_grant
from sandbox.runtime.veil import Veil
from tests.sandbox.conftest import World


def test_lowering_cannot_overtake_a_debit_it_did_not_see(veil: Veil, world: World) -> None:
    """A debit committed by another process after the grant was loaded (possible on
    PostgreSQL) must be seen by the check, not the stale value loaded before it."""
    with veil.db.transaction() as session:
        grant = session.get(Grant, world.grant_id)
        assert grant is not None and grant.epsilon_spent == 0  # world's grant: ε 1.0, unspent
        session.execute(  # the other process's debit, behind the loaded object's back
            update(Grant)
            .where(Grant.id == grant.id)
            .values(epsilon_spent=int(0.8 * EPSILON_UNIT))
            .execution_options(synchronize_session=False)
        )
        with pytest.raises(InvalidRequest, match="not below what was spent"):
            change_grant(session, grant, GrantChange(epsilon=0.5), datetime.now(UTC))
        assert grant.epsilon_budget == int(1.0 * EPSILON_UNIT)
        change_grant(session, grant, GrantChange(epsilon=0.9), datetime.now(UTC))
        assert grant.epsilon_budget == int(0.9 * EPSILON_UNIT)

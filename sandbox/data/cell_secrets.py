"""Each dataset's cell-key secret: the key of its record keys (``analytics.cellkey``).

32 random bytes from the enterprise's key server, stored only wrapped by the enterprise's
key (``datasets.cellkey_wrapped``), exactly as a data key.  A dataset gets its secret on
its first tier-2 job, or tier-5 job on non-public columns (existing datasets too: a
migration cannot reach the key server).  The worker unwraps it for each such job: a
tier-2 job's sandboxed process gets it in its task; a tier-5 job keeps it in the worker,
which perturbs the aggregates it releases (``sandbox.jobs.code_runs``).  Nothing else ever
holds it in clear.  The secret stays the same across the dataset's versions: that is
what keeps an unchanged cell's value the same in a new version.  Key-server requests
carry the label ``cellkey:<dataset id>/<version>``, which the key audit explains by the
job running on that version (``sandbox.oversight.keyaudit``).
"""

from __future__ import annotations

from sqlalchemy import select, update

from policies import audit
from sandbox.runtime.veil import Veil
from sandbox.store.models import Dataset


def cell_secret(veil: Veil, dataset: Dataset, tenant: str, version: int, job_id: str) -> bytes:
    """The dataset's secret, made now if it has none (audited ``dataset.cellkey_created``).

    Raises what the key server's front door raises (unavailable: the job fails closed).
    """
    label = f"cellkey:{dataset.id}"
    wrapped = dataset.cellkey_wrapped
    if wrapped is None:
        secret, wrapped = veil.keys.issue_secret(tenant, label, version)
        with veil.db.transaction() as session:
            stored = session.execute(
                update(Dataset)
                .where(Dataset.id == dataset.id, Dataset.cellkey_wrapped.is_(None))
                .values(cellkey_wrapped=wrapped)
            )
            if stored.rowcount == 1:
                audit.record(
                    session,
                    "dataset.cellkey_created",
                    tenant_id=dataset.enterprise_id,
                    resource=f"dataset:{dataset.id}",
                    details={"job_id": job_id},
                )
                return secret
            # Another worker's secret was stored first: that one is the dataset's.
            wrapped = session.scalar(
                select(Dataset.cellkey_wrapped).where(Dataset.id == dataset.id)
            )
            assert wrapped is not None
    return veil.keys.open_secret(tenant, label, version, wrapped)

"""A running job's progress: training epochs reported to its row, and the provider's cancel
request polled."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select

from analytics.training_spec import TrainingSpec
from sandbox.isolation.child import Task
from sandbox.runtime.veil import Veil
from sandbox.store.models import Job


class JobProgress:
    """Reports training epochs to the job row and polls the provider's cancel request
    (at most twice a second)."""

    def __init__(self, veil: Veil, job_id: str, task: Task) -> None:
        self.veil, self.job_id = veil, job_id
        self.epochs = task.query.epochs if isinstance(task.query, TrainingSpec) else None
        self._checked = 0.0
        self._stop = False

    def on_progress(self, message: dict[str, Any]) -> None:
        epoch, loss = message.get("epoch"), message.get("loss")
        if self.epochs is None or not isinstance(epoch, int) or not 0 < epoch <= self.epochs:
            return  # only training reports progress; anything else is ignored
        with self.veil.db.transaction() as session:
            job = session.get(Job, self.job_id)
            assert job is not None
            job.progress = {
                "epoch": epoch,
                "epochs": self.epochs,
                "loss": float(loss) if isinstance(loss, int | float) else None,
                "at": self.veil.clock().isoformat(),
            }

    def cancelled(self) -> bool:
        """Whether the provider (or a suspension) asked this job to stop, read now."""
        with self.veil.db.read() as session:
            return bool(session.scalar(select(Job.cancel_requested).where(Job.id == self.job_id)))

    def should_stop(self) -> bool:
        now = time.monotonic()
        if not self._stop and now - self._checked >= 0.5:
            self._checked = now
            with self.veil.db.transaction() as session:
                self._stop = bool(
                    session.scalar(select(Job.cancel_requested).where(Job.id == self.job_id))
                )
        return self._stop

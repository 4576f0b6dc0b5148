"""The node's link to the control plane: one thread, outbound only.

Each round: publish what changed (signing keys, catalog, grants) and mirror the providers;
take the pending code requests and send the enterprise's decisions on them (``node.work.code``);
answer the collaboration runs' phases (``node.work.collab``); take
the jobs waiting on this node's datasets (each decided here again, ``node.work.jobs``); sign
the answers of the jobs that ended; send every answer not yet acknowledged; say which
outputs wait here for the enterprise.  When the control plane
cannot be reached the node keeps its data and answers, serves nothing to anyone, and
tries again later (doubling the wait up to ``max_backoff_s``); nothing is lost: an answer
stays in ``node_jobs`` until the control plane acknowledges it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from keys.node_auth import WAKE_HEADER
from node.catalog.publish import Publisher
from node.protocol.client import ControlPlane, ControlPlaneRefused, ControlPlaneUnavailable
from node.work import jobs, recovery
from node.work.code import CodeDesk
from node.work.collab import CollabDesk
from sandbox.runtime.veil import Veil

log = logging.getLogger(__name__)

#: How long the thread's idle claim waits on the control plane for a job (a long poll: a
#: job queued meanwhile is handed over at once). The control plane caps it at 20 s.
CLAIM_WAIT_S = 10.0
#: While a job runs here, how often the thread looks for its end.
IN_FLIGHT_POLL_S = 0.01
#: While a job runs here, how often a full round (publish, claim more) still happens; in
#: between the thread only looks for the job's end.
IN_FLIGHT_ROUND_S = 0.1
#: How often a round reads the pending code requests (tier 5) when nothing woke it for one
#: (a waiting claim returns at once when one is submitted).
CODE_EVERY_S = 2.0


@dataclass
class RoundReport:
    published: int = 0
    taken: int = 0
    answered: int = 0
    delivered: int = 0
    errors: list[str] = field(default_factory=list)


class NodeLink:
    """Publishes, pulls jobs and returns answers, in rounds (``run_round`` or the thread)."""

    def __init__(
        self,
        veil: Veil,
        control: ControlPlane,
        node_id: str,
        enterprise_id: str,
        *,
        poll_s: float = 1.0,
        max_backoff_s: float = 30.0,
        jobs_per_round: int = 8,
        claim_wait_s: float = CLAIM_WAIT_S,
    ) -> None:
        self.veil, self.control = veil, control
        self.node_id, self.enterprise_id = node_id, enterprise_id
        self.publisher = Publisher(veil, control, node_id)
        self.code_desk = CodeDesk(veil, control, node_id, enterprise_id)
        self.collab_desk = CollabDesk(veil, control, node_id, enterprise_id)
        self.poll_s, self.max_backoff_s, self.jobs_per_round = poll_s, max_backoff_s, jobs_per_round
        self.claim_wait_s = claim_wait_s
        self._progress_sent: dict[str, int] = {}
        self._held_sent: set[str] = set()
        self._code_at, self._code_due = 0.0, True
        self._woke = ""  # what woke the last claim (the control plane's hint)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = False
        # Set at start and after each failed round: a claim's answer may have been lost, or
        # the node stopped before recording a job it claimed (``_take_lost``).
        self._recover = True

    def run_round(self, claim_wait_s: float = 0.0) -> RoundReport:
        """One round; raises ControlPlaneUnavailable when the control plane is away.

        ``claim_wait_s``: how long the first claim may wait on the control plane for a job
        to be queued (a long poll: the thread uses it when nothing is in flight here, and
        then reads the pending code requests only when woken for one or every
        ``CODE_EVERY_S``, and a round whose claim a collaboration phase woke answers only the
        phase; a round without it reads everything every time)."""
        report = RoundReport()
        # Answers first: signed and kept even when the control plane is away, and sent
        # before anything else so a finished job's release waits for nothing.
        report.answered = jobs.answer_finished(self.veil, self.node_id)
        # The signing keys before any document they sign (after a switch of profile or a
        # rotation, the answers above are signed by a version the control plane lacks).
        report.published = self.publisher.publish_keys()
        report.delivered = self._deliver(report)
        if self._collab_only(claim_wait_s):
            # Woken for a collaboration phase, and the rest was read moments ago: only the
            # phase (the nodes' answers are what the run waits for).
            report.published += self.collab_desk.sync()
        else:
            report.published += self.publisher.sync()
            due = self._code_due or time.monotonic() - self._code_at >= CODE_EVERY_S
            if not claim_wait_s or due:
                report.published += self.code_desk.sync()
                report.published += self.collab_desk.sync()
                self._code_at, self._code_due = time.monotonic(), False
        self._woke = ""
        if self._recover:
            report.taken += self._take_lost()
            self._recover = False
        wait = claim_wait_s if not jobs.in_flight(self.veil) else 0.0
        for _ in range(self.jobs_per_round):
            reply = self.control.send("POST", self._claim_path(wait))
            job = reply.body
            if job is None:
                # A waiting claim that returns empty early was woken for a code request or
                # a collaboration phase (the reply says which): the next round takes it.
                woke = reply.headers.get(WAKE_HEADER, "") if wait else ""
                self._woke = woke if woke in ("code", "collaboration") else ""
                self._code_due = self._code_due or self._woke == "code"
                break
            report.taken, wait = report.taken + 1, 0.0
            # A provider may sign its letter and submit a job while this claim waited: take
            # the signatures first (each checked here), or the job would be refused.
            self.publisher.signatures.sync()
            jobs.take(self.veil, self.node_id, self.enterprise_id, job)
            self._acknowledge(job)  # after: the local worker starts on it meanwhile
        report.answered += jobs.answer_finished(self.veil, self.node_id)
        report.delivered += self._deliver(report)
        self._send_progress()
        self._send_held()
        return report

    def _collab_only(self, claim_wait_s: float) -> bool:
        """Whether this round answers only the collaboration phase that woke its claim: not
        when the catalog and the code requests are due (every ``CODE_EVERY_S``)."""
        return (
            bool(claim_wait_s)
            and self._woke == "collaboration"
            and not self._code_due
            and time.monotonic() - self._code_at < CODE_EVERY_S
        )

    def _claim_path(self, wait: float) -> str:
        """A claim, waiting ``wait`` s; it returns early for a phase opened since the node
        last read its tasks (``since``: the control plane's time of that read)."""
        if not wait:
            return "/node/v1/jobs/claim"
        query = f"?wait={wait:g}"
        with contextlib.suppress(ValueError):
            since = float(self.collab_desk.read_at)
            if math.isfinite(since) and since > 0:
                query += f"&since={since:.6f}"
        return "/node/v1/jobs/claim" + query

    def _send_held(self) -> None:
        """Tell the control plane each job whose output waits here for the enterprise."""
        for control_id in jobs.held(self.veil):
            if control_id in self._held_sent:
                continue
            with contextlib.suppress(ControlPlaneRefused):  # ended there: its answer says so
                self.control.call("POST", f"/node/v1/jobs/{control_id}/held")
            self._held_sent.add(control_id)

    def _acknowledge(self, job: dict[str, Any]) -> bool:
        """Tell the control plane this node has the job (after taking it: deciding it costs
        no round trip); False when the control plane took it back meanwhile, because this
        node was away past ``sandbox.jobs.leases.HANDOVER_S`` with the claim's answer
        unread.  Then the job is queued there again, or ended (expired, cancelled): handed
        again, it is a replay here and gets the one answer this node signs; ended, that
        answer is refused and kept here.  The node decides with its own grants either way
        (an expired grant refuses it here too)."""
        try:
            self.control.call("POST", f"/node/v1/jobs/{job.get('id', '')}/taken")
        except ControlPlaneRefused as exc:
            if exc.status >= 500:
                raise
            log.warning("job %s was taken back by the control plane: %s", job.get("id"), exc.code)
            return False
        return True

    def _send_progress(self) -> None:
        """Tell the control plane each new epoch of a job training here (never its loss:
        the enterprise sees that on its node)."""
        for control_id, epoch, epochs in jobs.progress(self.veil):
            if self._progress_sent.get(control_id, 0) >= epoch:
                continue
            body = {"epoch": epoch, "epochs": epochs}
            with contextlib.suppress(ControlPlaneRefused):  # ended there: its answer says so
                self.control.call("POST", f"/node/v1/jobs/{control_id}/progress", body)
            self._progress_sent[control_id] = epoch

    def _deliver(self, report: RoundReport) -> int:
        """Send every answer the control plane has not acknowledged; how many were sent."""
        sent = 0
        for control_id, answer in jobs.undelivered(self.veil):
            verb = "release" if answer.get("kind") == "release" else "fail"
            path = f"/node/v1/jobs/{control_id}/{verb}"
            try:
                self.control.call("POST", path, answer)
            except ControlPlaneRefused as exc:
                if exc.status >= 500:
                    raise
                # The control plane will never take it (e.g. the job was cancelled there
                # meanwhile): kept here, in node_jobs and the audit chain; not sent again.
                report.errors.append(f"{control_id}: {exc.code}")
            jobs.delivered(self.veil, control_id)
            sent += 1
        return sent

    def _take_lost(self) -> int:
        """Take again the jobs running under this node's claim on the control plane that it
        did not finish taking (``node.work.recovery``); those it took are left alone."""
        running = self.control.call("GET", "/node/v1/jobs/running") or []
        lost = recovery.lost(self.veil, [str(job.get("id", "")) for job in running])
        for job in running:
            if job.get("id") in lost:
                log.warning("taking job %s again: claimed before the node stopped", job["id"])
                recovery.take_again(self.veil, self.node_id, self.enterprise_id, job)
                self._acknowledge(job)
        return len(lost)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="veil-node-link", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _answer_round(self) -> RoundReport:
        """While a local job runs: only look for its end and send its answer (no request to
        the control plane otherwise; a full round comes every ``IN_FLIGHT_ROUND_S``)."""
        report = RoundReport()
        report.answered = jobs.answer_finished(self.veil, self.node_id)
        if report.answered:
            report.delivered = self._deliver(report)
        return report

    def _run(self) -> None:
        wait, full_at, watching = self.poll_s, 0.0, False
        while not self._stop.is_set():
            try:
                if watching and time.monotonic() - full_at < IN_FLIGHT_ROUND_S:
                    report = self._answer_round()
                else:
                    full_at = time.monotonic()
                    report = self.run_round(self.claim_wait_s)
            except ControlPlaneUnavailable as exc:
                self._recover = True
                if self.connected:
                    log.warning("control plane unreachable (%s): retrying", exc)
                self.connected = False
                wait = min(max(wait * 2, self.poll_s), self.max_backoff_s)
            except Exception:
                self._recover = True
                log.exception("node link round failed")
                wait = min(max(wait * 2, self.poll_s), self.max_backoff_s)
            else:
                self.connected, wait = True, self.poll_s
                if report.taken or report.answered:
                    watching = False
                    continue  # more may be waiting: no pause
                watching = jobs.in_flight(self.veil)
                if watching:
                    wait = IN_FLIGHT_POLL_S  # a local job runs: notice its end at once
                    self._send_progress()
                elif self.claim_wait_s:
                    continue  # the round's claim waited on the control plane already
            self._stop.wait(wait)

"""What a try does with its job's end, and with a kill: drain the log, decide, acknowledge.

A mixin beside the operator (as ``RenderingMixin`` is), so the operator's module reads as the
resume flow (start, reattach, defer, wait) and this one as its two ways out: the job ended (or the
try timed out), or Airflow killed the try (``on_kill``, decided by ``utils/task_state``'s table).
The order is the promise: the last log bytes are shown and recorded, then the outcome decided,
then the result acknowledged, then the try returns or raises.
"""

from __future__ import annotations

from typing import Any

from orchesjob_provider.client.records import JobLogs, JobRecord
from orchesjob_provider.exceptions import OrchesjobWrongState
from orchesjob_provider.hooks.orchesjob import OrchesjobHook
from orchesjob_provider.utils import metrics
from orchesjob_provider.utils.address import AgentAddress
from orchesjob_provider.utils.messages import PHASE_TEXT, failure_message, unknown_outcome_message
from orchesjob_provider.utils.task_state import KEEP, TaskIdent, kill_action, read_task_state, timed_out_now
from orchesjob_provider.version_compat import AirflowException, AirflowSkipException
from remote_agent.common.vocab import FAILED, outcome_unknown  # the agent's own rule, pure


class OutcomeMixin:
    """For ``OrchesjobOperator``: its outcome and kill handling (the attributes below are its)."""

    log: Any
    hook: OrchesjobHook
    agent: AgentAddress
    skip_on_exit_code: Any
    timeout_seconds: float | None
    abort_grace_seconds: float
    abort_on_kill: bool
    _job_id: str | None
    _run_key: str | None
    _task_ident: TaskIdent | None

    def _print_logs(self, res: JobLogs) -> None:  # the operator's (masked) log writer
        raise NotImplementedError

    def _drain_logs(self, job_id: str, offsets: dict[str, int]) -> tuple[JobRecord | None, dict[str, int]]:
        job = None
        shown = dict(offsets)
        for res, next_offsets in self.hook.read_logs(job_id, offsets, record=True):
            self._print_logs(res)
            job = res.job or job
            offsets = next_offsets
        if offsets != shown:
            try:  # remember the last bytes shown too (a crash before the ack must not repeat them)
                self.hook.poll([(job_id, offsets)], limit=1, record=True)
            except Exception as e:
                self.log.debug("Could not record the log offsets of job %s: %s", job_id, e)
        return job, offsets

    def _finish(self, job: JobRecord, offsets: dict[str, int]) -> Any:
        """Read the remaining logs, decide the outcome, acknowledge it, then return or raise."""
        fresh, offsets = self._drain_logs(job.job_id, offsets)
        job = fresh if fresh is not None and fresh.is_terminal else job
        outcome: BaseException | None = None
        if job.succeeded:
            self.log.info("Remote job %s SUCCEEDED (exit code %s)%s", job.job_id, job.exit_code,
                          PHASE_TEXT.get(job.raw.get("phase") or "", ""))
        elif job.status == FAILED and job.exit_code in self.skip_on_exit_code:
            outcome = AirflowSkipException(
                f"Remote job {job.job_id} exited with code {job.exit_code} (in skip_on_exit_code): skipping"
            )
        elif outcome_unknown(job.raw):
            # Died under this try: say so now; the next try's start answers ``unknown``.
            raise AirflowException(unknown_outcome_message(job, self.hook.where))
        else:
            outcome = AirflowException(failure_message(job))
        job = self._ack(job)
        metrics.job_finished(job, metrics.task_tags(self))
        if outcome is not None:
            raise outcome
        return job.to_dict()

    def _ended_by_trigger(self, job_id: str | None, run_key: str) -> Any:
        """Where a trigger's end event resumes the task anyway: ``dag.test()`` runs triggers inline
        and resumes the task with their payload (and without the deferral's kwargs, so the job is
        found by its run key). The trigger showed the log and acknowledged the success."""
        job = self.hook.get_job(job_id) if job_id else self.hook.status(run_key=run_key)
        if job is None or not job.succeeded:
            raise AirflowException(f"The remote job the trigger ended the task with is not SUCCEEDED: {job}")
        self.log.info("Remote job %s SUCCEEDED; its trigger ended the task", job.job_id)
        return job.to_dict()

    def _ack(self, job: JobRecord) -> JobRecord:
        """Acknowledge the result (the next try of this run key then starts a new attempt)."""
        try:
            return self.hook.ack(job.job_id)
        except Exception as e:
            # Not acknowledged: the next try adopts the same result instead of re-running.
            self.log.warning("Could not acknowledge remote job %s: %s", job.job_id, e)
            return job

    def _timed_out(self, job_id: str, offsets: dict[str, int]) -> Any:
        assert self.timeout_seconds is not None
        self.log.error("Timeout of %ss reached: aborting remote job %s", self.timeout_seconds, job_id)
        try:
            self.hook.abort(
                job_id,
                reason=f"Airflow timeout ({self.timeout_seconds:g}s)",
                grace_seconds=self.abort_grace_seconds,
                ack=True,
            )
        except OrchesjobWrongState:
            # It finished just now: its real outcome counts.
            job = self.hook.get_job(job_id)
            if job is not None and job.is_terminal:
                return self._finish(job, offsets)
        job_after, offsets = self._drain_logs(job_id, offsets)
        if job_after is not None and job_after.is_terminal:
            self._ack(job_after)
        raise AirflowException(
            f"Remote job {job_id} timed out after {self.timeout_seconds:g}s and was aborted"
        )

    def on_kill(self) -> None:
        """Abort and acknowledge the remote job if a user killed the task or it timed out; leave it
        running on a worker shutdown (see the class docstring and ``task_state``)."""
        job_id = self._job_id
        if not job_id and not self._run_key:
            return
        what = job_id or f"of run key {self._run_key}"
        if not self.abort_on_kill:
            self.log.info("abort_on_kill=False: remote job %s keeps running", what)
            return
        timed_out = timed_out_now()
        state = None if timed_out else read_task_state(self._task_ident, log=self.log)
        if kill_action(state, timed_out) == KEEP:
            self.log.info(
                "worker shutdown (task state %s): remote job %s keeps running; the next try reattaches "
                "to it or adopts its result",
                state,
                what,
            )
            return
        cause = "Airflow timeout" if timed_out else f"task killed by a user action (task state {state})"
        try:
            hook = self.agent.hook()
            if not job_id:  # killed while start was in flight: find the job by its run key
                job = hook.status(run_key=self._run_key)
                if job is None or not job.is_active:
                    return
                job_id = job.job_id
            hook.abort(job_id, reason=cause, grace_seconds=self.abort_grace_seconds, ack=True)
            self.log.info("%s: aborted and acknowledged remote job %s", cause, job_id)
        except OrchesjobWrongState:
            self.log.info("%s: remote job %s had already finished; acknowledged its result", cause, job_id)
        except Exception as e:
            self.log.warning("%s: could not abort remote job %s: %s", cause, job_id, e)

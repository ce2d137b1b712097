"""Trigger that waits for a remote orchesjob job in the triggerer, without blocking its loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from orchesjob_provider.hooks.orchesjob import (
    AgentUnavailable,
    AsyncOrchesjobHook,
    JobLogs,
    JobRecord,
    OrchesjobError,
    OrchesjobWrongState,
    normalize_offsets,
    reconnect_delay,
)
from orchesjob_provider.version_compat import (
    AIRFLOW_V_3_0_PLUS,
    TRIGGER_HAS_ON_KILL,
    BaseTrigger,
    TriggerEvent,
)


def log_chunk_lines(log: Any, res: JobLogs, prefix: str = "") -> None:
    """Write the new log bytes of a poll/wait answer to ``log`` line by line."""
    for stream in ("stdout", "stderr"):
        chunk = res.logs.get(stream)
        if chunk is None or not chunk.data:
            continue
        text = chunk.data.decode("utf-8", "replace")
        label = "" if stream == "stdout" else "[stderr] "
        for line in text.splitlines():
            log.info("%s%s%s", prefix, label, line)


class OrchesjobTrigger(BaseTrigger):
    """
    Wait until a remote job is terminal; yield one event with its final record and log offsets.

    All I/O goes through asyncssh: one shared connection per SSH connection id in the triggerer
    process, and one batched ``poll`` exec per round for every trigger watching that host. New log
    lines are written to the trigger's log as they arrive (on Airflow 2.6+ and 3.x the triggerer
    routes them into the task log); the event carries the offsets up to which lines were written,
    so the operator prints only what follows. A dropped connection is retried with backoff.

    :param ssh_conn_id: the ``ssh`` connection.
    :param job_id: the job to watch (or None with ``run_key``: wait for the key's latest job).
    :param run_key: the run key to resolve while ``job_id`` is None (sensor use).
    :param offsets: ``{"stdout": n, "stderr": m}`` already printed in the task log.
    :param poll_interval: seconds between polls.
    :param timeout_at: Unix time after which the trigger yields a ``timeout`` event.
    :param remote_python: the interpreter on the target.
    :param state_dir: the agent's state dir on the target.
    :param abort_on_kill: abort the remote job when the task is killed while deferred.
    :param stream_logs: write remote log lines to the trigger log (else the operator prints all).
    :param max_reconnect_attempts: consecutive connection failures before an ``error`` event.
    """

    def __init__(
        self,
        ssh_conn_id: str,
        job_id: str | None = None,
        offsets: dict[str, int] | None = None,
        poll_interval: float = 5.0,
        timeout_at: float | None = None,
        remote_python: str = "python3",
        state_dir: str | None = None,
        abort_on_kill: bool = True,
        stream_logs: bool = True,
        run_key: str | None = None,
        max_reconnect_attempts: int = 20,
        abort_grace_seconds: float = 5.0,
    ) -> None:
        super().__init__()
        if not job_id and not run_key:
            raise ValueError("OrchesjobTrigger needs a job_id or a run_key")
        self.ssh_conn_id = ssh_conn_id
        self.job_id = job_id
        self.run_key = run_key
        self.offsets = normalize_offsets(offsets)
        self.poll_interval = float(poll_interval)
        self.timeout_at = float(timeout_at) if timeout_at is not None else None
        self.remote_python = remote_python
        self.state_dir = state_dir
        self.abort_on_kill = abort_on_kill
        self.stream_logs = stream_logs
        self.max_reconnect_attempts = max_reconnect_attempts
        self.abort_grace_seconds = abort_grace_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "orchesjob_provider.triggers.orchesjob.OrchesjobTrigger",
            {
                "ssh_conn_id": self.ssh_conn_id,
                "job_id": self.job_id,
                "offsets": dict(self.offsets),
                "poll_interval": self.poll_interval,
                "timeout_at": self.timeout_at,
                "remote_python": self.remote_python,
                "state_dir": self.state_dir,
                "abort_on_kill": self.abort_on_kill,
                "stream_logs": self.stream_logs,
                "run_key": self.run_key,
                "max_reconnect_attempts": self.max_reconnect_attempts,
                "abort_grace_seconds": self.abort_grace_seconds,
            },
        )

    def _hook(self) -> AsyncOrchesjobHook:
        return AsyncOrchesjobHook(
            ssh_conn_id=self.ssh_conn_id, remote_python=self.remote_python, state_dir=self.state_dir
        )

    def _event(
        self, status: str, job: JobRecord | None, offsets: dict[str, int], message: str = ""
    ) -> TriggerEvent:
        return TriggerEvent(
            {
                "status": status,
                "job_id": self.job_id,
                "run_key": self.run_key,
                "job": job.to_dict() if job is not None else None,
                "offsets": dict(offsets),
                "message": message,
            }
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = self._hook()
        hook.acquire()
        offsets = dict(self.offsets)
        last_job: JobRecord | None = None
        failures = 0
        try:
            while True:
                if self.timeout_at is not None and time.time() >= self.timeout_at:
                    yield self._event("timeout", last_job, offsets, "timed out waiting for the remote job")
                    return
                try:
                    if not self.job_id:
                        assert self.run_key is not None
                        job = await hook.status(run_key=self.run_key)
                        if job is None:
                            await asyncio.sleep(self._sleep_for())
                            continue
                        self.job_id = job.job_id
                        self.log.info(
                            "Run key %r: watching job %s (%s)", self.run_key, job.job_id, job.status
                        )
                    res = await hook.poll_job(self.job_id, offsets if self.stream_logs else None)
                except AgentUnavailable as e:
                    failures += 1
                    if failures > self.max_reconnect_attempts:
                        yield self._event(
                            "error", last_job, offsets, f"giving up after {failures - 1} retries: {e}"
                        )
                        return
                    delay = reconnect_delay(failures)
                    self.log.warning(
                        "orchesjob: %s (retry %d/%d in %.1fs)",
                        e,
                        failures,
                        self.max_reconnect_attempts,
                        delay,
                    )
                    await asyncio.sleep(delay)
                    continue
                except OrchesjobError as e:
                    yield self._event("error", last_job, offsets, str(e))
                    return
                failures = 0
                if res.job is None:
                    yield self._event(
                        "error",
                        None,
                        offsets,
                        f"job {self.job_id} is not known on {hook.where} (state dir cleaned or changed?)",
                    )
                    return
                last_job = res.job
                if self.stream_logs:
                    log_chunk_lines(self.log, res)
                    offsets = res.next_offsets(offsets)
                    self.offsets = dict(offsets)
                if res.job.is_terminal:
                    if self.stream_logs and res.logs and any(c.data for c in res.logs.values()):
                        # record the last bytes shown, so a crash before the operator resumes
                        # does not show them again in the next try
                        try:
                            await hook.poll_job(self.job_id, offsets)
                        except OrchesjobError as e:
                            self.log.debug("Could not record log offsets: %s", e)
                    yield self._event("terminal", res.job, offsets, f"job {res.job.job_id} {res.job.status}")
                    return
                if res.more:
                    continue
                await asyncio.sleep(self._sleep_for())
        except asyncio.CancelledError:
            if not TRIGGER_HAS_ON_KILL:
                await self._abort_if_task_killed()
            raise
        finally:
            hook.release()

    def _sleep_for(self) -> float:
        delay = self.poll_interval
        if self.timeout_at is not None:
            delay = min(delay, max(0.0, self.timeout_at - time.time()))
        return max(0.05, delay)

    # -- kill while deferred --------------------------------------------------------------------
    async def on_kill(self) -> None:
        """Airflow 3.3+: the user killed the deferred task (mark failed/success, clear)."""
        await self._abort("task killed while deferred")

    async def _abort(self, reason: str) -> None:
        if not self.abort_on_kill or not self.job_id:
            return
        hook = self._hook()
        async with hook:
            try:
                await asyncio.wait_for(
                    hook.abort(self.job_id, reason=reason, grace_seconds=self.abort_grace_seconds),
                    timeout=self.abort_grace_seconds + 30,
                )
                self.log.info("Aborted remote job %s (%s)", self.job_id, reason)
            except OrchesjobWrongState:
                self.log.info("Remote job %s already finished; nothing to abort", self.job_id)
            except Exception as e:
                self.log.warning("Could not abort remote job %s: %s", self.job_id, e)

    async def _abort_if_task_killed(self) -> None:
        """Before Airflow 3.3: cancellation also happens on triggerer shutdown/redistribution.

        Like the official providers' ``safe_to_cancel()``: abort only if the task instance is no
        longer DEFERRED (the user killed it); if it still is, the trigger just moves elsewhere.
        """
        if not self.abort_on_kill or not self.job_id:
            return
        try:
            state = await self._task_state()
        except Exception as e:
            self.log.warning("Cannot read the task state (%s); leaving remote job %s running", e, self.job_id)
            return
        if state is None or str(state) in ("deferred", "TaskInstanceState.DEFERRED"):
            self.log.info(
                "Trigger cancelled while the task is still deferred; remote job %s keeps running", self.job_id
            )
            return
        await self._abort(f"task killed while deferred (task state {state})")

    async def _task_state(self) -> str | None:
        ti = self.task_instance
        if ti is None:
            return None
        from asgiref.sync import sync_to_async

        if AIRFLOW_V_3_0_PLUS:
            from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

            states = await sync_to_async(RuntimeTaskInstance.get_task_states)(
                dag_id=ti.dag_id, task_ids=[ti.task_id], run_ids=[ti.run_id], map_index=ti.map_index
            )
            value = states[ti.run_id][ti.task_id]
            return getattr(value, "value", value)

        def _db_state() -> str | None:
            from airflow.models.taskinstance import TaskInstance
            from airflow.utils.session import create_session

            with create_session() as session:
                value = (
                    session.query(TaskInstance.state)
                    .filter(
                        TaskInstance.dag_id == ti.dag_id,
                        TaskInstance.task_id == ti.task_id,
                        TaskInstance.run_id == ti.run_id,
                        TaskInstance.map_index == ti.map_index,
                    )
                    .scalar()
                )
            return getattr(value, "value", value)

        return await sync_to_async(_db_state)()

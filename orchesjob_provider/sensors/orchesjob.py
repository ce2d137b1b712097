"""OrchesjobSensor: wait for a remote job that something else started (run key or job id)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from orchesjob_provider.client.records import JobRecord
from orchesjob_provider.triggers.events import EVENT_TERMINAL, EVENT_TIMEOUT, WatchEvent
from orchesjob_provider.utils.address import AgentTaskMixin
from orchesjob_provider.utils.messages import failure_message
from orchesjob_provider.version_compat import (
    AirflowException,
    AirflowSensorTimeout,
    BaseSensorOperator,
    Context,
    PokeReturnValue,
    conf,
)


class OrchesjobSensor(AgentTaskMixin, BaseSensorOperator):
    """
    Wait until the latest job of a run key (or a given job id) is terminal.

    For jobs started elsewhere: an ``OrchesjobOperator`` with ``wait=False``, cron, a person running
    ``orchesjob start``. SUCCEEDED → the sensor succeeds and pushes the job record to XCom;
    FAILED, ABORTED, LOST, CANCELLED → the sensor fails (no endless wait). A run key with no job
    yet keeps the sensor waiting (until its ``timeout``); an unknown job id fails at once.

    The sensor never acknowledges a job's result (it does not own the job): the operator that
    started it, or whoever re-runs the key, decides.

    Works in ``poke`` and ``reschedule`` modes and with ``deferrable=True`` (the trigger polls).

    :param ssh_conn_id: an ``ssh`` connection.
    :param run_key: the run key to watch (templated).
    :param job_id: or the job id to watch (templated).
    :param remote_python: the interpreter on the host.
    :param state_dir: the agent's state dir on the host.
    :param deferrable: wait in the triggerer (default ``[operators] default_deferrable``).
    """

    template_fields: Sequence[str] = ("run_key", "job_id")

    def __init__(
        self,
        *,
        ssh_conn_id: str,
        run_key: str | None = None,
        job_id: str | None = None,
        remote_python: str = "python3",
        state_dir: str | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if bool(run_key) == bool(job_id):
            raise AirflowException("OrchesjobSensor: give exactly one of run_key or job_id")
        self.ssh_conn_id = ssh_conn_id
        self.run_key = run_key
        self.job_id = job_id
        self.remote_python = remote_python
        self.state_dir = state_dir
        self.deferrable = deferrable
        self._hook = None

    @property
    def _what(self) -> str:
        return f"run key {self.run_key!r}" if self.run_key else f"job {self.job_id}"

    def _decide(self, job: JobRecord | None) -> PokeReturnValue:
        if job is None:
            if self.job_id:
                raise AirflowException(
                    f"OrchesjobSensor: job {self.job_id} is not known on {self.hook.where}"
                )
            self.log.info("No job for %s yet; waiting", self._what)
            return PokeReturnValue(is_done=False)
        if job.succeeded:
            self.log.info("Job %s (%s) SUCCEEDED", job.job_id, self._what)
            return PokeReturnValue(is_done=True, xcom_value=job.to_dict())
        if job.is_terminal:
            raise AirflowException(failure_message(job))
        self.log.info("Job %s (%s) is %s; waiting", job.job_id, self._what, job.status)
        return PokeReturnValue(is_done=False)

    def poke(self, context: Context) -> PokeReturnValue:
        return self._decide(self.hook.status(run_key=self.run_key, job_id=self.job_id))

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        first = self.poke(context)
        if first.is_done:
            return first.xcom_value
        # loaded here: the trigger pulls in the async hook, which a sensor that never defers skips
        from orchesjob_provider.triggers.orchesjob import OrchesjobTrigger

        agent = self.agent
        self.defer(
            trigger=OrchesjobTrigger(
                ssh_conn_id=agent.ssh_conn_id,
                remote_python=agent.remote_python,
                state_dir=agent.state_dir,
                job_id=self.job_id,
                run_key=self.run_key if not self.job_id else None,
                poll_interval=float(self.poke_interval),
                timeout_at=time.time() + float(self.timeout),
                abort_on_kill=False,  # the sensor does not own the job
                stream_logs=False,
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        if not event:
            raise AirflowException("OrchesjobSensor resumed without a trigger event")
        ev = WatchEvent.from_payload(event)
        if not ev.is_for(self.job_id, self.run_key if not self.job_id else None):
            self.log.warning("Ignoring an event of %s (job %s, run key %r): this sensor waits for %s",
                             ev.status, ev.job_id, ev.run_key, self._what)
            return self.execute(context)
        if ev.status == EVENT_TIMEOUT:
            raise AirflowSensorTimeout(f"OrchesjobSensor: {self._what} did not finish within {self.timeout}s")
        if ev.status != EVENT_TERMINAL or ev.job is None:
            raise AirflowException(f"OrchesjobSensor: watching {self._what} failed: {ev.message}")
        result = self._decide(ev.job)
        return result.xcom_value

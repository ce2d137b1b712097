"""The provider's metrics, sent through Airflow's ``Stats`` (StatsD / OpenTelemetry as configured).

Operators build dashboards from these (README "Metrics"): how each try began (how often a retry
was saved from running the job again: ``reattached``, ``adopted``, ``kept``), how long remote jobs
ran, how often SSH connections were lost and re-made, how often the agent was (re)deployed.
Names are fixed here, in one place; tags carry the dimensions (StatsD without tags drops them).
A metric must never fail a task: every emit swallows its own errors.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from orchesjob_provider import version_compat

if TYPE_CHECKING:
    from orchesjob_provider.client.records import JobRecord

log = logging.getLogger(__name__)

PREFIX = "orchesjob"
START = PREFIX + ".start.{action}"  # counter: how a try began (remote_agent.common.vocab.ACTIONS)
JOB_DURATION = PREFIX + ".job.duration"  # timer: started_at -> finished_at of a finished job
JOB_FINISHED = PREFIX + ".job.{status}"  # counter: the outcome the operator acknowledged
SSH_RECONNECT = PREFIX + ".ssh.reconnect"  # counter: a new connection after one was lost
AGENT_DEPLOY = PREFIX + ".agent.deploy"  # counter: the agent bundle uploaded to a host

#: ``side`` tag values: who made the call
WORKER = "worker"
TRIGGERER = "triggerer"


def _backend() -> Any:
    return version_compat.get_stats()


def _emit(kind: str, stat: str, *args: Any, tags: dict[str, str]) -> None:
    try:
        getattr(_backend(), kind)(stat, *args, tags={k: str(v) for k, v in tags.items()})
    except Exception as e:  # a broken metrics backend is not the job's problem
        log.debug("orchesjob metric %s not sent: %s", stat, e)


def task_tags(task: Any) -> dict[str, str]:
    """The dimensions of a task's metrics (Airflow's own task metrics use dag_id/task_id too)."""
    return {"dag_id": str(task.dag_id), "task_id": str(task.task_id), "conn_id": str(task.ssh_conn_id)}


def trigger_tags(trigger: Any) -> dict[str, str]:
    """The same dimensions from a trigger (its task instance, where the triggerer set one)."""
    ti = getattr(trigger, "task_instance", None)
    return {"dag_id": str(getattr(ti, "dag_id", "")), "task_id": str(getattr(ti, "task_id", "")),
            "conn_id": str(trigger.ssh_conn_id)}


def start_action(action: str, tags: dict[str, str]) -> None:
    """One try began with ``action`` (started / reattached / adopted / kept / unknown)."""
    _emit("incr", START.format(action=action), tags=tags)


def job_finished(job: JobRecord, tags: dict[str, str]) -> None:
    """A finished job's outcome, acknowledged by the operator, and how long it ran (1 s resolution)."""
    tags = {**tags, "status": job.status}
    _emit("incr", JOB_FINISHED.format(status=job.status.lower()), tags=tags)
    started, finished = job.started_at, job.finished_at
    if started is not None and finished is not None and finished >= started:
        _emit("timing", JOB_DURATION, timedelta(seconds=finished - started), tags=tags)


def ssh_reconnect(conn_id: str, side: str) -> None:
    _emit("incr", SSH_RECONNECT, tags={"conn_id": conn_id, "side": side})


def agent_deploy(conn_id: str, side: str) -> None:
    _emit("incr", AGENT_DEPLOY, tags={"conn_id": conn_id, "side": side})

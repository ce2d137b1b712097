"""Issue 17 item 2: a trigger event of another job never decides a resumed try.

An old try's trigger can fire while Airflow cancels it, and Airflow applies the event to
whichever task instance now holds that trigger id (SQLite reuses ids once the old row is
deleted). Seen on a clear of a deferred task: try 2 superseded job #1 and ran job #2, which
succeeded, yet try 2 failed with "Remote job #1 was ABORTED". Here the operator and sensor are
resumed directly with such an event against a real agent over a real sshd: the try logs it and
goes on waiting for its own job (defers again, or finishes with its own job's outcome).
"""

from __future__ import annotations

import logging

import pytest
from dagutil import captured

pytest.importorskip("airflow", reason="Airflow is not installed in this interpreter")

from orchesjob_provider.triggers.events import EVENT_TERMINAL, WatchEvent

pytestmark = [pytest.mark.ssh, pytest.mark.airflow]


def _stray(job_id: str, run_key: str) -> dict:
    """The event an old try's trigger fires for its superseded job."""
    job = {"job_id": job_id, "run_key": run_key, "status": "ABORTED", "attempt_no": 1, "exit_code": None}
    return WatchEvent(EVENT_TERMINAL, job_id, None, None, {}, "").to_payload() | {"job": job}


def _deferred():
    from orchesjob_provider.version_compat import AIRFLOW_V_3_0_PLUS

    if AIRFLOW_V_3_0_PLUS:
        from airflow.sdk.exceptions import TaskDeferred
    else:
        from airflow.exceptions import TaskDeferred  # type: ignore[no-redef]
    return TaskDeferred


def test_operator_ignores_another_jobs_event_and_waits_for_its_own(
    orch_conn, state_dir, remote, sshd, capfd, caplog
):
    from orchesjob_provider.hooks.orchesjob import OrchesjobHook
    from orchesjob_provider.operators.orchesjob import OrchesjobOperator

    gate = f"{sshd.home}/stray-{state_dir.rsplit('/', 1)[-1]}.gate"
    side = f"{gate}.side"
    hook = OrchesjobHook(orch_conn, state_dir=state_dir)
    script = f"echo ran >> {side}; while [ ! -e {gate} ]; do sleep 0.1; done; echo own-job"
    command = ["/bin/bash", "-c", script]
    _, own = hook.start(command, "stray-key", mode="resume")
    op = OrchesjobOperator(task_id="t", ssh_conn_id=orch_conn, state_dir=state_dir, command="true",
                           deferrable=True)
    stray = _stray("job-of-an-old-try", "stray-key")
    caplog.set_level(logging.INFO)
    # the own job still runs: the try defers again, on its own job, with the same deadline
    with pytest.raises(_deferred()) as deferred:
        op.execute_complete({}, event=stray, job_id=own.job_id, deadline=None)
    assert deferred.value.trigger.job_id == own.job_id
    assert deferred.value.kwargs == {"job_id": own.job_id, "deadline": None}
    text = captured(capfd) + caplog.text
    assert "Ignoring an event of remote job job-of-an-old-try (terminal)" in text, text
    # the own job ends: the stray event resumes the try, which finishes with its own job's result
    remote(f"touch {gate}")
    hook.wait(own.job_id, timeout=60)
    record = op.execute_complete({}, event=stray, job_id=own.job_id, deadline=None)
    assert record["job_id"] == own.job_id and record["status"] == "SUCCEEDED"
    assert remote(f"cat {side}").splitlines() == ["ran"]  # one execution, never a second
    # the event of its own job still decides it (and a try deferred by an older provider, which
    # passes no job_id, keeps today's behaviour)
    own_event = WatchEvent(EVENT_TERMINAL, own.job_id, None, hook.get_job(own.job_id), {}, "").to_payload()
    assert op.execute_complete({}, event=own_event, job_id=own.job_id)["job_id"] == own.job_id
    assert op.execute_complete({}, event=own_event)["job_id"] == own.job_id


def test_sensor_ignores_an_event_of_another_job(orch_conn, state_dir, remote, sshd):
    from orchesjob_provider.hooks.orchesjob import OrchesjobHook
    from orchesjob_provider.sensors.orchesjob import OrchesjobSensor

    hook = OrchesjobHook(orch_conn, state_dir=state_dir)
    _, own = hook.start(["/bin/sh", "-c", "exit 0"], "stray-sensor-key", mode="resume")
    hook.wait(own.job_id, timeout=60)
    sensor = OrchesjobSensor(task_id="s", ssh_conn_id=orch_conn, state_dir=state_dir,
                             run_key="stray-sensor-key", deferrable=True)
    stray = WatchEvent(EVENT_TERMINAL, "job-x", "another-key", None, {}, "").to_payload()
    stray["job"] = {"job_id": "job-x", "run_key": "another-key", "status": "FAILED", "exit_code": 1}
    # not its run key: the sensor looks again (its own job succeeded) instead of failing
    assert sensor.execute_complete({}, event=stray)["job_id"] == own.job_id

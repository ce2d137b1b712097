"""OrchesjobSensor: poke, reschedule and deferrable; failures are terminal; it never acks."""

from __future__ import annotations

import uuid

import pytest

pytest.importorskip("airflow", reason="Airflow is not installed in this interpreter")

from dagutil import captured, new_dag_id, op_src, ti_states, write_dag

pytestmark = [pytest.mark.ssh, pytest.mark.airflow]

MODES = [
    pytest.param({"mode": "poke"}, id="poke"),
    pytest.param({"mode": "reschedule"}, id="reschedule"),
    pytest.param({"deferrable": True}, id="deferrable"),
]


def _start(orch_conn, state_dir, script):
    from orchesjob_provider.hooks.orchesjob import OrchesjobHook

    hook = OrchesjobHook(orch_conn, state_dir=state_dir)
    run_key = f"elsewhere/{uuid.uuid4().hex}"
    _, job = hook.start(["sh", "-c", script], run_key)
    return hook, run_key, job


@pytest.mark.parametrize("mode", MODES)
def test_sensor_waits_for_success_and_does_not_ack(orch_conn, state_dir, mode):
    hook, run_key, job = _start(orch_conn, state_dir, "sleep 3")
    dag = write_dag(
        new_dag_id("sens"),
        op_src(
            "OrchesjobSensor",
            ssh_conn_id=orch_conn,
            state_dir=state_dir,
            run_key=run_key,
            poke_interval=1,
            timeout=120,
            **mode,
        ),
    )
    dr = dag.test()
    assert ti_states(dr) == {"t": "success"}
    ti = dr.get_task_instances()[0]
    assert ti.xcom_pull(task_ids="t")["job_id"] == job.job_id
    assert hook.get_job(job.job_id).acked_at is None  # the sensor does not own the job


@pytest.mark.parametrize("mode", MODES)
def test_sensor_fails_on_failed_job(orch_conn, state_dir, mode, capfd):
    _, run_key, job = _start(orch_conn, state_dir, "sleep 2; exit 3")
    dag = write_dag(
        new_dag_id("sensf"),
        op_src(
            "OrchesjobSensor",
            ssh_conn_id=orch_conn,
            state_dir=state_dir,
            run_key=run_key,
            poke_interval=1,
            timeout=120,
            **mode,
        ),
    )
    dr = dag.test()
    assert ti_states(dr) == {"t": "failed"}
    assert f"Remote job {job.job_id} failed with exit code 3" in captured(capfd)


@pytest.mark.parametrize("mode", [MODES[0], MODES[2]])
def test_sensor_fails_on_aborted_job(orch_conn, state_dir, mode, capfd):
    hook, _run_key, job = _start(orch_conn, state_dir, "sleep 60")
    hook.abort(job.job_id, reason="operator pressed stop", grace_seconds=1)
    dag = write_dag(
        new_dag_id("sensa"),
        op_src(
            "OrchesjobSensor",
            ssh_conn_id=orch_conn,
            state_dir=state_dir,
            job_id=job.job_id,
            poke_interval=1,
            timeout=120,
            **mode,
        ),
    )
    dr = dag.test()
    assert ti_states(dr) == {"t": "failed"}
    assert "was ABORTED (operator pressed stop)" in captured(capfd)


@pytest.mark.parametrize("mode", [MODES[0], MODES[2]])
def test_sensor_unknown_run_key_waits_until_timeout(orch_conn, state_dir, mode, capfd):
    dag = write_dag(
        new_dag_id("sensu"),
        op_src(
            "OrchesjobSensor",
            ssh_conn_id=orch_conn,
            state_dir=state_dir,
            run_key=f"never/{uuid.uuid4().hex}",
            poke_interval=1,
            timeout=3,
            **mode,
        ),
    )
    dr = dag.test()
    assert ti_states(dr) == {"t": "failed"}
    text = captured(capfd)
    if "deferrable" not in mode:
        assert "No job for run key" in text  # it waited...
        assert "Sensor has timed out" in text or "did not finish within 3s" in text  # ...until its timeout


def test_trigger_waits_for_unknown_run_key_until_timeout(orch_conn, state_dir):
    import asyncio
    import time

    from orchesjob_provider.triggers.orchesjob import OrchesjobTrigger

    t0 = time.time()
    trigger = OrchesjobTrigger(
        ssh_conn_id=orch_conn,
        run_key=f"never/{uuid.uuid4().hex}",
        poll_interval=0.5,
        timeout_at=t0 + 2,
        state_dir=state_dir,
        abort_on_kill=False,
        stream_logs=False,
    )
    event = asyncio.run(trigger.run().__anext__())
    assert event.payload["status"] == "timeout" and event.payload["job"] is None
    assert time.time() - t0 >= 2


def test_sensor_waits_for_job_started_by_operator_with_wait_false(orch_conn, state_dir, remote, sshd):
    dag_id = new_dag_id("pair")
    side = f"{sshd.home}/{dag_id}.side"
    body = "\n".join(
        [
            "start = "
            + op_src(
                task_id="start",
                ssh_conn_id=orch_conn,
                state_dir=state_dir,
                wait=False,
                command=f"sleep 2; echo ran >> {side}",
            ),
            "watch = "
            + op_src(
                "OrchesjobSensor",
                task_id="watch",
                ssh_conn_id=orch_conn,
                state_dir=state_dir,
                job_id="{{ ti.xcom_pull(task_ids='start')['job_id'] }}",
                poke_interval=1,
                timeout=60,
                deferrable=True,
            ),
            "start >> watch",
        ]
    )
    dr = write_dag(dag_id, body).test()
    assert ti_states(dr) == {"start": "success", "watch": "success"}
    assert remote(f"cat {side}").split() == ["ran"]

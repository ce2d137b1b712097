"""Issue 8 item 8 through dag.test(): a job whose outcome is unknown is never run again by a retry.

The job's own command SIGKILLs its supervisor on the target (after the target is recorded), then
ends: the job is LOST with an unknown exit status; it may have completed. Every try of the task
fails with one message saying so and how to release it, and the command ran once (a side-effect
file on the target counts). ``rerun_unknown_outcome=True`` then runs it again.
"""

from __future__ import annotations

import pytest

pytest.importorskip("airflow", reason="Airflow is not installed in this interpreter")

from dagutil import captured, kw, new_dag_id, ti_states, write_dag

pytestmark = [pytest.mark.ssh, pytest.mark.airflow]

MODES = [pytest.param(False, id="worker"), pytest.param(True, id="deferrable")]


def _lines(remote, path):
    return remote(f"cat {path} 2>/dev/null || true").splitlines()


@pytest.mark.parametrize("deferrable", MODES)
def test_supervisor_killed_fails_every_try_without_rerun(
    orch_conn, state_dir, remote, sshd, deferrable, capfd
):
    dag_id = new_dag_id("unknown")
    side = f"{sshd.home}/{dag_id}.side"
    run_key = f"test/{dag_id}"
    # sleep 1 first: the supervisor has recorded the target by then (a job whose supervisor died
    # before the target started never ran and is retried as before)
    command = f"echo ran >> {side}; sleep 1; kill -9 $PPID; sleep 0.5; echo done"
    common = dict(ssh_conn_id=orch_conn, state_dir=state_dir, run_key=run_key, poll_interval=0.3,
                  deferrable=deferrable)
    dag = write_dag(
        dag_id,
        "OrchesjobOperator(task_id='t', retries=2, retry_delay=timedelta(seconds=0), "
        + kw(command=command, **common) + ")",
    )
    dr = dag.test()
    text = captured(capfd)
    assert ti_states(dr) == {"t": "failed"}, text[-3000:]
    assert _lines(remote, side) == ["ran"], "a retry ran a job whose outcome is unknown"
    # try 1 sees the job die; tries 2 and 3 get the action "unknown" and run nothing
    # one try started it, two got "unknown" (Airflow 2 prints each log line twice here: a ratio)
    started, unknown = text.count("orchesjob started:"), text.count("orchesjob unknown:")
    assert started >= 1 and unknown == 2 * started, text[-5000:]
    assert "has an unknown outcome: supervisor" in text, text[-5000:]
    assert "It may have completed, so it is not run again" in text
    assert f"orchesjob unlock --run-key {run_key}" in text and "rerun_unknown_outcome=True" in text

    # released explicitly by the operator option: a new attempt runs (once)
    dag_id2 = new_dag_id("unknown_rerun")
    dag2 = write_dag(
        dag_id2,
        "OrchesjobOperator(task_id='t', " + kw(command=f"echo ran >> {side}", rerun_unknown_outcome=True,
                                                 **common) + ")",
    )
    dr2 = dag2.test()
    text2 = captured(capfd)
    assert ti_states(dr2) == {"t": "success"}, text2[-3000:]
    assert _lines(remote, side) == ["ran", "ran"]
    assert "orchesjob started" in text2

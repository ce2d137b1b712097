"""Issue 9 item 1 through dag.test(): ``check_command`` decides on the target whether to run.

Every case counts the command's real executions in a side-effect file on the target."""

from __future__ import annotations

import pytest

pytest.importorskip("airflow", reason="Airflow is not installed in this interpreter")

from dagutil import captured, kw, new_dag_id, ti_states, write_dag

pytestmark = [pytest.mark.ssh, pytest.mark.airflow]

MODES = [pytest.param(False, id="worker"), pytest.param(True, id="deferrable")]


def _runs(remote, path):
    return remote(f"cat {path} 2>/dev/null || true").splitlines().count("ran")


def _xcom(dr):
    ti = next(t for t in dr.get_task_instances() if t.task_id == "t")
    return ti.xcom_pull(task_ids="t")


@pytest.mark.parametrize("deferrable", MODES)
def test_a_passing_check_skips_the_run(orch_conn, state_dir, remote, sshd, deferrable, capfd):
    dag_id = new_dag_id("check_ok")
    side, done = f"{sshd.home}/{dag_id}.side", f"{sshd.home}/{dag_id}.done"
    remote(f"touch {done}")
    dag = write_dag(dag_id, "OrchesjobOperator(task_id='t', " + kw(
        ssh_conn_id=orch_conn, state_dir=state_dir, command=f"echo ran >> {side}; touch {done}",
        check_command=f"echo looking for {{{{ dag.dag_id }}}}; test -e {sshd.home}/{{{{ dag.dag_id }}}}.done",
        poll_interval=0.3, deferrable=deferrable) + ")")
    dr = dag.test()
    text = captured(capfd)
    assert ti_states(dr) == {"t": "success"}, text[-3000:]
    assert _runs(remote, side) == 0, "the command ran although its check passed"
    record = _xcom(dr)
    assert record["status"] == "SUCCEEDED" and record["phase"] == "satisfied", record
    assert record["check"]["argv"][-1].startswith(f"echo looking for {dag_id};"), record  # templated
    assert "the desired state was already there, so the command did not run" in text, text[-3000:]
    assert f"looking for {dag_id}" in text and "==> orchesjob check (before the run" in text  # live log


def test_a_failing_check_runs_then_rechecks(orch_conn, state_dir, remote, sshd, capfd):
    dag_id = new_dag_id("check_run")
    side, done = f"{sshd.home}/{dag_id}.side", f"{sshd.home}/{dag_id}.done"
    dag = write_dag(dag_id, "OrchesjobOperator(task_id='t', " + kw(
        ssh_conn_id=orch_conn, state_dir=state_dir, command=["sh", "-c", f"echo ran >> {side}; touch {done}"],
        check_command=["test", "-e", done], check_timeout=30, poll_interval=0.3) + ")")
    dr = dag.test()
    text = captured(capfd)
    assert ti_states(dr) == {"t": "success"}, text[-3000:]
    assert _runs(remote, side) == 1
    assert _xcom(dr)["phase"] == "verified"
    assert "the command ran and its check passed afterwards" in text
    # a new DAG run (a new run key): its check passes now, the command does not run again
    dr2 = dag.test()
    assert ti_states(dr2) == {"t": "success"} and _xcom(dr2)["phase"] == "satisfied"
    assert _runs(remote, side) == 1, "a new run of a satisfied check ran the command"


def test_a_recheck_that_still_fails_fails_the_task(orch_conn, state_dir, remote, sshd, capfd):
    dag_id = new_dag_id("check_still")
    side = f"{sshd.home}/{dag_id}.side"
    dag = write_dag(dag_id, "OrchesjobOperator(task_id='t', " + kw(
        ssh_conn_id=orch_conn, state_dir=state_dir, command=f"echo ran >> {side}",
        check_command="echo not there; exit 1", poll_interval=0.3) + ")")
    dr = dag.test()
    text = captured(capfd)
    assert ti_states(dr) == {"t": "failed"}, text[-3000:]
    assert _runs(remote, side) == 1
    assert "ran, but the check still fails (the command exited 0, the check then exited 1)" in text


def test_bad_check_command_is_refused_at_parse_time(orch_conn):
    from orchesjob_provider.operators.orchesjob import OrchesjobOperator
    from orchesjob_provider.version_compat import AirflowException

    with pytest.raises(AirflowException, match="check_command: command is empty"):
        OrchesjobOperator(task_id="t", ssh_conn_id=orch_conn, command="true", check_command=[])
    with pytest.raises(AirflowException, match=r"check_command: command\[1\] is int"):
        OrchesjobOperator(task_id="t1", ssh_conn_id=orch_conn, command="true", check_command=["test", 1])
    with pytest.raises(AirflowException, match="check_timeout must be a positive number"):
        OrchesjobOperator(task_id="t2", ssh_conn_id=orch_conn, command="true", check_command="true",
                          check_timeout=0)

# The check example (dags_examples/example_orchesjob_check.py) is parsed and run by test_examples.

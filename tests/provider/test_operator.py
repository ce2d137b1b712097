"""Proof 1: dag.test() of the operator, deferrable and not: success, failure, skip, live logs."""

from __future__ import annotations

import pytest

pytest.importorskip("airflow", reason="Airflow is not installed in this interpreter")

from dagutil import captured, kw, new_dag_id, op_src, our_log_messages, ti_states, write_dag

pytestmark = [pytest.mark.ssh, pytest.mark.airflow]

MODES = [pytest.param(False, id="worker"), pytest.param(True, id="deferrable")]


def _xcom(dr, task_id="t"):
    ti = next(t for t in dr.get_task_instances() if t.task_id == task_id)
    return ti.xcom_pull(task_ids=task_id)


@pytest.mark.parametrize("deferrable", MODES)
def test_success_streams_logs_and_pushes_record(orch_conn, state_dir, sshd, deferrable, capfd, caplog):
    dag_id = new_dag_id("ok")
    # Live, proven by order: after its first lines the job waits until the operator (worker) or
    # the trigger has shown them and recorded that on the host (the job's stdout_shown), then
    # prints the rest. A wait that showed lines only at the end would never open this gate: the
    # job would give up after 120 s with exit 7 and the task would fail.
    gate = (
        f"{sshd.target_python} -c 'import sqlite3, sys, time\n"
        "for _ in range(1200):\n"
        "    c = sqlite3.connect(sys.argv[1])\n"
        "    n = c.execute(\"SELECT MAX(stdout_shown) FROM jobs\").fetchone()[0]\n"
        "    c.close()\n"
        "    if n: sys.exit(0)\n"
        "    time.sleep(0.1)\n"
        f"sys.exit(7)' {state_dir}/orchesjob.db"
    )
    script = (
        f"echo tok-A1; echo tok-E1 >&2; {gate} || exit 7; echo tok-A2; printf 'tok-A3 \\303\\251\\n'; "
        "echo tok-E2 >&2"
    )
    dag = write_dag(
        dag_id,
        "OrchesjobOperator(task_id='t', "
        + kw(
            ssh_conn_id=orch_conn,
            state_dir=state_dir,
            command=script,
            poll_interval=0.5,
            deferrable=deferrable,
        )
        + ")",
    )
    dr = dag.test()
    text = captured(capfd)
    assert ti_states(dr) == {"t": "success"}
    record = _xcom(dr)
    assert record["status"] == "SUCCEEDED" and record["exit_code"] == 0
    assert record["attempt_no"] == 1 and record["acked_at"] is not None
    msgs = our_log_messages(text, caplog)
    # every line exactly once, stdout and stderr both in the task log, utf-8 decoded
    for token in ("tok-A1", "tok-A2", "tok-E1", "tok-E2"):
        assert sum(token in m for m in msgs) == 1, (token, msgs)
    assert any("tok-A3 é" in m for m in msgs)
    assert any(m.startswith("[stderr] tok-E1") for m in msgs)
    assert any("orchesjob started" in m for m in msgs)
    # live: tok-A2 was printed only after tok-A1 had been shown (the gate above), and in order
    first = [i for i, m in enumerate(msgs) if "tok-A1" in m or "tok-A2" in m]
    assert ["tok-A1" in msgs[i] for i in first] == [True, False], msgs


@pytest.mark.parametrize("deferrable", MODES)
def test_failure_has_exit_code_in_message(orch_conn, state_dir, deferrable, capfd, caplog):
    dag_id = new_dag_id("fail")
    dag = write_dag(
        dag_id,
        op_src(
            ssh_conn_id=orch_conn,
            state_dir=state_dir,
            command=["sh", "-c", "echo before-fail; sleep 1; exit 7"],
            poll_interval=0.5,
            deferrable=deferrable,
        ),
    )
    dr = dag.test()
    text = captured(capfd)
    assert ti_states(dr) == {"t": "failed"}
    assert "failed with exit code 7" in text
    assert "before-fail" in text


@pytest.mark.parametrize("deferrable", MODES)
def test_skip_on_exit_code(orch_conn, state_dir, deferrable):
    dag_id = new_dag_id("skip")
    dag = write_dag(
        dag_id,
        op_src(
            ssh_conn_id=orch_conn,
            state_dir=state_dir,
            command="sleep 1; exit 99",
            skip_on_exit_code=[3, 99],
            poll_interval=0.5,
            deferrable=deferrable,
        ),
    )
    dr = dag.test()
    assert ti_states(dr) == {"t": "skipped"}


def test_templated_command_env_cwd_and_shell(orch_conn, state_dir, remote, sshd, capfd, caplog):
    dag_id = new_dag_id("tmpl")
    out = f"{sshd.home}/{dag_id}.out"
    dag = write_dag(
        dag_id,
        "OrchesjobOperator(task_id='t', "
        + kw(
            ssh_conn_id=orch_conn,
            state_dir=state_dir,
            command='echo "$0 {{ dag.dag_id }} $GREETING $(pwd)" > ' + out,
            shell="/bin/bash",
            env={"GREETING": "hi-{{ task.task_id }}"},
            cwd="/tmp",
            poll_interval=0.5,
        )
        + ")",
    )
    dr = dag.test()
    assert ti_states(dr) == {"t": "success"}
    assert remote(f"cat {out}").strip() == f"/bin/bash {dag_id} hi-t /tmp"


def test_wait_false_returns_record_without_waiting(orch_conn, state_dir):
    from orchesjob_provider.hooks.orchesjob import OrchesjobHook

    dag_id = new_dag_id("nowait")
    dag = write_dag(
        dag_id,
        op_src(
            ssh_conn_id=orch_conn,
            state_dir=state_dir,
            command="sleep 30",
            wait=False,
            run_key="nowait-" + dag_id,
        ),
    )
    dr = dag.test()
    assert ti_states(dr) == {"t": "success"}
    record = _xcom(dr)
    assert record["status"] in ("RUNNING", "STARTING")
    hook = OrchesjobHook(orch_conn, state_dir=state_dir)
    hook.abort(record["job_id"], reason="test cleanup", grace_seconds=1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"command": []}, "command is empty"),
        ({"command": "   "}, "command is empty"),
        ({"command": ["ls", 3]}, "command[1] is int"),
        ({"command": ["ls"], "env": {"A": 1}}, "env['A'] is int"),
        ({"command": ["ls"], "skip_on_exit_code": "3"}, "skip_on_exit_code must be"),
        ({"command": ["ls"], "skip_on_exit_code": True}, "skip_on_exit_code must be"),
        ({"command": ["ls"], "timeout": -1}, "timeout must be"),
    ],
)
def test_bad_input_is_one_clear_line(kwargs, message):
    from orchesjob_provider.operators.orchesjob import OrchesjobOperator
    from orchesjob_provider.version_compat import AirflowException

    with pytest.raises(AirflowException) as ei:
        OrchesjobOperator(task_id="bad", ssh_conn_id="x", **kwargs)
    assert message in str(ei.value)
    assert "\n" not in str(ei.value)


EMPTY = "{{ '' }}"


def test_bad_templated_input_fails_the_task(orch_conn, state_dir, capfd):
    dag_id = new_dag_id("badtmpl")
    dag = write_dag(
        dag_id,
        "OrchesjobOperator(task_id='t', "
        + kw(ssh_conn_id=orch_conn, state_dir=state_dir, command=EMPTY)
        + ")",
    )
    dr = dag.test()
    assert ti_states(dr) == {"t": "failed"}
    assert "OrchesjobOperator: command is empty" in captured(capfd)

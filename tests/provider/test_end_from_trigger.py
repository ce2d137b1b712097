"""``end_from_trigger=True`` through ``dag.test()`` on every Airflow leg, against a real agent.

A success ends in the trigger: every line of the job's log once (a last line without a newline and
a log longer than one read included), the result acknowledged, the record pushed as XCom; the
worker's own end (draining the log, acknowledging) does not run. ``dag.test()`` runs triggers
inline and resumes the task with the end event's payload anyway, so the resumed try only returns
the record. Any other end resumes on a worker as without the option: a failure fails (retries
kept), a skip code skips. The real triggerer path (no second worker slot at all) is the e2e case
``end_from_trigger`` (tests/e2e/events_runner.py).
"""

from __future__ import annotations

import pytest

pytest.importorskip("airflow", reason="Airflow is not installed in this interpreter")

from dagutil import captured, new_dag_id, op_src, our_log_messages, ti_states, write_dag

pytestmark = [pytest.mark.ssh, pytest.mark.airflow]

ENDS_HERE = "the task ends in the triggerer"
#: the worker's own end logs this (operators/outcome.py ``_finish``), the trigger's end never does
WORKER_END = "SUCCEEDED (exit code 0)"


def _xcom(dr, task_id="t"):
    ti = next(t for t in dr.get_task_instances() if t.task_id == task_id)
    return ti.xcom_pull(task_ids=task_id)


def test_success_ends_in_the_trigger(orch_conn, state_dir, remote, sshd, capfd, caplog):
    side = f"{sshd.home}/{new_dag_id('eft')}.side"
    # 3 MiB in 3,000 lines (more than one watch round's bytes), then a last line without newline
    script = (f"echo ran >> {side}; i=0; while [ $i -lt 3000 ]; do i=$((i+1)); "
              f"printf 'eft-%05d %01020d\\n' $i 0; done; echo eft-err >&2; printf eft-last")
    dag = write_dag(new_dag_id("eft"), op_src(ssh_conn_id=orch_conn, state_dir=state_dir, command=script,
                                              deferrable=True, end_from_trigger=True, poll_interval=0.5))
    dr = dag.test()
    assert ti_states(dr) == {"t": "success"}
    msgs = our_log_messages(captured(capfd), caplog)
    numbered = [m for m in msgs if m.startswith("eft-") and m[4:9].isdigit()]
    assert [int(m[4:9]) for m in numbered] == list(range(1, 3001)), "every line once, in order"
    assert sum(m == "eft-last" for m in msgs) == 1 and sum(m == "[stderr] eft-err" for m in msgs) == 1
    assert any(ENDS_HERE in m for m in msgs), msgs[-20:]
    assert not any(m.endswith(WORKER_END) for m in msgs), "the worker's end ran too"
    record = _xcom(dr)
    assert record["status"] == "SUCCEEDED" and record["acked_at"] is not None
    assert remote(f"cat {side}").splitlines() == ["ran"]


def test_failure_and_skip_end_on_a_worker(orch_conn, state_dir, capfd, caplog):
    dag = write_dag(
        new_dag_id("eftf"),
        op_src(task_id="f", ssh_conn_id=orch_conn, state_dir=state_dir, command="echo before-fail; exit 7",
               deferrable=True, end_from_trigger=True, poll_interval=0.5)
        + "\n"
        + op_src(task_id="s", ssh_conn_id=orch_conn, state_dir=state_dir, command="exit 99",
                 skip_on_exit_code=99, deferrable=True, end_from_trigger=True, poll_interval=0.5),
    )
    dr = dag.test()
    assert ti_states(dr) == {"f": "failed", "s": "skipped"}
    text = captured(capfd) + caplog.text
    assert "failed with exit code 7" in text and "before-fail" in text
    assert ENDS_HERE not in text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"deferrable": False, "end_from_trigger": True}, "needs deferrable=True"),
        ({"deferrable": True, "end_from_trigger": "yes"}, "must be True or False"),
        ({"deferrable": False, "start_in_triggerer": True}, "needs deferrable=True"),
        ({"deferrable": True, "start_in_triggerer": True, "wait": False}, "needs wait=True"),
    ],
)
def test_bad_combinations_fail_at_parse_time(orch_conn, kwargs, message):
    from orchesjob_provider.operators.orchesjob import OrchesjobOperator
    from orchesjob_provider.version_compat import AirflowException

    with pytest.raises(AirflowException, match=message):
        OrchesjobOperator(task_id="t", ssh_conn_id=orch_conn, command="true", **kwargs)


def test_outlets_refused(orch_conn):
    from orchesjob_provider.operators.orchesjob import OrchesjobOperator
    from orchesjob_provider.version_compat import AIRFLOW_V_3_0_PLUS, AirflowException

    if AIRFLOW_V_3_0_PLUS:
        from airflow.sdk import Asset
    else:
        from airflow.datasets import Dataset as Asset  # type: ignore[no-redef]
    with pytest.raises(AirflowException, match="outlets"):
        OrchesjobOperator(task_id="t", ssh_conn_id=orch_conn, command="true", deferrable=True,
                          end_from_trigger=True, outlets=[Asset("s3://bucket/x")])


def test_start_in_triggerer_with_end_from_trigger_needs_no_ssh_in_the_worker(
    orch_conn, state_dir, remote, sshd, capfd, caplog
):
    """start_in_triggerer=True + end_from_trigger=True: the worker renders and defers, the trigger
    starts, watches and ends: no paramiko connection at all (the worker's SSH), one execution,
    the start's lines (action, run key) in the log, every job line once."""
    import logging

    caplog.set_level(logging.INFO)
    side = f"{sshd.home}/{new_dag_id('sit')}.side"
    script = f"echo ran >> {side}; echo sit-1; echo sit-2 >&2; printf sit-last"
    dag = write_dag(new_dag_id("sit"), op_src(ssh_conn_id=orch_conn, state_dir=state_dir, command=script,
                                              deferrable=True, end_from_trigger=True, start_in_triggerer=True,
                                              env={"GREETING": "{{ task.task_id }}"}, poll_interval=0.5))
    dr = dag.test()
    assert ti_states(dr) == {"t": "success"}
    text = captured(capfd)
    msgs = our_log_messages(text, caplog)
    for line in ("sit-1", "[stderr] sit-2", "sit-last"):
        assert sum(m == line for m in msgs) == 1, (line, msgs)
    assert any(m.startswith("orchesjob started: ") for m in msgs), msgs
    assert any(ENDS_HERE in m for m in msgs), msgs
    # the worker never connected to start: the first paramiko connection is dag.test()'s resume
    # after the end event (a real triggerer ends the task without it: tests/e2e)
    records = [r.getMessage() for r in caplog.records]
    first_ssh = next(i for i, m in enumerate(records) if m.startswith("Connected"))
    assert any("[DAG TEST] Trigger completed" in m for m in records[:first_ssh]), records
    assert _xcom(dr)["status"] == "SUCCEEDED"
    assert remote(f"cat {side}").splitlines() == ["ran"]

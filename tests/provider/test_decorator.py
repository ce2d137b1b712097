"""``@task.orchesjob`` through dag.test(): registration, XCom, mapping, retries, bad returns.

Every test counts how often the remote command really ran (a side-effect file on the target)
and, where it matters, how often the TaskFlow function ran (a file in the test's tmp dir).
"""

from __future__ import annotations

import pytest

pytest.importorskip("airflow", reason="Airflow is not installed in this interpreter")

from dagutil import captured, new_dag_id, ti_states, write_dag
from test_resume import DIE_ONCE as RESUME_DIE_ONCE
from test_resume import _release, _wait_release

pytestmark = [pytest.mark.ssh, pytest.mark.airflow]

MODES = [pytest.param(False, id="worker"), pytest.param(True, id="deferrable")]

TASK_IMPORT = """
try:  # Airflow 3
    from airflow.sdk import task
except ImportError:  # Airflow 2.10
    from airflow.decorators import task
"""


def _lines(remote, path):
    return remote(f"cat {path} 2>/dev/null || true").splitlines()


def _xcoms(dr, task_id):
    """{map_index: xcom} of every task instance of task_id."""
    out = {}
    for ti in dr.get_task_instances():
        if ti.task_id == task_id:
            out[ti.map_index] = ti.xcom_pull(task_ids=task_id, map_indexes=ti.map_index)
    return out


def test_task_orchesjob_is_registered_through_provider_info():
    """Airflow finds the decorator by name through the installed distribution's entry point."""
    from orchesjob_provider.decorators.orchesjob import orchesjob_task
    from orchesjob_provider.get_provider_info import get_provider_info

    info = get_provider_info()
    assert {"class-name": "orchesjob_provider.decorators.orchesjob.orchesjob_task", "name": "orchesjob"} in (
        info["task-decorators"]
    )
    try:
        from airflow.sdk import task
    except ImportError:
        from airflow.decorators import task
    assert task.orchesjob is orchesjob_task


@pytest.mark.parametrize("deferrable", MODES)
def test_argv_from_function_runs_once_and_pushes_record(orch_conn, state_dir, remote, sshd, deferrable):
    dag_id = new_dag_id("deco")
    side = f"{sshd.home}/{dag_id}.side"
    dag = write_dag(
        dag_id,
        f"""
        @task.orchesjob(ssh_conn_id={orch_conn!r}, state_dir={state_dir!r}, poll_interval=0.5,
                        deferrable={deferrable!r}, env={{"DAY": "{{{{ ds }}}}"}})
        def load(table, ds=None):
            return ["sh", "-c", 'echo "$1 $DAY" >> {side}; echo loaded "$1"', "sh", f"{{table}}-{{ds}}"]

        load("sales")
        """,
        preamble=TASK_IMPORT,
    )
    dr = dag.test()
    assert ti_states(dr) == {"load": "success"}
    record = _xcoms(dr, "load")[-1]
    assert record["status"] == "SUCCEEDED" and record["exit_code"] == 0 and record["acked_at"]
    assert record["run_key"].startswith(f"af/{dag_id}/load/-1/")
    lines = _lines(remote, side)
    assert len(lines) == 1, lines
    arg, day = lines[0].split(" ")  # the function's f-string got ds; the env's Jinja got {{ ds }}
    assert arg == f"sales-{day}" and len(day) == 10, lines


def test_string_command_and_downstream_xcom(orch_conn, state_dir, remote, sshd):
    dag_id = new_dag_id("decostr")
    side = f"{sshd.home}/{dag_id}.side"
    dag = write_dag(
        dag_id,
        f"""
        @task.orchesjob(ssh_conn_id={orch_conn!r}, state_dir={state_dir!r}, poll_interval=0.5,
                        shell="/bin/bash")
        def build():
            # ${{#x[@]}} would be a Jinja comment opener if the command were rendered
            return 'x=(a b c); echo "n=${{#x[@]}}" >> {side}'

        @task
        def report(record):
            assert record["status"] == "SUCCEEDED", record
            return record["job_id"]

        report(build())
        """,
        preamble=TASK_IMPORT,
    )
    dr = dag.test()
    assert ti_states(dr) == {"build": "success", "report": "success"}
    assert _lines(remote, side) == ["n=3"]
    assert _xcoms(dr, "report")[-1] == _xcoms(dr, "build")[-1]["job_id"]


def test_expand_runs_one_job_per_mapped_index(orch_conn, state_dir, remote, sshd):
    """Mapped and deferrable at once (the worker path of the decorator is proven above)."""
    deferrable = True
    dag_id = new_dag_id("decomap")
    side = f"{sshd.home}/{dag_id}.side"
    dag = write_dag(
        dag_id,
        f"""
        @task.orchesjob(ssh_conn_id={orch_conn!r}, state_dir={state_dir!r}, poll_interval=0.5)
        def part(name, suffix):
            return ["sh", "-c", f"echo {{name}}{{suffix}} >> {side}"]

        part.partial(suffix="!").override(deferrable={deferrable!r}).expand(name=["a", "b", "c"])
        """,
        preamble=TASK_IMPORT,
    )
    dr = dag.test()
    assert set(ti_states(dr).values()) == {"success"}
    assert sorted(_lines(remote, side)) == ["a!", "b!", "c!"]
    records = _xcoms(dr, "part")
    assert sorted(records) == [0, 1, 2]
    assert [records[i]["run_key"].split("/")[3] for i in range(3)] == ["0", "1", "2"]


# test_resume's DieOnceOperator (try 1 "dies" after starting the job, try 2 releases it), as the
# base of a decorated operator
DIE_ONCE = """
from orchesjob_provider.decorators.orchesjob import _OrchesjobDecoratedOperator
from orchesjob_provider.decorators.compat import task_decorator_factory
""" + RESUME_DIE_ONCE + """

class DieOnceDecorated(_OrchesjobDecoratedOperator, DieOnceOperator):
    pass


def die_once_task(python_callable=None, **kwargs):
    return task_decorator_factory(
        python_callable=python_callable, decorated_operator_class=DieOnceDecorated, **kwargs
    )
"""


def test_retry_calls_function_again_but_reattaches_the_job(
    orch_conn, state_dir, remote, sshd, tmp_path, capfd
):
    dag_id = new_dag_id("decoretry")
    side = f"{sshd.home}/{dag_id}.side"
    calls = tmp_path / "calls"
    dag = write_dag(
        dag_id,
        f"""
        @die_once_task(ssh_conn_id={orch_conn!r}, state_dir={state_dir!r}, poll_interval=0.5,
                       retries=1, retry_delay=timedelta(seconds=0))
        def job(ti=None):
            with open({str(calls)!r}, "a") as f:
                f.write(f"try {{ti.try_number}}\\n")
            return f"echo ran-try-{{ti.try_number}} >> {side}; {_wait_release(f'{side}.release')}"

        job()
        """,
        # the job runs until try 2 begins: a fixed sleep ended first on a loaded af32 run (adopted)
        preamble=TASK_IMPORT + _release(f"{side}.release") + DIE_ONCE,
    )
    dr = dag.test()
    text = captured(capfd)
    assert ti_states(dr) == {"job": "success"}
    assert calls.read_text().splitlines() == ["try 1", "try 2"]  # the function ran on both tries
    assert _lines(remote, side) == ["ran-try-1"]  # ... the remote command once
    assert "orchesjob reattached" in text


@pytest.mark.parametrize(
    ("ret", "why"), [("42", "int"), ("''", "command is empty"), ("['sh', 1]", "command[1] is int")]
)
def test_bad_return_fails_the_task_before_anything_runs(orch_conn, state_dir, remote, ret, why, capfd):
    dag_id = new_dag_id("decobad")
    dag = write_dag(
        dag_id,
        f"""
        @task.orchesjob(ssh_conn_id={orch_conn!r}, state_dir={state_dir!r})
        def nothing():
            return {ret}

        nothing()
        """,
        preamble=TASK_IMPORT,
    )
    dr = dag.test()
    text = captured(capfd)
    assert ti_states(dr) == {"nothing": "failed"}
    assert "must return a non-empty str or a list of str" in text and why in text
    # no job was started: the state dir was never even created by an agent call
    assert remote(f"test -e {state_dir} && echo yes || echo no").strip() == "no"


def test_command_argument_is_rejected_at_parse_time(orch_conn):
    from orchesjob_provider.decorators.orchesjob import orchesjob_task
    from orchesjob_provider.version_compat import AirflowException

    try:
        from airflow.sdk import DAG
    except ImportError:
        from airflow import DAG
    import datetime

    with DAG(new_dag_id("decocmd"), schedule=None, start_date=datetime.datetime(2024, 1, 1)):

        @orchesjob_task(ssh_conn_id=orch_conn, command=["true"])
        def f():
            return ["true"]

        with pytest.raises(AirflowException, match="do not pass command="):
            f()

"""Every example DAG in dags_examples/: parsed without import errors, run with dag.test().

``test_example_runs`` parametrizes over every ``dags_examples/example_orchesjob_*.py``, so a new
example is picked up without touching this file. The convention an example follows for that:
it reads ``ORCHESJOB_EXAMPLE_CONN_ID``, ``ORCHESJOB_EXAMPLE_STATE_DIR`` and
``ORCHESJOB_EXAMPLE_OUT`` (``ORCHESJOB_EXAMPLE_HOSTS`` for several connections) from the
environment, and every remote job appends ONE distinct line to ``$OUT/<dag_id>.log`` on the host.
The test counts those lines: one per orchesjob task instance (mapped ones included), unless
EXPECT below says otherwise. On Airflow 2.10 the examples' ``airflow.sdk`` imports go through a
test-only shim (sdk_shim.py).
"""

from __future__ import annotations

import glob
import os
import shutil
import uuid
from datetime import timedelta

import pytest

pytest.importorskip("airflow", reason="Airflow is not installed in this interpreter")

from connutil import conn_json, set_conn
from dagutil import DAGS_FOLDER, FIXED_DATE, captured, ti_states
from sdk_shim import airflow_sdk

pytestmark = [pytest.mark.ssh, pytest.mark.airflow]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES_DIR = os.path.join(REPO, "dags_examples")
EXAMPLES = sorted(glob.glob(os.path.join(EXAMPLES_DIR, "example_orchesjob_*.py")))
ALL_FILES = sorted(glob.glob(os.path.join(EXAMPLES_DIR, "*.py")))

#: dag_id -> (task states other than "success", remote job lines if not one per orchesjob task)
EXPECT: dict[str, tuple[dict[str, str], int | None]] = {
    "example_orchesjob_abort_on_timeout": ({"refresh_cache": "failed"}, 1),
}


def _name(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _dagbag(path: str):
    try:
        from airflow.dag_processing.dagbag import DagBag  # Airflow 3.1+
    except ImportError:
        from airflow.models.dagbag import DagBag
    with airflow_sdk():
        return DagBag(dag_folder=path)  # the examples are off: AIRFLOW__CORE__LOAD_EXAMPLES


def load_example(path: str):
    """Copy the example into the session's dags folder (Airflow 3's dag.test() syncs that bundle),
    parse it there, and return its one DAG."""
    dest = os.path.join(DAGS_FOLDER, os.path.basename(path))
    shutil.copyfile(path, dest)
    bag = _dagbag(dest)
    assert bag.import_errors == {}, bag.import_errors
    assert len(bag.dags) == 1, sorted(bag.dags)
    return next(iter(bag.dags.values()))


@pytest.fixture
def example_env(monkeypatch, orch_conn, sshd, state_dir):
    """What every example reads from the environment; returns the host dir the jobs write to."""
    out = f"{sshd.home}/oj-examples/{uuid.uuid4().hex[:12]}"
    set_conn("orch_ssh_b", conn_json(sshd))  # a second "host" for the mapped-hosts example
    monkeypatch.setenv("ORCHESJOB_EXAMPLE_CONN_ID", orch_conn)
    monkeypatch.setenv("ORCHESJOB_EXAMPLE_HOSTS", f"{orch_conn},orch_ssh_b")
    monkeypatch.setenv("ORCHESJOB_EXAMPLE_STATE_DIR", state_dir)
    monkeypatch.setenv("ORCHESJOB_EXAMPLE_OUT", out)
    return out


def _run(dag, **kwargs):
    from orchesjob_provider.version_compat import AIRFLOW_V_3_0_PLUS

    if "logical_date" in kwargs and not AIRFLOW_V_3_0_PLUS:
        kwargs["execution_date"] = kwargs.pop("logical_date")
    return dag.test(**kwargs)


def _job_lines(remote, out: str, dag_id: str) -> list[str]:
    return remote(f"cat {out}/{dag_id}.log 2>/dev/null || true").splitlines()


def test_every_file_parses():
    """The folder as Airflow's DagBag sees it: no import errors, one DAG per file, named after it
    (the demo's resume_demo.py too). One DagBag for all: a DagBag costs seconds on Airflow 2."""
    bag = _dagbag(EXAMPLES_DIR)
    assert bag.import_errors == {}, bag.import_errors
    files = {os.path.basename(d.fileloc): d.dag_id for d in bag.dags.values()}
    assert sorted(files) == sorted(os.path.basename(p) for p in ALL_FILES), files
    for name, dag_id in files.items():
        if name.startswith("example_orchesjob_"):
            assert dag_id == name[: -len(".py")], (name, dag_id)


def test_examples_follow_the_naming_scheme():
    assert len(EXAMPLES) >= 7, EXAMPLES
    for path in ALL_FILES:
        assert _name(path).startswith("example_orchesjob_") or _name(path) == "resume_demo", path


@pytest.mark.parametrize("path", EXAMPLES, ids=_name)
def test_example_runs(path, example_env, remote):
    dag = load_example(path)
    assert dag.dag_id == _name(path), "an example's dag_id is its file name"
    dr = _run(dag)
    states = ti_states(dr)
    other_states, n_lines = EXPECT.get(dag.dag_id, ({}, None))
    tis = dr.get_task_instances()
    expected = {ti.task_id: other_states.get(ti.task_id, "success") for ti in tis}
    assert states == expected
    kinds = [str(ti.operator).lower() for ti in tis]  # the class name, or "@task.orchesjob"
    orchesjob_tis = [k for k in kinds if "orchesjob" in k and "sensor" not in k]
    lines = _job_lines(remote, example_env, dag.dag_id)
    assert len(lines) == (n_lines if n_lines is not None else len(orchesjob_tis)), lines
    assert len(set(lines)) == len(lines), f"a job ran twice: {lines}"


def test_abort_on_timeout_stops_the_job_on_the_host(example_env, remote, state_dir, orch_conn):
    from orchesjob_provider.hooks.orchesjob import OrchesjobHook

    dag = load_example(os.path.join(EXAMPLES_DIR, "example_orchesjob_abort_on_timeout.py"))
    dr = _run(dag)
    assert ti_states(dr) == {"refresh_cache": "failed"}
    assert _job_lines(remote, example_env, dag.dag_id) == ["refresh started"]
    run_key = f"af/{dag.dag_id}/refresh_cache/-1/{dr.run_id}"
    job = OrchesjobHook(ssh_conn_id=orch_conn, state_dir=state_dir).status(run_key=run_key)
    assert job is not None and job.status == "ABORTED", job
    assert remote("pgrep -f 'sleep 3600' -u $(id -u) -a || true").count(example_env) == 0


def test_strict_daily_import_runs_a_day_once_until_the_runbook_unlocks_it(
    example_env, remote, state_dir, capfd
):
    dag = load_example(os.path.join(EXAMPLES_DIR, "example_orchesjob_strict_daily_import.py"))
    day = FIXED_DATE.date().isoformat()
    # Each run is a new Airflow run of the same day (a manual run, a backfill): same {{ ds }}.
    # (Not the same logical date twice: Airflow 2.10's dag.test() cannot clear a run without
    # the FAB tables.)
    runs = iter(FIXED_DATE + timedelta(hours=h) for h in range(1, 24))
    assert ti_states(_run(dag, logical_date=next(runs))) == {"import_day": "success"}
    captured(capfd)
    # the same day again: kept, nothing runs
    assert ti_states(_run(dag, logical_date=next(runs))) == {"import_day": "success"}
    assert "kept" in captured(capfd)
    assert _job_lines(remote, example_env, dag.dag_id) == [f"imported {day}"]
    # the docstring's runbook, step 2, as written there. `orchesjob` is this run's own deployed
    # agent, not the launcher: the launcher follows the host's last deploy, and other tests on
    # this shared test user deploy damaged agents on purpose (the launcher: tests/unit/test_launcher.py)
    from orchesjob_provider.bundle import get_bundle

    agent_main = get_bundle().remote_path + "/__main__.py"
    remote(
        f"export ORCHESJOB_HOME={state_dir}; "
        f'orchesjob() {{ python3 -I -S {agent_main} "$@"; }}; '
        f'orchesjob unlock --run-key daily-import/{day} --reason "input fixed" --ttl 1h'
    )
    dr = _run(dag, logical_date=next(runs))
    assert ti_states(dr) == {"import_day": "success"}
    assert _job_lines(remote, example_env, dag.dag_id) == [f"imported {day}"] * 2
    ti = dr.get_task_instances()[0]
    assert ti.xcom_pull(task_ids="import_day")["attempt_no"] == 2
    # the unlock was consumed: strict again
    _run(dag, logical_date=next(runs))
    assert len(_job_lines(remote, example_env, dag.dag_id)) == 2

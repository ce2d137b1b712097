"""Provider tests: real Airflow (SQLite metadata DB in a temp AIRFLOW_HOME) + the loopback sshd.

Airflow reads its configuration when first imported, so the environment is set here
(testkit.airflow_env.setup()), at conftest import time, before any test module imports airflow.
Without Airflow installed every test here is skipped with the reason (each module starts with
``pytest.importorskip``).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import subprocess
import sys
import uuid

import pytest

from testkit import airflow_env

AIRFLOW_HOME = airflow_env.setup()  # one per pytest process (xdist worker), removed at exit
DAGS_FOLDER = os.environ["AIRFLOW__CORE__DAGS_FOLDER"]
HAVE_AIRFLOW = importlib.util.find_spec("airflow") is not None

CONN_ID = "orch_ssh"

# Helpers live in connutil: a test module importing "conftest" could get another directory's.
from connutil import conn_json, set_conn  # noqa: E402


def pytest_report_header(config):
    if not HAVE_AIRFLOW:
        return "orchesjob provider tests: Airflow is not importable, tests/provider is skipped"
    from importlib.metadata import version

    return (
        f"orchesjob provider tests: apache-airflow {version('apache-airflow')}, "
        f"providers-ssh {version('apache-airflow-providers-ssh')}, paramiko {version('paramiko')}, "
        f"asyncssh {version('asyncssh')}; AIRFLOW_HOME={AIRFLOW_HOME}"
    )


def _migrate(db_path: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env={**os.environ, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{db_path}"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    if r.returncode != 0:
        pytest.fail(f"airflow db migrate failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}", pytrace=False)


@pytest.fixture(scope="session")
def airflow_db():
    """A migrated metadata DB in this process's AIRFLOW_HOME.

    `airflow db migrate` costs ~8 s of CPU. Under pytest-xdist the first worker to get here
    migrates a template in the run's shared dir (tests/conftest.py) and every worker copies it,
    so N workers pay for one migration, not N.
    """
    if not HAVE_AIRFLOW:
        pytest.skip("Airflow is not installed in this interpreter")
    db = os.path.join(AIRFLOW_HOME, "airflow.db")
    shared = os.environ.get("ORCHESJOB_TEST_RUN_DIR")  # made by tests/conftest.py
    if not shared:
        _migrate(db)
        return AIRFLOW_HOME
    import fcntl

    template = os.path.join(shared, "airflow-template.db")
    with open(os.path.join(shared, "airflow-template.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(template + ".done"):
            _migrate(template)
            open(template + ".done", "w").close()
        shutil.copyfile(template, db)
    return AIRFLOW_HOME


@pytest.fixture(scope="session")
def orch_conn(sshd, airflow_db):
    """AIRFLOW_CONN_ORCH_SSH: private_key from the connection, host key verified."""
    set_conn(CONN_ID, conn_json(sshd))
    return CONN_ID


@pytest.fixture
def state_dir(sshd):
    """A fresh agent state dir on the target for one test."""
    return f"{sshd.home}/oj-state/{uuid.uuid4().hex[:12]}"


@pytest.fixture
def remote(sshd):
    """Run a shell snippet on the target (as the SSH user) and return stdout."""

    def run(cmd: str, check: bool = True) -> str:
        r = sshd.run(cmd, timeout=60)
        if check and r.returncode != 0:
            raise AssertionError(f"remote command failed ({r.returncode}): {cmd}\n{r.stderr}")
        return r.stdout

    return run


@pytest.fixture
def quick_sshhook_retries(monkeypatch):
    """SSHHook of ssh provider 3.14 (the Airflow 2.10 leg) retries every failed connect 3 times,
    3-5 s apart (Airflow 3's provider too); the outcome is the same each time, so tests of
    connect failures drop the spacing."""
    from airflow.providers.ssh.hooks import ssh as ssh_mod
    from tenacity import wait_none

    monkeypatch.setattr(ssh_mod, "wait_fixed", lambda *_: wait_none(), raising=False)
    monkeypatch.setattr(ssh_mod, "wait_random", lambda *_: wait_none(), raising=False)
    # where the provider lets us, our hook retries instead (OrchesjobHook.get_conn)
    monkeypatch.setattr("orchesjob_provider.hooks.ssh.paramiko_transport.CONNECT_RETRY_WAIT", (0.0, 0.0))


@pytest.fixture(autouse=True, scope="session")
def _one_in_process_api_per_worker():
    """Airflow 3.0-3.2 build a new in-process Execution API app for every ``dag.test()`` (Cadwyn
    generating its versioned routes: ~4 s of CPU each, measured on 3.2.1 with cProfile: the af32
    leg used 460 CPU-s for its provider tests); 3.3 builds one per process (``functools.lru_cache``
    on ``supervisor.in_process_api_server``). Do as 3.3 does; nothing else changes."""
    try:
        from airflow.sdk.execution_time import supervisor
    except ImportError:  # Airflow 2: no in-process API
        yield
        return
    original = getattr(supervisor, "in_process_api_server", None)
    if original is not None and not hasattr(original, "cache_info"):
        supervisor.in_process_api_server = functools.lru_cache(maxsize=1)(original)
    yield
    if original is not None:
        supervisor.in_process_api_server = original


@pytest.fixture(autouse=True)
def _only_this_tests_dags():
    """Empty the session's dags folder before each test. Airflow 3's ``dag.test()`` parses and
    syncs to the database every DAG file of the folder (its bundle) on every call, so a folder
    that keeps every earlier test's DAGs makes each ``dag.test()`` slower than the one before
    (quadratic over a worker's tests). A test's own DAGs stay until the next test starts."""
    folder = os.environ.get("AIRFLOW__CORE__DAGS_FOLDER")
    if folder and os.path.isdir(folder):
        for name in os.listdir(folder):
            if name.endswith(".py"):
                os.unlink(os.path.join(folder, name))
    yield

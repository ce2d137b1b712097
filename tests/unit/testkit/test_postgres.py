"""testkit.postgres and the multi-component AirflowStack without Airflow: a real throwaway
PostgreSQL cluster (initdb as the postgres system user, 127.0.0.1 only, password auth),
restarted and stopped; the stack's component names, command lines and settings with PostgreSQL,
two schedulers and two triggerers; its read queries on PostgreSQL. What tests/e2e relies on."""
import os
import shutil
import tempfile
from typing import Any

import pytest

from testkit import postgres as pg_mod
from testkit import prereqs
from testkit.airflow_stack import AirflowStack, StackError, base_component, expand_components
from testkit.procs import pid_alive, port_open

try:
    import psycopg2  # noqa: F401  (the af3 venv's: the e2e stack runs there; af2/af32 have none)

    HAS_PSYCOPG2 = True
except ImportError:
    HAS_PSYCOPG2 = False
needs_pg = pytest.mark.skipif(pg_mod.bin_dir() is None, reason=prereqs.missing_message("postgresql"))
needs_psycopg2 = pytest.mark.skipif(
    not HAS_PSYCOPG2, reason="psycopg2 is installed in the af3 venv only (the e2e stack's)")


def test_component_names():
    base = ("api-server", "scheduler", "dag-processor", "triggerer")
    assert expand_components(base) == base
    assert expand_components(base, 2, 3) == ("api-server", "scheduler", "scheduler-2", "dag-processor",
                                             "triggerer", "triggerer-2", "triggerer-3")
    assert [base_component(n) for n in ("scheduler-2", "dag-processor", "api-server", "triggerer")] == [
        "scheduler", "dag-processor", "api-server", "triggerer"]


def test_sqlite_stays_the_default_and_allows_one_scheduler(tmp_path):
    st = AirflowStack(str(tmp_path / "home"), venv="/v")
    assert st.database == "sqlite" and st.postgres is None
    assert st.stack_env()["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("sqlite:///")
    assert st.components == ("api-server", "scheduler", "dag-processor", "triggerer")
    assert st.component_env("triggerer") == {}
    with pytest.raises(StackError, match="PostgreSQL"):
        AirflowStack(str(tmp_path / "home2"), venv="/v", schedulers=2)


def test_postgres_stack_settings_and_command_lines(tmp_path):
    st = AirflowStack(str(tmp_path / "home"), venv="/v", database="postgres", schedulers=2, triggerers=2)
    assert st.components == ("api-server", "scheduler", "scheduler-2", "dag-processor", "triggerer",
                             "triggerer-2")
    url = st.stack_env()["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert url.startswith("postgresql+psycopg2://airflow:") and "@127.0.0.1:" in url
    assert st.component_args("scheduler-2") == ["/v/bin/airflow", "scheduler"]
    assert st.component_args("triggerer-2") == ["/v/bin/airflow", "triggerer"]
    env = st.component_env("triggerer-2")
    assert env["ORCHESJOB_STACK_COMPONENT"] == "triggerer-2"
    assert env["AIRFLOW__CORE__HOSTNAME_CALLABLE"] == "orchesjob_stack_hostname.get"
    assert st.component_env("scheduler-2") == {}
    with pytest.raises(StackError, match="unknown component"):
        st.component_args("scheduler-3")


@needs_pg
@needs_psycopg2
def test_postgres_cluster_lifecycle_and_stack_queries():
    # not under pytest's tmp_path: its parents (0700) are not traversable by the postgres user
    home = tempfile.mkdtemp(prefix="orchesjob-pgtest-")
    os.chmod(home, 0o711)
    try:
        pg = _lifecycle(home)
        # stopped for good: no server process, nothing listening on its port
        assert not pg.running() and not port_open(pg.port)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _lifecycle(home: str) -> Any:
    """Start, query, restart and stop the stack's cluster; returns it (stopped)."""
    st = AirflowStack(str(home), venv="/v", database="postgres")
    pg = st.postgres
    assert pg is not None
    pg.setup()
    try:
        assert port_open(pg.port) and pg.running()
        first = pg.pid()
        assert first and pid_alive(first)
        st._save_state()  # what setup() does before `db migrate`
        assert st.query("SELECT ? AS x, current_user AS u", (7,)) == [{"x": 7, "u": "airflow"}]
        assert st.restart_postgres() != first
        assert st.query("SELECT 1 AS one") == [{"one": 1}]
        # a second object (e.g. `python -m testkit.airflow_stack stop`) finds the cluster
        again = AirflowStack(str(home), venv="/v")
        assert again.database == "postgres" and again.postgres is not None
        assert again.postgres.port == pg.port
    finally:
        st.stop()
    st.stop()  # idempotent
    return pg

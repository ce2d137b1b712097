#!/usr/bin/env python3
"""Start and stop a real, throwaway Airflow 3 stack (stdlib only; Linux).

Used by tests/e2e and scripts/demo_driver.py (imported) and by scripts/demo.sh (command line). One stack = one
AIRFLOW_HOME directory holding everything: the SQLite metadata DB, airflow.cfg, task logs,
one log file per component (``<home>/stack-logs/<component>.log``) and ``stack.json`` (the
pids, so a later ``stop`` finds them).

    python3 -m testkit.airflow_stack start --home H --dags D [--conn ID=JSON ...] [--api-port N]
    python3 -m testkit.airflow_stack stop  --home H
    python3 -m testkit.airflow_stack env   --home H       # `export ...` lines for the airflow CLI
    python3 -m testkit.airflow_stack status --home H

Components: ``api-server`` (serves the execution API that Airflow 3 task processes talk to),
``scheduler`` (with the LocalExecutor: its forked workers run the tasks), ``dag-processor``,
``triggerer``; with ``schedulers=N`` / ``triggerers=N`` (PostgreSQL only: SQLite allows one
scheduler) also ``scheduler-2`` .. ``scheduler-N`` and ``triggerer-2`` .. ``triggerer-N``.
Each one runs in its own session / process group and is stopped with
SIGTERM then SIGKILL of the whole group (plus any descendant that left the group, such as a
task runner, which Airflow 3 puts in a process group of its own).

The metadata DB is SQLite (``<home>/airflow.db``; the default, what scripts/demo.sh runs) or, with
``database="postgres"``, a throwaway PostgreSQL cluster in ``<home>/postgres`` (testkit/postgres.py:
started before ``db migrate``, stopped after the components; ``restart_component("postgres")``
restarts it).

The settings (see ``stack_env``) are tuned for a small, busy machine and a quick test: SQLite +
LocalExecutor (allowed on Airflow 3), parallelism 2, 1-2 s scheduler/parsing intervals, and a
task heartbeat timeout of ``heartbeat_timeout`` seconds (default 20) so a task whose process was
killed is noticed in seconds rather than the default 5 minutes.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import secrets
import shlex
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

from testkit import REPO
from testkit.postgres import Postgres
from testkit.procs import (
    _read,
    all_pids,
    descendants,
    free_port,
    pid_alive,
    port_open,
    proc_cmdline,
    proc_ppid,
    tail,
)
from testkit.procs import wait_until as _wait_until

DEFAULT_VENV = os.path.join(REPO, ".venvs", "af3")
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
STATE_FILE = "stack.json"
#: sqlite3's busy timeout (its default is 5 s). Long enough for a loaded 2-core machine, short
#: enough that a lock conflict inside the API server (which then stops answering everything,
#: task heartbeats included) ends well before the task heartbeat timeout: measured, a 60 s value
#: froze the API server for 60 s under three concurrent clears and made every running task a zombie.
SQLITE_BUSY_TIMEOUT = 15
#: Our own REST writes (clear, mark) go one at a time: concurrent write requests are what made
#: the SQLite-backed API server hang.
_API_WRITES = threading.Lock()


class StackError(RuntimeError):
    pass


def base_component(name: str) -> str:
    """The airflow sub-command of a component: ``scheduler-2`` -> ``scheduler``."""
    m = re.fullmatch(r"(.+)-(\d+)", name)
    return m.group(1) if m else name


def expand_components(base: Sequence[str], schedulers: int = 1, triggerers: int = 1) -> tuple:
    """``base`` with ``scheduler-2..N`` after ``scheduler`` and ``triggerer-2..N`` after ``triggerer``."""
    out: List[str] = []
    for name in base:
        out.append(name)
        extra = {"scheduler": schedulers, "triggerer": triggerers}.get(name, 1)
        out.extend(f"{name}-{i}" for i in range(2, extra + 1))
    return tuple(out)


def wait_until(pred: Callable[[], Any], timeout: float, interval: float = 0.5,
               what: str = "condition", diag: Optional[Callable[[], str]] = None) -> Any:
    """testkit.procs.wait_until with this module's defaults (0.5 s polls)."""
    return _wait_until(pred, timeout, interval, what, diag)


# ------------------------------------------------------------------ the stack
def conn_env_name(conn_id: str) -> str:
    return "AIRFLOW_CONN_" + conn_id.upper()


class AirflowStack:
    """A throwaway Airflow 3 deployment in ``home`` (see the module docstring)."""

    def __init__(
        self,
        home: str,
        dags_folder: Optional[str] = None,
        venv: str = DEFAULT_VENV,
        connections: Optional[Dict[str, str]] = None,
        extra_env: Optional[Dict[str, str]] = None,
        api_port: Optional[int] = None,
        heartbeat_timeout: int = 20,
        database: Optional[str] = None,
        schedulers: int = 1,
        triggerers: int = 1,
    ) -> None:
        self.home = os.path.abspath(home)
        self.dags_folder = os.path.abspath(dags_folder or os.path.join(self.home, "dags"))
        self.venv = venv
        self.connections = dict(connections or {})
        self.extra_env = dict(extra_env or {})
        self.heartbeat_timeout = heartbeat_timeout
        self.log_dir = os.path.join(self.home, "stack-logs")
        self.db_path = os.path.join(self.home, "airflow.db")
        self.procs: Dict[str, int] = {}  # component -> pid (= its process group id)
        self._popen: Dict[str, subprocess.Popen] = {}
        state = self._load_state()
        self.api_port = api_port or state.get("api_port") or free_port()
        self.jwt_secret = state.get("jwt_secret") or secrets.token_urlsafe(32)
        self.fernet_key = state.get("fernet_key") or base64.urlsafe_b64encode(os.urandom(32)).decode()
        if state.get("procs"):
            self.procs = {k: int(v) for k, v in state["procs"].items()}
        if not connections and state.get("connections"):
            self.connections = dict(state["connections"])
        pg_state = state.get("postgres") or {}
        self.database = database or ("postgres" if pg_state else "sqlite")
        if self.database not in ("sqlite", "postgres"):
            raise StackError(f"unknown database {self.database!r} (sqlite or postgres)")
        if self.database == "sqlite" and schedulers > 1:
            raise StackError("more than one scheduler needs PostgreSQL (SQLite has no row locks)")
        self.postgres: Optional[Postgres] = None
        if self.database == "postgres":
            self.postgres = Postgres(os.path.join(self.home, "postgres"), port=pg_state.get("port"),
                                     password=pg_state.get("password"))
        schedulers = max(schedulers, int(state.get("schedulers") or 1))
        triggerers = max(triggerers, int(state.get("triggerers") or 1))
        self.schedulers, self.triggerers = schedulers, triggerers
        self.components = expand_components(type(self).components, schedulers, triggerers)

    # ---- paths / state
    @property
    def airflow_bin(self) -> str:
        return os.path.join(self.venv, "bin", "airflow")

    @property
    def python_bin(self) -> str:
        return os.path.join(self.venv, "bin", "python")

    def _state_path(self) -> str:
        return os.path.join(self.home, STATE_FILE)

    def _load_state(self) -> Dict[str, Any]:
        try:
            with open(self._state_path()) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def _save_state(self) -> None:
        os.makedirs(self.home, exist_ok=True)
        tmp = self._state_path() + ".tmp"
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            json.dump({"procs": self.procs, "api_port": self.api_port, "jwt_secret": self.jwt_secret,
                       "fernet_key": self.fernet_key, "connections": self.connections,
                       "dags_folder": self.dags_folder, "venv": self.venv,
                       "postgres": self.postgres.state() if self.postgres else None,
                       "schedulers": self.schedulers, "triggerers": self.triggerers}, f, indent=1)
        os.replace(tmp, self._state_path())

    def component_log(self, name: str) -> str:
        return os.path.join(self.log_dir, f"{name}.log")

    # ---- environment
    def env(self) -> Dict[str, str]:
        """The full environment for every Airflow process of this stack."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("AIRFLOW__") and not k.startswith("AIRFLOW_CONN_")
               and k not in ("AIRFLOW_HOME", "AIRFLOW_CONFIG")}
        env.update(self.stack_env())
        env.update(self.extra_env)
        return env

    def stack_env(self) -> Dict[str, str]:
        base_url = f"http://127.0.0.1:{self.api_port}"
        env = {
            "AIRFLOW_HOME": self.home,
            "AIRFLOW__CORE__DAGS_FOLDER": self.dags_folder,
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            # sqlite3's busy timeout (default 5 s): on a loaded 2-core machine a writer can hold
            # the lock longer, and a scheduler that hits "database is locked" exits.
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": (
                self.postgres.url if self.postgres else f"sqlite:///{self.db_path}?timeout={SQLITE_BUSY_TIMEOUT}"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__FERNET_KEY": self.fernet_key,
            # LocalExecutor forks `parallelism` workers up front: keep it small on a small box.
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            # Airflow 3 task processes talk to the API server's execution API, not to the DB.
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
            "AIRFLOW__API__BASE_URL": base_url,
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__WORKERS": "1",
            # Same JWT secret for the scheduler (signs task tokens) and the API server (checks them).
            "AIRFLOW__API_AUTH__JWT_SECRET": self.jwt_secret,
            "AIRFLOW__API__SECRET_KEY": self.jwt_secret,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            # Fast loops.
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "2",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "2",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "300",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
            # A killed triggerer's triggers go to a live triggerer once it looks dead this long.
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "15",
            # A task whose processes were killed (no more heartbeats through the execution API)
            # is failed -> up_for_retry after this many seconds instead of 300.
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(self.heartbeat_timeout),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
            "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "2",
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "600",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": os.path.join(self.home, "logs"),
            "PYTHONUNBUFFERED": "1",
            "NO_COLOR": "1",
        }
        for conn_id, value in self.connections.items():
            env[conn_env_name(conn_id)] = value
        return env

    # ---- CLI
    def airflow(self, *args: str, timeout: float = 180, check: bool = True) -> subprocess.CompletedProcess:
        """Run ``airflow <args>`` with this stack's environment; capture output."""
        p = subprocess.run([self.airflow_bin, *args], env=self.env(), cwd=self.home,
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise StackError(f"airflow {' '.join(args)} exited {p.returncode}:\n{p.stdout[-4000:]}")
        return p

    def setup(self) -> None:
        """Create the home and dags folder; `airflow db migrate` (idempotent)."""
        os.makedirs(self.home, exist_ok=True)
        os.makedirs(self.dags_folder, exist_ok=True)
        os.makedirs(self.log_dir, exist_ok=True)
        self._save_state()
        if self.postgres is not None:
            # the server runs as the postgres system user: it must traverse the home to its data dir
            os.chmod(self.home, 0o711)
            self.postgres.setup()
        self.airflow("db", "migrate", timeout=600)

    # ---- processes
    #: the components this stack runs (a subclass adds its own, e.g. Celery workers)
    components: Sequence[str] = COMPONENTS

    def component_args(self, name: str) -> List[str]:
        """The command line of a component (a subclass extends it for the components it adds)."""
        if name not in self.components:
            raise StackError(f"unknown component {name!r}")
        args = [self.airflow_bin, base_component(name)]
        if name == "api-server":
            args += ["--host", "127.0.0.1", "--port", str(self.api_port), "--workers", "1",
                     "--apps", "all"]
        return args

    #: the module that names a component's Airflow job (``job.hostname``) after the component
    _HOSTNAME_MODULE = "orchesjob_stack_hostname"

    def component_env(self, name: str) -> Dict[str, str]:
        """Environment of one component beyond ``env()``. With more than one triggerer, each
        triggerer's job row (``job.hostname``, which ``trigger.triggerer_id`` points to) names its
        component (``triggerer-2``): all run on this one machine, so the real host name would not
        tell which process runs a trigger (``component_of_job``)."""
        if self.triggerers < 2 or base_component(name) != "triggerer":
            return {}
        pydir = os.path.join(self.home, "stack-py")
        os.makedirs(pydir, exist_ok=True)
        with open(os.path.join(pydir, self._HOSTNAME_MODULE + ".py"), "w") as f:
            f.write("import os\n\n\ndef get():\n    return os.environ['ORCHESJOB_STACK_COMPONENT']\n")
        path = os.environ.get("PYTHONPATH")
        return {"ORCHESJOB_STACK_COMPONENT": name,
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{self._HOSTNAME_MODULE}.get",
                "PYTHONPATH": pydir + (os.pathsep + path if path else "")}

    def component_of_job(self, job_id: Any) -> Optional[str]:
        """The component whose Airflow job row is ``job_id`` (triggerers of a multi-triggerer
        stack: see component_env), or None."""
        rows = self.query("SELECT hostname FROM job WHERE id = ?", (job_id,))
        name = rows[0]["hostname"] if rows else None
        return name if name in self.components else None

    def start_component(self, name: str) -> int:
        args = self.component_args(name)
        os.makedirs(self.log_dir, exist_ok=True)
        log = open(self.component_log(name), "ab")
        log.write(f"\n==== {time.strftime('%H:%M:%S')} starting {' '.join(args)}\n".encode())
        log.flush()
        p = subprocess.Popen(args, env={**self.env(), **self.component_env(name)}, cwd=self.home,
                             stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
        log.close()
        self._popen[name] = p
        self.procs[name] = p.pid
        self._save_state()
        return p.pid

    def start(self, components: Optional[Sequence[str]] = None, timeout: float = 240) -> None:
        """Start the components (default: all of ``self.components``, api-server first) and wait
        until the API server answers."""
        components = self.components if components is None else components
        try:
            for name in components:
                self.start_component(name)
            if "api-server" in components:
                self.wait_api(timeout)
            for name in components:
                if not self.component_alive(name):
                    raise StackError(f"{name} exited at start-up:\n{tail(self.component_log(name), 60)}")
        except BaseException:
            self.stop()
            raise

    def wait_api(self, timeout: float = 240) -> None:
        def ready():
            if not self.component_alive("api-server"):
                raise StackError("api-server exited at start-up:\n"
                                 + tail(self.component_log("api-server"), 60))
            return port_open(self.api_port)
        wait_until(ready, timeout, 1.0, f"the API server on 127.0.0.1:{self.api_port}")

    def dead_components(self) -> List[str]:
        """The components started (and not stopped) through this object that have exited."""
        return [name for name in list(self.procs) if not self.component_alive(name)]

    def component_alive(self, name: str) -> bool:
        pid = self.procs.get(name)
        if not pid:
            return False
        p = self._popen.get(name)
        if p is not None:
            return p.poll() is None
        return pid_alive(pid) and "airflow" in proc_cmdline(pid)

    def stop_component(self, name: str, sig: int = signal.SIGTERM, grace: float = 20) -> None:
        """Stop a component: signal its process group (and stray descendants); SIGKILL after grace."""
        pid = self.procs.pop(name, None)
        p = self._popen.pop(name, None)
        self._save_state()
        if not pid:
            return
        if p is None and not (pid_alive(pid) and "airflow" in proc_cmdline(pid)):
            return  # gone, or the pid was reused by a stranger
        tree = [pid, *descendants(pid)]
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        for q in tree:  # task runners live in process groups of their own
            try:
                os.kill(q, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + (grace if sig != signal.SIGKILL else 5)
        while time.monotonic() < deadline:
            if p is not None:
                p.poll()
            if not any(pid_alive(q) for q in tree):
                break
            time.sleep(0.2)
        leftover = [q for q in tree if pid_alive(q)]
        for q in leftover:
            try:
                os.kill(q, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if p is not None:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass

    def restart_component(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Stop a component with ``sig`` (default SIGKILL: it dies, as a crashed container) and
        start it again; ``postgres``: ``pg_ctl restart -m fast`` (returns its new pid)."""
        if name == "postgres":
            return self.restart_postgres()
        self.stop_component(name, sig)
        pid = self.start_component(name)
        if name == "api-server":
            self.wait_api()
        return pid

    def restart_api_server(self, sig: int = signal.SIGKILL) -> int:
        """Kill the API server (every task's execution API) and start it again; wait until it answers."""
        return self.restart_component("api-server", sig)

    def restart_postgres(self) -> int:
        """Restart the PostgreSQL server (every open session of every component is cut)."""
        if self.postgres is None:
            raise StackError("this stack runs on SQLite: no postgres to restart")
        self.postgres.restart()
        return self.postgres.pid() or 0

    def stop(self) -> None:
        """Stop every component (schedulers first so they launch nothing new), then PostgreSQL.
        Idempotent."""
        order = ["scheduler", "triggerer", "dag-processor", "api-server"]
        names = sorted(self.procs, key=lambda n: order.index(base_component(n))
                       if base_component(n) in order else 99)
        for name in names:
            self.stop_component(name, signal.SIGTERM, grace=5 if name == "api-server" else 15)
        if self.postgres is not None:
            self.postgres.stop()

    def __enter__(self) -> AirflowStack:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ---- metadata DB (read-only queries; the writers are Airflow's own processes)
    def query(self, sql: str, params: Sequence[Any] = ()) -> List[Dict[str, Any]]:
        """Rows of a read query (``?`` placeholders, either backend) as dicts."""
        if self.postgres is not None:
            return self._query_postgres(sql, params)
        if not os.path.exists(self.db_path):
            return []
        for attempt in range(10):
            try:
                con = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
                try:
                    con.row_factory = sqlite3.Row
                    return [dict(r) for r in con.execute(sql, params).fetchall()]
                finally:
                    con.close()
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) and "busy" not in str(e):
                    raise
                time.sleep(0.2 * (attempt + 1))
        return []

    def _query_postgres(self, sql: str, params: Sequence[Any], patience: float = 60) -> List[Dict[str, Any]]:
        """The query through psycopg2 (the af3 venv has it: Airflow's own driver), read-only, in
        autocommit. Retried while the server cannot be reached (a restart) up to ``patience`` s."""
        import psycopg2  # not stdlib: only a PostgreSQL stack needs it
        import psycopg2.extras

        assert self.postgres is not None
        deadline = time.monotonic() + patience
        while True:
            try:
                con = psycopg2.connect(connect_timeout=10, **self.postgres.dsn())
                try:
                    con.set_session(readonly=True, autocommit=True)
                    with con.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                        cur.execute(sql.replace("%", "%%").replace("?", "%s"), tuple(params))
                        return [dict(r) for r in cur.fetchall()]
                finally:
                    con.close()
            except psycopg2.OperationalError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(1.0)

    def dag_parsed(self, dag_id: str) -> bool:
        rows = self.query("SELECT d.dag_id FROM dag d JOIN serialized_dag s ON s.dag_id = d.dag_id "
                          "WHERE d.dag_id = ?", (dag_id,))
        return bool(rows)

    def import_errors(self) -> List[Dict[str, Any]]:
        try:
            return self.query("SELECT filename, stacktrace FROM import_error")
        except Exception as e:  # before `db migrate` made the table (either backend)
            if "import_error" not in str(e):
                raise
            return []

    def wait_dag_parsed(self, dag_id: str, timeout: float = 180) -> None:
        def ready():
            if self.dag_parsed(dag_id):
                return True
            errs = self.import_errors()
            if errs:
                raise StackError("DAG import errors:\n" + "\n".join(
                    f"{e['filename']}:\n{e['stacktrace']}" for e in errs))
            return False
        wait_until(ready, timeout, 1.0, f"DAG {dag_id} to be parsed", diag=self.diagnostics)

    def api(self, method: str, path: str, body: Optional[Dict[str, Any]] = None, timeout: float = 60) -> Any:
        """Call the REST API (/api/v2/...); the simple auth manager's all-admins mode needs no token."""
        import urllib.error
        import urllib.request

        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.api_port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                raw = r.read()
        except urllib.error.HTTPError as e:  # say what the API server answered
            detail = e.read().decode(errors="replace")[:2000]
            raise StackError(f"{method} {path} -> HTTP {e.code}: {detail}") from None
        return json.loads(raw) if raw else None

    def trigger(self, dag_id: str, run_id: str, conf: Optional[Dict[str, Any]] = None) -> None:
        """Create a manual dag run (REST; falls back to `airflow dags trigger`)."""
        try:
            self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns",
                     {"dag_run_id": run_id, "logical_date": None, "conf": conf or {}})
        except Exception as e:
            if self.dag_run_state(dag_id, run_id) is not None:
                return
            sys.stderr.write(f"[testkit.airflow_stack] REST trigger failed ({e}); using the CLI\n")
            args = ["dags", "trigger", dag_id, "--run-id", run_id]
            if conf:
                args += ["--conf", json.dumps(conf)]
            self.airflow(*args, timeout=300)

    def dag_run_state(self, dag_id: str, run_id: str) -> Optional[str]:
        rows = self.query("SELECT state FROM dag_run WHERE dag_id = ? AND run_id = ?", (dag_id, run_id))
        return rows[0]["state"] if rows else None

    def task_instance(self, dag_id: str, run_id: str, task_id: str,
                      map_index: int = -1) -> Optional[Dict[str, Any]]:
        rows = self.query(
            "SELECT id, state, try_number, max_tries, pid, hostname, start_date, end_date "
            "FROM task_instance WHERE dag_id = ? AND run_id = ? AND task_id = ? AND map_index = ?",
            (dag_id, run_id, task_id, map_index))
        return rows[0] if rows else None

    # ---- what a user does in the UI (REST API v2)
    def api_write(self, method: str, path: str, body: Dict[str, Any], attempts: int = 6) -> Any:
        """A REST call that changes state, retried while the API server answers "Database error"
        (SQLite busy under a loaded scheduler: the transaction was rolled back, nothing changed)."""
        for attempt in range(attempts):
            try:
                with _API_WRITES:
                    # longer than the busy timeout: the server answers "Database error" (retried
                    # here) before the client gives up on a request it may still apply
                    return self.api(method, path, body, timeout=SQLITE_BUSY_TIMEOUT * 6)
            except StackError as e:
                if "Database error" not in str(e) or attempt == attempts - 1:
                    raise
                time.sleep(0.5 * (attempt + 1))
        raise AssertionError("unreachable")

    def clear_task(self, dag_id: str, run_id: str, task_id: str, reset_dag_runs: bool = True) -> Any:
        """Clear one task instance as a user does (whatever its state: running, deferred, done).

        ``POST /api/v2/dags/{dag_id}/clearTaskInstances`` (dry_run defaults to true there)."""
        return self.api_write("POST", f"/api/v2/dags/{dag_id}/clearTaskInstances", {
            "dry_run": False, "task_ids": [task_id], "dag_run_id": run_id,
            "only_failed": False, "only_running": False, "reset_dag_runs": reset_dag_runs,
            "include_upstream": False, "include_downstream": False,
            "include_future": False, "include_past": False})

    def mark_task(self, dag_id: str, run_id: str, task_id: str, new_state: str) -> Any:
        """Mark one task instance ``failed``/``success`` as a user does (PATCH ... new_state)."""
        return self.api_write("PATCH", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}",
                              {"new_state": new_state})

    def wait_dag_run_done(self, dag_id: str, run_id: str, timeout: float = 300) -> str:
        return wait_until(lambda: (self.dag_run_state(dag_id, run_id) in ("success", "failed"))
                          and self.dag_run_state(dag_id, run_id), timeout, 1.0,
                          f"dag run {dag_id}/{run_id} to finish", diag=self.diagnostics)

    # ---- the processes of a running task
    def task_processes(self, ti_id: str, ti_pid: Optional[int] = None) -> List[int]:
        """pids on this machine that run the task instance ``ti_id``, parents first: the task's
        supervisor (in a LocalExecutor worker process, the parent of the task runner), the task
        runner (``task_instance.pid``, proctitle ``airflow worker -- <ti id>``) and all their
        descendants. Never a component process itself (scheduler, ...)."""
        components = {pid for pid in self.procs.values()}
        roots: List[int] = []
        runners = [p for p in all_pids() if ti_id in proc_cmdline(p)]
        if ti_pid and pid_alive(ti_pid) and ti_pid not in runners:
            runners.append(ti_pid)
        for r in runners:
            parent = proc_ppid(r)
            if (parent and parent not in components and parent != os.getpid()
                    and "airflow" in proc_cmdline(parent) and proc_ppid(parent) in components):
                roots.append(parent)  # the supervisor: a forked worker of the scheduler
            roots.append(r)
        out: List[int] = []
        for r in roots:
            for p in [r, *descendants(r)]:
                if p not in out and p not in components and p != os.getpid():
                    out.append(p)
        return out

    def kill_task(self, ti_id: str, ti_pid: Optional[int] = None) -> List[Dict[str, Any]]:
        """kill -9 every process of the task instance on the Airflow side; return what was killed."""
        pids = self.task_processes(ti_id, ti_pid)
        killed = [{"pid": p, "cmdline": proc_cmdline(p)[:200]} for p in pids]
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_until(lambda: not any(pid_alive(p) for p in pids), 30, 0.2, "the killed task processes to go")
        return killed

    # ---- logs
    def task_log_path(self, dag_id: str, run_id: str, task_id: str, try_number: int,
                      map_index: int = -1) -> str:
        base = os.path.join(self.home, "logs", f"dag_id={dag_id}", f"run_id={run_id}", f"task_id={task_id}")
        if map_index >= 0:
            base = os.path.join(base, f"map_index={map_index}")
        return os.path.join(base, f"attempt={try_number}.log")

    def read_task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> str:
        return _read(self.task_log_path(dag_id, run_id, task_id, try_number))

    def diagnostics(self, lines: int = 40, task_logs: bool = True) -> str:
        """Tails of the component logs, (task_logs=True) of every task log, and the DB's rows."""
        parts = []
        for name in self.components:
            path = self.component_log(name)
            if os.path.exists(path):
                state = "alive" if self.component_alive(name) else "not running"
                parts.append(f"---- {name} ({state}) {path} (last {lines} lines)\n{tail(path, lines)}")
        logs_root = os.path.join(self.home, "logs")
        for root, _dirs, files in (os.walk(logs_root) if task_logs else ()):
            for fn in sorted(files):
                if fn.startswith("attempt="):
                    path = os.path.join(root, fn)
                    parts.append(f"---- task log {os.path.relpath(path, self.home)}\n{tail(path, lines)}")
        try:
            tis = self.query("SELECT dag_id, run_id, task_id, state, try_number, pid FROM task_instance")
            drs = self.query("SELECT dag_id, run_id, state FROM dag_run")
            parts.append(f"---- dag_run rows: {drs}\n---- task_instance rows: {tis}")
        except Exception as e:
            parts.append(f"---- (cannot query the DB: {e})")
        return "\n".join(parts)


class RestartableSSHD:
    """A loopback sshd of its own (testkit.sshd in its own state dir) that a test stops and starts
    again on the same port with the same host key: "sshd restarted / link cut for a while"
    without disturbing the suite's shared server. ``stop()`` also ends the sessions it serves
    (sshd's per-connection processes), so a client's open connection really breaks.

    Its client key is also authorized in a file of its own state dir (AuthorizedKeysFile lists it
    first): every test sshd of the machine edits the one ~user/.ssh/authorized_keys by
    read-modify-write without a shared lock, so concurrent test runs can drop each other's keys
    there. The state dir's parents must be traversable by the target user."""

    def __init__(self, state_dir: str) -> None:
        self.state_dir = os.path.abspath(state_dir)
        self.info: Dict[str, Any] = {}

    def start(self) -> Dict[str, Any]:
        from testkit import sshd as sshd_mod

        info = sshd_mod.start(self.state_dir, port=self.info.get("port"))
        self._private_authorized_keys(info)
        self.info = info
        return info

    def _private_authorized_keys(self, info: Dict[str, Any]) -> None:
        from testkit import sshd as sshd_mod

        keys = os.path.join(self.state_dir, "authorized_keys")
        with open(keys, "w") as f:
            f.write(info["public_key"].strip() + "\n")
        os.chmod(keys, 0o644)  # sshd reads it as the target user
        cfg = info["config_path"]
        with open(cfg) as f:
            text = f.read()
        if keys in text:
            return
        text = text.replace("AuthorizedKeysFile .ssh/authorized_keys",
                            f"AuthorizedKeysFile {keys} .ssh/authorized_keys")
        with open(cfg, "w") as f:
            f.write(text)
        subprocess.run([sshd_mod.SSHD, "-t", "-f", cfg], check=True, stdin=subprocess.DEVNULL)
        os.kill(info["pid"], signal.SIGHUP)  # sshd re-executes itself with the new config
        time.sleep(0.2)
        wait_until(lambda: sshd_mod.port_open(info["port"]), 30, 0.2, "sshd to listen again after SIGHUP")

    def target(self) -> Any:
        from testkit.ssh_target import SSHTarget

        return SSHTarget.from_info(self.info)

    def stop(self) -> List[int]:
        """Stop the listener and kill its live sessions; return the session pids killed."""
        from testkit import sshd as sshd_mod

        pid = self.info.get("pid")
        sessions = [q for q in (descendants(pid) if pid else [])
                    if proc_cmdline(q).startswith("sshd")]
        sshd_mod.stop(self.state_dir)
        for q in sessions:
            try:
                os.kill(q, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return sessions

    def alive(self) -> bool:
        from testkit import sshd as sshd_mod

        return sshd_mod.load(self.state_dir) is not None


def format_task_log(text: str) -> str:
    """Airflow 3 task logs are JSON lines: render them as ``timestamp level event``."""
    out = []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            out.append(line)
            continue
        if isinstance(rec, dict):
            out.append(f"{rec.get('timestamp', '')} {rec.get('level', '')} {rec.get('event', '')}")
        else:
            out.append(line)
    return "\n".join(out)


# ------------------------------------------------------------------ command line
def _parse_conns(items: Iterable[str]) -> Dict[str, str]:
    conns = {}
    for item in items:
        conn_id, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--conn wants ID=JSON, got {item!r}")
        conns[conn_id] = value
    return conns


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=("start", "stop", "status", "env"))
    ap.add_argument("--home", required=True, help="AIRFLOW_HOME of the stack")
    ap.add_argument("--dags", help="DAGs folder (default <home>/dags)")
    ap.add_argument("--venv", default=DEFAULT_VENV)
    ap.add_argument("--conn", action="append", default=[], metavar="ID=JSON", help="an Airflow connection")
    ap.add_argument("--api-port", type=int)
    ap.add_argument("--heartbeat-timeout", type=int, default=20)
    ap.add_argument("--components", help="comma-separated (default: every component of the stack)")
    ap.add_argument("--database", choices=("sqlite", "postgres"), help="metadata DB (default sqlite)")
    ap.add_argument("--schedulers", type=int, default=1)
    ap.add_argument("--triggerers", type=int, default=1)
    args = ap.parse_args(argv)
    stack = AirflowStack(args.home, args.dags, venv=args.venv, connections=_parse_conns(args.conn),
                         api_port=args.api_port, heartbeat_timeout=args.heartbeat_timeout,
                         database=args.database, schedulers=args.schedulers, triggerers=args.triggerers)
    if args.action == "start":
        stack.setup()
        stack.start([c for c in args.components.split(",") if c] if args.components else None)
        print(json.dumps({"home": stack.home, "api_port": stack.api_port, "procs": stack.procs}))
    elif args.action == "stop":
        stack.stop()
    elif args.action == "status":
        for name in stack.components:
            alive = "alive" if stack.component_alive(name) else "down"
            print(f"{name:14s} {alive} pid={stack.procs.get(name)}")
    elif args.action == "env":
        for k, v in sorted(stack.stack_env().items()):
            print(f"export {k}={shlex.quote(v)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""testkit.celery_stack without Airflow: the real redis-server it starts and stops, the settings
and command lines of the Celery stack, and how it finds the worker that runs a task (a real
process tree). What tests/e2e/test_celery_executor.py relies on; each test takes < 1 s."""
import os
import socket
import subprocess
import sys
import uuid

import pytest

from testkit import celery_stack, prereqs
from testkit.airflow_stack import COMPONENTS, StackError
from testkit.procs import pid_alive, port_open, wait_until


def _ping(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"PING\r\n")
        return s.recv(64)


@pytest.mark.skipif(prereqs.find("redis-server") is None, reason=prereqs.missing_message("redis-server"))
def test_redis_starts_answers_and_stops(tmp_path):
    r = celery_stack.Redis(str(tmp_path / "redis"))
    r.start()
    try:
        assert r.url == f"redis://127.0.0.1:{r.port}"
        assert _ping(r.port) == b"+PONG\r\n"
        assert oct(os.stat(r.state_dir).st_mode & 0o777) == "0o700"
    finally:
        r.stop()
    assert not port_open(r.port)
    # no persistence
    assert not any(p.name.endswith((".rdb", ".aof")) for p in (tmp_path / "redis").iterdir())
    r.stop()  # idempotent


def test_redis_missing_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setitem(prereqs.PACKAGES, "redis-server", "/nonexistent/redis-server")
    with pytest.raises(StackError, match=r"^redis-server is missing: run scripts/test.sh"):
        celery_stack.Redis(str(tmp_path)).start()


def test_celery_settings_and_worker_command_lines(tmp_path):
    st = celery_stack.CeleryStack(str(tmp_path / "home"), "redis://127.0.0.1:6390", venv="/v")
    env = st.stack_env()
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://127.0.0.1:6390/0"
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == "redis://127.0.0.1:6390/1"
    assert env["AIRFLOW__CELERY__TASK_ACKS_LATE"] == "True"
    assert tuple(st.components) == (*COMPONENTS, "worker-a", "worker-b")
    for name in ("worker-a", "worker-b"):
        args = st.component_args(name)
        assert args[:3] == ["/v/bin/airflow", "celery", "worker"]
        assert f"{name}@localhost" in args and "--skip-serve-logs" in args
        assert args[args.index("--concurrency") + 1] == "1"
    assert st.component_args("scheduler") == ["/v/bin/airflow", "scheduler"]
    with pytest.raises(StackError, match="unknown component"):
        st.component_args("worker-c")


def test_worker_running_finds_the_task_in_a_real_tree(tmp_path):
    """A fake "worker" whose grandchild's proctitle names the task instance (dashed UUID, as the
    task runner's does) and a second idle one: the task is found in the first by its DB id (32 hex
    digits) or by the runner's pid; then the tree is killed at once."""
    st = celery_stack.CeleryStack(str(tmp_path / "home"), "redis://127.0.0.1:1")
    ti_id = uuid.uuid4()
    code = ("import subprocess, sys, time; "
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)', "
            "'airflow worker -- ' + sys.argv[1]]); time.sleep(30)")
    busy = subprocess.Popen([sys.executable, "-c", code, str(ti_id)], start_new_session=True)
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True)
    st.procs.update({"worker-a": idle.pid, "worker-b": busy.pid})
    st._popen.update({"worker-a": idle, "worker-b": busy})
    try:
        runner = wait_until(lambda: [p for p in st.worker_tree("worker-b")[1:]], 10, 0.05, "the runner")[0]
        assert st.worker_running(ti_id.hex) == "worker-b"
        assert st.worker_running(str(ti_id)) == "worker-b"
        assert st.worker_running(uuid.uuid4().hex) is None
        assert st.worker_running(uuid.uuid4().hex, ti_pid=runner) == "worker-b"
        killed = st.kill_worker_tree("worker-b")
        assert {k["pid"] for k in killed} == {busy.pid, runner}
        assert not pid_alive(runner) and busy.poll() is not None
        assert "worker-b" not in st.procs and st.component_alive("worker-a")
    finally:
        for p in (busy, idle):
            if p.poll() is None:
                p.kill()
            p.wait(5)

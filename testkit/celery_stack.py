"""A real Airflow 3 stack on the CeleryExecutor (the executor Amazon MWAA runs), for
tests/e2e/test_celery_executor.py. Stdlib only; Linux.

What it adds to ``airflow_stack.AirflowStack``:

* ``Redis``: Debian's ``redis-server`` on 127.0.0.1, a free port, no persistence, in a dir of its
  own; started and stopped by the test (the broker, and Celery's result backend in DB 1).
* ``CeleryStack``: the same api-server, scheduler, dag-processor and triggerer, with
  ``executor = CeleryExecutor`` and two workers ``worker-a`` / ``worker-b`` (``airflow celery
  worker``, concurrency 1 each, each in a session of its own like a container, so one can be
  killed as a whole process tree or sent a warm-shutdown SIGTERM without touching the other).

The metadata DB stays SQLite: Airflow 3.3 accepts SQLite with the CeleryExecutor (Airflow 2 refused
it); in Airflow 3 the workers never touch the metadata DB (task processes talk to the API server's
execution API), so the only writers are the same as with the LocalExecutor stack. Measured start-up
of this stack (db migrate + six components) is in docs/guides/kill-and-abort.md ("On the CeleryExecutor").
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from typing import Any, Dict, List, Optional, Sequence

from testkit import prereqs
from testkit.airflow_stack import COMPONENTS, AirflowStack, StackError, wait_until
from testkit.procs import descendants, free_port, pid_alive, port_open, proc_cmdline, tail

WORKERS = ("worker-a", "worker-b")


class Redis:
    """One throwaway ``redis-server`` on 127.0.0.1 (no RDB/AOF files, no other interface)."""

    def __init__(self, state_dir: str, port: Optional[int] = None) -> None:
        self.state_dir = os.path.abspath(state_dir)
        self.port = port or free_port()
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> str:
        return os.path.join(self.state_dir, "redis.log")

    def start(self, timeout: float = 30) -> None:
        binary = prereqs.require("redis-server", StackError)
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--protected-mode", "yes",
                "--save", "", "--appendonly", "no", "--dir", self.state_dir, "--daemonize", "no",
                "--logfile", self.log_path]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT, start_new_session=True)

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise StackError(f"redis-server exited at start-up ({self.proc.returncode}):\n"
                                 + tail(self.log_path, 30))
            return port_open(self.port)
        wait_until(ready, timeout, 0.1, f"redis-server on 127.0.0.1:{self.port}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


class CeleryStack(AirflowStack):
    """``AirflowStack`` with the CeleryExecutor, a Redis broker and two Celery workers."""

    components: Sequence[str] = (*COMPONENTS, *WORKERS)

    def __init__(self, home: str, redis_url: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(home, *args, **kwargs)
        self.redis_url = redis_url

    def stack_env(self) -> Dict[str, str]:
        env = super().stack_env()
        env.update({
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CELERY__BROKER_URL": f"{self.redis_url}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"{self.redis_url}/1",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
            # Celery's own default, said explicitly: a message is acknowledged when its task ends,
            # so a worker that dies mid-task leaves it unacknowledged (redelivered only after the
            # visibility timeout: 1 day, far beyond the test; Airflow's retry is what runs again).
            "AIRFLOW__CELERY__TASK_ACKS_LATE": "True",
            "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
        })
        return env

    def component_args(self, name: str) -> List[str]:
        if name in WORKERS:
            # --skip-serve-logs: both workers share this machine (the log server's fixed port) and
            # AIRFLOW_HOME/logs, where the test reads task logs anyway.
            return [self.airflow_bin, "celery", "worker", "--celery-hostname", f"{name}@localhost",
                    "--concurrency", "1", "--skip-serve-logs", "--without-gossip", "--without-mingle"]
        return super().component_args(name)

    def stop(self) -> None:
        """Workers first (each SIGTERM: a warm shutdown, SIGKILL after the grace), then the rest."""
        for name in WORKERS:
            if name in self.procs:
                self.stop_component(name, signal.SIGTERM, grace=10)
        super().stop()

    # ---- the workers as processes
    def worker_tree(self, name: str) -> List[int]:
        """Every live process of a worker: its main process and all descendants (the prefork pool
        children, the task supervisors they run and the task runners those fork)."""
        pid = self.procs.get(name)
        if not pid or not pid_alive(pid):
            return []
        return [pid, *descendants(pid)]

    def worker_running(self, ti_id: str, ti_pid: Optional[int] = None) -> Optional[str]:
        """The worker whose process tree runs the task instance: the one holding its task runner
        (``task_instance.pid``) or a process whose proctitle names the task instance's id (the DB
        stores it as 32 hex digits, proctitles show the dashed UUID form), or None."""
        ids = {ti_id}
        if len(ti_id) == 32 and "-" not in ti_id:
            ids.add(str(uuid.UUID(ti_id)))
        for name in WORKERS:
            tree = self.worker_tree(name)[1:]
            if (ti_pid and ti_pid in tree) or any(i in proc_cmdline(p) for p in tree for i in ids):
                return name
        return None

    def kill_worker_tree(self, name: str) -> List[Dict[str, Any]]:
        """SIGKILL every process of the worker at once, as when its container dies: nothing of it
        gets to say goodbye (no Celery shutdown, no task on_kill, no last heartbeat)."""
        tree = self.worker_tree(name)
        killed = [{"pid": p, "cmdline": proc_cmdline(p)[:120]} for p in tree]
        self.stop_component(name, signal.SIGKILL)
        wait_until(lambda: not any(pid_alive(p) for p in tree), 30, 0.2, f"every process of {name} to go")
        return killed

    def warm_shutdown(self, name: str) -> int:
        """SIGTERM to the worker's main process only (what ``docker stop`` sends to PID 1, and
        Celery's documented warm shutdown: finish the running tasks, take no new ones). The
        component stays registered, so the test decides what happens next."""
        pid = self.procs[name]
        os.kill(pid, signal.SIGTERM)
        return pid

    def worker_log(self, name: str, lines: int = 60) -> str:
        return tail(self.component_log(name), lines)

    def worker_exited(self, name: str, within: float = 0.0) -> bool:
        """Whether the worker's main process is gone (waiting up to ``within`` seconds)."""
        deadline = time.monotonic() + within
        while True:
            if not self.component_alive(name):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)

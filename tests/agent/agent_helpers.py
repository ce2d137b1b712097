"""Helpers for the agent test suite (imported by conftest.py and the test modules).

The agent is always run as a subprocess:

* default: ``[AGENT_PYTHON, "-m", "remote_agent", ...]`` with ``PYTHONPATH=<repo root>``;
  ``AGENT_PYTHON`` (env var, default ``sys.executable``) lets CI run the agent on CPython
  3.6 ... 3.13 while pytest itself runs on a modern Python;
* ``AGENT_CMD="/tmp/ojvenv/bin/orchesjob"`` (a shell-split command prefix) points the
  contract tests at the real orchesjob 1.1.0, to check that the tests encode orchesjob's
  behaviour. Tests marked ``beyond_orchesjob`` (deliberate differences, new features) are
  skipped then.

Every test gets its own ``ORCHESJOB_HOME``. Every process the agent starts inherits a
per-test token in its environment (``OJTEST_TOKEN``); the teardown SIGKILLs whatever still
carries it, so a failing test never leaves jobs running.
"""

import base64
import json
import os
import pathlib
import shlex
import signal
import sqlite3
import subprocess
import sys
import uuid
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

# one copy for the whole kit; the agent tests import them from here
from testkit.procs import pid_alive as pid_alive
from testkit.procs import wait_until as wait_until

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
AGENT_PYTHON = os.environ.get("AGENT_PYTHON") or sys.executable
_AGENT_CMD_ENV = os.environ.get("AGENT_CMD", "").strip()
AGENT_CMD: Optional[List[str]] = shlex.split(_AGENT_CMD_ENV) if _AGENT_CMD_ENV else None
#: True when the suite runs against an external program (the real orchesjob 1.1.0).
UNDER_ORCHESJOB = AGENT_CMD is not None
AGENT_ARGV: List[str] = list(AGENT_CMD) if AGENT_CMD else [AGENT_PYTHON, "-m", "remote_agent"]

ACTIVE = frozenset({"STARTING", "RUNNING"})
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "LOST", "CANCELLED", "ABORTED"})
ALL_STATUSES = ACTIVE | TERMINAL

#: docs/agent/contract.md item 5: the job object's keys, in this order.
JOB_KEYS = [
    "job_id",
    "run_key",
    "command",
    "pid",
    "pid_kind",
    "worker_pid",
    "target_pid",
    "status",
    "exit_code",
    "stdout_file",
    "stderr_file",
    "attempt_no",
    "strict",
    "rerun_of_job_id",
    "rerun_reason",
    "abort_reason",
    "started_at",
    "started_at_iso",
    "finished_at",
    "finished_at_iso",
    "updated_at",
    "updated_at_iso",
    "aborted_at",
    "aborted_at_iso",
]

#: Python used for helper target scripts (any Python works; the agent does not run them).
TARGET_PYTHON = sys.executable


class Result(NamedTuple):
    code: int
    stdout: bytes
    stderr: bytes
    json: Any

    @property
    def err(self) -> str:
        return self.stderr.decode("utf-8", "replace")

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    def __repr__(self) -> str:  # readable assertion messages
        out = self.stdout if len(self.stdout) < 2000 else self.stdout[:2000] + b"..."
        return f"Result(code={self.code!r}, stdout={out!r}, stderr={self.stderr[-3000:]!r})"


def _parse_json(data: bytes) -> Any:
    if not data.strip():
        return None
    try:
        return json.loads(data.decode("utf-8"))
    except ValueError:
        return None


def assert_error(res: Result, code: int, exact: Optional[str] = None, contains: Optional[str] = None) -> None:
    """An error reply: exit ``code``, empty stdout, no traceback, and (for our agent)
    exactly one stderr line ``orchesjob: <message>``.

    ``exact``: the whole message after ``orchesjob: `` (orchesjob's die() messages).
    ``contains``: a substring of the message (argparse-style errors, whose wording may differ).
    """
    assert res.code == code, res
    assert res.stdout == b"", res
    err = res.err
    assert "Traceback" not in err, res
    if not UNDER_ORCHESJOB:
        assert err.startswith("orchesjob: "), res
        assert err.endswith("\n") and err.count("\n") == 1, res
    if exact is not None:
        assert err == f"orchesjob: {exact}\n", res
    if contains is not None:
        assert contains in err, res


def assert_job_shape(job: Dict[str, Any]) -> None:
    keys = [k for k in job if k in JOB_KEYS]
    assert keys == JOB_KEYS, list(job)
    assert job["status"] in ALL_STATUSES
    if job["target_pid"] is not None:
        assert job["pid"] == job["target_pid"] and job["pid_kind"] == "target", job
    elif job["worker_pid"] is not None:
        assert job["pid"] == job["worker_pid"] and job["pid_kind"] == "worker", job
    else:
        assert job["pid"] is None and job["pid_kind"] is None, job


class Agent:
    """Runs the agent (or AGENT_CMD) against one private ORCHESJOB_HOME."""

    def __init__(self, home: pathlib.Path, workdir: pathlib.Path):
        self.home = home
        self.workdir = workdir
        self.token = uuid.uuid4().hex
        self.argv = list(AGENT_ARGV)
        self.spawned: List[subprocess.Popen] = []
        env = dict(os.environ)
        for var in ("ORCHESJOB_HOME", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONINSPECT"):
            env.pop(var, None)
        if not UNDER_ORCHESJOB:
            env["PYTHONPATH"] = str(REPO_ROOT)
        env["ORCHESJOB_HOME"] = str(home)
        env["OJTEST_TOKEN"] = self.token
        self.env = env

    # -- paths ---------------------------------------------------------------------------
    @property
    def db_path(self) -> pathlib.Path:
        return self.home / "orchesjob.db"

    def key(self, name: str = "k") -> str:
        return f"{name}-{uuid.uuid4().hex[:8]}"

    # -- running -------------------------------------------------------------------------
    def make_env(self, env: Optional[Dict[str, str]] = None, unset: Sequence[str] = ()) -> Dict[str, str]:
        e = dict(self.env)
        for var in unset:
            e.pop(var, None)
        if env:
            e.update(env)
        return e

    def run(
        self,
        *args,
        input: Optional[bytes] = None,
        env: Optional[Dict[str, str]] = None,
        unset: Sequence[str] = (),
        timeout: float = 60,
        prefix: Optional[Sequence] = None,
    ) -> Result:
        argv = list(prefix if prefix is not None else self.argv) + list(args)
        proc = subprocess.run(
            argv,
            input=input if input is not None else b"",
            capture_output=True,
            env=self.make_env(env, unset),
            timeout=timeout,
            cwd=str(self.workdir),
        )
        return Result(proc.returncode, proc.stdout, proc.stderr, _parse_json(proc.stdout))

    def ok(self, *args, **kw) -> Any:
        res = self.run(*args, **kw)
        assert res.code == 0, res
        assert res.json is not None, res
        return res.json

    def start(
        self,
        run_key: str,
        *cmd,
        sync: bool = False,
        strict: bool = False,
        start_timeout: Optional[float] = None,
        extra: Sequence[str] = (),
        **kw,
    ) -> Result:
        args = ["start", "--run-key", run_key]
        if sync:
            args.append("--sync")
        if strict:
            args.append("--strict")
        if start_timeout is not None:
            args += ["--start-timeout", str(start_timeout)]
        args += list(extra)
        args.append("--")
        args += list(cmd)
        return self.run(*args, **kw)

    def start_ok(self, run_key: str, *cmd, **kw) -> Dict[str, Any]:
        res = self.start(run_key, *cmd, **kw)
        assert res.code == 0, res
        assert isinstance(res.json, dict), res
        return res.json

    def status(self, job_id: Optional[str] = None, run_key: Optional[str] = None, **kw) -> Dict[str, Any]:
        if job_id is not None:
            return self.ok("status", "--job-id", job_id, **kw)
        return self.ok("status", "--run-key", run_key, **kw)

    def wait_status(self, job_id: str, statuses=TERMINAL, timeout: float = 15.0) -> Dict[str, Any]:
        box = {}

        def check():
            box["job"] = self.status(job_id)
            return box["job"]["status"] in statuses

        wait_until(check, timeout=timeout, interval=0.1, message=f"job {job_id} status in {sorted(statuses)}")
        return box["job"]

    def rpc(
        self,
        request: Dict[str, Any],
        timeout: float = 60,
        env: Optional[Dict[str, str]] = None,
        raw: Optional[bytes] = None,
    ) -> Tuple[int, Optional[Dict[str, Any]]]:
        data = raw if raw is not None else json.dumps(request).encode()
        res = self.run("rpc", input=data, timeout=timeout, env=env)
        reply = _parse_json(res.stdout)
        self.last_rpc = res
        return res.code, reply

    def rpc_ok(self, request: Dict[str, Any], **kw) -> Dict[str, Any]:
        code, reply = self.rpc(request, **kw)
        assert code == 0 and reply is not None and reply.get("ok") is True, self.last_rpc
        return reply

    def popen_bg(self, argv: Sequence, **kw) -> subprocess.Popen:
        """A helper process owned by the test (killed at teardown)."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("stdout", subprocess.DEVNULL)
        kw.setdefault("stderr", subprocess.DEVNULL)
        p = subprocess.Popen(list(argv), **kw)
        self.spawned.append(p)
        return p

    # -- state access for fault injection -----------------------------------------------
    def db(self, timeout: float = 5.0) -> sqlite3.Connection:
        conn = sqlite3.connect(str(self.db_path), timeout=timeout, isolation_level=None)
        conn.row_factory = sqlite3.Row
        return conn

    def job_row(self, job_id: str) -> Dict[str, Any]:
        conn = self.db()
        try:
            row = conn.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            return dict(row) if row is not None else None
        finally:
            conn.close()

    def script(self, name: str, code: str) -> str:
        path = self.workdir / name
        path.write_text(code)
        return str(path)

    # -- cleanup ------------------------------------------------------------------------
    def kill_leftovers(self) -> None:
        for p in self.spawned:
            if p.poll() is None:
                try:
                    p.kill()
                except OSError:
                    pass
            try:
                p.wait(timeout=5)
            except Exception:
                pass
        needle = (f"OJTEST_TOKEN={self.token}").encode()
        me = os.getpid()
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == me:
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    environ = f.read()
            except OSError:
                continue
            if needle in environ.split(b"\0"):
                try:
                    os.kill(int(entry), signal.SIGKILL)
                except OSError:
                    pass


def b64(data: str) -> bytes:
    return base64.b64decode(data.encode("ascii"))

"""Issue 8 items 6 and 7 through dag.test() (real Airflow, real sshd, real processes and signals).

* on_kill decides from the task instance's state: Airflow's own SIGTERM handler calls on_kill in
  a real ``dag.test()`` process; only the state reader (``task_state._read``) is patched there.
  A user action (restarting = cleared, failed, success) or a timeout aborts and acknowledges the
  remote job (the next try starts a new attempt: 2 executions); a worker shutdown (running, or an
  unreadable state) leaves it running (the next try reattaches: 1 execution).
* The clear epoch: two dag.test() runs sharing a run key with different ``max_tries``
  (``retries``) supersede; with the same ``max_tries`` they reattach.

Every job appends one line per execution to a file on the host: the tests count real runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("airflow", reason="Airflow is not installed in this interpreter")

from dagutil import DAGS_FOLDER, kw, new_dag_id, ti_states, write_dag

pytestmark = [pytest.mark.ssh, pytest.mark.airflow]

SUPERSEDED = "superseded: the task was cleared in Airflow"


class Host:
    """One test's files on the host: an execution counter, a pid file, a release file."""

    def __init__(self, remote, sshd, tag: str):
        self.remote = remote
        base = f"{sshd.home}/{tag}"
        self.count, self.pidfile, self.release = f"{base}.count", f"{base}.pid", f"{base}.release"

    def command(self) -> list[str]:
        """Count the execution, then run until the release file exists."""
        return [
            "sh",
            "-c",
            f"echo run >> {self.count}; echo $$ > {self.pidfile}; "
            f"while [ ! -e {self.release} ]; do sleep 0.2; done",
        ]

    def runs(self) -> int:
        return len(self.remote(f"cat {self.count} 2>/dev/null || true").split())

    def wait_runs(self, n: int, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.runs() >= n:
                return
            time.sleep(0.2)
        raise AssertionError(f"the job did not run {n} time(s): {self.runs()}")

    def pid(self) -> int:
        return int(self.remote(f"cat {self.pidfile}").strip())

    def alive(self, pid: int) -> bool:
        return bool(self.remote(f"kill -0 {pid} 2>/dev/null && echo alive || true").strip())

    def let_finish(self) -> None:
        self.remote(f"touch {self.release}")


def _dag(dag_id: str, orch_conn: str, state_dir: str, run_key: str, host: Host, more: str = "",
         **extra) -> object:
    """``more``: operator arguments written as code (e.g. a ``timedelta``), after the keywords."""
    return write_dag(
        dag_id,
        "OrchesjobOperator(task_id='t', "
        + kw(
            ssh_conn_id=orch_conn,
            state_dir=state_dir,
            run_key=run_key,
            command=host.command(),
            poll_interval=0.5,
            abort_grace_seconds=1,
            **extra,
        )
        + more
        + ")",
    )


# What the patched state reader returns in the killed process ("raise": the read fails).
STATE_PATCH = {
    "raise": "def _read(ident):\n    raise RuntimeError('no supervisor')\n",
}


def _sigterm_dag_test(dag_id: str, state: str | None, out_path: str) -> subprocess.Popen:
    path = os.path.join(DAGS_FOLDER, f"{dag_id}.py")
    patch = STATE_PATCH.get(str(state), f"def _read(ident):\n    return {state!r}\n")
    code = (
        "import importlib.util\n"
        "import orchesjob_provider.utils.task_state as ts\n" + patch + "ts._read = _read\n"
        f"spec = importlib.util.spec_from_file_location('d', {path!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "m.dag.test()\n"
    )
    out = open(out_path, "wb")
    try:
        return subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ), stdout=out, stderr=out)
    finally:
        out.close()


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


KILL_CASES = [
    pytest.param("running", False, "worker shutdown (task state running)", id="running-shutdown"),
    pytest.param("raise", False, "worker shutdown (task state unknown)", id="unreadable-shutdown"),
    pytest.param("restarting", True, "task killed by a user action (task state restarting)", id="cleared"),
    pytest.param("failed", True, "task killed by a user action (task state failed)", id="marked-failed"),
    pytest.param("success", True, "task killed by a user action (task state success)", id="marked-success"),
]


@pytest.mark.parametrize("state, aborts, log_line", KILL_CASES)
def test_sigterm_on_kill_follows_the_task_state(
    orch_conn, state_dir, remote, sshd, tmp_path, state, aborts, log_line
):
    from orchesjob_provider.hooks.orchesjob import OrchesjobHook

    tag = new_dag_id("killsem")
    host = Host(remote, sshd, tag)
    run_key = f"test/{tag}"
    dag_id = new_dag_id("killsem")
    _dag(dag_id, orch_conn, state_dir, run_key, host)
    out_path = str(tmp_path / "dag_test.out")
    proc = _sigterm_dag_test(dag_id, state, out_path)
    try:
        host.wait_runs(1)
        pid = host.pid()
        proc.send_signal(signal.SIGTERM)
        # Airflow 3 lets execute go on after on_kill (its supervisor SIGKILLs the task 5 s later):
        # wait for on_kill's verdict, then play the supervisor.
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None and log_line not in _read_text(out_path):
            time.sleep(0.2)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = _read_text(out_path)
    assert log_line in output, output[-4000:]
    hook = OrchesjobHook(orch_conn, state_dir=state_dir)
    job = hook.status(run_key=run_key)
    assert job is not None
    if aborts:
        assert job.status == "ABORTED" and job.acked_at is not None, job
        assert job.abort_reason == log_line, job
        deadline = time.time() + 60  # a ceiling for a hang
        while host.alive(pid) and time.time() < deadline:
            time.sleep(0.2)
        assert not host.alive(pid)
    else:
        assert job.status == "RUNNING" and job.acked_at is None, job
        assert host.alive(pid)
    # the next try (a new dag run, same run key and epoch): a new attempt only after a user's kill
    host.let_finish()
    dr = _dag(new_dag_id("killsem2"), orch_conn, state_dir, run_key, host).test()
    assert ti_states(dr) == {"t": "success"}
    assert host.runs() == (2 if aborts else 1)
    latest = hook.status(run_key=run_key)
    assert latest is not None and latest.status == "SUCCEEDED"
    assert (latest.job_id != job.job_id) is aborts


def test_execution_timeout_aborts_and_acknowledges(orch_conn, state_dir, remote, sshd, capfd):
    """Airflow's execution_timeout: on_kill runs inside AirflowTaskTimeout while the task instance
    is still ``running``; the job is aborted and acknowledged all the same."""
    import datetime

    from orchesjob_provider.hooks.orchesjob import OrchesjobHook

    tag = new_dag_id("exectimeout")
    host = Host(remote, sshd, tag)
    run_key = f"test/{tag}"
    dag = _dag(tag, orch_conn, state_dir, run_key, host, more=", execution_timeout=timedelta(seconds=12)")
    assert dag.get_task("t").execution_timeout == datetime.timedelta(seconds=12)
    try:
        dr = dag.test()
    except BaseException as e:  # Airflow 2's dag.test() lets the timeout escape
        assert type(e).__name__ == "AirflowTaskTimeout", e
    else:
        assert ti_states(dr) == {"t": "failed"}
    job = OrchesjobHook(orch_conn, state_dir=state_dir).status(run_key=run_key)
    assert job is not None and job.status == "ABORTED" and job.acked_at is not None, job
    assert job.abort_reason == "Airflow timeout", job
    assert host.runs() == 1
    assert not host.alive(host.pid())


def test_clear_epoch_supersedes_the_job_of_an_earlier_clear(orch_conn, state_dir, remote, sshd, capfd):
    """dag.test() sets max_tries = retries: a run with other retries stands for a cleared task."""
    from orchesjob_provider.hooks.orchesjob import OrchesjobHook

    tag = new_dag_id("epoch")
    host = Host(remote, sshd, tag)
    run_key = f"test/{tag}"
    hook = OrchesjobHook(orch_conn, state_dir=state_dir)

    dr = _dag(new_dag_id("epoch_a"), orch_conn, state_dir, run_key, host, wait=False, retries=0).test()
    assert ti_states(dr) == {"t": "success"}
    host.wait_runs(1)
    first = hook.status(run_key=run_key)
    assert first is not None and first.status == "RUNNING" and first.raw["epoch"] == "0:0", first.raw
    old_pid = host.pid()

    # same epoch (no clear in between): reattached, no new run
    dr = _dag(new_dag_id("epoch_b"), orch_conn, state_dir, run_key, host, wait=False, retries=0).test()
    assert ti_states(dr) == {"t": "success"}
    same = hook.status(run_key=run_key)
    assert same is not None and same.job_id == first.job_id and same.status == "RUNNING"
    assert host.runs() == 1

    # another max_tries (a clear happened): the old job is aborted and acknowledged, a new one runs
    dr = _dag(new_dag_id("epoch_c"), orch_conn, state_dir, run_key, host, wait=False, retries=2).test()
    assert ti_states(dr) == {"t": "success"}
    old = hook.get_job(first.job_id)
    assert old is not None and old.status == "ABORTED" and old.abort_reason == SUPERSEDED, old
    assert old.acked_at is not None
    assert not host.alive(old_pid)
    new = hook.status(run_key=run_key)
    assert new is not None and new.job_id != first.job_id and new.raw["epoch"] == "2:0", new.raw
    assert new.rerun_of_job_id == first.job_id
    host.wait_runs(2)
    text = capfd.readouterr()
    assert (
        f"orchesjob superseded: the task was cleared; aborted job {first.job_id} (RUNNING)"
        in text.out + text.err
    )

    # a late abort of the old try (its trigger's on_kill) meets only the old, finished job
    from orchesjob_provider.exceptions import OrchesjobWrongState

    with pytest.raises(OrchesjobWrongState):
        hook.abort(first.job_id, reason="late on_kill", grace_seconds=1, ack=True)
    assert hook.get_job(new.job_id).status == "RUNNING"
    host.let_finish()
    dr = _dag(new_dag_id("epoch_d"), orch_conn, state_dir, run_key, host, retries=2).test()
    assert ti_states(dr) == {"t": "success"}
    assert host.runs() == 2

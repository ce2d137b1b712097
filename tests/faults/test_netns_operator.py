"""Operator (worker path) across a network cut: the try rides it out or fails; a retry reattaches.

Each try is ``OrchesjobOperator.execute(context)`` in a forked child process (a worker process
that can be SIGKILLed like a real one; forking avoids re-importing Airflow per try), with a
minimal context whose ``ti`` gives the same default run key on every try.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
import uuid
from types import SimpleNamespace

import pytest

pytestmark = [pytest.mark.netns, pytest.mark.ssh, pytest.mark.timeout(150)]

JOB_SECONDS = 10
CUT_FOR = 5.0
TRY_BOUND = 45.0  # a try that is still running this long after it started is killed (as Airflow would)


def _ti(run_id: str, try_number: int) -> SimpleNamespace:
    return SimpleNamespace(
        dag_id="faults_netns", task_id="job", run_id=run_id, map_index=-1, try_number=try_number
    )


def _operator(conn_id: str, state_dir: str, command: str):
    from orchesjob_provider.operators.orchesjob import OrchesjobOperator

    return OrchesjobOperator(
        task_id="job", ssh_conn_id=conn_id, command=command, state_dir=state_dir, poll_interval=1
    )


def _fork_try(conn_id: str, state_dir: str, command: str, run_id: str, try_number: int):
    """Run one try in a child process; returns (pid, path of its JSON result)."""
    fd, result_path = tempfile.mkstemp(prefix="oj-faults-try-", suffix=".json")
    os.close(fd)
    pid = os.fork()
    if pid == 0:  # the worker
        code = 0
        try:
            op = _operator(conn_id, state_dir, command)
            res = op.execute({"ti": _ti(run_id, try_number)})
            out = {"ok": True, "job": res}
        except BaseException as e:
            out = {"ok": False, "error": f"{type(e).__name__}: {e}", "job_id": getattr(op, "_job_id", None)}
        try:
            with open(result_path, "w") as f:
                json.dump(out, f, default=str)
        except BaseException:
            code = 1
        os._exit(code)
    return pid, result_path


def _reap(pid: int, deadline: float) -> str:
    while time.monotonic() < deadline:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return "exited"
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return "killed (still running at the try bound)"


def _read(path: str) -> dict | None:
    try:
        with open(path) as f:
            text = f.read()
        return json.loads(text) if text else None
    finally:
        os.unlink(path)


@pytest.mark.parametrize("worker", ["rides_out", "killed_during_cut"])
def test_operator_cut_during_wait_then_retry_reattaches(netns_host, agent_state_dir, side_file, worker):
    pytest.importorskip("airflow")
    from orchesjob_provider.hooks.orchesjob import OrchesjobHook

    conn_id = netns_host.conn_id
    run_id = f"manual__faults_{uuid.uuid4().hex[:8]}"
    command = side_file.shell(JOB_SECONDS)
    run_key = f"af/faults_netns/job/-1/{run_id}"
    t0 = time.monotonic()
    timeline = []

    def mark(what):
        timeline.append(f"{time.monotonic() - t0:5.1f}s {what}")

    pid, result_path = _fork_try(conn_id, agent_state_dir, command, run_id, 1)
    mark(f"try 1 started (pid {pid})")
    try:
        deadline = time.monotonic() + 90  # a ceiling for a hang
        while not side_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert side_file.exists(), "try 1 did not start the job within 90 s (hang ceiling)"
        mark("job running")
        time.sleep(1.0)  # try 1 is now in its wait loop
        netns_host.cut()
        mark("link cut")
        if worker == "killed_during_cut":
            time.sleep(CUT_FOR / 2)
            os.kill(pid, signal.SIGKILL)
            mark("try 1 SIGKILLed (worker lost during the outage)")
            time.sleep(CUT_FOR / 2)
        else:
            time.sleep(CUT_FOR)
        netns_host.restore()
        mark("link restored")
        fate = _reap(pid, t0 + TRY_BOUND)
        first = _read(result_path)
        brief = first and (
            {"ok": True, "job_id": first["job"]["job_id"], "status": first["job"]["status"]}
            if first.get("ok")
            else first
        )
        mark(f"try 1 {fate}: {brief}")
    finally:
        netns_host.restore()
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass

    hook = OrchesjobHook(ssh_conn_id=conn_id, state_dir=agent_state_dir)
    try:
        job1 = hook.status(run_key=run_key)
        assert job1 is not None, "no job recorded for the run key"
        mark(f"agent: job {job1.job_id} {job1.status} attempt {job1.attempt_no} acked_at={job1.acked_at}")

        if first is not None and first.get("ok"):
            # Rode it out: the try succeeded with the one job, and acknowledged it.
            assert first["job"]["job_id"] == job1.job_id
            assert first["job"]["status"] == "SUCCEEDED"
            assert job1.acked_at is not None
        else:
            # The try failed or died: the retry (try 2) must reattach to / adopt the same job.
            op2 = _operator(conn_id, agent_state_dir, command)
            res = op2.execute({"ti": _ti(run_id, 2)})
            mark(f"try 2 returned job {res['job_id']} {res['status']}")
            assert res["job_id"] == job1.job_id, "the retry started a second job"
            assert res["status"] == "SUCCEEDED"
            assert res.get("attempt_no") == 1
        final = hook.status(run_key=run_key)
        assert final is not None and final.job_id == job1.job_id and final.attempt_no == 1
        assert final.status == "SUCCEEDED" and final.acked_at is not None
        assert side_file.executions() == 1, "the job must have run exactly once"
    finally:
        hook.close()
        print(f"\n[operator {worker}]\n  " + "\n  ".join(timeline))

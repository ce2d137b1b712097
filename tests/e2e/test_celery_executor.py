"""End to end on the CeleryExecutor (the executor Amazon MWAA runs): a real Redis broker, an
Airflow 3.3 stack (api-server, scheduler, dag-processor, triggerer) and two Celery workers
(testkit/celery_stack.py), started and stopped by this module. Each case's DAG is the events
runner's (one OrchesjobOperator task, sync wait in the worker, retries=1, retry_delay 1 s) whose
remote job appends one line to a side-effect file (its line count = executions), waits for a
release file and prints `done`.

* test_worker_killed_retry_on_other_worker_reattaches: once the job RUNS, SIGKILL every process
  of the worker that runs the task (its main process, the prefork pool child, the task supervisor
  and runner: the whole tree at once, as when a container dies). The scheduler fails the silent
  task after the heartbeat timeout; try 2 can only go to the other worker and must REATTACH: one
  execution, one job in the agent's history.
* test_worker_warm_shutdown_job_keeps_running: once the job RUNS, SIGTERM to the worker's main
  process only (``docker stop``'s first step; Celery's warm shutdown). What Airflow 3.3's Celery
  worker really does (observed, docs/guides/kill-and-abort.md "On the CeleryExecutor"): it stops
  taking tasks and waits for the running one; the task process is not signalled, so the same try
  keeps waiting on the job, and when the job ends the try succeeds and the worker exits. One
  execution, one job, try 1.

The two cases run one after the other in one stack (each needs a worker free to take a retry).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from typing import Any, Dict, Iterator, List

import pytest
from events_runner import STEP, TASK_ID, Case, e2e_marks

from testkit import airflow_stack as stack_mod
from testkit import celery_stack
from testkit.procs import pid_alive

pytestmark = e2e_marks()

CONN_ID = "orchesjob_events_ssh"  # the events runner's DAG template uses this connection id
#: how long the warm-shutdown case watches the worker after its SIGTERM before releasing the job
#: (longer than the heartbeat timeout: a task that was stopped would be failed and retried by then)
WARM_WATCH = 35
HEARTBEAT_TIMEOUT = 30


@pytest.fixture(scope="module")
def celery(request) -> Iterator[Dict[str, Any]]:
    """Redis + an sshd of our own + the Celery stack, with one DAG per case already written."""
    token = os.urandom(3).hex()
    home = tempfile.mkdtemp(prefix=f"orchesjob-celery-{token}-")
    dags = os.path.join(home, "dags")
    os.makedirs(dags)
    sshd_dir = tempfile.mkdtemp(prefix=f"orchesjob-celery-sshd-{token}-")
    os.chmod(sshd_dir, 0o755)  # traversable by the target user (its key list is in there)
    sshd = stack_mod.RestartableSSHD(os.path.join(sshd_dir, "sshd"))
    redis = celery_stack.Redis(os.path.join(home, "redis"))
    st = None
    cases: Dict[str, Case] = {}
    ok = False
    t0 = time.monotonic()
    try:
        sshd.start()
        target = sshd.target()
        redis.start()
        st = celery_stack.CeleryStack(home, redis.url, dags, connections={CONN_ID: target.conn_uri()},
                                      heartbeat_timeout=HEARTBEAT_TIMEOUT)
        for name in ("celery_worker_sigkill", "celery_worker_warm_shutdown"):
            c = Case(name, token, target, st, t0, deferrable=False)
            with open(os.path.join(dags, f"{c.dag_id}.py"), "w") as f:
                f.write(c.dag_source())
            cases[name] = c
        st.setup()
        st.start()
        print(f"\nt+{time.monotonic() - t0:6.1f}s Celery stack up (AIRFLOW_HOME {home}, broker {redis.url})",
              flush=True)
        yield {"stack": st, "cases": cases, "redis": redis}
        ok = not getattr(request.node, "celery_failed", False)
    finally:
        for c in cases.values():
            try:
                c.remote.touch(c.release)
            except Exception:
                pass
        try:
            if st is not None:
                st.stop()
        finally:
            redis.stop()
            for c in cases.values():
                c.remote.cleanup(c.side_effect, c.release, c.state_dir)
            sshd.stop()
            shutil.rmtree(sshd_dir, ignore_errors=True)
            if ok:
                shutil.rmtree(home, ignore_errors=True)
            else:
                print(f"\nkept the Celery stack's home for inspection: {home}")


@pytest.fixture
def report(request, celery):
    """On failure: print the case's report and the stack's logs (workers included)."""
    shown: List[Case] = []
    yield shown
    if getattr(request.node, "rep_call_failed", False):
        request.node.parent.celery_failed = True
        for c in shown:
            print(c.report())
        print(f"\n==== stack diagnostics (AIRFLOW_HOME {celery['stack'].home})")
        print(celery["stack"].diagnostics(60, task_logs=False))


def _ensure_workers(st: celery_stack.CeleryStack) -> None:
    for name in celery_stack.WORKERS:
        if not st.component_alive(name):
            st.procs.pop(name, None)
            st.start_component(name)
    # a worker takes tasks once it says so ("celery@... ready.")
    for name in celery_stack.WORKERS:
        wait_until_ready(st, name)


def wait_until_ready(st: celery_stack.CeleryStack, name: str) -> None:
    def ready() -> bool:
        if not st.component_alive(name):
            raise stack_mod.StackError(f"{name} exited at start-up:\n{st.worker_log(name)}")
        return " ready." in stack_mod._read(st.component_log(name)).rsplit("==== ", 1)[-1]
    stack_mod.wait_until(ready, STEP, 0.5, f"{name} to be ready")


def _running_worker(c: Case, st: celery_stack.CeleryStack) -> str:
    ti = c.ti()
    assert ti is not None
    name = c.wait(lambda: st.worker_running(ti["id"], ti["pid"]),
                  f"the worker that runs try {ti['try_number']}", timeout=30, interval=0.5)
    c.note(f"try {ti['try_number']} runs on {name}")
    return name


def test_worker_killed_retry_on_other_worker_reattaches(celery, report):
    st, c = celery["stack"], celery["cases"]["celery_worker_sigkill"]
    report.append(c)
    _ensure_workers(st)
    job = c.start_and_wait_running()
    job_id = job["job_id"]
    first = _running_worker(c, st)
    other = next(w for w in celery_stack.WORKERS if w != first)
    killed = st.kill_worker_tree(first)
    # main process, pool child, and the task's supervisor/runner at least
    assert len(killed) >= 3, f"expected the worker's whole tree, killed only {killed}"
    c.note(f"SIGKILL of {first}'s whole process tree: "
           + "; ".join(f"{k['pid']} {k['cmdline'][:60]!r}" for k in killed))
    after = [j for j in c.history() if j["job_id"] == job_id]
    assert after and after[0]["status"] == "RUNNING", f"the kill ended the remote job\n{c.summary()}"
    act = c.wait_new_try_acted(2)
    assert act == "reattached", f"try 2 did not reattach (it {act})\n{c.summary()}"
    assert _running_worker(c, st) == other, "try 2 must run on the surviving worker"
    c.remote.touch(c.release)
    c.note("released the remote job")
    c.wait_finished(2)
    c.assert_outcome("success", 1, try_number=2)
    c.assert_one_job(job_id)
    log2 = c.log(2)
    assert f"Remote job {job_id} SUCCEEDED" in log2 and "started a new remote job" not in log2, log2
    c.note("OK")


def test_worker_warm_shutdown_job_keeps_running(celery, report):
    st, c = celery["stack"], celery["cases"]["celery_worker_warm_shutdown"]
    report.append(c)
    _ensure_workers(st)
    job = c.start_and_wait_running()
    job_id = job["job_id"]
    worker = _running_worker(c, st)
    pid = st.warm_shutdown(worker)
    t_term = time.monotonic()
    c.note(f"SIGTERM (warm shutdown) to {worker}'s main process {pid}")
    # Watch: the worker must wait for its running task (not exit, not stop the task) and the job
    # must keep running; the task stays in try 1, running.
    seen: List[str] = []
    while time.monotonic() - t_term < WARM_WATCH:
        ti = c.ti() or {}
        jobs = [j for j in c.history() if j["job_id"] == job_id]
        line = (f"t+{time.monotonic() - t_term:4.1f}s worker alive={pid_alive(pid)} "
                f"ti={ti.get('state')}/try {ti.get('try_number')} job={jobs and jobs[0]['status']}")
        seen.append(line)
        assert jobs and jobs[0]["status"] == "RUNNING", "\n".join(seen) + "\n" + c.summary()
        assert ti.get("try_number") == 1 and ti.get("state") == "running", "\n".join(seen)
        assert st.component_alive(worker), (
            f"{worker} exited during its warm shutdown while its task still ran\n" + "\n".join(seen)
            + "\n" + st.worker_log(worker))
        time.sleep(2)
    c.note(f"after {WARM_WATCH}s: {worker} still waits for its task; job RUNNING; try 1 running")
    c.remote.touch(c.release)
    c.note("released the remote job")

    def finished():
        ti = c.ti()
        dr = st.dag_run_state(c.dag_id, c.run_id)
        return ti if ti and ti["state"] in ("success", "failed") and dr in ("success", "failed") else None
    ti = stack_mod.wait_until(finished, STEP, 1.0, "the task to finish", diag=c.report)
    c.note(f"task finished: {ti['state']} at try {ti['try_number']}")
    c.assert_outcome("success", 1, try_number=1)
    c.assert_one_job(job_id)
    assert st.worker_exited(worker, within=STEP), (  # a ceiling: a worker that never exits
        f"{worker} did not finish its warm shutdown after its task ended\n{st.worker_log(worker)}")
    st.stop_component(worker)  # reap it; the next case starts it again
    c.note(f"{worker} exited after its task ended (warm shutdown complete)")
    assert TASK_ID in c.log(1)

"""Proof 4: on_kill (worker), kill while deferred and timeouts leave no remote process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest

pytest.importorskip("airflow", reason="Airflow is not installed in this interpreter")

from dagutil import DAGS_FOLDER, captured, kw, new_dag_id, ti_states, write_dag

pytestmark = [pytest.mark.ssh, pytest.mark.airflow]

MODES = [pytest.param(False, id="worker"), pytest.param(True, id="deferrable")]


def job_command(pidfile: str) -> list[str]:
    """A job whose shell and its child write their pids, then run for 5 minutes."""
    return ["sh", "-c", f"echo $$ > {pidfile}; sleep 120 & echo $! >> {pidfile}; wait"]


def wait_for_pids(remote, pidfile: str, timeout: float = 30) -> list[int]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        pids = [int(p) for p in remote(f"cat {pidfile} 2>/dev/null || true").split()]
        if len(pids) == 2:
            return pids
        time.sleep(0.2)
    raise AssertionError(f"job did not write {pidfile}")


def assert_gone(remote, pids: list[int], timeout: float = 15) -> None:
    deadline = time.time() + timeout
    alive = pids
    while time.time() < deadline:
        alive = [p for p in pids if remote(f"kill -0 {p} 2>/dev/null && echo alive || true").strip()]
        if not alive:
            return
        time.sleep(0.3)
    raise AssertionError(f"remote processes still alive: {alive}")


def fake_context(dag_id: str):
    ti = SimpleNamespace(dag_id=dag_id, task_id="t", run_id="manual__x", map_index=-1, try_number=1)
    return {"ti": ti}


def test_on_kill_in_worker_aborts_remote_job(orch_conn, state_dir, remote, sshd, monkeypatch):
    """A user action (the task instance reads ``failed``: marked failed) aborts and acknowledges."""
    from orchesjob_provider.hooks.orchesjob import OrchesjobHook
    from orchesjob_provider.operators.orchesjob import OrchesjobOperator
    from orchesjob_provider.utils import task_state

    monkeypatch.setattr(task_state, "_read", lambda ident: "failed")

    dag_id = new_dag_id("onkill")
    pidfile = f"{sshd.home}/{dag_id}.pids"
    op = OrchesjobOperator(
        task_id="t",
        ssh_conn_id=orch_conn,
        state_dir=state_dir,
        command=job_command(pidfile),
        poll_interval=0.5,
        abort_grace_seconds=1,
    )
    found: list[list[int]] = []

    def killer():  # Airflow calls on_kill from another thread than the one running execute
        try:
            found.append(wait_for_pids(remote, pidfile, timeout=60))
            op.on_kill()
        except BaseException as e:
            found.append(e)  # type: ignore[arg-type]

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    with pytest.raises(Exception) as ei:
        op.execute(fake_context(dag_id))
    t.join(60)
    print("KILLER", found)
    assert "ABORTED" in str(ei.value) and "task killed" in str(ei.value)
    pids = found[0]
    assert_gone(remote, pids)
    job = OrchesjobHook(orch_conn, state_dir=state_dir).get_job(op._job_id)
    assert job.status == "ABORTED" and job.acked_at is not None
    assert job.abort_reason == "task killed by a user action (task state failed)"


def test_abort_on_kill_false_leaves_job_running(orch_conn, state_dir, remote, sshd):
    from orchesjob_provider.hooks.orchesjob import OrchesjobHook
    from orchesjob_provider.operators.orchesjob import OrchesjobOperator

    dag_id = new_dag_id("nokill")
    pidfile = f"{sshd.home}/{dag_id}.pids"
    op = OrchesjobOperator(
        task_id="t",
        ssh_conn_id=orch_conn,
        state_dir=state_dir,
        wait=False,
        command=job_command(pidfile),
        abort_on_kill=False,
    )
    record = op.execute(fake_context(dag_id))
    pids = wait_for_pids(remote, pidfile)
    op.on_kill()
    hook = OrchesjobHook(orch_conn, state_dir=state_dir)
    assert hook.get_job(record["job_id"]).status == "RUNNING"
    hook.abort(record["job_id"], reason="cleanup", grace_seconds=1)
    assert_gone(remote, pids)


def test_sigterm_of_worker_process_leaves_remote_job_running(orch_conn, state_dir, remote, sshd, tmp_path):
    """The real worker path: Airflow's SIGTERM handler calls on_kill in the task process. Nothing is
    patched: the task instance still reads ``running`` (or cannot be read), so this is a worker
    shutdown and the remote job keeps running (docs/guides/kill-and-abort.md: the next try reattaches).

    Airflow 2's dag.test() never commits the ``running`` state that a real worker commits before
    execute (the row still reads ``scheduled``), so there the reader answers ``running`` as the
    metadata DB of a real worker would; Airflow 3 reads the real state through its supervisor."""
    from orchesjob_provider.hooks.orchesjob import OrchesjobHook
    from orchesjob_provider.version_compat import AIRFLOW_V_3_0_PLUS

    dag_id = new_dag_id("sigterm")
    pidfile = f"{sshd.home}/{dag_id}.pids"
    run_key = f"test/{dag_id}"
    write_dag(
        dag_id,
        "OrchesjobOperator(task_id='t', "
        + kw(
            ssh_conn_id=orch_conn,
            state_dir=state_dir,
            run_key=run_key,
            command=job_command(pidfile),
            poll_interval=0.5,
            abort_grace_seconds=1,
        )
        + ")",
    )
    path = os.path.join(DAGS_FOLDER, f"{dag_id}.py")
    code = (
        "import importlib.util\n"
        + (
            ""
            if AIRFLOW_V_3_0_PLUS
            else "import orchesjob_provider.utils.task_state as ts; ts._read = lambda i: 'running'\n"
        )
        + f"spec = importlib.util.spec_from_file_location('d', {path!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "m.dag.test()\n"
    )
    out_path = tmp_path / "out"
    with open(out_path, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ), stdout=out, stderr=out)
    verdict = "worker shutdown (task state "
    try:
        pids = wait_for_pids(remote, pidfile, timeout=120)
        proc.send_signal(signal.SIGTERM)
        # Airflow 3 lets execute go on after on_kill; its supervisor SIGKILLs the task 5 s later
        deadline = time.time() + 60
        while (
            time.time() < deadline
            and proc.poll() is None
            and verdict not in out_path.read_text(errors="replace")
        ):
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert verdict in out_path.read_text(errors="replace")
    hook = OrchesjobHook(orch_conn, state_dir=state_dir)
    job = hook.status(run_key=run_key)
    assert job.status == "RUNNING" and job.acked_at is None
    assert all(remote(f"kill -0 {p} 2>/dev/null && echo alive || true").strip() for p in pids)
    hook.abort(job.job_id, reason="cleanup", grace_seconds=1)
    assert_gone(remote, pids)


@pytest.mark.parametrize("deferrable", MODES)
def test_timeout_aborts_remote_job_and_fails(orch_conn, state_dir, remote, sshd, deferrable, capfd):
    from orchesjob_provider.hooks.orchesjob import OrchesjobHook

    dag_id = new_dag_id("timeout")
    pidfile = f"{sshd.home}/{dag_id}.pids"
    run_key = f"test/{dag_id}"
    dag = write_dag(
        dag_id,
        "OrchesjobOperator(task_id='t', "
        + kw(
            ssh_conn_id=orch_conn,
            state_dir=state_dir,
            run_key=run_key,
            command=job_command(pidfile),
            poll_interval=0.5,
            timeout=3,
            abort_grace_seconds=1,
            deferrable=deferrable,
        )
        + ")",
    )
    dr = dag.test()
    assert ti_states(dr) == {"t": "failed"}
    job = OrchesjobHook(orch_conn, state_dir=state_dir).status(run_key=run_key)
    assert f"Remote job {job.job_id} timed out after 3s and was aborted" in captured(capfd)
    assert job.status == "ABORTED" and job.acked_at is not None
    assert_gone(remote, [int(p) for p in remote(f"cat {pidfile}").split()])


# -- kill while deferred ---------------------------------------------------------------------
def _start(orch_conn, state_dir, remote, sshd, tag):
    from orchesjob_provider.hooks.orchesjob import OrchesjobHook

    pidfile = f"{sshd.home}/{tag}.pids"
    hook = OrchesjobHook(orch_conn, state_dir=state_dir)
    _, job = hook.start(job_command(pidfile), f"test/{tag}")
    return hook, job, wait_for_pids(remote, pidfile)


#: what Airflow 3.3's triggerer passes as the cancel message of a user action
USER_ACTION = "__airflow_user_action__"


async def _run_then_cancel(trigger, kill: bool, resync: float = 0.2):
    """Drive the trigger the way the triggerer does (jobs/triggerer_job_runner.py, run_trigger):
    run() in a task; the kill cancels that task, and on Airflow 3.3+ a user action's cancel then
    awaits on_kill in the same task. The triggerer cancels the task again on every state sync
    (~1 s there, ``resync`` here) until it has ended, and swallows a cancel of on_kill."""

    async def run_trigger():
        try:
            async for _ in trigger.run():
                raise AssertionError("the job is still running: no event expected")
        except asyncio.CancelledError as e:
            if kill and e.args and e.args[0] == USER_ACTION and _has_trigger_on_kill():
                try:
                    await asyncio.wait_for(trigger.on_kill(), timeout=30)
                except asyncio.CancelledError:
                    pass  # what Airflow does
            raise

    task = asyncio.ensure_future(run_trigger())
    await asyncio.sleep(1.5)  # the trigger is waiting on the running job
    assert not task.done()
    cancels = 0
    while not task.done():
        task.cancel(USER_ACTION if kill else None)
        cancels += 1
        # the first sync comes at on_kill's first await: on a loaded triggerer a sync lands
        # there when the abort's SSH work is slow (CI, Airflow 3.3); here it surely does
        await asyncio.wait([task], timeout=resync if cancels > 1 else 0)
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return cancels


def _has_trigger_on_kill() -> bool:
    from orchesjob_provider.version_compat import TRIGGER_HAS_ON_KILL

    return TRIGGER_HAS_ON_KILL


@contextlib.contextmanager
def _triggerer_comms(ti):
    """Airflow 3.0-3.2 (no trigger on_kill): the trigger reads its task's state through the
    triggerer's supervisor comms (``RuntimeTaskInstance.get_task_states`` over SUPERVISOR_COMMS).
    Outside a triggerer, give it Airflow's own in-process comms (what dag.test() gives inline
    triggers): the request goes through the real execution API to the metadata DB. Airflow 2 reads
    the DB itself; Airflow 3.3+ has on_kill (ti is None): nothing to set up."""
    from orchesjob_provider.version_compat import AIRFLOW_V_3_0_PLUS

    if ti is None or not AIRFLOW_V_3_0_PLUS:
        yield
        return
    import psutil
    import structlog
    from airflow.sdk.execution_time.supervisor import (
        InProcessSupervisorComms,
        InProcessTestSupervisor,
        set_supervisor_comms,
    )

    supervisor = InProcessTestSupervisor(
        id=ti.id, pid=os.getpid(), process=psutil.Process(),
        process_log=structlog.get_logger(logger_name="task").bind(),
        client=InProcessTestSupervisor._api_client(),
    )
    supervisor.comms = InProcessSupervisorComms(supervisor=supervisor)
    with set_supervisor_comms(supervisor.comms):
        # Build the in-process execution API now (its first request takes seconds on a loaded
        # machine, beyond the trigger's read timeout); a triggerer's supervisor has a live client.
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

        RuntimeTaskInstance.get_task_states(
            dag_id=ti.dag_id, task_ids=[ti.task_id], run_ids=[ti.run_id], map_index=ti.map_index
        )
        yield


def _real_ti(orch_conn, state_dir, state):
    """A real TaskInstance row (from a tiny dag.test run), moved to ``state``."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    dag_id = new_dag_id("tirow")
    dag = write_dag(
        dag_id,
        "OrchesjobOperator(task_id='t', "
        + kw(ssh_conn_id=orch_conn, state_dir=state_dir, command=["true"])
        + ")",
    )
    dr = dag.test()
    ti = next(t for t in dr.get_task_instances() if t.task_id == "t")
    with create_session() as session:
        row = session.query(TaskInstance).filter_by(dag_id=dag_id, task_id="t", run_id=ti.run_id).one()
        row.state = state
        session.commit()
        session.refresh(row)
        session.expunge(row)
    return row


@pytest.mark.parametrize(
    "killed", [pytest.param(True, id="user-killed"), pytest.param(False, id="triggerer-restart")]
)
def test_kill_while_deferred(orch_conn, state_dir, remote, sshd, killed):
    from orchesjob_provider.triggers.orchesjob import OrchesjobTrigger

    tag = new_dag_id("defkill")
    hook, job, pids = _start(orch_conn, state_dir, remote, sshd, tag)
    trigger = OrchesjobTrigger(
        ssh_conn_id=orch_conn,
        job_id=job.job_id,
        poll_interval=0.5,
        state_dir=state_dir,
        abort_grace_seconds=1,
    )
    if not _has_trigger_on_kill():
        # Airflow < 3.3: the trigger decides from the task instance's state in the DB
        trigger.task_instance = _real_ti(orch_conn, state_dir, "failed" if killed else "deferred")
    with _triggerer_comms(getattr(trigger, "task_instance", None)):
        cancels = asyncio.run(_run_then_cancel(trigger, kill=killed))
    status = hook.get_job(job.job_id).status
    if killed:
        # the abort outlived the triggerer's repeated cancels (once it did not: CI, Airflow 3.3)
        assert cancels > 1, "the abort ended before a second cancel came: nothing was proven"
        assert status == "ABORTED" and hook.get_job(job.job_id).acked_at is not None
        assert_gone(remote, pids)
    else:
        assert status == "RUNNING"  # a triggerer restart must not kill the job
        hook.abort(job.job_id, reason="cleanup", grace_seconds=1)
        assert_gone(remote, pids)


def test_kill_while_deferred_abort_on_kill_false(orch_conn, state_dir, remote, sshd):
    from orchesjob_provider.triggers.orchesjob import OrchesjobTrigger

    tag = new_dag_id("defnokill")
    hook, job, pids = _start(orch_conn, state_dir, remote, sshd, tag)
    trigger = OrchesjobTrigger(
        ssh_conn_id=orch_conn, job_id=job.job_id, poll_interval=0.5, state_dir=state_dir, abort_on_kill=False
    )
    if not _has_trigger_on_kill():
        trigger.task_instance = _real_ti(orch_conn, state_dir, "failed")
    asyncio.run(_run_then_cancel(trigger, kill=True))
    assert hook.get_job(job.job_id).status == "RUNNING"
    hook.abort(job.job_id, reason="cleanup", grace_seconds=1)
    assert_gone(remote, pids)

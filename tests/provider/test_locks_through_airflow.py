"""Named locks through Airflow (dag.test(), real sshd, real agent): two tasks of different DAGs
contending for one write lock never overlap and both succeed; a retry reattaches to the job
waiting in the host's queue. Every test counts the executions of the remote command."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

pytest.importorskip("airflow", reason="Airflow is not installed in this interpreter")

from dagutil import DAGS_FOLDER, captured, kw, new_dag_id, ti_states, write_dag

pytestmark = [pytest.mark.ssh, pytest.mark.airflow]

LOCKS = {"write": ["warehouse.orders"]}


def marked(name: str, side: str, seconds: float) -> str:
    """A shell command that records its own start and end times in ``side``."""
    return (
        f'echo "{name} start $(date +%s.%N)" >> {side}; sleep {seconds}; '
        f'echo "{name} end $(date +%s.%N)" >> {side}'
    )


def spans(remote, side: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for line in remote(f"cat {side} 2>/dev/null || true").splitlines():
        name, what, ts = line.split()
        out.setdefault(name + " " + what, []).append(float(ts))
    return out


def _run_dag_in_subprocess(dag_id: str) -> subprocess.Popen:
    path = os.path.join(DAGS_FOLDER, f"{dag_id}.py")
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('d', {path!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "dr = m.dag.test()\n"
        "states = {ti.task_id: str(getattr(ti.state, 'value', ti.state)) for ti in dr.get_task_instances()}\n"
        "print('STATES', states)\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code],
        env=dict(os.environ),
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )


def test_two_dags_contending_for_one_write_lock_never_overlap(orch_conn, state_dir, remote, sshd, capfd):
    """DAG A (another process, as another worker or deployment would be) holds the lock until the
    test opens a gate; DAG B's task queues behind it on the host, says so, then runs."""
    from orchesjob_provider.hooks.orchesjob import OrchesjobError, OrchesjobHook

    side = f"{sshd.home}/{new_dag_id('locks')}.side"
    gate = side + ".gate"
    first_id, second_id = new_dag_id("lock_a"), new_dag_id("lock_b")
    gated = f'echo "a start $(date +%s.%N)" >> {side}; while [ ! -e {gate} ]; do sleep 0.05; done; ' \
        f'echo "a end $(date +%s.%N)" >> {side}'
    common = dict(ssh_conn_id=orch_conn, state_dir=state_dir, locks=LOCKS, poll_interval=0.5)
    write_dag(first_id, f"OrchesjobOperator(task_id='load', {kw(command=gated, **common)})")
    short = marked("b", side, 0.2)
    second = write_dag(second_id, f"OrchesjobOperator(task_id='load', {kw(command=short, **common)})")
    proc = _run_dag_in_subprocess(first_id)
    seen: dict = {}

    def open_gate_once_b_waits() -> None:
        """Beside B's dag.test(): once B's job waits behind A's, let A finish."""
        hook = OrchesjobHook(orch_conn, state_dir=state_dir)
        deadline = time.time() + 180
        try:
            while time.time() < deadline:
                try:
                    listing = hook.call("locks")["locks"]
                except OrchesjobError:  # the state dir is being created right now
                    listing = []
                if listing and listing[0]["holders"] and listing[0]["waiters"]:
                    seen["holder"], seen["waiter"] = listing[0]["holders"][0], listing[0]["waiters"][0]
                    time.sleep(1.0)  # B's task log gets its "WAITING" line meanwhile
                    break
                time.sleep(0.2)
        finally:
            remote(f"touch {gate}")
            hook.close()

    import threading

    opener = threading.Thread(target=open_gate_once_b_waits, daemon=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and "a start" not in remote(f"cat {side} 2>/dev/null || true"):
            assert proc.poll() is None, "the first DAG ended before its job started"
            time.sleep(0.3)
        opener.start()
        capfd.readouterr()
        dr = second.test()  # its job waits on the host until the first DAG's job is done
        text = captured(capfd)
        out, _ = proc.communicate(timeout=120)
    finally:
        remote(f"touch {gate}")
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        opener.join(timeout=10)
    holder = seen["holder"]
    assert holder["run_key"].startswith(f"af/{first_id}/load/")
    assert seen["waiter"]["run_key"].startswith(f"af/{second_id}/load/")
    assert ti_states(dr) == {"load": "success"}
    assert "STATES {'load': 'success'}" in out.decode()
    assert (
        f"is WAITING on the host for write lock 'warehouse.orders' held by job {holder['job_id']} "
        f"(run key {holder['run_key']})" in text
    )
    assert "got its locks and slots" in text
    s = spans(remote, side)
    assert {k: len(v) for k, v in s.items()} == {"a start": 1, "a end": 1, "b start": 1, "b end": 1}
    assert s["b start"][0] >= s["a end"][0]  # never at once


DIE_ONCE = """
class DieOnceOperator(OrchesjobOperator):
    \"\"\"Try 1 starts the job like a real try, then its worker "dies" before the result. Try 2
    writes what its start answered to MARKER (the test opens the holder's gate only then).\"\"\"

    def execute(self, context):
        if context["ti"].try_number == 1:
            self.wait = False
            record = super().execute(context)
            self.wait = True
            raise RuntimeError("worker died while job " + record["job_id"] + " was " + record["status"])
        hook = self.hook
        real_start = hook.start

        def start(*args, **kwargs):
            action, job = real_start(*args, **kwargs)
            with open(MARKER, "w") as f:
                f.write(action + " " + job.status)
            return action, job

        hook.start = start
        return super().execute(context)
"""

MODES = [pytest.param(False, id="worker"), pytest.param(True, id="deferrable")]


@pytest.mark.parametrize("deferrable", MODES)
def test_retry_reattaches_to_the_job_waiting_for_its_lock(orch_conn, state_dir, remote, sshd, capfd, tmp_path,
                                                          deferrable):
    import threading

    from orchesjob_provider.hooks.orchesjob import OrchesjobHook

    dag_id = new_dag_id("lockretry")
    side = f"{sshd.home}/{dag_id}.side"
    gate = side + ".gate"
    marker = tmp_path / "try2-start"
    hook = OrchesjobHook(orch_conn, state_dir=state_dir)
    gated = f'echo "h start $(date +%s.%N)" >> {side}; while [ ! -e {gate} ]; do sleep 0.05; done; ' \
        f'echo "h end $(date +%s.%N)" >> {side}'
    _, holder = hook.start(["sh", "-c", gated], f"test/{dag_id}/holder", locks=LOCKS)
    assert holder.status == "RUNNING"
    dag = write_dag(
        dag_id,
        "DieOnceOperator(task_id='t', retries=1, retry_delay=timedelta(seconds=0), "
        + kw(ssh_conn_id=orch_conn, state_dir=state_dir, command=marked("w", side, 0.2), locks=LOCKS,
             slots={"heavy-io": 2}, poll_interval=0.5, deferrable=deferrable)
        + ")",
        preamble=f"MARKER = {str(marker)!r}\n" + DIE_ONCE,
    )

    def open_gate_after_try_2_started() -> None:
        deadline = time.time() + 180
        while time.time() < deadline and not marker.exists():
            time.sleep(0.1)
        time.sleep(1.0)  # try 2 watches the waiting job a little
        remote(f"touch {gate}")

    opener = threading.Thread(target=open_gate_after_try_2_started, daemon=True)
    opener.start()
    try:
        dr = dag.test()
    finally:
        remote(f"touch {gate}")
        opener.join(timeout=10)
    text = captured(capfd)
    assert ti_states(dr) == {"t": "success"}
    ti = next(t for t in dr.get_task_instances() if t.task_id == "t")
    record = ti.xcom_pull(task_ids="t")
    assert f"worker died while job {record['job_id']} was WAITING" in text
    assert marker.read_text() == "reattached WAITING"  # try 2 found its job still queued
    assert "orchesjob reattached" in text
    waiting = f"is WAITING on the host for write lock 'warehouse.orders' held by job {holder.job_id}"
    assert f"Remote job {record['job_id']} {waiting}" in text
    assert record["attempt_no"] == 1
    s = spans(remote, side)
    assert {k: len(v) for k, v in s.items()} == {"h start": 1, "h end": 1, "w start": 1, "w end": 1}
    assert s["w start"][0] >= s["h end"][0]


def test_queue_timeout_fails_the_task_with_the_reason(orch_conn, state_dir, remote, sshd, capfd):
    from orchesjob_provider.hooks.orchesjob import OrchesjobHook

    dag_id = new_dag_id("lockto")
    side = f"{sshd.home}/{dag_id}.side"
    hook = OrchesjobHook(orch_conn, state_dir=state_dir)
    # the holder outlives any dag.test() start-up (a first dag.test() took 75 s on a loaded CI)
    _, holder = hook.start(["sh", "-c", marked("h", side, 600)], f"test/{dag_id}/holder", locks=LOCKS)
    dag = write_dag(
        dag_id,
        "OrchesjobOperator(task_id='t', "
        + kw(ssh_conn_id=orch_conn, state_dir=state_dir, command=marked("w", side, 0.1), locks=LOCKS,
             queue_timeout=1, poll_interval=0.5)
        + ")",
    )
    dr = dag.test()
    text = captured(capfd)
    assert ti_states(dr) == {"t": "failed"}
    assert "was CANCELLED (queue timeout: waited 1s for write lock 'warehouse.orders': held by job " \
        f"{holder.job_id}" in text
    assert "w start" not in remote(f"cat {side}")
    hook.abort(holder.job_id, grace_seconds=1)

# The locks example (dags_examples/example_orchesjob_locks.py) is parsed and run by test_examples.

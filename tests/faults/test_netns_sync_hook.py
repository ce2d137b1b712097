"""Sync hook (worker side) across a network cut: fail fast and clearly, then reconnect."""

from __future__ import annotations

import threading
import time

import pytest
from faultutil import CONN_TIMEOUT

pytestmark = [pytest.mark.netns, pytest.mark.ssh, pytest.mark.timeout(300)]

#: A call on a cut link must fail on its own while the link is still cut (an order: the link is
#: restored only after the call ended). Detecting the dead connection and one reconnect attempt
#: take about 2 x conn_timeout; without detection the call would block until the restore, i.e.
#: forever. FAIL_BOUND is the ceiling for that hang (12 x conn_timeout), not a measured budget.
FAIL_BOUND = 12 * CONN_TIMEOUT
#: when the session_reset case kills the host's sshd sessions (while the call still waits)
DROP_AT = 1.5 * CONN_TIMEOUT


def _in_thread(fn):
    out: dict = {}

    def run():
        t0 = time.monotonic()
        try:
            out["value"] = fn()
        except BaseException as e:
            out["error"] = e
        out["elapsed"] = time.monotonic() - t0

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th, out


@pytest.mark.parametrize(
    "op,session_reset",
    [("status", False), ("wait", False), ("status", True)],
    ids=["status", "wait", "status-session_reset"],
)
def test_sync_hook_cut_fails_fast_then_same_hook_reconnects(
    netns_host, agent_state_dir, side_file, op, session_reset
):
    """Cut the link, call: a clear OrchesjobError within FAIL_BOUND. Restore: the same hook works.

    session_reset: while the link is down the host's sshd session processes die, so the old SSH
    connection is dead for good (RST once the link is back) and the hook must reconnect.
    """
    pytest.importorskip("airflow")
    from orchesjob_provider.hooks.orchesjob import OrchesjobError, OrchesjobHook

    hook = OrchesjobHook(ssh_conn_id=netns_host.conn_id, state_dir=agent_state_dir)
    problems: list[str] = []
    try:
        action, job = hook.start(["sh", "-c", side_file.shell(6)], f"faults/sync/{side_file.token}")
        assert action == "started" and job.is_active, (action, job)
        t_start = time.monotonic()

        netns_host.cut()
        if op == "status":
            th, res = _in_thread(lambda: hook.status(job_id=job.job_id))
        else:
            th, res = _in_thread(lambda: hook.wait(job.job_id, timeout=2, until="terminal"))
        th.join(DROP_AT)
        if session_reset:
            assert netns_host.drop_sessions(), "no sshd session process to drop"
        th.join(FAIL_BOUND - DROP_AT)
        if th.is_alive():
            problems.append(
                f"hook.{op}() on a cut link was still blocked after {FAIL_BOUND}s "
                f"(conn_timeout={CONN_TIMEOUT}): no dead-connection detection"
            )
            netns_host.restore()
            th.join(75)
            if th.is_alive():
                hook.close()
                th.join(10)
            print(
                f"[{op}] the blocked call ended {res.get('elapsed', 0):.1f}s after it began "
                f"(link restored at {FAIL_BOUND}s): {res.get('error') or 'returned a result'!r}"
            )
        else:
            netns_host.restore()
            err = res.get("error")
            print(f"[{op}] on the cut link: {res.get('elapsed', 0):.1f}s -> {err!r}")
            if err is None:
                problems.append(f"hook.{op}() on a cut link returned {res.get('value')!r}")
            elif not isinstance(err, OrchesjobError):
                problems.append(
                    f"hook.{op}() on a cut link raised {type(err).__name__}: {err} (not OrchesjobError)"
                )
            elif "\n" in str(err).strip() or not str(err).strip():
                problems.append(f"error message is not one clear line: {str(err)!r}")

        # Link back: the SAME hook object reconnects and finds the job.
        t0 = time.monotonic()
        rec = hook.status(job_id=job.job_id)
        print(
            f"[{op}] first call after restore: {time.monotonic() - t0:.2f}s -> {rec.status if rec else None}"
        )
        assert rec is not None and rec.job_id == job.job_id
        final = hook.wait(job.job_id, timeout=30, until="terminal")
        assert final.job is not None and final.job.status == "SUCCEEDED", final.job
        assert final.job.exit_code == 0
        assert side_file.executions() == 1, "the job's side effect must happen exactly once"
        print(f"[{op}] job {job.job_id} SUCCEEDED {time.monotonic() - t_start:.1f}s after start")
        # Resume mode on the same key must not run it again (result not acked yet: adopted).
        action2, job2 = hook.start(["sh", "-c", side_file.shell(6)], f"faults/sync/{side_file.token}")
        assert (action2, job2.job_id) == ("adopted", job.job_id)
        assert side_file.executions() == 1
    finally:
        netns_host.restore()
        hook.close()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)

"""Batched starts over a real SSH server (issue 19): many starts on one host cost one exec per
batch, not one per job, and each job still runs exactly once."""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("airflow", reason="Airflow is not installed in this interpreter")

pytestmark = [pytest.mark.airflow]


def _runs(remote, marker: str) -> list[str]:
    return remote(f"cat {marker} 2>/dev/null || true").split()


def _wait_runs(remote, marker: str, n: int) -> list[str]:
    from testkit.procs import wait_until

    wait_until(lambda: len(_runs(remote, marker)) >= n, timeout=120, message=f"{n} jobs ran")
    return _runs(remote, marker)


def test_start_many_costs_one_exec_per_batch_and_runs_each_job_once(orch_conn, state_dir, remote):
    from orchesjob_provider.client.starts import MAX_BATCH
    from orchesjob_provider.exceptions import OrchesjobBadRequest
    from orchesjob_provider.hooks.orchesjob import OrchesjobHook

    marker = f"{state_dir}-runs"
    hook = OrchesjobHook(orch_conn, state_dir=state_dir)
    hook.ping()  # deploys: the count below is the starts' alone
    before = hook.exec_count
    n = MAX_BATCH + 50
    starts = [{"argv": ["sh", "-c", 'echo "$1" >> "$2"', "sh", str(i), marker], "run_key": f"batch/{i}"}
              for i in range(n)]
    starts[7] = {"argv": [], "run_key": "batch/bad"}  # one bad start: its own answer
    got = hook.start_many(starts)
    assert hook.exec_count - before == 2  # ceil(250 / 200) execs for 250 starts
    assert isinstance(got[7], OrchesjobBadRequest)
    ok = [a for i, a in enumerate(got) if i != 7]
    assert all(isinstance(a, tuple) and a[0] == "started" for a in ok)
    assert len({a[1].job_id for a in ok}) == n - 1
    assert sorted(int(x) for x in _wait_runs(remote, marker, n - 1)) == [i for i in range(n) if i != 7]
    # the same starts again: every key's job is known, nothing runs again, still two execs
    again = hook.start_many([s for i, s in enumerate(starts) if i != 7])
    assert hook.exec_count - before == 4
    assert {a[0] for a in again} <= {"reattached", "adopted"}
    assert [a[1].job_id for a in again] == [a[1].job_id for a in ok]
    assert len(_runs(remote, marker)) == n - 1


def test_threads_sharing_a_hook_send_their_starts_together(orch_conn, state_dir, remote):
    """40 threads start jobs through one hook; the first start's exec is held until the 39 others
    queued: they go in one ``starts`` exec (2 execs in all), each thread gets its own job."""
    from orchesjob_provider.hooks.orchesjob import OrchesjobHook

    marker = f"{state_dir}-runs"
    hook = OrchesjobHook(orch_conn, state_dir=state_dir)
    hook.ping()
    before = hook.exec_count
    real_exec = hook._exec
    held = threading.Event()

    def exec_held(command, stdin, timeout):
        if not held.is_set():
            held.set()
            from testkit.procs import wait_until

            wait_until(lambda: hook._starts is not None and len(hook._starts._queue) == 39, timeout=60,
                       message="39 starts queued")
        return real_exec(command, stdin, timeout)

    hook._exec = exec_held  # type: ignore[method-assign]
    jobs: dict[int, object] = {}

    def start(i: int) -> None:
        try:
            argv = ["sh", "-c", 'echo "$1" >> "$2"', "sh", str(i), marker]
            jobs[i] = hook.start(argv, f"threads/{i}")[1].job_id
        except BaseException as exc:  # pragma: no cover - shown by the assert below
            jobs[i] = exc

    threads = [threading.Thread(target=start, args=(i,)) for i in range(40)]
    threads[0].start()
    assert held.wait(30)
    for t in threads[1:]:
        t.start()
    for t in threads:
        t.join(120)
    assert all(isinstance(j, str) for j in jobs.values()) and len(set(jobs.values())) == 40, jobs
    assert hook.exec_count - before == 2 and hook._starts.flushes == 2
    assert sorted(int(x) for x in _wait_runs(remote, marker, 40)) == list(range(40))

"""``start_in_triggerer``: the trigger sends the start over the triggerer's shared connection,
batched with the other triggers' starts on the host, against a real agent and sshd.

Counted, not timed: the execs the starts cost, the executions on the host (a side-effect file),
the job each trigger ends up watching. A trigger run again (its triggerer died after the start
reached the host) reattaches; a kill while the start is in flight aborts the job it started.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

pytest.importorskip("airflow", reason="Airflow is not installed in this interpreter")

pytestmark = [pytest.mark.ssh, pytest.mark.airflow]


def _start(argv: list[str], run_key: str) -> dict:
    from orchesjob_provider.client.starts import start_fields

    return start_fields(argv, run_key, epoch="1:0", task_instance="dag/t/-1/run")


def _trigger(conn: str, state_dir: str, start: dict, **kw):
    from orchesjob_provider.triggers.orchesjob import OrchesjobTrigger

    return OrchesjobTrigger(ssh_conn_id=conn, state_dir=state_dir, run_key=start["run_key"], start=start,
                            poll_interval=0.3, **kw)


def test_triggers_on_one_host_send_their_starts_together(orch_conn, state_dir, remote):
    """30 triggers start in the same loop iteration on one host: one ``starts`` exec for all of
    them (the agent has been deployed before); each runs its own job exactly once."""
    from orchesjob_provider.hooks.orchesjob import AsyncOrchesjobHook, OrchesjobHook

    OrchesjobHook(orch_conn, state_dir=state_dir).ping()  # deploys: the count below is the starts'
    marker = f"{state_dir}-runs"
    starts = [_start(["sh", "-c", 'echo "$1" >> "$2"', "sh", str(i), marker], f"sit/{i}") for i in range(30)]

    async def main():
        triggers = [_trigger(orch_conn, state_dir, s) for s in starts]
        probe = AsyncOrchesjobHook(orch_conn, state_dir=state_dir)
        events = await asyncio.gather(*(t.run().__anext__() for t in triggers))
        return events, probe.starter.execs

    events, execs = asyncio.run(main())
    assert execs == 1, f"{execs} start execs for 30 triggers"
    assert all(e.payload["status"] == "terminal" for e in events)
    assert all(e.payload["job"]["status"] == "SUCCEEDED" for e in events)
    assert len({e.payload["job_id"] for e in events}) == 30
    assert sorted(int(x) for x in remote(f"cat {marker}").split()) == list(range(30))


def test_a_trigger_run_again_reattaches_and_runs_nothing_twice(orch_conn, state_dir, remote):
    """The first trigger starts the job and dies (cancelled, as with its triggerer); the same
    trigger kwargs run again: the start reattaches to the running job, which ran once."""
    gate = f"{state_dir}-gate"
    marker = f"{state_dir}-runs"
    start = _start(["sh", "-c", f"echo run >> {marker}; while [ ! -e {gate} ]; do sleep 0.1; done; echo ok"],
                   f"sit/again/{uuid.uuid4().hex}")

    async def main():
        first = _trigger(orch_conn, state_dir, start, abort_on_kill=False)
        task = asyncio.ensure_future(first.run().__anext__())
        while first.job_id is None:
            await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return first.job_id

    first_job = asyncio.run(main())
    kwargs = _trigger(orch_conn, state_dir, start).serialize()[1]  # what Airflow stored

    async def rerun():
        from orchesjob_provider.triggers.orchesjob import OrchesjobTrigger

        again = OrchesjobTrigger(**kwargs)
        task = asyncio.ensure_future(again.run().__anext__())
        while again.job_id is None:
            await asyncio.sleep(0.05)
        await asyncio.get_running_loop().run_in_executor(None, remote, f"touch {gate}")
        return again.job_id, await task

    job_id, event = asyncio.run(rerun())
    assert job_id == first_job and event.payload["job"]["status"] == "SUCCEEDED"
    assert remote(f"cat {marker}").split() == ["run"]


def test_a_kill_while_the_start_is_in_flight_aborts_the_job_it_started(orch_conn, state_dir, remote):
    """The user kills the deferred task while its trigger's start is on its way: the abort waits
    for the start's answer and aborts (and acknowledges) that job."""
    from orchesjob_provider.hooks.orchesjob import OrchesjobHook

    start = _start(["sh", "-c", "sleep 300"], f"sit/kill/{uuid.uuid4().hex}")

    async def main():
        trig = _trigger(orch_conn, state_dir, start)
        task = asyncio.ensure_future(trig.run().__anext__())
        while trig._starting is None:  # the start request is out, its answer not in
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await trig._abort("test: killed while deferred")
        return trig.job_id

    job_id = asyncio.run(main())
    assert job_id is not None
    job = OrchesjobHook(orch_conn, state_dir=state_dir).get_job(job_id)
    assert job is not None and job.status == "ABORTED" and job.raw.get("acked_at") is not None


def test_a_refused_start_fails_the_try_with_the_agents_reason(orch_conn, state_dir):
    """A start the agent refuses (here an empty argv: exit 2, nothing stored): the trigger's
    event carries the agent's reason, and the operator raises it as is."""
    from orchesjob_provider.operators.orchesjob import OrchesjobOperator
    from orchesjob_provider.version_compat import AirflowException

    start = _start(["sh", "-c", "exit 0"], f"sit/refused/{uuid.uuid4().hex}")
    start["argv"] = []  # a request the agent refuses (exit 2): never a job
    event = asyncio.run(_trigger(orch_conn, state_dir, start).run().__anext__())
    assert event.payload["status"] == "refused" and event.payload["job_id"] is None
    op = OrchesjobOperator(task_id="t", ssh_conn_id=orch_conn, command="true", deferrable=True,
                           start_in_triggerer=True)
    with pytest.raises(AirflowException, match="was refused"):
        op.execute_complete({}, event=event.payload, job_id=None)

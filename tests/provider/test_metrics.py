"""Metrics through Airflow's Stats: a fake backend records every call during real runs (sshd, dag.test)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

pytest.importorskip("airflow", reason="Airflow is not installed in this interpreter")

from dagutil import kw, new_dag_id, ti_states, write_dag
from test_resume import DIE_ONCE, _release, _wait_release

from orchesjob_provider.utils import metrics

pytestmark = [pytest.mark.ssh, pytest.mark.airflow]

MODES = [pytest.param(False, id="worker"), pytest.param(True, id="deferrable")]


class FakeStats:
    """Stands in for Airflow's Stats: records (kind, stat, value, tags)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, object, dict[str, str]]] = []

    def incr(self, stat, count=1, rate=1, *, tags=None):
        self.calls.append(("incr", stat, count, dict(tags or {})))

    def timing(self, stat, dt, *, tags=None):
        self.calls.append(("timing", stat, dt, dict(tags or {})))

    def named(self, stat: str) -> list[tuple[str, str, object, dict[str, str]]]:
        return [c for c in self.calls if c[1] == stat]


@pytest.fixture
def stats(monkeypatch):
    fake = FakeStats()
    monkeypatch.setattr(metrics, "_backend", lambda: fake)
    return fake


def test_real_stats_object_takes_our_calls():
    """get_stats() finds Airflow's Stats on this version and our call shapes are accepted."""
    from orchesjob_provider.version_compat import get_stats

    real = get_stats()
    assert real is not None and "Stats" in type(real).__name__ + repr(real), real
    # a signature that did not take tags= (or the stat names) would raise TypeError here
    assert real.incr(metrics.START.format(action="started"),
                     tags={"dag_id": "d", "task_id": "t", "conn_id": "c"}) is None
    assert real.timing(metrics.JOB_DURATION, timedelta(seconds=3), tags={"status": "SUCCEEDED"}) is None


def test_a_broken_backend_never_fails_the_caller(monkeypatch):
    calls = []

    class Broken:
        def incr(self, *a, **k):
            calls.append(a)
            raise RuntimeError("statsd is down")

    monkeypatch.setattr(metrics, "_backend", lambda: Broken())
    assert metrics.agent_deploy("c", metrics.WORKER) is None  # no exception reaches the caller
    assert calls == [(metrics.AGENT_DEPLOY,)], calls  # ... although the backend was called and raised


@pytest.mark.parametrize("deferrable", MODES)
def test_retry_counts_started_then_reattached_and_the_duration(
    orch_conn, state_dir, remote, sshd, deferrable, stats
):
    dag_id = new_dag_id("metrics")
    side = f"{sshd.home}/{dag_id}.side"
    dag = write_dag(
        dag_id,
        "DieOnceOperator(task_id='t', retries=1, retry_delay=timedelta(seconds=0), "
        + kw(
            ssh_conn_id=orch_conn,
            state_dir=state_dir,
            # runs until try 2 has begun (a fixed sleep may end first on a loaded machine: adopted)
            command=f"echo ran >> {side}; {_wait_release(f'{side}.release')}",
            poll_interval=0.5,
            deferrable=deferrable,
        )
        + ")",
        preamble=_release(f"{side}.release") + DIE_ONCE,
    )
    dr = dag.test()
    assert ti_states(dr) == {"t": "success"}
    assert remote(f"cat {side}").splitlines() == ["ran"]  # the job ran once ...
    tags = {"dag_id": dag_id, "task_id": "t", "conn_id": orch_conn}
    starts = [(c[1], c[3]) for c in stats.calls if c[1].startswith("orchesjob.start.")]
    # ... and the metrics say why: try 1 started it, try 2 reattached
    assert starts == [("orchesjob.start.started", tags), ("orchesjob.start.reattached", tags)]
    assert stats.named("orchesjob.job.succeeded") == [
        ("incr", "orchesjob.job.succeeded", 1, {**tags, "status": "SUCCEEDED"})
    ]
    (duration,) = stats.named(metrics.JOB_DURATION)
    assert duration[3] == {**tags, "status": "SUCCEEDED"}
    assert timedelta(seconds=5) <= duration[2] <= timedelta(seconds=300), duration


def test_failed_job_and_adopted_start(orch_conn, state_dir, remote, sshd, stats):
    """A job that finished while nobody watched is adopted (counted), its failure counted once."""
    from orchesjob_provider.hooks.orchesjob import OrchesjobHook

    dag_id = new_dag_id("metricsadopt")
    side = f"{sshd.home}/{dag_id}.side"
    dag = write_dag(
        dag_id,
        "OrchesjobOperator(task_id='t', "
        + kw(ssh_conn_id=orch_conn, state_dir=state_dir, command="exit 3", poll_interval=0.5, run_key=dag_id)
        + ")",
    )
    hook = OrchesjobHook(ssh_conn_id=orch_conn, state_dir=state_dir)
    _, job = hook.start(["sh", "-c", f"echo ran >> {side}; exit 3"], dag_id)
    hook.wait(job.job_id, timeout=30)
    dr = dag.test()
    assert ti_states(dr) == {"t": "failed"}
    assert remote(f"cat {side}").splitlines() == ["ran"]
    assert [c[1] for c in stats.calls if c[1].startswith("orchesjob.start.")] == ["orchesjob.start.adopted"]
    assert [c[3]["status"] for c in stats.named("orchesjob.job.failed")] == ["FAILED"]


def test_worker_reconnect_and_deploy_are_counted(orch_conn, state_dir, stats):
    from orchesjob_provider.hooks.orchesjob import OrchesjobHook

    hook = OrchesjobHook(ssh_conn_id=orch_conn, state_dir=state_dir)
    hook.ping()
    assert stats.named(metrics.SSH_RECONNECT) == []  # the first connection is no reconnect
    hook.get_conn().get_transport().close()  # the link drops between two calls
    hook.ping()
    assert stats.named(metrics.SSH_RECONNECT) == [
        ("incr", metrics.SSH_RECONNECT, 1, {"conn_id": orch_conn, "side": "worker"})
    ]
    hook.deploy()  # idempotent upload of the same bundle
    assert stats.named(metrics.AGENT_DEPLOY) == [
        ("incr", metrics.AGENT_DEPLOY, 1, {"conn_id": orch_conn, "side": "worker"})
    ]
    hook.close()


def test_triggerer_reconnect_and_deploy_are_counted(orch_conn, state_dir, stats):
    from orchesjob_provider.exceptions import AgentUnavailable
    from orchesjob_provider.hooks.async_orchesjob import AsyncOrchesjobHook

    async def main():
        async with AsyncOrchesjobHook(orch_conn, state_dir=state_dir) as h:
            await h.call("ping")
            first = await h.shared.get()
            assert stats.named(metrics.SSH_RECONNECT) == []
            first.abort()  # the network drops the connection
            await asyncio.sleep(0.2)
            try:
                await h.call("ping")
            except AgentUnavailable:
                pass  # a call may see the dead connection first; the next one reconnects
            assert (await h.call("ping"))["ok"] is True
            await h.deploy()

    asyncio.run(main())
    assert stats.named(metrics.SSH_RECONNECT) == [
        ("incr", metrics.SSH_RECONNECT, 1, {"conn_id": orch_conn, "side": "triggerer"})
    ]
    assert stats.named(metrics.AGENT_DEPLOY) == [
        ("incr", metrics.AGENT_DEPLOY, 1, {"conn_id": orch_conn, "side": "triggerer"})
    ]

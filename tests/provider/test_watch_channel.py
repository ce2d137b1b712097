"""The watch channel through the real loopback sshd: triggers of one loop share one long-lived
agent per host; a dropped channel is re-established without losing or repeating a log byte;
a host where the channel cannot run falls back to the batched poll."""

from __future__ import annotations

import asyncio
import uuid

import pytest

pytest.importorskip("airflow", reason="Airflow is not installed in this interpreter")

pytestmark = [pytest.mark.airflow, pytest.mark.ssh]


def _lines_job(n: int, pause: float, tag: str, flag: str | None = None) -> list[str]:
    """Prints n numbered lines ``pause`` s apart; with ``flag``, only once that file exists."""
    script = f"for i in $(seq 1 {n}); do echo {tag}-$i; sleep {pause}; done; echo {tag}-err >&2"
    if flag:
        script = f"while [ ! -e {flag} ]; do sleep 0.05; done; {script}"
    return ["sh", "-c", script]


def _gated_lines_job(n: int, tag: str, flag: str, gates: str) -> list[str]:
    """Once ``flag`` exists: prints line i, then waits for the file ``<gates>-<i>`` (which the
    test creates after it has seen line i) before the next: each line is its own push."""
    script = (f"while [ ! -e {flag} ]; do sleep 0.05; done; for i in $(seq 1 {n}); do echo {tag}-$i; "
              f"while [ ! -e {gates}-$i ]; do sleep 0.05; done; done; echo {tag}-err >&2")
    return ["sh", "-c", script]


def _expected(n: int, tag: str) -> bytes:
    return b"".join(f"{tag}-{i}\n".encode() for i in range(1, n + 1))


def _shown_then_the_task(shown: list[bytes], expected: bytes, offsets: int) -> None:
    """No byte lost, none twice: the trigger showed a prefix of the job's output, up to the event's
    offsets, and the rest (the lines that came with the job's end) is the task's to print
    (triggers/orchesjob.py: execute_complete prints the log past the event's offsets)."""
    assert b"".join(shown) == expected[:offsets], (shown, offsets)
    assert offsets == 0 or expected[offsets - 1:offsets] == b"\n"


def _collecting(trigger, shown: list[bytes]) -> None:
    """Record every stdout line the trigger writes to its log (in order, as the bytes it was)."""
    original = trigger._write

    def write(stream, text):
        if stream == "stdout":
            shown.append(text.encode() + b"\n")
        original(stream, text)

    trigger._write = write


def test_two_triggers_share_one_channel_and_one_connection(orch_conn, state_dir, remote):
    from orchesjob_provider.hooks.orchesjob import AsyncOrchesjobHook, OrchesjobHook
    from orchesjob_provider.triggers.orchesjob import OrchesjobTrigger

    hook = OrchesjobHook(orch_conn, state_dir=state_dir)
    flag = f"{state_dir}/go-{uuid.uuid4().hex}"  # the jobs print once both triggers are subscribed
    gates = f"{state_dir}/line-{uuid.uuid4().hex}"  # and each next line once both showed the last
    jobs = [
        hook.start(_gated_lines_job(6, f"t{i}", flag, gates), f"test/watch/{uuid.uuid4().hex}")[1]
        for i in range(2)
    ]
    shown: list[list[bytes]] = [[], []]

    async def main():
        triggers = [
            # poll_interval 600 s: within the 120 s ceiling only the channel can bring lines and ends
            OrchesjobTrigger(ssh_conn_id=orch_conn, job_id=j.job_id, poll_interval=600, state_dir=state_dir)
            for j in jobs
        ]
        for t, s in zip(triggers, shown):
            _collecting(t, s)
        waits = asyncio.gather(*(t.run().__anext__() for t in triggers))
        probe = AsyncOrchesjobHook(orch_conn, state_dir=state_dir)
        for _ in range(600):  # both subscribed on an open channel
            if probe.watch_channel.hello is not None and len(probe.watch_channel.subs) == 2:
                break
            await asyncio.sleep(0.05)
        await asyncio.to_thread(remote, f"touch {flag}")
        for k in range(1, 7):  # line k shown by both triggers, then the jobs may print line k + 1
            for _ in range(2400):  # a 120 s ceiling for a hang
                if all(b"".join(shown[i]) == _expected(k, f"t{i}") for i in range(2)):
                    break
                await asyncio.sleep(0.05)
            await asyncio.to_thread(remote, f"touch {gates}-{k}")
        events = await asyncio.wait_for(waits, 120)
        return events, probe.watch_channel, probe.poller, probe.shared

    events, channel, poller, _shared = asyncio.run(main())
    for i, (job, ev) in enumerate(zip(jobs, events)):
        p = ev.payload
        assert p["status"] == "terminal" and p["job"]["status"] == "SUCCEEDED" and p["job_id"] == job.job_id
        assert b"".join(shown[i]) == _expected(6, f"t{i}")
        assert p["offsets"]["stdout"] == len(_expected(6, f"t{i}"))
        # pushed as the lines came: one push per line, in order (a line cannot come before the
        # test has seen the previous one), whatever the machine's load
        assert [c for c in shown[i] if c] == [f"t{i}-{n}\n".encode() for n in range(1, 7)], shown[i]
    assert channel.opens == 1  # one exec for both triggers, for the whole wait
    assert poller.execs == 0
    # the offsets shown were recorded through the channel: a later try starts after them
    for i, job in enumerate(jobs):
        rec = hook.poll([(job.job_id, None)])[0].job
        assert rec is not None and rec.raw["log_shown"]["stdout"] == len(_expected(6, f"t{i}"))


def test_channel_killed_is_reestablished_without_losing_or_repeating_bytes(orch_conn, state_dir, remote):
    from orchesjob_provider.hooks.orchesjob import AsyncOrchesjobHook, OrchesjobHook
    from orchesjob_provider.triggers.orchesjob import OrchesjobTrigger

    hook = OrchesjobHook(orch_conn, state_dir=state_dir)
    _, job = hook.start(_lines_job(60, 0.1, "k"), f"test/watch-kill/{uuid.uuid4().hex}")
    shown: list[bytes] = []

    async def main():
        trigger = OrchesjobTrigger(
            ssh_conn_id=orch_conn, job_id=job.job_id, poll_interval=30, state_dir=state_dir
        )
        _collecting(trigger, shown)
        task = asyncio.ensure_future(trigger.run().__anext__())
        channel = AsyncOrchesjobHook(orch_conn, state_dir=state_dir).watch_channel
        for _ in range(100):
            if channel.process is not None and shown:
                break
            await asyncio.sleep(0.05)
        pid = await _watch_pid(channel)
        await asyncio.to_thread(remote, f"kill -9 {pid}")  # the agent at the far end dies
        second = await _watch_pid(channel, other_than=pid)  # re-established
        AsyncOrchesjobHook(orch_conn, state_dir=state_dir).shared.conn.abort()  # the connection drops
        await _watch_pid(channel, other_than=second)
        event = await asyncio.wait_for(task, 60)
        return event, channel

    event, channel = asyncio.run(main())
    assert event.payload["status"] == "terminal" and event.payload["job"]["status"] == "SUCCEEDED"
    _shown_then_the_task(shown, _expected(60, "k"), event.payload["offsets"]["stdout"])
    assert event.payload["offsets"]["stdout"] > len(_expected(30, "k"))  # shown live, not at the end
    assert channel.opens >= 3  # the first channel, after the kill, after the connection drop


async def _watch_pid(channel, other_than: int | None = None) -> int:
    """The pid of the channel's agent (from its hello), once it is not ``other_than``."""
    for _ in range(200):
        if channel.hello is not None and int(channel.hello["pid"]) != other_than:
            return int(channel.hello["pid"])
        await asyncio.sleep(0.05)
    raise AssertionError(f"no watch hello from a process other than {other_than}")


def test_fallback_to_poll_when_the_agent_never_says_hello(orch_conn, state_dir, monkeypatch):
    """An agent without the op reads its request to EOF and never answers the watch line: the
    trigger polls instead (and the channel is not retried for a while)."""
    from orchesjob_provider.hooks.orchesjob import AsyncOrchesjobHook, OrchesjobHook
    from orchesjob_provider.hooks.ssh import watch_channel
    from orchesjob_provider.triggers.orchesjob import OrchesjobTrigger

    # protocol 99 is not a watch this agent takes: it reads to EOF like an agent before the op
    real_open = watch_channel.open_line
    monkeypatch.setattr(
        watch_channel, "open_line", lambda sd: real_open(sd).replace(b'"protocol":1', b'"protocol":99')
    )
    monkeypatch.setattr(watch_channel.WatchChannel, "HELLO_TIMEOUT", 1.0)
    hook = OrchesjobHook(orch_conn, state_dir=state_dir)
    _, job = hook.start(_lines_job(3, 0.2, "f"), f"test/watch-fallback/{uuid.uuid4().hex}")
    shown: list[bytes] = []

    async def main():
        trigger = OrchesjobTrigger(
            ssh_conn_id=orch_conn, job_id=job.job_id, poll_interval=0.3, state_dir=state_dir
        )
        _collecting(trigger, shown)
        event = await asyncio.wait_for(trigger.run().__anext__(), 30)
        probe = AsyncOrchesjobHook(orch_conn, state_dir=state_dir)
        return event, probe.watch_channel, probe.poller

    event, channel, poller = asyncio.run(main())
    assert event.payload["status"] == "terminal" and event.payload["job"]["status"] == "SUCCEEDED"
    _shown_then_the_task(shown, _expected(3, "f"), event.payload["offsets"]["stdout"])
    assert channel.opens == 1 and not channel.supported
    assert poller.execs >= 1

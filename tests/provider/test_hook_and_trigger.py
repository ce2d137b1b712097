"""Hook transport (deploy, one exec per call, TCP_NODELAY), the agent bundle, the trigger
(serialization, shared connection + batched poll, reconnect), and provider registration."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import uuid
import zipfile

import pytest

pytest.importorskip("airflow", reason="Airflow is not installed in this interpreter")

pytestmark = [pytest.mark.airflow]


# -- pure units ------------------------------------------------------------------------------
def test_bundle_is_deterministic_and_runs_with_isolated_python():
    from orchesjob_provider.bundle import build_bundle

    a, b = build_bundle(), build_bundle()
    assert a.data == b.data and a.sha256 == b.sha256 == hashlib.sha256(a.data).hexdigest()
    assert a.remote_path == f"~/.orchesjob/agent/agent-{a.sha256[:16]}"
    with zipfile.ZipFile(__import__("io").BytesIO(a.data)) as zf:
        names = zf.namelist()
        assert names == sorted(names) and "__main__.py" in names and "remote_agent/frontends/rpc.py" in names
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "agent")
        with zipfile.ZipFile(__import__("io").BytesIO(a.data)) as zf:
            zf.extractall(path)  # as the deploy script unpacks it
        r = subprocess.run(
            ["/usr/bin/python3", "-I", "-S", os.path.join(path, "__main__.py"), "rpc"],  # as the hook runs it
            input=json.dumps({"op": "ping", "home": os.path.join(d, "home")}).encode(),
            capture_output=True,
        )
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["ok"] is True


def test_reply_parsing_and_error_mapping():
    from orchesjob_provider.client.wire import is_missing_agent, parse_reply
    from orchesjob_provider.hooks import orchesjob as h
    from orchesjob_provider.hooks.ssh.connect import parse_host_key

    ok = b'{"ok": true, "protocol": 1, "op": "ping", "home": "/x"}\n'
    assert parse_reply("ping", 0, ok, b"", where="w", remote_python="python3")["home"] == "/x"
    for code, cls in [
        (2, h.OrchesjobBadRequest),
        (3, h.OrchesjobNotFound),
        (4, h.OrchesjobWrongState),
        (5, h.OrchesjobBusy),
        (1, h.OrchesjobError),
    ]:
        body = json.dumps({"ok": False, "error": {"code": code, "kind": "k", "message": "boom"}}).encode()
        with pytest.raises(cls) as ei:
            parse_reply("ack", code, body, b"orchesjob: boom\n", where="u@h:22", remote_python="python3")
        assert ei.value.code == code and "boom" in str(ei.value)
    with pytest.raises(h.AgentUnavailable, match="remote python 'py3x' was not found on u@h:22"):
        parse_reply("ping", 127, b"", b"sh: 1: py3x: not found\n", where="u@h:22", remote_python="py3x")
    assert is_missing_agent(86, b"", b"orchesjob-agent-redeploy: missing /x\n")
    assert not is_missing_agent(2, b'{"ok": false}', b"orchesjob: bad")
    assert parse_host_key(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB8l6Bv8s4a7a8yH5Xq5lKx1u8kTqT3n0fZy4JYyqg0e"
    )[0] == ("ssh-ed25519")
    job = h.JobRecord.from_dict(
        {"job_id": "j", "status": "LOST", "lost_reason": "rebooted", "exit_code": None}
    )
    assert job.is_terminal and not job.succeeded
    from orchesjob_provider.utils.messages import failure_message

    assert failure_message(job) == "Remote job j was LOST (rebooted)"
    assert "CANCELLED" in failure_message(h.JobRecord.from_dict({"job_id": "j", "status": "CANCELLED"}))
    assert "signal 9" in failure_message(
        h.JobRecord.from_dict({"job_id": "j", "status": "FAILED", "exit_code": -9})
    )


def test_rpc_command_has_only_constants_and_a_quoted_interpreter():
    import shlex

    from orchesjob_provider.bundle import BOOTSTRAP_SCRIPT, get_bundle, rpc_command

    b = get_bundle()
    expected = f"python3 -I -S -c {shlex.quote(BOOTSTRAP_SCRIPT)} {b.remote_path} rpc"
    assert rpc_command("python3", b) == expected
    assert rpc_command("/opt/my python/bin/python3; rm -rf /", b).startswith(
        "'/opt/my python/bin/python3; rm -rf /' -I"
    )


def test_trigger_serialize_roundtrip():
    from orchesjob_provider.triggers.orchesjob import OrchesjobTrigger

    t = OrchesjobTrigger(
        ssh_conn_id="c",
        job_id="j",
        offsets={"stdout": 5},
        poll_interval=2,
        timeout_at=123.0,
        remote_python="/usr/bin/python3",
        state_dir="/s",
        abort_on_kill=False,
    )
    path, kwargs = t.serialize()
    assert path == "orchesjob_provider.triggers.orchesjob.OrchesjobTrigger"
    json.dumps(kwargs)
    t2 = OrchesjobTrigger(**kwargs)
    assert t2.serialize() == (path, kwargs)
    assert kwargs["offsets"] == {"stdout": 5, "stderr": 0} and kwargs["abort_on_kill"] is False


def test_provider_is_registered_in_airflow_cli():
    r = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", "list", "-o", "json"],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    start = r.stdout.index("[")
    providers = json.loads(r.stdout[start:])
    ours = [p for p in providers if p["package_name"] == "airflow-provider-orchesjob"]
    import remote_agent

    # one version source (remote_agent.__version__); the installed metadata is the checkout's
    assert ours and ours[0]["version"] == remote_agent.__version__
    from orchesjob_provider.get_provider_info import get_provider_info

    info = get_provider_info()
    for kind in ("hooks", "operators", "sensors", "triggers"):
        for mod in info[kind][0]["python-modules"]:
            __import__(mod)
    r = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", "triggers", "-o", "json"],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=300,
    )
    assert "orchesjob_provider.triggers.orchesjob" in r.stdout


# -- against the loopback sshd -----------------------------------------------------------------
@pytest.mark.ssh
def test_deploy_once_then_one_exec_per_call_with_nodelay(orch_conn, state_dir, remote, monkeypatch):
    from orchesjob_provider import bundle as agent_bundle
    from orchesjob_provider.hooks.orchesjob import OrchesjobHook

    # A bundle of its own (a nonce in __main__.py gives it a new content address), so it is
    # surely not deployed yet, and tests running in parallel keep using the real one undisturbed.
    nonce = uuid.uuid4().hex
    monkeypatch.setattr(agent_bundle, "_MAIN", agent_bundle._MAIN + f"# test {nonce}\n".encode())
    bundle = agent_bundle.build_bundle()
    monkeypatch.setattr(agent_bundle, "_cached", bundle)
    where = f"~/.orchesjob/agent/{bundle.file_name}"
    assert remote(f"test -e {where} && echo deployed || echo absent").strip() == "absent"
    hook = OrchesjobHook(orch_conn, state_dir=state_dir)
    hook.ping()
    assert hook.exec_count == 3  # missing agent, upload, retry
    transport = hook.get_conn().get_transport()
    assert transport.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    for _ in range(5):
        hook.ping()
    assert hook.exec_count == 8  # one exec per call, same connection
    assert hook.get_conn().get_transport() is transport
    listing = remote(
        f"stat -c '%a %n' ~/.orchesjob/agent {where} {where}/remote_agent/frontends/cli.py; "
        f"ls {where}/remote_agent/frontends/__pycache__ | grep -c 'cli.*pyc'"
    )
    lines = listing.splitlines()
    modes = [line.split()[0] for line in lines[:3]]
    assert modes == ["700", "700", "600"]  # content-addressed dir, no exec bit on the code
    assert int(lines[3]) >= 1  # bytecode precompiled by the target's python at deploy
    # another process (fresh hook) finds it deployed: one exec
    hook2 = OrchesjobHook(orch_conn, state_dir=state_dir)
    hook2.ping()
    assert hook2.exec_count == 1
    remote(f"rm -rf {where}")


@pytest.mark.ssh
def test_triggers_share_one_connection_and_batch_their_polls(orch_conn, state_dir, remote):
    """Eight triggers on one host poll in batches over one connection. The jobs print a line and
    wait for a gate the test opens once every trigger wrote its line and 3 polls per job were
    asked (a gate, not a sleep: on a loaded machine a sleep could end before the first poll)."""
    from orchesjob_provider.hooks.orchesjob import AsyncOrchesjobHook, OrchesjobHook
    from orchesjob_provider.triggers.orchesjob import OrchesjobTrigger

    hook = OrchesjobHook(orch_conn, state_dir=state_dir)
    gate = f"{state_dir}-gate"
    jobs = []
    for i in range(8):
        script = f"echo line-{i}; while [ ! -e {gate} ]; do sleep 0.1; done; echo end-{i}"
        _, job = hook.start(["sh", "-c", script], f"test/batch/{uuid.uuid4().hex}")
        jobs.append(job)

    async def main():
        triggers = [
            OrchesjobTrigger(
                ssh_conn_id=orch_conn,
                job_id=j.job_id,
                poll_interval=0.3,
                state_dir=state_dir,
                use_watch=False,  # this test is about the batched poll (the watch's fallback)
            )
            for j in jobs
        ]
        written: set[str] = set()
        for t in triggers:
            t._write = lambda stream, text, w=t._write: (written.add(text), w(stream, text))
        probe = AsyncOrchesjobHook(orch_conn, state_dir=state_dir)

        async def open_gate():
            while len(written) < len(jobs) or probe.poller.requests < 3 * len(jobs):
                await asyncio.sleep(0.1)
            await asyncio.get_running_loop().run_in_executor(None, remote, f"touch {gate}")

        opener = asyncio.ensure_future(open_gate())
        events = await asyncio.gather(*(t.run().__anext__() for t in triggers))
        await opener
        return events, probe.poller, probe.shared

    events, poller, _shared = asyncio.run(main())
    for job, ev in zip(jobs, events):
        p = ev.payload
        assert p["status"] == "terminal" and p["job"]["status"] == "SUCCEEDED" and p["job_id"] == job.job_id
        i = jobs.index(job)
        # line-i shown while the job waited; end-i with the end is the task's to print, or shown
        # when a poll read it before the job had exited (a job prints its last line, then ends)
        assert p["offsets"]["stdout"] in (len(f"line-{i}\n"), len(f"line-{i}\nend-{i}\n")), p["offsets"]
    assert poller.requests >= 3 * len(jobs)
    assert poller.execs * 2 <= poller.requests, (poller.execs, poller.requests)


@pytest.mark.ssh
def test_trigger_reconnects_after_a_dropped_connection(orch_conn, state_dir):
    from orchesjob_provider.hooks.orchesjob import AsyncOrchesjobHook, OrchesjobHook
    from orchesjob_provider.triggers.orchesjob import OrchesjobTrigger

    hook = OrchesjobHook(orch_conn, state_dir=state_dir)
    # the job ends only after the drop (a gate in /tmp, which the loopback target shares): the
    # trigger can only see its end through a new connection, however slow the machine
    gate = f"/tmp/orchesjob-reconnect-gate-{uuid.uuid4().hex}"
    _, job = hook.start(["sh", "-c", f"while [ ! -e {gate} ]; do sleep 0.05; done; echo done"],
                        f"test/reconnect/{uuid.uuid4().hex}")

    async def main():
        trigger = OrchesjobTrigger(
            ssh_conn_id=orch_conn, job_id=job.job_id, poll_interval=0.3, state_dir=state_dir
        )
        task = asyncio.ensure_future(trigger.run().__anext__())
        shared = AsyncOrchesjobHook(orch_conn, state_dir=state_dir).shared
        for _ in range(1200):  # the trigger's first poll opens the connection (60 s ceiling)
            if shared.conn is not None:
                break
            await asyncio.sleep(0.05)
        first = shared.conn
        assert first is not None
        first.abort()  # the network drops the connection under the trigger
        open(gate, "w").close()
        event = await asyncio.wait_for(task, 60)
        return event, first, shared.conn

    try:
        event, first, second = asyncio.run(main())
    finally:
        if os.path.exists(gate):
            os.unlink(gate)
    assert event.payload["status"] == "terminal" and event.payload["job"]["status"] == "SUCCEEDED"
    assert second is not None and second is not first


@pytest.mark.ssh
def test_async_call_cut_mid_flight_is_a_lost_connection_then_reconnects(orch_conn, state_dir):
    """A connection dropped while a call waits ends its channel with no exit status: that is a
    lost connection (one line, op named), the dead connection is dropped, and the next call
    reconnects; not "agent call failed (exit None)".
    """
    from orchesjob_provider.hooks.orchesjob import AgentUnavailable, AsyncOrchesjobHook, OrchesjobHook

    hook = OrchesjobHook(orch_conn, state_dir=state_dir)
    _, job = hook.start(["sleep", "30"], f"test/cut/{uuid.uuid4().hex}")

    async def main():
        async with AsyncOrchesjobHook(orch_conn, state_dir=state_dir) as h:
            await h.call("ping")
            first = await h.shared.get()
            call = asyncio.ensure_future(h.call("wait", job_id=job.job_id, timeout=20))
            await asyncio.sleep(1.0)
            first.abort()  # the network drops the connection under the waiting call
            with pytest.raises(AgentUnavailable) as ei:
                await asyncio.wait_for(call, 10)
            assert (await h.call("ping"))["ok"] is True
            return str(ei.value), first, await h.shared.get()

    try:
        message, first, second = asyncio.run(main())
        assert hook.poll([(job.job_id, None)])[0].job.status == "RUNNING"  # the job never noticed
    finally:
        hook.abort(job.job_id, reason="cleanup", grace_seconds=1)
    assert message.startswith("orchesjob wait on ") and "SSH connection lost" in message, message
    assert second is not first


@pytest.mark.ssh
def test_trigger_timeout_event(orch_conn, state_dir):
    import time

    from orchesjob_provider.hooks.orchesjob import OrchesjobHook
    from orchesjob_provider.triggers.orchesjob import OrchesjobTrigger

    hook = OrchesjobHook(orch_conn, state_dir=state_dir)
    _, job = hook.start(["sleep", "600"], f"test/tt/{uuid.uuid4().hex}")
    trigger = OrchesjobTrigger(
        ssh_conn_id=orch_conn,
        job_id=job.job_id,
        poll_interval=0.3,
        state_dir=state_dir,
        timeout_at=time.time() + 8,  # a ceiling the first answer arrives within, even under load
    )

    event = asyncio.run(trigger.run().__anext__())
    assert event.payload["status"] == "timeout" and event.payload["job"]["status"] == "RUNNING"
    hook.abort(job.job_id, reason="cleanup", grace_seconds=1)

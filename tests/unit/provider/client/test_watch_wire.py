"""The watch channel's lines, both ends: the provider's building/parsing (client/watch_wire.py)
and the agent's command parsing and options (remote_agent/frontends/watch.py). Pure, no processes."""

from __future__ import annotations

import base64
import json

import pytest

from orchesjob_provider.client.watch_wire import (
    open_line,
    parse_line,
    record_line,
    starts_at,
    sub_line,
    unsub_line,
)
from remote_agent.common.errors import AgentError
from remote_agent.frontends import watch as agent_watch


def _chunk(offset: int, data: bytes, eof: bool = False) -> dict:
    return {
        "offset": offset,
        "next_offset": offset + len(data),
        "size": offset + len(data),
        "data_b64": base64.b64encode(data).decode(),
        "eof": eof,
    }


def test_lines_the_provider_writes_are_commands_the_agent_takes():
    first = json.loads(open_line("~/st", 0.2, 5.0))
    assert first == {"protocol": 1, "op": "watch", "interval": 0.2, "check_every": 5.0, "home": "~/st"}
    assert "home" not in json.loads(open_line(None))
    job_id = "a" * 32
    sub = agent_watch.parse_command(sub_line("s1", job_id, {"stdout": 5}).rstrip(b"\n"))
    assert sub == {"cmd": "sub", "sid": "s1", "job_id": job_id, "offsets": {"stdout": 5, "stderr": 0}}
    assert agent_watch.parse_command(sub_line("s1", job_id, None))["offsets"] is None
    assert agent_watch.parse_command(unsub_line("s1")) == {"cmd": "unsub", "sid": "s1"}
    rec = agent_watch.parse_command(record_line("s1", job_id, {"stdout": 1, "stderr": 2}))
    assert rec["cmd"] == "record" and rec["offsets"] == {"stdout": 1, "stderr": 2}
    for line in (sub_line("s", job_id, None), unsub_line("s"), record_line("s", job_id, {})):
        assert line.endswith(b"\n") and line.count(b"\n") == 1  # one line each, always


@pytest.mark.parametrize(
    "line",
    [
        b"not json",
        b"[1]",
        b'{"cmd": "frob", "sid": "x"}',
        b'{"cmd": "sub", "job_id": "' + b"a" * 32 + b'"}',  # no sid
        b'{"cmd": "sub", "sid": "", "job_id": "x"}',
        b'{"cmd": "sub", "sid": "x", "job_id": "../../etc/passwd"}',
        b'{"cmd": "sub", "sid": "x", "job_id": "' + b"a" * 32 + b'", "offsets": {"stdout": -1}}',
        b'{"cmd": "sub", "sid": "x", "job_id": "' + b"a" * 32 + b'", "offsets": {"other": 1}}',
        b'{"cmd": "sub", "sid": "x", "job_id": "' + b"a" * 32 + b'", "offsets": {"stdout": true}}',
        b'{"cmd": "record", "sid": "x", "job_id": "' + b"a" * 32 + b'"}',  # record without offsets
        b'{"cmd": "unsub", "sid": "' + b"x" * 201 + b'"}',
    ],
)
def test_agent_rejects_bad_commands_with_one_clear_error(line):
    with pytest.raises(AgentError) as ei:
        agent_watch.parse_command(line)
    assert ei.value.kind and "\n" not in ei.value.message


def test_agent_options_are_clamped():
    assert agent_watch.options({}) == (0.2, 5.0, 65536)
    interval, check_every, limit = agent_watch.options({"interval": 0, "check_every": 0.0, "limit": 10})
    assert interval == 0.02 and check_every == interval and limit == 1024
    assert agent_watch.options({"interval": 99})[0] == 5.0
    with pytest.raises(AgentError):
        agent_watch.options({"interval": "fast"})
    with pytest.raises(AgentError):
        agent_watch.options({"interval": True})


def test_parse_events():
    job = {"job_id": "j", "status": "RUNNING", "exit_code": None}
    msg = parse_line(
        json.dumps(
            {"event": "job", "sid": "s", "job_id": "j", "job": job, "logs": {"stdout": _chunk(3, b"x\n")}}
        ).encode()
    )
    assert msg.kind == "job" and msg.sid == "s" and msg.logs is not None
    assert msg.logs.job is not None and msg.logs.job.status == "RUNNING"
    assert msg.logs.logs["stdout"].data == b"x\n" and msg.logs.next_offsets({"stdout": 3})["stdout"] == 5
    gone = parse_line(b'{"event": "job", "sid": "s", "job_id": "j", "job": null}')
    assert gone.kind == "job" and gone.logs is not None and gone.logs.job is None
    assert parse_line(b'{"ok": true, "event": "hello", "pid": 7}').kind == "hello"
    assert parse_line(b'{"event": "recorded", "job_id": "j"}').job_id == "j"
    assert parse_line(b'{"event": "tick"}').kind == "tick"
    err = parse_line(b'{"event": "error", "sid": "s", "error": {"message": "bad"}}')
    assert err.kind == "error" and err.sid == "s" and err.message == "bad"
    refused = parse_line(b'{"ok": false, "error": {"message": "unknown op"}}')
    assert refused.kind == "refused" and "unknown op" in refused.message
    for junk in (b"Welcome to host!", b"[]", b'{"event": "what"}', b'{"event": "job"}'):
        assert parse_line(junk).kind == "garbage"


def test_starts_at_guards_the_callers_offsets():
    def res(**chunks):
        line = {"event": "job", "sid": "s", "job_id": "j", "job": {"job_id": "j", "status": "RUNNING"}}
        line["logs"] = {s: _chunk(o, b"a\n") for s, o in chunks.items()}
        msg = parse_line(json.dumps(line).encode())
        assert msg.logs is not None
        return msg.logs

    assert starts_at(res(stdout=10, stderr=0), {"stdout": 10, "stderr": 0})
    assert not starts_at(res(stdout=8, stderr=0), {"stdout": 10, "stderr": 0})  # would repeat bytes
    assert not starts_at(res(stdout=12, stderr=0), {"stdout": 10, "stderr": 0})  # would skip bytes
    assert starts_at(res(), {"stdout": 10})  # no logs asked: nothing to check


def test_the_hello_line_is_read_behind_a_banner_without_newline():
    """Issue 18: the watch channel's first line may carry a login banner's unterminated text."""
    from orchesjob_provider.client.watch_wire import parse_line

    msg = parse_line(b'Welcome to batch-01{"event": "hello", "ok": true, "protocol": 1}')
    assert msg.kind == "hello", msg
    assert parse_line(b"just a banner").kind == "garbage"

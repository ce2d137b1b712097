"""The provider's pure protocol layer: requests, replies, typed results, events, messages.

No sshd, no Airflow metadata DB: each test runs in milliseconds.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile

import pytest

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="orchesjob-unit-airflow-home-"))
pytest.importorskip("airflow", reason="Airflow is not installed in this interpreter")

from orchesjob_provider import exceptions as x
from orchesjob_provider.client import records, wire
from orchesjob_provider.triggers import events
from orchesjob_provider.utils import messages
from remote_agent.common import vocab

W = dict(where="u@h:22", remote_python="python3")


def _error_reply(code: int, message: str = "boom", kind: str = "k") -> bytes:
    return json.dumps({"ok": False, "error": {"code": code, "kind": kind, "message": message}}).encode()


# -- parse_reply ---------------------------------------------------------------------------------
def test_parse_reply_ok_returns_the_reply_of_the_last_stdout_line():
    out = b'noise from a sitecustomize\n{"ok": true, "protocol": 1, "op": "ping", "home": "/x"}\n'
    assert wire.parse_reply("ping", 0, out, b"", **W) == {
        "ok": True, "protocol": 1, "op": "ping", "home": "/x"}


@pytest.mark.parametrize("banner", [b"", b"Welcome to batch-01\n", b"Welcome to batch-01", b"\x1b[0m>> motd ",
                                    b"line one\nno newline at the end"])
def test_parse_reply_reads_the_reply_behind_a_login_banner_with_or_without_newline(banner):
    """Issue 18: a shell rc file that prints a banner without a trailing newline glued it to the
    reply's line, and every call failed."""
    reply = {"ok": True, "protocol": 1, "op": "ping", "nested": {"a": [1, {"b": 2}]}}
    out = banner + json.dumps(reply).encode() + b"\n"
    assert wire.parse_reply("ping", 0, out, b"", **W) == reply


def test_a_banner_that_hides_the_reply_is_still_one_clear_error():
    with pytest.raises(x.AgentUnavailable) as e:
        wire.parse_reply("ping", 0, b'motd {"not": json', b"", **W)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "code, cls, kind",
    [
        (2, x.OrchesjobBadRequest, "bad_request"),
        (3, x.OrchesjobNotFound, "not_found"),
        (4, x.OrchesjobWrongState, "wrong_state"),
        (5, x.OrchesjobBusy, "busy"),
        (1, x.OrchesjobError, "error"),
        (9, x.OrchesjobError, "error"),
    ],
)
def test_parse_reply_maps_each_error_code_to_its_class(code, cls, kind):
    with pytest.raises(cls) as ei:
        wire.parse_reply("ack", code, _error_reply(code, kind=kind), b"orchesjob: boom\n", **W)
    e = ei.value
    assert type(e) is cls and e.code == code and e.kind == kind and e.op == "ack"
    assert str(e) == "orchesjob ack on u@h:22: boom"


def test_parse_reply_error_without_message_or_code_uses_stderr_and_exit_code():
    body = json.dumps({"ok": False, "error": {}}).encode()
    with pytest.raises(x.OrchesjobWrongState) as ei:
        wire.parse_reply("abort", 4, body, b"\norchesjob: job is done\n\n", **W)
    assert str(ei.value) == "orchesjob abort on u@h:22: orchesjob: job is done"
    with pytest.raises(x.OrchesjobError, match="unknown agent error"):
        wire.parse_reply("abort", None, body, b"", **W)


def test_parse_reply_exit_127_is_a_missing_interpreter():
    with pytest.raises(
        x.AgentUnavailable, match="remote python 'py3x' was not found on u@h:22 \\(exit 127\\)"
    ):
        wire.parse_reply("ping", 127, b"", b"sh: 1: py3x: not found\n", where="u@h:22", remote_python="py3x")


def test_parse_reply_exit_126_is_an_interpreter_that_cannot_run():
    with pytest.raises(x.AgentUnavailable, match="is not executable \\(exit 126\\)"):
        wire.parse_reply("ping", 126, b"", b"sh: 1: /tmp/py: Permission denied\n", **W)


def test_parse_reply_syntax_error_says_the_interpreter_is_too_old():
    err = b'  File "x.py", line 3\n    f"{x}"\n         ^\nSyntaxError: invalid syntax\n'
    with pytest.raises(x.AgentUnavailable) as ei:
        wire.parse_reply("ping", 1, b"", err, **W)
    assert "too old for the agent (needs Python 3.6+): SyntaxError: invalid syntax" in str(ei.value)
    assert ei.value.code == 1


@pytest.mark.parametrize("out", [b"not json at all\n", b'["a list"]\n', b'{"no_ok_key": 1}\n', b""])
def test_parse_reply_garbage_is_a_failed_call_with_the_last_line(out):
    with pytest.raises(x.AgentUnavailable) as ei:
        wire.parse_reply("poll", 3, out, b"Traceback...\nRuntimeError: oops\n", **W)
    assert str(ei.value) == "orchesjob agent call 'poll' on u@h:22 failed (exit 3): RuntimeError: oops"
    with pytest.raises(x.AgentUnavailable, match=r"failed \(exit 0\): no output"):
        wire.parse_reply("poll", 0, b"", b"", **W)


def test_missing_agent_is_recognised_only_from_the_bootstraps_exit_86_and_its_line():
    err = b"orchesjob-agent-redeploy: missing /home/u/.orchesjob/agent/agent-x\n"
    assert wire.is_missing_agent(86, b"", err)
    assert wire.is_missing_agent(86, b"Welcome to host!\n", b"motd noise\n" + err)  # a banner cannot hide it
    assert not wire.is_missing_agent(1, b"", err)
    assert not wire.is_missing_agent(86, b"", b"orchesjob: bad arguments")
    old = b"python3: can't open file '/home/u/.orchesjob/agent/agent-x/__main__.py': [Errno 2] No such file"
    assert not wire.is_missing_agent(2, b"", old)
    with pytest.raises(x.AgentUnavailable, match=r"exit 86\): the agent directory is still unusable"):
        wire.parse_reply("ping", 86, b"", err, **W)  # parsed as it is when not retried


def test_check_deploy():
    wire.check_deploy(0, b"", b"", where="u@h:22", remote_path="~/a")
    with pytest.raises(x.AgentUnavailable) as ei:
        wire.check_deploy(1, b"", b"orchesjob: agent upload corrupted\n", where="u@h:22", remote_path="~/a")
    assert (
        str(ei.value)
        == "could not upload the orchesjob agent to u@h:22:~/a (exit 1): orchesjob: agent upload corrupted"
    )
    assert ei.value.op == "deploy"


# -- build_request / poll_args -------------------------------------------------------------------
def test_build_request_drops_none_and_sends_the_state_dir_as_home():
    req = json.loads(
        wire.build_request("wait", "/s", {"job_id": "j", "offsets": None, "record": None, "limit": 0})
    )
    assert req == {"protocol": wire.PROTOCOL, "op": "wait", "home": "/s", "job_id": "j", "limit": 0}
    assert "home" not in json.loads(wire.build_request("ping", None, {}))
    assert "home" not in json.loads(wire.build_request("ping", "", {}))


def test_build_request_hostile_strings_and_lone_surrogates_travel_as_ascii_json():
    undecodable = os.fsdecode(b"caf\xe9")  # 'caf\udce9'
    argv = ["sh", "-c", "echo $HOME; rm -rf / `x` \"q\" 'q' \\ \n\x00", "\u00e9\u4e2d\U0001f600", undecodable]
    raw = wire.build_request("start", "/st ate", {"argv": argv, "env": {"K": "v;|&"}})
    assert raw.isascii() and b"\n" not in raw
    assert b"\\udce9" in raw
    back = json.loads(raw)
    assert back["argv"] == argv and back["env"] == {"K": "v;|&"} and back["home"] == "/st ate"


def test_poll_args_one_builder_for_sync_and_batched_polls():
    args = wire.poll_args([("a", None), ("b", {"stdout": "5"}), ("c", {})], limit=4096, record=True)
    assert args == {
        "jobs": [
            {"job_id": "a"},
            {"job_id": "b", "offsets": {"stdout": 5, "stderr": 0}},
            {"job_id": "c", "offsets": {"stdout": 0, "stderr": 0}},
        ],
        "limit": 4096,
        "record": True,
    }
    assert wire.poll_args([], limit=1, record=False) == {"jobs": [], "limit": 1, "record": None}
    req = json.loads(wire.build_request("poll", None, wire.poll_args([("a", None)], 10, False)))
    assert "record" not in req


def test_normalize_offsets():
    assert records.normalize_offsets(None) == {"stdout": 0, "stderr": 0}
    got = records.normalize_offsets({"stdout": "7", "stderr": None, "other": 3})
    assert got == {"stdout": 7, "stderr": 0}


# -- typed results ---------------------------------------------------------------------------------
def _chunk(data: bytes, offset: int, size: int, eof: bool = False, **extra) -> dict:
    return {"data_b64": base64.b64encode(data).decode(), "offset": offset, "size": size, "eof": eof, **extra}


def test_job_logs_offsets_more_and_eof():
    reply = {
        "job": {"job_id": "j", "status": "RUNNING"},
        "logs": {
            "stdout": _chunk(b"abc", 10, 20),
            "stderr": _chunk(b"", 4, 4, eof=True),
            "bogus": _chunk(b"x", 0, 1),
        },
    }
    res = records.JobLogs.from_reply("j", reply)
    assert set(res.logs) == {"stdout", "stderr"}
    assert res.logs["stdout"].next_offset == 13 and res.logs["stdout"].data == b"abc"
    assert res.more and not res.eof
    assert res.next_offsets({"stdout": 10, "stderr": 4}) == {"stdout": 13, "stderr": 4}
    done = records.JobLogs.from_reply(
        "j", {"job": None, "logs": {"stdout": _chunk(b"z", 19, 20, eof=True, next_offset=20)}}
    )
    assert done.job is None and not done.more and done.eof
    assert done.next_offsets({"stderr": 9}) == {"stdout": 20, "stderr": 9}
    assert not records.JobLogs.from_reply("j", {"job": None}).eof  # no logs asked: not "at EOF"


def test_job_record_roundtrip_and_malformed():
    d = {
        "job_id": "j",
        "status": "SUCCEEDED",
        "exit_code": 0,
        "command": ["true"],
        "log_shown": {"stdout": 1},
    }
    job = records.JobRecord.from_dict(d)
    assert job.succeeded and job.is_terminal and not job.is_active and job.to_dict() == d
    assert records.JobRecord.from_dict({"job_id": "k", "status": "STARTING"}).is_active
    with pytest.raises(x.OrchesjobError, match="malformed job record"):
        records.JobRecord.from_dict({"status": "RUNNING"})


# -- events and messages ---------------------------------------------------------------------------
def test_event_payload_round_trip():
    job = records.JobRecord.from_dict({"job_id": "j", "status": "FAILED", "exit_code": 3})
    ev = events.WatchEvent(events.EVENT_TERMINAL, "j", "rk", job, {"stdout": 4, "stderr": 0}, "job j FAILED")
    payload = ev.to_payload()
    assert payload == {
        "status": "terminal",
        "job_id": "j",
        "run_key": "rk",
        "job": {"job_id": "j", "status": "FAILED", "exit_code": 3},
        "offsets": {"stdout": 4, "stderr": 0},
        "message": "job j FAILED",
    }
    assert json.loads(json.dumps(payload)) == payload  # what Airflow stores
    assert events.WatchEvent.from_payload(payload) == ev
    back = events.WatchEvent.from_payload({"status": "timeout", "job_id": None})
    assert back.status == events.EVENT_TIMEOUT and back.job is None
    assert back.offsets == {"stdout": 0, "stderr": 0}
    kinds = (events.EVENT_TERMINAL, events.EVENT_TIMEOUT, events.EVENT_ERROR)
    assert kinds == ("terminal", "timeout", "error")


@pytest.mark.parametrize(
    "record, message",
    [
        ({"status": "FAILED", "exit_code": 2}, "Remote job j failed with exit code 2"),
        ({"status": "FAILED", "exit_code": -9}, "Remote job j failed: killed by signal 9"),
        ({"status": "FAILED", "exit_code": -1}, "Remote job j could not be launched (see its stderr above)"),
        ({"status": "ABORTED", "abort_reason": "timeout"}, "Remote job j was ABORTED (timeout)"),
        ({"status": "ABORTED"}, "Remote job j was ABORTED (no reason given)"),
        ({"status": "LOST", "lost_reason": "rebooted"}, "Remote job j was LOST (rebooted)"),
        ({"status": "LOST"}, "Remote job j was LOST (its processes are gone)"),
        ({"status": "CANCELLED"}, "Remote job j was CANCELLED"),
        ({"status": "WEIRD", "exit_code": 5}, "Remote job j ended with status WEIRD (exit code 5)"),
    ],
)
def test_failure_message(record, message):
    assert messages.failure_message(records.JobRecord.from_dict({"job_id": "j", **record})) == message


def test_vocabulary_is_the_agents():

    assert records.TERMINAL_STATUSES == frozenset(vocab.TERMINAL)
    # the stored active statuses, and WAITING (a STARTING job queued for named locks)
    assert records.ACTIVE_STATUSES == frozenset(vocab.ACTIVE) | {vocab.WAITING}
    assert vocab.STREAMS is vocab.STREAMS and vocab.ACTIONS is vocab.ACTIONS
    assert wire.abort_timeout(5) == 5 + wire.CALL_SLACK

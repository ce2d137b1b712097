"""The machine protocol (docs/agent/protocol.md): `rpc` with one JSON request on stdin."""

import base64
import hashlib
import json
import os
import subprocess
import time

import pytest
from agent_helpers import JOB_KEYS, TARGET_PYTHON, TERMINAL, wait_until

pytestmark = pytest.mark.beyond_orchesjob

RPC_JOB_KEYS = [*JOB_KEYS, "acked_at", "acked_at_iso", "lost_reason", "cwd"]


def check_envelope(reply, op, ok=True):
    assert reply is not None
    assert reply["ok"] is ok, reply
    assert reply["protocol"] == 1, reply
    assert isinstance(reply["agent_version"], str) and reply["agent_version"], reply
    assert reply["op"] == op, reply


def check_job(job):
    assert [k for k in job if k in RPC_JOB_KEYS] == RPC_JOB_KEYS, list(job)


def rpc(agent, req, **kw):
    req = dict(req)
    req.setdefault("protocol", 1)
    code, reply = agent.rpc(req, **kw)
    res = agent.last_rpc
    assert reply is not None, res
    # one line of ASCII JSON
    assert res.stdout.endswith(b"\n") and res.stdout.count(b"\n") == 1, res
    assert all(b < 128 for b in res.stdout), res
    check_envelope(reply, req.get("op"), ok=(code == 0))
    if code != 0:
        assert reply["error"]["code"] == code, reply
        assert res.stderr == ("orchesjob: {}\n".format(reply["error"]["message"])).encode(), res
    return code, reply


def rpc_ok(agent, req, **kw):
    code, reply = rpc(agent, req, **kw)
    assert code == 0, agent.last_rpc
    if "job" in reply and reply["job"] is not None:
        check_job(reply["job"])
    return reply


def lines(path):
    return path.read_text().splitlines() if path.exists() else []


def test_ping(agent):
    rep = rpc_ok(agent, {"op": "ping"})
    assert rep["home"] == str(agent.home)
    assert rep["python"].count(".") == 2 and rep["sqlite"].count(".") == 2
    assert rep["boot_id"]
    other = agent.workdir / "elsewhere"
    assert rpc_ok(agent, {"op": "ping", "home": str(other)})["home"] == str(other)


@pytest.mark.smoke
def test_resume_table_non_strict(agent):
    key = agent.key()
    marker = agent.workdir / "runs"
    argv = ["sh", "-c", f"echo run >> '{marker}'; sleep 30"]
    req = {"op": "start", "run_key": key, "argv": argv, "mode": "resume"}
    first = rpc_ok(agent, req)
    assert first["action"] == "started"
    j1 = first["job"]
    assert j1["attempt_no"] == 1 and j1["status"] == "RUNNING" and j1["target_pid"]
    assert j1["acked_at"] is None and j1["lost_reason"] is None
    again = rpc_ok(agent, req)
    assert again["action"] == "reattached" and again["job"]["job_id"] == j1["job_id"]
    # the first run must be counted before it is aborted (else "2" below is never reached)
    wait_until(lambda: len(lines(marker)) == 1, message="first run")
    # active job cannot be acked
    code, rep = rpc(agent, {"op": "ack", "job_id": j1["job_id"]})
    assert code == 4 and rep["error"]["kind"] == "wrong_state"
    assert rep["error"]["message"] == "Cannot ack active job: status=RUNNING"
    ab = rpc_ok(agent, {"op": "abort", "job_id": j1["job_id"], "reason": "stop", "grace_seconds": 1})
    assert ab["aborted"] is True and ab["job"]["status"] == "ABORTED" and ab["job"]["abort_reason"] == "stop"
    for k in ("sent_term_target", "sent_term_worker", "sent_kill_target", "sent_kill_worker"):
        assert isinstance(ab[k], bool)
    code, rep = rpc(agent, {"op": "abort", "job_id": j1["job_id"]})
    assert code == 4 and rep["error"]["kind"] == "wrong_state"
    adopted = rpc_ok(agent, req)
    assert adopted["action"] == "adopted" and adopted["job"]["job_id"] == j1["job_id"]
    assert adopted["job"]["status"] == "ABORTED"
    acked = rpc_ok(agent, {"op": "ack", "job_id": j1["job_id"]})["job"]
    assert isinstance(acked["acked_at"], int) and acked["acked_at_iso"]
    assert rpc_ok(agent, {"op": "ack", "job_id": j1["job_id"]})["job"]["acked_at"] == acked["acked_at"]
    second = rpc_ok(agent, req)
    assert second["action"] == "started"
    assert second["job"]["attempt_no"] == 2 and second["job"]["rerun_of_job_id"] == j1["job_id"]
    wait_until(lambda: len(lines(marker)) == 2, message="second run")
    rpc_ok(agent, {"op": "abort", "job_id": second["job"]["job_id"], "grace_seconds": 1})
    assert len(lines(marker)) == 2


def test_resume_table_strict(agent):
    key = agent.key()
    marker = agent.workdir / "runs"
    req = {
        "op": "start",
        "run_key": key,
        "argv": ["sh", "-c", f"echo run >> '{marker}'"],
        "mode": "resume",
        "strict": True,
    }
    first = rpc_ok(agent, req)
    assert first["action"] == "started"
    jid = first["job"]["job_id"]
    done = rpc_ok(agent, {"op": "wait", "job_id": jid, "timeout": 20})
    assert done["timed_out"] is False and done["job"]["status"] == "SUCCEEDED"
    assert rpc_ok(agent, req)["action"] == "adopted"
    rpc_ok(agent, {"op": "ack", "job_id": jid})
    kept = rpc_ok(agent, req)
    assert kept["action"] == "kept" and kept["job"]["job_id"] == jid
    assert kept.get("strict_override_used", False) is False
    assert lines(marker) == ["run"]
    agent.ok("unlock", "--run-key", key, "--reason", "rerun please")
    unlocked = rpc_ok(agent, req)
    assert unlocked["action"] == "started" and unlocked["job"]["attempt_no"] == 2
    assert unlocked["job"]["rerun_reason"] == "rerun please"
    assert unlocked.get("strict_override_used", True) is True
    rpc_ok(agent, {"op": "wait", "job_id": unlocked["job"]["job_id"], "timeout": 20})
    assert lines(marker) == ["run", "run"]
    rpc_ok(agent, {"op": "ack", "job_id": unlocked["job"]["job_id"]})
    assert rpc_ok(agent, req)["action"] == "kept"  # the unlock was consumed


def test_mode_new_ignores_acks(agent):
    key = agent.key()
    req = {"op": "start", "run_key": key, "argv": ["true"], "mode": "new"}
    first = rpc_ok(agent, req)
    assert first["action"] == "started"
    rpc_ok(agent, {"op": "wait", "job_id": first["job"]["job_id"], "timeout": 20})
    second = rpc_ok(agent, req)  # not acked, yet "new" starts again (orchesjob's rule)
    assert second["action"] == "started" and second["job"]["attempt_no"] == 2
    rpc_ok(agent, {"op": "wait", "job_id": second["job"]["job_id"], "timeout": 20})
    long = rpc_ok(agent, dict(req, argv=["sleep", "30"]))
    assert long["action"] == "started" and long["job"]["attempt_no"] == 3
    again = rpc_ok(agent, dict(req, argv=["false"]))
    assert again["action"] == "reattached" and again["job"]["job_id"] == long["job"]["job_id"]
    assert again["job"]["command"] == ["sleep", "30"]
    rpc_ok(agent, {"op": "abort", "job_id": long["job"]["job_id"], "grace_seconds": 1})


def test_ack_and_request_errors(agent):
    code, rep = rpc(agent, {"op": "ack", "job_id": "00000000-0000-4000-8000-000000000000"})
    assert code == 3 and rep["error"]["kind"] == "not_found"
    assert rep["error"]["message"] == "Job not found: 00000000-0000-4000-8000-000000000000"
    code, rep = rpc(agent, {"op": "wait", "job_id": "00000000-0000-4000-8000-000000000000", "timeout": 1})
    assert code == 3 and rep["error"]["kind"] == "not_found"
    for bad in (
        {"op": "nope"},
        {"op": "start", "run_key": "k"},
        {"op": "start", "argv": ["true"]},
        {"op": "start", "run_key": "k", "argv": "true"},
        {"op": "start", "run_key": "k", "argv": []},
        {"op": "start", "run_key": "k", "argv": [1, 2]},
        {"op": "start", "run_key": "k", "argv": ["true"], "env": {"A": 1}},
        {"op": "start", "run_key": "k", "argv": ["true"], "mode": "sometimes"},
        {"op": "ping", "protocol": 99},
        {"op": "poll"},
        {"op": "ack", "job_id": "a/b"},
    ):
        code, rep = rpc(agent, bad)
        assert code == 2 and rep["error"]["kind"] == "bad_request", (bad, rep)
    for raw in (b"", b"{not json", b"[1, 2]", b"\xff\xfe", b'"ping"'):
        code, reply = agent.rpc(None, raw=raw)
        res = agent.last_rpc
        assert code == 2, res
        assert reply["ok"] is False and reply["error"]["kind"] == "bad_request", res
        assert res.stderr.startswith(b"orchesjob: ") and res.stderr.count(b"\n") == 1, res
        assert b"Traceback" not in res.stderr
    assert not agent.db_path.exists() or agent.ok("status", "--running") == []


@pytest.mark.smoke
def test_poll_many_jobs(agent):
    a = agent.start_ok(agent.key(), "sh", "-c", "echo a-out; echo a-err >&2", sync=True)
    b = agent.start_ok(agent.key(), "sleep", "30")
    unknown = "11111111-2222-4333-8444-555555555555"
    rep = rpc_ok(
        agent,
        {
            "op": "poll",
            "jobs": [
                {"job_id": b["job_id"]},
                {"job_id": unknown, "offsets": {"stdout": 0}},
                {"job_id": a["job_id"], "offsets": {"stdout": 0, "stderr": 2}},
            ],
        },
    )
    items = rep["jobs"]
    assert [i["job_id"] for i in items] == [b["job_id"], unknown, a["job_id"]]
    assert items[0]["job"]["status"] == "RUNNING" and "logs" not in items[0]
    check_job(items[0]["job"])
    assert items[1]["job"] is None
    la = items[2]["logs"]
    assert base64.b64decode(la["stdout"]["data_b64"]) == b"a-out\n"
    assert la["stdout"]["offset"] == 0 and la["stdout"]["next_offset"] == 6 and la["stdout"]["size"] == 6
    assert la["stdout"]["eof"] is True
    assert base64.b64decode(la["stderr"]["data_b64"]) == b"err\n" and la["stderr"]["next_offset"] == 6
    rpc_ok(agent, {"op": "abort", "job_id": b["job_id"], "grace_seconds": 1})


def _gated(agent, *names):
    """``sh -c``: wait for gate ``names[0]``, (echo hello, wait for ``names[1]``): the job's
    steps happen when the test opens their gates, never on a clock."""
    waits = [f"while [ ! -e '{agent.workdir / n}' ]; do sleep 0.02; done" for n in names]
    return ["sh", "-c", "; echo hello; ".join(waits)]


def _rpc_in_background(agent, req):
    path = agent.workdir / f"req-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(req))
    with open(str(path), "rb") as stdin:
        proc = subprocess.Popen([*agent.argv, "rpc"], env=agent.make_env(), stdin=stdin,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    agent.spawned.append(proc)
    return proc


def _reply(proc):
    out, err = proc.communicate(timeout=60)  # a ceiling for a hang, never the thing tested
    assert proc.returncode == 0, (out, err)
    reply = json.loads(out)
    check_job(reply["job"])
    return reply


def test_wait_timeout_and_prompt_return(agent):
    """Promptness by order: the job cannot end before the test opens its gate, and every wait
    that must return at once has a 600 s timeout, so sleeping it out would outlast the 60 s
    ceiling. How soon a wait returns is not measured here."""
    job = agent.start_ok(agent.key(), *_gated(agent, "gate"))
    rep = rpc_ok(agent, {"op": "wait", "job_id": job["job_id"], "timeout": 0.3})
    assert rep["timed_out"] is True and rep["job"]["status"] == "RUNNING"
    waiting = _rpc_in_background(agent, {"op": "wait", "job_id": job["job_id"], "timeout": 600})
    time.sleep(0.5)
    assert waiting.poll() is None, "wait returned while the job still runs"
    (agent.workdir / "gate").touch()
    rep = _reply(waiting)  # returned at the end, not after its 600 s timeout
    assert rep["timed_out"] is False and rep["job"]["status"] == "SUCCEEDED"
    # already terminal: returns at once
    rep = rpc_ok(agent, {"op": "wait", "job_id": job["job_id"], "timeout": 600})
    assert rep["timed_out"] is False and rep["job"]["status"] == "SUCCEEDED"


def test_wait_until_output(agent):
    job = agent.start_ok(agent.key(), *_gated(agent, "say", "end"))
    waiting = _rpc_in_background(agent, {"op": "wait", "job_id": job["job_id"], "timeout": 600,
                                         "until": "output", "offsets": {"stdout": 0, "stderr": 0}})
    time.sleep(0.5)
    assert waiting.poll() is None, "wait returned before any output"
    (agent.workdir / "say").touch()
    rep = _reply(waiting)  # at the output, not after its 600 s timeout; the job still runs
    assert rep["timed_out"] is False and rep["job"]["status"] == "RUNNING"
    assert base64.b64decode(rep["logs"]["stdout"]["data_b64"]) == b"hello\n"
    assert rep["logs"]["stdout"]["eof"] is False
    rpc_ok(agent, {"op": "abort", "job_id": job["job_id"], "grace_seconds": 1})


WRITER = r"""
import sys, time
total, out = int(sys.argv[1]), sys.stdout.buffer
n = 0
i = 0
while n < total:
    line = (b"%07d " % i) + bytes([65 + i % 26]) * (i * 37 % 300) + b"\n"
    if i % 997 == 5:
        line = b"\xff\xfe" + b"x" * 9000 + b"\n"          # longer than a 4 KiB chunk
    out.write(line)
    n += len(line)
    i += 1
    if i % 200 == 0:
        out.flush()
        time.sleep(0.01)
out.write(b"tail without newline")
out.flush()
"""


def _read_all(agent, job_id, limit, stream="stdout"):
    data = b""
    offset = 0
    calls = 0
    while True:
        rep = rpc_ok(
            agent, {"op": "poll", "limit": limit, "jobs": [{"job_id": job_id, "offsets": {stream: offset}}]}
        )
        calls += 1
        item = rep["jobs"][0]
        chunk = item["logs"][stream]
        piece = base64.b64decode(chunk["data_b64"])
        assert chunk["offset"] == offset
        assert chunk["next_offset"] == offset + len(piece)
        assert len(piece) <= limit
        if item["job"]["status"] not in TERMINAL and piece and len(piece) < limit:
            assert piece.endswith(b"\n"), "a chunk of a running job must end at a newline"
        data += piece
        offset = chunk["next_offset"]
        if chunk["eof"]:
            assert offset == chunk["size"]
            return data, calls
        assert calls < 5000
        if not piece:
            time.sleep(0.05)


@pytest.mark.smoke
def test_log_offsets_read_every_byte_once(agent):
    script = agent.script("writer.py", WRITER)
    job = agent.start_ok(agent.key(), TARGET_PYTHON, script, str(1 << 20))
    data, calls = _read_all(agent, job["job_id"], 65536)  # while it is being written
    with open(job["stdout_file"], "rb") as f:
        assert data == f.read()
    assert len(data) > (1 << 20) and data.endswith(b"tail without newline")
    small = agent.start_ok(agent.key(), TARGET_PYTHON, script, str(40000), sync=True)
    data, calls = _read_all(agent, small["job_id"], 4096)
    with open(small["stdout_file"], "rb") as f:
        assert data == f.read()
    assert calls >= 40000 // 4096


def test_log_chunk_of_running_job_without_newline(agent):
    job = agent.start_ok(agent.key(), "sh", "-c", "printf 'partial'; sleep 30")
    wait_until(lambda: os.path.getsize(job["stdout_file"]) == 7, message="partial line written")
    rep = rpc_ok(agent, {"op": "poll", "jobs": [{"job_id": job["job_id"], "offsets": {"stdout": 0}}]})
    chunk = rep["jobs"][0]["logs"]["stdout"]
    assert chunk["next_offset"] == 0 and chunk["size"] == 7 and chunk["eof"] is False  # half a line held back
    rep = rpc_ok(
        agent, {"op": "poll", "limit": 4, "jobs": [{"job_id": job["job_id"], "offsets": {"stdout": 0}}]}
    )
    assert base64.b64decode(rep["jobs"][0]["logs"]["stdout"]["data_b64"]) == b"part"  # a full limit
    agent.ok("abort", "--job-id", job["job_id"], "--grace-seconds", "1")
    rep = rpc_ok(agent, {"op": "poll", "jobs": [{"job_id": job["job_id"], "offsets": {"stdout": 4}}]})
    chunk = rep["jobs"][0]["logs"]["stdout"]
    assert base64.b64decode(chunk["data_b64"]) == b"ial" and chunk["eof"] is True


DUMP = r"""
import json, os, sys
keys = sorted(k for k in os.environb if k.startswith(b"OJX_"))
json.dump({"argv": [os.fsencode(a).hex() for a in sys.argv[2:]],
           "env": {k.decode(): os.environb[k].hex() for k in keys},
           "cwd": os.fsencode(os.getcwd()).hex()}, open(sys.argv[1], "w"))
"""

HOSTILE = [
    "plain",
    "",
    " two  spaces ",
    "it's",
    'say "hi"',
    "$(touch /tmp/ojpwned)",
    "`id`",
    "a; rm -rf /",
    "x && y || z",
    "line1\nline2",
    "tab\there",
    "ünïcödé ✓ 日本",
    "*",
    "~",
    "--",
    "-x",
    "$HOME",
    "back\\slash",
    "%s %d",
    os.fsdecode(b"\xff\xfe\x80 raw"),
    os.fsdecode(b"caf\xe9"),
]


@pytest.mark.smoke
def test_argv_env_cwd_reach_target_byte_for_byte(agent):
    script = agent.script("dump.py", DUMP)
    out = agent.workdir / "dump.json"
    cwd = agent.workdir / os.fsdecode(b"d ir $(x) \xc3\xa9 \xff")
    os.mkdir(os.fsencode(str(cwd)))
    env = {f"OJX_{i:02d}": v for i, v in enumerate(HOSTILE)}
    rep = rpc_ok(
        agent,
        {
            "op": "start",
            "run_key": agent.key(),
            "argv": [TARGET_PYTHON, script, str(out), *HOSTILE],
            "env": env,
            "cwd": str(cwd),
        },
    )
    job = rpc_ok(agent, {"op": "wait", "job_id": rep["job"]["job_id"], "timeout": 20})["job"]
    assert job["status"] == "SUCCEEDED", job
    assert job["command"][3:] == HOSTILE
    dumped = json.loads(out.read_text())
    assert [bytes.fromhex(h) for h in dumped["argv"]] == [os.fsencode(a) for a in HOSTILE]
    assert {k: bytes.fromhex(v) for k, v in dumped["env"].items()} == {
        k: os.fsencode(v) for k, v in env.items()
    }
    assert bytes.fromhex(dumped["cwd"]) == os.fsencode(str(cwd))
    assert not os.path.exists("/tmp/ojpwned")


def test_env_secret_not_in_db_or_ps(agent):
    secret = "s3cr3t-" + os.urandom(8).hex()
    digest = hashlib.sha256(secret.encode()).hexdigest()
    check = agent.script(
        "check.py",
        (
            "import hashlib, os, sys, time\n"
            "got = os.environ.get('OJ_SECRET', '').encode()\n"
            "open(sys.argv[1], 'w').write(str(hashlib.sha256(got).hexdigest() == sys.argv[2]))\n"
            "time.sleep(3)\n"
        ),
    )
    seen = agent.workdir / "seen"
    rep = rpc_ok(
        agent,
        {
            "op": "start",
            "run_key": agent.key(),
            "argv": [TARGET_PYTHON, check, str(seen), digest],
            "env": {"OJ_SECRET": secret},
        },
    )
    job = rep["job"]
    wait_until(lambda: seen.exists() and seen.read_text(), message="target ran")
    assert seen.read_text() == "True"  # the target did get the secret
    needle = secret.encode()
    offenders = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if needle in cmdline:
            offenders.append((pid, cmdline))
    assert offenders == []
    ps = subprocess.run(["ps", "-eww", "-o", "args"], stdout=subprocess.PIPE).stdout
    assert needle not in ps
    rpc_ok(agent, {"op": "wait", "job_id": job["job_id"], "timeout": 20})
    for root, _dirs, files in os.walk(str(agent.home)):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                assert needle not in f.read(), name


def test_start_timeout_returns_starting_or_running(agent):
    rep = rpc_ok(agent, {"op": "start", "run_key": agent.key(), "argv": ["sleep", "30"], "start_timeout": 0})
    assert rep["action"] == "started" and rep["job"]["status"] in ("STARTING", "RUNNING")
    agent.wait_status(rep["job"]["job_id"], statuses={"RUNNING"}, timeout=10)
    rpc_ok(agent, {"op": "abort", "job_id": rep["job"]["job_id"], "grace_seconds": 1})

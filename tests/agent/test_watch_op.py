"""The ``watch`` op on real processes: one long-lived agent pushes job ends and log lines.

Each test runs ``rpc`` with a first line ``{"op": "watch"}``, writes commands to its stdin and
reads its events with a deadline, so a missing event fails the test instead of hanging it.
"""

import base64
import json
import os
import select
import sqlite3
import subprocess
import threading
import time
from typing import Any, Dict, List, Optional

import pytest
from agent_helpers import TARGET_PYTHON, Agent, wait_until

pytestmark = pytest.mark.beyond_orchesjob


class WatchProc:
    def __init__(self, agent: Agent, **opts: Any) -> None:
        req = {"protocol": 1, "op": "watch", "interval": 0.1}
        req.update(opts)
        self.proc = subprocess.Popen(
            [*agent.argv, "rpc"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=agent.make_env(), cwd=str(agent.workdir))
        agent.spawned.append(self.proc)
        self.buf = b""
        self.send(req)
        self.hello = self.next(5)

    def send(self, obj: Dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(obj).encode() + b"\n")
        self.proc.stdin.flush()

    def next(self, timeout: float) -> Optional[Dict[str, Any]]:
        """The next event (ticks skipped), or None when none came within ``timeout``."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while True:
            if b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                event = json.loads(line)
                if event.get("event") != "tick":
                    return event
                continue
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            data = os.read(fd, 65536)
            if not data:
                return None
            self.buf += data

    def until(self, pred, timeout: float) -> List[Dict[str, Any]]:
        """Events until one matches ``pred`` (returned last); fails after ``timeout``."""
        seen: List[Dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            event = self.next(max(0.0, deadline - time.monotonic()))
            assert event is not None, f"no matching event within {timeout}s; saw {seen}"
            seen.append(event)
            if pred(event):
                return seen

    def close(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait(timeout=5)


def _start(agent: Agent, code: str) -> Dict[str, Any]:
    script = agent.script(f"s{time.monotonic_ns()}.py", code)
    return agent.start_ok(agent.key(), TARGET_PYTHON, script)


def _text(events: List[Dict[str, Any]], stream: str = "stdout") -> bytes:
    return b"".join(base64.b64decode(e["logs"][stream]["data_b64"]) for e in events if e.get("logs"))


def test_end_is_pushed_and_eof_exits(agent: Agent) -> None:
    """The job cannot end before the test opens its gate, so the first event is the job as it
    runs and the end comes later, pushed by the watch (no command sent after the sub). How soon
    it is pushed is measured in benchmarks/watch_bench.py, not here."""
    gate = agent.workdir / "end-gate"
    job = _start(agent, f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.02)\n")
    w = WatchProc(agent)
    assert w.hello["event"] == "hello" and w.hello["ok"] is True
    w.send({"cmd": "sub", "sid": "a", "job_id": job["job_id"], "offsets": None})
    first = w.next(30)
    assert first is not None and first["sid"] == "a" and first["job"]["status"] in ("STARTING", "RUNNING")
    assert "logs" not in first
    gate.touch()
    events = w.until(lambda e: e.get("job") and e["job"]["status"] == "SUCCEEDED", 60)
    assert all(e["sid"] == "a" and e["job"]["status"] in ("STARTING", "RUNNING") for e in events[:-1]), events
    end = events[-1]
    assert end["job"]["finished_at"] is not None  # from the exit record: often before the DB has it
    assert end["job"]["exit_code"] == 0
    assert w.close() == 0


def test_log_lines_pushed_with_offsets_no_byte_twice(agent: Agent) -> None:
    """Line i is printed, then the job waits for gate i, which the test creates only after it
    has seen line i pushed: each line can only arrive in a push of its own (pushed as they
    came, not all at the end), whatever the machine's load."""
    gates = agent.workdir / "gates"
    gates.mkdir()
    code = (f"import os, sys, time\nfor i in range(6):\n    print('line', i, flush=True)\n"
            f"    while not os.path.exists(os.path.join({str(gates)!r}, str(i))): time.sleep(0.02)\n"
            "sys.stdout.write('tail-no-newline'); sys.stdout.flush()\n")
    job = _start(agent, code)
    w = WatchProc(agent)
    w.send({"cmd": "sub", "sid": "s", "job_id": job["job_id"], "offsets": {"stdout": 0, "stderr": 0}})
    events: List[Dict[str, Any]] = []
    for i in range(6):
        want = b"".join(b"line %d\n" % n for n in range(i + 1))
        while _text(events) != want:  # the 60 s ceiling is for a hang, not a measurement
            e = w.next(60)
            assert e is not None and want.startswith(_text([*events, e])), (want, events, e)
            events.append(e)
        (gates / str(i)).touch()
    events += w.until(lambda e: e.get("job") and e["job"]["status"] == "SUCCEEDED", 60)
    offset = 0
    for e in events:  # each event starts where the previous one ended
        chunk = e["logs"]["stdout"]
        assert chunk["offset"] == offset, events
        offset = chunk["next_offset"]
    text = _text(events)
    assert text == b"".join(b"line %d\n" % i for i in range(6)) + b"tail-no-newline"
    pushes = [_text([e]) for e in events if _text([e])]
    assert pushes[:6] == [b"line %d\n" % i for i in range(6)], pushes  # one push per line, in order
    assert b"".join(pushes[6:]) == b"tail-no-newline", pushes
    assert events[-1]["logs"]["stdout"]["eof"] is True
    assert w.close() == 0


def test_resubscribe_from_callers_offsets_and_unsubscribe(agent: Agent) -> None:
    gate = agent.workdir / "gate"
    job = _start(agent, "import os, time\nfor i in range(30):\n    print(i, flush=True); time.sleep(0.1)\n"
                        f"while not os.path.exists({str(gate)!r}): time.sleep(0.02)\n")
    w = WatchProc(agent)
    w.send({"cmd": "sub", "sid": "s", "job_id": job["job_id"], "offsets": {"stdout": 0, "stderr": 0}})
    events = w.until(lambda e: len(_text([e])) > 0, 30)
    mine = events[-1]["logs"]["stdout"]["next_offset"]
    # the caller showed up to `mine`; it resubscribes from there (e.g. after a reconnect)
    w.send({"cmd": "sub", "sid": "s", "job_id": job["job_id"], "offsets": {"stdout": mine, "stderr": 0}})
    again = w.until(lambda e: e.get("logs", {}).get("stdout", {}).get("offset") == mine, 30)
    assert again[-1]["logs"]["stdout"]["offset"] == mine
    w.send({"cmd": "unsub", "sid": "s"})
    # a barrier instead of a pause: the watch handles its commands in order, one at a time, so
    # whatever it sends after answering this command comes after the unsub
    w.send({"cmd": "record", "sid": "barrier", "job_id": job["job_id"],
            "offsets": {"stdout": 0, "stderr": 0}})
    w.until(lambda e: e.get("event") == "recorded", 30)
    late = []
    while True:  # the job still prints (for ~3 s, then waits on its gate): none of it comes
        e = w.next(1.0)
        if e is None:
            break
        late.append(e)
    assert [e for e in late if e.get("sid") == "s"] == [], late
    gate.touch()
    agent.wait_status(job["job_id"], timeout=60)
    assert w.close() == 0


def test_record_writes_log_shown_and_bad_commands_answer_one_error(agent: Agent) -> None:
    job = _start(agent, "print('x')")
    agent.wait_status(job["job_id"])
    w = WatchProc(agent)
    w.send({"cmd": "record", "sid": "r", "job_id": job["job_id"], "offsets": {"stdout": 2, "stderr": 0}})
    rec = w.until(lambda e: e.get("event") == "recorded", 5)[-1]
    assert rec["job_id"] == job["job_id"]
    assert agent.job_row(job["job_id"])["stdout_shown"] == 2
    w.proc.stdin.write(b"not json\n")
    w.send({"cmd": "frobnicate", "sid": "x"})
    w.send({"cmd": "sub", "sid": "x", "job_id": "../etc", "offsets": None})
    errors = [w.next(3) for _ in range(3)]
    assert all(e["event"] == "error" and e["error"]["kind"] for e in errors), errors
    w.send({"cmd": "sub", "sid": "u", "job_id": "a" * 32, "offsets": None})  # well-formed, unknown
    unknown = w.next(3)
    assert unknown["sid"] == "u" and unknown["job"] is None
    assert w.close() == 0


def test_lost_supervisor_is_found_by_the_periodic_check(agent: Agent) -> None:
    job = _start(agent, "import time; time.sleep(30)")
    running = agent.wait_status(job["job_id"], statuses={"RUNNING"})
    w = WatchProc(agent, check_every=0.5)
    w.send({"cmd": "sub", "sid": "s", "job_id": job["job_id"], "offsets": None})
    assert w.next(5)["job"]["status"] == "RUNNING"
    os.kill(running["worker_pid"], 9)
    os.kill(running["target_pid"], 9)
    end = w.until(lambda e: e.get("job") and e["job"]["status"] not in ("STARTING", "RUNNING"), 5)[-1]
    assert end["job"]["status"] == "LOST"
    assert w.close() == 0


def test_a_thousand_subscriptions_each_answered_and_an_end_among_them_pushed(agent: Agent) -> None:
    """1,000 subscribed jobs (rows and log files made directly; their processes are not needed):
    each sub is answered once, and an end among them is still pushed. What a round costs (CPU
    per second) and how soon that end comes are measured in benchmarks/watch_bench.py."""
    flag = agent.workdir / "end-now"
    job = _start(agent, f"import os, time\nwhile not os.path.exists({str(flag)!r}): time.sleep(0.02)\n")
    agent.wait_status(job["job_id"], statuses={"RUNNING"})
    conn = agent.db()
    row = dict(conn.execute("SELECT * FROM jobs WHERE job_id = ?", (job["job_id"],)).fetchone())
    cols = list(row)
    fakes = []
    conn.execute("BEGIN")  # one transaction (autocommit would fsync 1,000 times)
    if True:
        for i in range(1000):
            fake = dict(row, job_id=f"{i:032x}", run_key=f"fake-{i}", status="RUNNING")
            fakes.append(fake["job_id"])
            conn.execute(f"INSERT INTO jobs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                         [fake[c] for c in cols])
            (agent.home / "logs" / f"{fake['job_id']}.stdout").write_bytes(b"")
    conn.execute("COMMIT")
    conn.close()
    w = WatchProc(agent, interval=0.2, check_every=300)
    subs = [{"cmd": "sub", "sid": j, "job_id": j, "offsets": {"stdout": 0, "stderr": 0}} for j in fakes]
    subs.append({"cmd": "sub", "sid": "real", "job_id": job["job_id"], "offsets": {"stdout": 0, "stderr": 0}})
    # written from a thread: the agent answers each sub at once, and a test that wrote all 1,001
    # before reading would fill both pipes and wait on itself
    writer = threading.Thread(target=lambda: [w.send(s) for s in subs], daemon=True)
    writer.start()
    answers = w.until(lambda e: e.get("sid") == "real", 120)
    assert sorted(e["sid"] for e in answers) == sorted([*fakes, "real"])  # each sub answered once
    flag.write_text("")
    w.until(lambda e: e.get("sid") == "real" and e["job"]["status"] == "SUCCEEDED", 60)
    assert w.close() == 0


def test_watch_never_holds_a_lock_writers_wait_on(agent: Agent) -> None:
    """In a rollback-journal database (a state dir on NFS) a reader that kept a transaction open
    would block every writer. With the watch running its rounds, an exclusive lock is still
    taken, time after time (the busy timeout is a ceiling for a watch that never lets go: a
    round's own short read may delay it on a loaded machine, which is not what is tested)."""
    agent.wait_status(_start(agent, "pass")["job_id"])  # creates the database
    mode = []

    def to_delete_mode() -> bool:  # once the first job's supervisor has let go of the database
        conn = agent.db(timeout=0.2)
        try:
            mode.append(conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0])
            return True
        except sqlite3.OperationalError:
            return False
        finally:
            conn.close()

    wait_until(to_delete_mode, timeout=20, interval=0.1, message="journal_mode=DELETE")
    assert mode[-1] == "delete"
    job = _start(agent, "import time\nfor i in range(40):\n    print(i, flush=True); time.sleep(0.05)\n")
    agent.wait_status(job["job_id"], statuses={"RUNNING"})
    conn = agent.db()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # the agent kept it
    conn.close()
    w = WatchProc(agent, interval=0.02, check_every=0.1)
    w.send({"cmd": "sub", "sid": "s", "job_id": job["job_id"], "offsets": {"stdout": 0, "stderr": 0}})
    assert w.next(5)["sid"] == "s"
    for _ in range(30):
        c = agent.db(timeout=10)
        c.execute("BEGIN EXCLUSIVE")  # raises "database is locked" if the watch kept a lock
        c.execute("COMMIT")
        c.close()
        w.send({"cmd": "record", "sid": "s", "job_id": job["job_id"], "offsets": {"stdout": 1, "stderr": 0}})
        time.sleep(0.03)
    assert w.until(lambda e: e.get("event") == "recorded", 5)
    assert w.close() == 0


def test_the_watch_stores_the_ends_it_pushes(agent: Agent) -> None:
    """Light jobs that end cleanly leave their rows RUNNING (light.py, quick end); the watch,
    which meets their ends first, stores them in its round's write: no other reader runs here."""
    gate = agent.workdir / "gate"
    runs = agent.workdir / "runs"
    cmd = ["sh", "-c", f"echo run >> '{runs}'; while [ ! -e '{gate}' ]; do sleep 0.02; done; exit 4"]
    jobs = [agent.start_ok(agent.key(f"k{i}"), *cmd) for i in range(6)]
    w = WatchProc(agent)
    for i, job in enumerate(jobs):
        w.send({"cmd": "sub", "sid": f"s{i}", "job_id": job["job_id"], "offsets": None})
    gate.touch()
    ended = set()
    w.until(lambda e: bool(e.get("job")) and e["job"]["status"] == "FAILED"
            and not ended.add(e["sid"]) and len(ended) == len(jobs), 15)
    wait_until(lambda: all(agent.job_row(j["job_id"])["status"] == "FAILED" for j in jobs), timeout=5,
               message="the watch stored every end")
    assert {agent.job_row(j["job_id"])["exit_code"] for j in jobs} == {4}
    assert runs.read_text() == "run\n" * len(jobs)
    assert w.close() == 0

"""What one watch round costs (frontends/watch.py), counted, not timed: the SQL statements it
runs, the ``stat`` calls it makes and the log bytes it reads, against 100 subscribed jobs in a
real SQLite file. A round after one job's end reads that one row (schema level 9's change
sequence), not the hundred; quiet jobs' logs are looked at less and less often; a round's bytes
are shared out among the jobs whose logs grew."""

from __future__ import annotations

import io
import json
import os

import pytest

from remote_agent.common import vocab
from remote_agent.frontends import watch
from remote_agent.store import db, jobsql
from tests.unit.agent.rows import NO_SUCH_PID, local_job, new_state

N = 100


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _sub(w: watch.Watcher, job_id: str, offsets: dict | None = None) -> None:
    w.handle(json.dumps({"cmd": "sub", "sid": job_id, "job_id": job_id,
                         "offsets": offsets if offsets is not None else {"stdout": 0, "stderr": 0}}).encode())


@pytest.fixture
def watched(tmp_path):
    rows = [local_job(f"j{i:03d}", os.getpid(), vocab.RUNNING, target_pid=NO_SUCH_PID) for i in range(N)]
    state = new_state(tmp_path, *rows)
    os.makedirs(os.path.join(state, "logs"), exist_ok=True)
    out, clock = io.StringIO(), Clock()
    w = watch.Watcher(state, interval=0.2, check_every=300.0, out=out, clock=clock)
    for r in rows:
        _sub(w, r["job_id"])
    w.round()  # the first round reads every row once and learns where the change sequence is
    out.truncate(0)
    out.seek(0)
    return state, w, out, clock


def _statements(w: watch.Watcher) -> list[str]:
    seen: list[str] = []
    assert w.conn is not None
    w.conn.set_trace_callback(seen.append)
    return seen


def _events(out: io.StringIO) -> list[dict]:
    lines = [json.loads(x) for x in out.getvalue().splitlines() if x]
    out.truncate(0)
    out.seek(0)
    return lines


def test_a_round_after_one_end_reads_only_the_changed_row(watched):
    state, w, out, clock = watched
    seen = _statements(w)
    clock.now += 0.2
    w.round()  # nothing changed: one PRAGMA, no read of any row
    assert [s for s in seen if "jobs" in s] == [] and any("data_version" in s for s in seen)
    seen.clear()
    with db.writing(state) as conn:
        jobsql.update_job(conn, "j042", vocab.ACTIVE, status=vocab.SUCCEEDED, exit_code=0, finished_at=2)
    clock.now += 0.2
    w.round()
    reads = [s for s in seen if "FROM jobs" in s]
    assert len(reads) == 1 and "change_seq >" in reads[0], seen  # not the 100 rows: the one change
    ends = [e for e in _events(out) if e.get("event") == "job"]
    assert [(e["job_id"], e["job"]["status"]) for e in ends] == [("j042", "SUCCEEDED")]
    assert "j042" not in {s.job_id for s in w.subs.values()} and len(w.subs) == N - 1
    # two ends in one commit: both, and still one read
    seen.clear()
    with db.writing(state) as conn:
        for j in ("j001", "j099"):
            jobsql.update_job(conn, j, vocab.ACTIVE, status=vocab.FAILED, exit_code=3, finished_at=2)
    clock.now += 0.2
    w.round()
    assert len([s for s in seen if "FROM jobs" in s]) == 1
    assert sorted(e["job_id"] for e in _events(out) if e.get("event") == "job") == ["j001", "j099"]


def test_a_change_that_is_not_a_subscribed_jobs_status_sends_nothing(watched):
    state, w, out, clock = watched
    with db.writing(state) as conn:
        jobsql.record_shown(conn, "j005", {"stdout": 0, "stderr": 0})  # a write, no status change
    clock.now += 0.2
    w.round()
    assert [e for e in _events(out) if e.get("event") == "job"] == []


def test_the_periodic_check_still_reads_every_row(watched):
    """Every check_every seconds the whole subscription is read (a dead supervisor, a cleaned
    row): the backstop for what the change sequence cannot say."""
    _, w, _, clock = watched
    seen = _statements(w)
    clock.now += 300.0
    w.round()
    assert any("job_id IN" in s for s in seen)


def test_quiet_jobs_logs_are_looked_at_less_and_less_often(watched):
    state, w, out, clock = watched
    looks = []
    for _ in range(25):  # five seconds of rounds, no job writes a byte
        before = w.stats
        clock.now += 0.2
        w.round()
        looks.append((w.stats - before) // (2 * N))
    # every job at 0.2, 0.6, 1.4, 3.0 s after the first look (2 stats each), then every 2 s
    assert sum(looks) <= 5 and looks[0] == 1, looks  # 25 rounds x 200 stats before this change
    # a quiet job that writes is seen within QUIET_MAX, and then looked at every round
    with open(os.path.join(state, "logs", "j007.stdout"), "ab") as f:
        f.write(b"hello\n")
    got = []
    for _ in range(int(watch.QUIET_MAX / 0.2) + 1):
        clock.now += 0.2
        w.round()
        got += [e for e in _events(out) if e.get("event") == "job"]
        if got:
            break
    assert [e["job_id"] for e in got] == ["j007"]
    assert w.subs["j007"].quiet == 0.0


def test_a_rounds_bytes_are_shared_so_chatty_jobs_do_not_hold_back_a_quiet_one(watched, monkeypatch):
    state, w, out, clock = watched
    monkeypatch.setattr(watch, "ROUND_BYTES", 64 * 1024)
    line = b"x" * 99 + b"\n"
    for j in ("j010", "j011", "j012"):  # three chatty jobs, 1 MB each
        with open(os.path.join(state, "logs", f"{j}.stdout"), "ab") as f:
            f.write(line * 10000)
    with open(os.path.join(state, "logs", "j013.stdout"), "ab") as f:
        f.write(b"the one line\n")
    clock.now += 0.2
    w.round()
    events = {e["job_id"]: e for e in _events(out) if e.get("event") == "job"}
    assert set(events) == {"j010", "j011", "j012", "j013"}  # the quiet job's line in the same round
    share = max(watch.MIN_SHARE, 64 * 1024 // (2 * 4))
    for j in ("j010", "j011", "j012"):
        assert w.subs[j].offsets["stdout"] <= share and w.subs[j].offsets["stdout"] % 100 == 0
    assert w.subs["j013"].offsets["stdout"] == len(b"the one line\n")


def test_the_change_sequence_moves_on_each_status_change_only(tmp_path):
    state = new_state(tmp_path, local_job("a", NO_SUCH_PID, vocab.STARTING), local_job("b", NO_SUCH_PID))

    def seqs() -> dict:
        with db.writing(state) as conn:
            return {r["job_id"]: r["change_seq"] for r in conn.execute("SELECT job_id, change_seq FROM jobs")}

    assert seqs() == {"a": None, "b": None}
    with db.writing(state) as conn:
        jobsql.update_job(conn, "a", vocab.ACTIVE, status=vocab.RUNNING)
        jobsql.update_job(conn, "b", vocab.ACTIVE, target_pid=5)  # no status change: no new number
    assert seqs() == {"a": 1, "b": None}
    with db.writing(state) as conn:
        jobsql.update_job(conn, "b", vocab.ACTIVE, status=vocab.RUNNING)
        jobsql.update_job(conn, "a", vocab.ACTIVE, status=vocab.SUCCEEDED)
        jobsql.update_job(conn, "a", vocab.ACTIVE, status=vocab.FAILED)  # not active any more: no-op
    assert seqs() == {"a": 3, "b": 2}

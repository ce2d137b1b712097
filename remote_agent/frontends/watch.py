"""The ``watch`` op: one long-lived agent per host that pushes job ends and new log lines.

A triggerer watching many jobs on one host opens one SSH channel running ``rpc`` with a first
line ``{"op": "watch", ...}`` and keeps it open. It then writes commands, one JSON object per
line (``sub``/``unsub``/``record``, see docs/PROTOCOL.md), and reads events, one JSON object
per line. The steady state costs no exec and no Python start on the host.

How it notices changes without re-reading every job on every round (the rounds are ``interval``
apart, 0.2 s by default):

- job ends: ``PRAGMA data_version`` on the one open read connection changes when anybody
  commits; only then are the subscribed jobs re-read (one indexed query). The supervisor writes
  the exit record (logs/<id>.exit) before the database; its rename changes the logs dir's mtime,
  and then the jobs with a record are reconciled (their end is known before the DB says so).
- a supervisor that died without writing anything: every ``check_every`` seconds (5 s) the
  subscribed active jobs are reconciled (process identity), as a poll would.
- log growth: two ``stat`` calls per subscribed job and round; bytes are read only when a file
  grew, and only whole lines while the job runs (as ``poll``).

It never keeps a transaction open (autocommit reads; in a rollback-journal database a held read
transaction would block every writer). It writes, in one short transaction per round and only
after that round's events went out, the offsets callers ask it to ``record`` and the outcome of
the jobs it found ended with nobody left to store it (a light job's quick end, light.py). It
exits 0 when its stdin reaches EOF (the channel closed). Offsets stay the caller's: each event
says where its bytes start, and a ``sub`` again with the caller's offsets restarts from there.
"""

import json
import os
import select
import sqlite3
import sys
import time

from remote_agent import PROTOCOL, __version__
from remote_agent.common.errors import AgentError, bad_args
from remote_agent.common.validate import check_job_id
from remote_agent.common.vocab import ACTIVE, STREAMS, TERMINAL
from remote_agent.frontends import render
from remote_agent.jobs.liveness import reconcile
from remote_agent.store import db, exitrec, jobsql, reads, sqlite
from remote_agent.store.logs import read_chunk

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    from typing import Any, Dict, List, Optional, Tuple  # noqa: F401

DEFAULT_INTERVAL = 0.2
DEFAULT_CHECK_EVERY = 5.0
DEFAULT_LIMIT = 65536
HEARTBEAT = 15.0
MAX_SID = 200
COMMANDS = ("sub", "unsub", "record")
#: Rounds a job's end is offered to the database before it is left to the next reader.
SETTLE_TRIES = 5


def _number(req, key, default, low, high):
    # type: (Dict[str, Any], str, float, float, float) -> float
    value = req.get(key, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad_args("request field {!r} must be a number".format(key))
    return max(low, min(float(value), high))


def options(req):
    # type: (Dict[str, Any]) -> Tuple[float, float, int]
    """(interval, check_every, limit) of a watch request, clamped to sane ranges."""
    interval = _number(req, "interval", DEFAULT_INTERVAL, 0.02, 5.0)
    check_every = _number(req, "check_every", DEFAULT_CHECK_EVERY, interval, 300.0)
    limit = int(_number(req, "limit", DEFAULT_LIMIT, 1024, 8 << 20))
    return interval, check_every, limit


def parse_command(line):
    # type: (bytes) -> Dict[str, Any]
    """One command line -> ``{"cmd", "sid", "job_id"?, "offsets"?}``; AgentError(bad args) if bad.

    ``sub``: watch ``job_id`` (offsets: the log bytes the caller has shown, or null for no logs);
    ``unsub``: stop; ``record``: store ``offsets`` as shown (the job's ``log_shown``).
    """
    try:
        obj = json.loads(line.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise bad_args("watch command is not valid JSON") from None
    if not isinstance(obj, dict):
        raise bad_args("watch command must be a JSON object")
    cmd = obj.get("cmd")
    if cmd not in COMMANDS:
        raise bad_args("unknown watch command {!r}; known: {}".format(cmd, ", ".join(COMMANDS)))
    sid = obj.get("sid")
    if not isinstance(sid, str) or not sid or len(sid) > MAX_SID:
        raise bad_args("watch command needs a sid (a string of 1-{} chars)".format(MAX_SID))
    out = {"cmd": cmd, "sid": sid}  # type: Dict[str, Any]
    if cmd in ("sub", "record"):
        out["job_id"] = check_job_id(obj.get("job_id"))
        offsets = obj.get("offsets")
        if offsets is not None and not (isinstance(offsets, dict) and all(
                k in STREAMS and isinstance(v, int) and not isinstance(v, bool) and v >= 0
                for k, v in offsets.items())):
            raise bad_args("offsets must map 'stdout'/'stderr' to byte offsets >= 0")
        if cmd == "record" and not offsets:
            raise bad_args("record needs offsets")
        out["offsets"] = None if offsets is None else {s: int(offsets.get(s, 0)) for s in STREAMS}
    return out


class Sub(object):
    """One subscription: the job, the offsets sent up to, the last status and job object sent."""

    __slots__ = ("job", "job_id", "offsets", "sid", "status")

    def __init__(self, sid, job_id, offsets):
        # type: (str, str, Optional[Dict[str, int]]) -> None
        self.sid = sid
        self.job_id = job_id
        self.offsets = offsets
        self.status = None  # type: Optional[str]
        self.job = None  # type: Optional[Dict[str, Any]]


class Watcher(object):
    """The state of one watch process; ``handle`` takes commands, ``round`` looks for changes."""

    def __init__(self, state_dir, interval=DEFAULT_INTERVAL, check_every=DEFAULT_CHECK_EVERY,
                 limit=DEFAULT_LIMIT, out=None, clock=time.monotonic):
        # type: (str, float, float, int, Any, Any) -> None
        self.state_dir = state_dir
        self.interval = interval
        self.check_every = check_every
        self.limit = limit
        self.out = out if out is not None else sys.stdout
        self.clock = clock
        self.subs = {}  # type: Dict[str, Sub]
        self.records = {}  # type: Dict[str, Dict[str, int]]
        self.settle = []  # type: List[str]
        self.settle_tries = {}  # type: Dict[str, int]
        self.conn = None  # type: Optional[sqlite3.Connection]
        self.version = None  # type: Optional[int]
        self.logs_mtime = None  # type: Optional[int]
        self.next_check = 0.0
        self.last_out = clock()
        self.buffer = []  # type: List[str]

    # -- output ------------------------------------------------------------------------------
    def emit(self, event):
        # type: (Dict[str, Any]) -> None
        self.buffer.append(json.dumps(event))

    def flush(self):
        # type: () -> None
        if self.buffer:
            self.out.write("\n".join(self.buffer) + "\n")
            self.out.flush()
            self.buffer = []
            self.last_out = self.clock()
        elif self.clock() - self.last_out >= HEARTBEAT:
            self.emit({"event": "tick"})  # lets the caller tell a quiet channel from a dead one
            self.flush()

    def error(self, sid, exc):
        # type: (Optional[str], AgentError) -> None
        self.emit({"event": "error", "sid": sid,
                   "error": {"code": exc.code, "kind": exc.kind, "message": " ".join(exc.message.split())}})

    # -- commands ----------------------------------------------------------------------------
    def handle(self, line):
        # type: (bytes) -> None
        if not line.strip():
            return
        try:
            cmd = parse_command(line)
        except AgentError as exc:
            self.error(None, exc)
            return
        if cmd["cmd"] == "unsub":
            self.subs.pop(cmd["sid"], None)
        elif cmd["cmd"] == "record":
            old = self.records.get(cmd["job_id"]) or {}
            self.records[cmd["job_id"]] = {s: max(old.get(s, 0), cmd["offsets"][s]) for s in STREAMS}
        else:
            sub = self.subs[cmd["sid"]] = Sub(cmd["sid"], cmd["job_id"], cmd["offsets"])
            self._open()
            row = jobsql.get_job(self.conn, sub.job_id) if self.conn is not None else None
            if row is not None and self.conn is not None:
                row = reconcile(self.conn, row, deferred=self.settle)
            self.send(sub, row)

    def send(self, sub, row):
        # type: (Sub, Optional[Dict[str, Any]]) -> None
        """One ``job`` event (a poll item plus ``sid``); a terminal or unknown job ends the sub."""
        if row is None:
            self.emit({"event": "job", "sid": sub.sid, "job_id": sub.job_id, "job": None})
            self.subs.pop(sub.sid, None)
            return
        sub.job = render.job_object(row, self.state_dir)
        sub.status = row["status"]
        terminal = sub.status in TERMINAL
        self._emit_job(sub, self._chunks(sub, terminal) if sub.offsets is not None else None)
        if terminal:
            self.subs.pop(sub.sid, None)

    def _chunks(self, sub, terminal):
        # type: (Sub, bool) -> Dict[str, Any]
        """The log bytes past the offsets sent (whole lines while running); moves them on."""
        assert sub.offsets is not None
        logs = {}
        for s in STREAMS:
            chunk = read_chunk(self.state_dir, sub.job_id, s, sub.offsets[s], self.limit, terminal)
            sub.offsets[s] = chunk["next_offset"]
            logs[s] = chunk
        return logs

    def _emit_job(self, sub, logs):
        # type: (Sub, Optional[Dict[str, Any]]) -> None
        event = {"event": "job", "sid": sub.sid, "job_id": sub.job_id, "job": sub.job}  # type: Dict[str, Any]
        if logs is not None:
            event["logs"] = logs
        self.emit(event)

    # -- rounds ------------------------------------------------------------------------------
    def _open(self):
        # type: () -> None
        if self.conn is None:
            self.conn = sqlite.open_read(self.state_dir)  # None until anything is stored
            self.version = None

    def round(self):
        # type: () -> None
        """Look for ends and log growth of the subscribed jobs, send what changed, then write
        pending records and the ends found (after the send: a busy database delays no event)."""
        try:
            self._open()
            if self.conn is not None:
                self._ends()
        except sqlite3.Error as exc:
            self.error(None, sqlite.db_error(exc, self.state_dir))
            self._close()
        except AgentError as exc:
            self.error(None, exc)
            self._close()
        self._logs()
        self.flush()
        self._write()

    def _close(self):
        # type: () -> None
        if self.conn is not None:
            try:
                self.conn.close()
            except sqlite3.Error:
                pass
        self.conn = None

    def _ends(self):
        # type: () -> None
        assert self.conn is not None
        version = reads.data_version(self.conn)
        changed, self.version = version != self.version, version
        try:
            mtime = os.stat(os.path.join(self.state_dir, "logs")).st_mtime_ns  # type: Optional[int]
        except OSError:
            mtime = None
        dir_changed, self.logs_mtime = mtime != self.logs_mtime, mtime
        now = self.clock()
        check = now >= self.next_check
        if check:
            self.next_check = now + self.check_every
        if not (changed or dir_changed or check) or not self.subs:
            return
        subs = list(self.subs.values())
        rows = {r["job_id"]: r for r in reads.jobs_by_ids(self.conn, sorted({s.job_id for s in subs}))}
        for sub in subs:
            row = rows.get(sub.job_id)
            if row is None:
                self.send(sub, None)  # cleaned while watched
            elif row["status"] != sub.status:
                self.send(sub, reconcile(self.conn, row, deferred=self.settle))
            elif row["status"] in ACTIVE and (check or (
                    dir_changed and os.path.exists(exitrec.path(self.state_dir, sub.job_id)))):
                # a dead supervisor, or an end not yet in the DB
                row = reconcile(self.conn, row, deferred=self.settle)
                if row["status"] != sub.status:
                    self.send(sub, row)

    def _logs(self):
        # type: () -> None
        """Subscribed running jobs whose log files grew past the offsets sent: new whole lines."""
        logs_dir = os.path.join(self.state_dir, "logs")
        for sub in list(self.subs.values()):
            if sub.offsets is None or sub.job is None:
                continue
            grew = False
            for s in STREAMS:
                try:
                    size = os.stat(os.path.join(logs_dir, "{}.{}".format(sub.job_id, s))).st_size
                except OSError:
                    continue
                grew = grew or size > sub.offsets[s]
            if grew:
                before = dict(sub.offsets)
                logs = self._chunks(sub, False)
                if sub.offsets != before:  # else only half a line so far: nothing to say yet
                    self._emit_job(sub, logs)

    def _write(self):
        # type: () -> None
        """One short write transaction for the round: the offsets callers asked to ``record``,
        and the outcome of every job found ended with its supervisor gone (a light job that
        needed no finisher, light.py), so a thousand ends cost a few commits, not a thousand.
        The ends are only bookkeeping (any reader that meets the row stores them too): a
        failed write is tried again in the next rounds, then left to those readers."""
        if not self.records and not self.settle:
            return
        records, self.records = self.records, {}
        settle, self.settle = sorted(set(self.settle)), []
        try:
            with db.writing(self.state_dir) as conn:
                for job_id, offsets in sorted(records.items()):
                    jobsql.record_shown(conn, job_id, offsets)
                for job_id in settle:
                    row = jobsql.get_job(conn, job_id)
                    if row is not None:
                        reconcile(conn, row, locked=True)
        except (AgentError, sqlite3.Error) as exc:
            for job_id in settle:
                tries = self.settle_tries.get(job_id, 0) + 1
                if tries < SETTLE_TRIES:
                    self.settle_tries[job_id] = tries
                    self.settle.append(job_id)
                else:
                    self.settle_tries.pop(job_id, None)
            if records:
                err = exc if isinstance(exc, AgentError) else sqlite.db_error(exc, self.state_dir)
                self.error(None, err)
            return
        for job_id in settle:
            self.settle_tries.pop(job_id, None)
        for job_id in sorted(records):
            self.emit({"event": "recorded", "job_id": job_id})


def serve(req, state_dir, rest=b"", stdin_fd=0):
    # type: (Dict[str, Any], str, bytes, int) -> int
    """Run the watch until stdin ends (exit 0). ``rest``: bytes already read after the request."""
    interval, check_every, limit = options(req)
    watcher = Watcher(state_dir, interval, check_every, limit)
    watcher.emit({"ok": True, "protocol": PROTOCOL, "agent_version": __version__, "op": "watch",
                  "event": "hello", "interval": interval, "check_every": check_every,
                  "pid": os.getpid()})  # for support and tests: which process watches
    watcher.flush()
    buf = rest
    next_round = time.monotonic()
    try:
        while True:
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                watcher.handle(line)
            now = time.monotonic()
            if now >= next_round:
                watcher.round()
                next_round = now + interval
            watcher.flush()
            ready = select.select([stdin_fd], [], [], max(0.0, next_round - time.monotonic()))[0]
            if ready:
                data = os.read(stdin_fd, 65536)
                if not data:
                    return 0  # the channel closed
                buf += data
    except BrokenPipeError:
        return 0
    finally:
        watcher._close()

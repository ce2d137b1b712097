"""The ``watch`` op: one long-lived agent per host that pushes job ends and new log lines.

A triggerer watching many jobs on one host opens one SSH channel running ``rpc`` with a first
line ``{"op": "watch", ...}`` and keeps it open. It then writes commands, one JSON object per
line (``sub``/``unsub``/``record``, see docs/PROTOCOL.md), and reads events, one JSON object
per line. The steady state costs no exec and no Python start on the host.

How it notices changes without re-reading every job on every round (the rounds are ``interval``
apart, 0.2 s by default):

- job ends: ``PRAGMA data_version`` on the one open read connection changes when anybody
  commits; only then does it read the rows whose status changed since its last round (schema
  level 9's ``change_seq``, one index range scan: O(changes), not O(subscriptions)). The
  supervisor writes the exit record (logs/<id>.exit) before the database; its rename changes the
  logs dir's mtime, and then the jobs with a record are reconciled (their end is known before
  the DB says so).
- a supervisor that died without writing anything: every ``check_every`` seconds (5 s) every
  subscribed row is read and the active ones reconciled (process identity), as a poll would.
- log growth: two ``stat`` calls per job whose logs grew lately; a quiet job's logs are looked at
  less and less often (up to QUIET_MAX apart). Bytes are read only when a file grew, whole lines
  while the job runs (as ``poll``), each grown job an equal share of the round's ROUND_BYTES.

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
from remote_agent.common.errors import AgentError, error_body
from remote_agent.common.vocab import ACTIVE, STREAMS, TERMINAL
from remote_agent.frontends import render
from remote_agent.frontends.watch_commands import (
    DEFAULT_CHECK_EVERY,
    DEFAULT_INTERVAL,
    DEFAULT_LIMIT,
    options,
    parse_command,
)
from remote_agent.jobs.liveness import reconcile
from remote_agent.store import db, exitrec, jobsql, reads, sqlite
from remote_agent.store.logs import read_chunk

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    from typing import Any, Dict, List, Optional, Tuple  # noqa: F401

HEARTBEAT = 15.0
#: Rounds a job's end is offered to the database before it is left to the next reader.
SETTLE_TRIES = 5
#: The longest a quiet job's logs go unlooked-at (s): a line it writes after a quiet spell is
#: pushed within this (its end, and every line before it, comes with the end at once).
QUIET_MAX = 2.0
#: Log bytes one round reads over all jobs (each grown job an equal share, at least MIN_SHARE).
ROUND_BYTES = 1 << 20
MIN_SHARE = 4096


class Sub(object):
    """One subscription: the job, the offsets sent up to, the last status and job object sent."""

    __slots__ = ("job", "job_id", "next_stat", "offsets", "quiet", "sid", "status")

    def __init__(self, sid, job_id, offsets):
        # type: (str, str, Optional[Dict[str, int]]) -> None
        self.sid = sid
        self.job_id = job_id
        self.offsets = offsets
        self.status = None  # type: Optional[str]
        self.job = None  # type: Optional[Dict[str, Any]]
        self.quiet = 0.0  # seconds between looks at its logs: 0 while they grow, doubling while quiet
        self.next_stat = 0.0  # when its logs are looked at next (the watcher's clock)


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
        self.seq = None  # type: Optional[int]  # the newest change_seq read (None: read every row)
        self.stats = 0  # stat calls on log files (tests count them per round)
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
        self.emit({"event": "error", "sid": sid, "error": error_body(exc)})

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

    def _chunks(self, sub, terminal, limit=None):
        # type: (Sub, bool, Optional[int]) -> Dict[str, Any]
        """The log bytes past the offsets sent (whole lines while running); moves them on."""
        assert sub.offsets is not None
        logs = {}
        for s in STREAMS:
            chunk = read_chunk(self.state_dir, sub.job_id, s, sub.offsets[s], limit or self.limit, terminal)
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
            self.seq = None

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
        seq = self.seq
        full = check or seq is None
        rows = {}  # type: Dict[str, Dict[str, Any]]
        if full:  # every subscribed row (and where the change sequence stands, read first)
            self.seq = reads.change_seq(self.conn)
            rows = {r["job_id"]: r for r in reads.jobs_by_ids(self.conn, sorted({s.job_id for s in subs}))}
        elif changed and seq is not None:  # only the rows whose status changed since the last round
            for r in reads.jobs_changed_since(self.conn, seq):
                rows[r["job_id"]] = r
                seq = max(seq, r["change_seq"])
            self.seq = seq
        for sub in subs:
            row = rows.get(sub.job_id)
            if row is None and full:
                self.send(sub, None)  # cleaned while watched
            elif row is not None and row["status"] != sub.status:
                self.send(sub, reconcile(self.conn, row, deferred=self.settle))
            elif sub.status in ACTIVE and (check or (
                    dir_changed and os.path.exists(exitrec.path(self.state_dir, sub.job_id)))):
                # a dead supervisor, or an end not yet in the DB
                row = row if row is not None else jobsql.get_job(self.conn, sub.job_id)
                if row is None:
                    self.send(sub, None)
                    continue
                row = reconcile(self.conn, row, deferred=self.settle)
                if row["status"] != sub.status:
                    self.send(sub, row)

    def _logs(self):
        # type: () -> None
        """New whole lines of the subscribed running jobs whose logs grew past the offsets sent.

        A job's logs are looked at (two ``stat`` calls) every round while they grow; while they
        do not, the looks get rarer (doubling, up to QUIET_MAX seconds apart), so a round costs
        the chatty jobs' stats, not the subscriptions'. The bytes one round reads are shared
        out: every grown job gets an equal share of ROUND_BYTES (at least MIN_SHARE, at most
        ``limit`` per stream), the rest comes in the next rounds, so a few chatty jobs cannot
        hold back the other jobs' lines (and the ends, sent before the lines, never wait)."""
        logs_dir = os.path.join(self.state_dir, "logs")
        now = self.clock()
        grown = []  # type: List[Sub]
        for sub in list(self.subs.values()):
            if sub.offsets is None or sub.job is None or sub.next_stat > now:
                continue
            grew = False
            for s in STREAMS:
                self.stats += 1
                try:
                    size = os.stat(os.path.join(logs_dir, "{}.{}".format(sub.job_id, s))).st_size
                except OSError:
                    continue
                grew = grew or size > sub.offsets[s]
            if grew:
                grown.append(sub)
                sub.quiet = 0.0
            else:
                sub.quiet = min(QUIET_MAX, max(self.interval, 2 * sub.quiet))
            sub.next_stat = now + sub.quiet
        if not grown:
            return
        share = max(MIN_SHARE, min(self.limit, ROUND_BYTES // (2 * len(grown))))
        for sub in grown:
            before = dict(sub.offsets or {})
            logs = self._chunks(sub, False, share)
            if sub.offsets != before:  # else only half a line so far: looked at again next round
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

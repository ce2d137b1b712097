"""The job's log as a trigger writes it, and what the try's trigger log files say was written.

Why: a trigger that another triggerer takes over (its triggerer died) must go on right after the
last line the task's logs really hold. Not after what the dead trigger recorded as shown on the
host: lines still on their way to the dead triggerer's file are lost with it. Not from the
offsets the task deferred with: every line the dead one wrote would then appear twice. Airflow 3
writes each triggerer's lines of a try to a file of its own beside the task log
(``<task log>.trigger.<triggerer job id>.log``, JSON lines), which another triggerer can read where
the log folder is shared (one machine, a shared volume). So:

* a trigger writes the job's log in *pieces* that depend only on the bytes from where it starts:
  a whole line (up to :data:`PIECE_MAX` bytes) or :data:`PIECE_MAX` bytes of a longer one; a
  partial last line waits for its end (at the job's end the task prints what is left, or the
  trigger that ends the task itself writes it: :meth:`LineFeed.flush`);
* before its first piece it writes a *start line* naming the job, the offsets it starts from and
  a token of its own; its pieces go to two child loggers (``.stdout``, ``.stderr``);
* the pieces counted after the latest start line then give the exact offsets the task's logs
  reach: a new trigger starts from that start line's offsets and skips that many pieces
  (:func:`resume_point`), and a trigger about to fire its event checks its own pieces reached
  its file (:func:`run_of`) before telling the task where to go on.

Pure code: the trigger (triggers/orchesjob.py) reads the files (triggers/log_files.py) and feeds
the answers; tests/unit/provider/triggers/test_log_lines.py drives this module with bytes.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from orchesjob_provider.client.records import JobLogs, normalize_offsets
from remote_agent.common.vocab import STREAMS

#: the longest piece: a longer line is written in pieces of this size
PIECE_MAX = 64 * 1024
#: pieces of each stream whose end offsets a trigger keeps (to step back to what its file holds)
ENDS_KEPT = 10_000

START_FORMAT = (
    "orchesjob: showing the log of job {job} from stdout byte {stdout} "
    "and stderr byte {stderr} (watch {token})"
)
START_RE = re.compile(
    r"^orchesjob: showing the log of job (?P<job>\S+) from stdout byte (?P<stdout>\d+) "
    r"and stderr byte (?P<stderr>\d+) \(watch (?P<token>[0-9a-f]+)\)$"
)


def pieces(buf: bytes) -> tuple[list[bytes], bytes]:
    """Cut ``buf`` into whole pieces and the rest: the same bytes from the same start always give
    the same pieces, whatever chunks they arrived in."""
    out: list[bytes] = []
    i = 0
    while True:
        nl = buf.find(b"\n", i, i + PIECE_MAX)
        if nl >= 0:
            out.append(buf[i : nl + 1])
            i = nl + 1
        elif len(buf) - i >= PIECE_MAX:
            out.append(buf[i : i + PIECE_MAX])
            i += PIECE_MAX
        else:
            return out, buf[i:]


def piece_text(piece: bytes) -> str:
    """A piece as one log line: no line end, undecodable bytes replaced."""
    if piece.endswith(b"\n"):
        piece = piece[:-1]
    if piece.endswith(b"\r"):
        piece = piece[:-1]
    return piece.decode("utf-8", "replace")


class LineFeed:
    """Writes a job's new log bytes in pieces, skipping the first ``skip`` pieces of each stream
    (another trigger wrote them), and knows the offsets up to which the task's logs hold the log.

    No piece is written before every stream's skipped pieces went by: the start line must name,
    for both streams, where the pieces after it begin.

    :param write: ``write(stream, text)`` for one piece.
    :param start_line: ``start_line(offsets)`` once, just before the first piece written.
    :param start: the offsets the bytes fed start at.
    :param skip: pieces per stream not to write (already in the task's logs).
    """

    def __init__(
        self,
        write: Callable[[str, str], None],
        start_line: Callable[[dict[str, int]], None],
        start: Mapping[str, Any] | None,
        skip: Mapping[str, int] | None = None,
    ) -> None:
        self.write = write
        self.start_line = start_line
        self.shown = normalize_offsets(start)  # up to here written (or skipped)
        self.skip = {s: int((skip or {}).get(s, 0)) for s in STREAMS}
        self.pending = {s: b"" for s in STREAMS}  # a piece not whole yet
        self.queued: dict[str, list[bytes]] = {s: [] for s in STREAMS}  # whole, not written yet
        self.written = {s: 0 for s in STREAMS}
        self.first: dict[str, int] | None = None  # the offsets the start line named
        self.ends: dict[str, deque[int]] = {s: deque(maxlen=ENDS_KEPT) for s in STREAMS}

    def feed(self, res: JobLogs, write: bool = True) -> None:
        """Take one answer's new bytes; write the whole pieces unless ``write`` is False (the
        answer with the job's end: its lines are the task's; skipped pieces still go by)."""
        for stream in STREAMS:
            chunk = res.logs.get(stream)
            if chunk is None or not chunk.data:
                continue
            done, self.pending[stream] = pieces(self.pending[stream] + chunk.data)
            for piece in done:
                self._take(stream, piece)
        if write and not any(self.skip.values()):
            self._write_queued()

    def flush(self) -> None:
        """The job ended: a last line without a newline is a piece too (it will not grow), written
        like the others (a trigger that ends the task itself; else the task prints it)."""
        for stream in STREAMS:
            if self.pending[stream]:
                self._take(stream, self.pending[stream])
                self.pending[stream] = b""
        if not any(self.skip.values()):
            self._write_queued()

    def _take(self, stream: str, piece: bytes) -> None:
        if self.skip[stream] > 0:  # another trigger wrote it
            self.skip[stream] -= 1
            self.shown[stream] += len(piece)
        else:
            self.queued[stream].append(piece)

    def _write_queued(self) -> None:
        for stream in STREAMS:
            for piece in self.queued[stream]:
                if self.first is None:
                    self.first = dict(self.shown)
                    self.start_line(dict(self.first))
                self.write(stream, piece_text(piece))
                self.written[stream] += 1
                self.shown[stream] += len(piece)
                self.ends[stream].append(self.shown[stream])
            self.queued[stream] = []

    @property
    def offsets(self) -> dict[str, int]:
        """Up to where the task's logs hold the job's log (held back bytes not included)."""
        return dict(self.shown)

    def step_back(self, confirmed: Mapping[str, int]) -> dict[str, int]:
        """The offsets after the first ``confirmed[stream]`` pieces written: where the task goes
        on when its trigger log file holds only those (the rest never reached it)."""
        out = dict(self.shown)
        if self.first is None:
            return out
        for s in STREAMS:
            have = int(confirmed.get(s, 0))
            if have >= self.written[s]:
                continue
            kept = self.ends[s]
            index = have - (self.written[s] - len(kept)) - 1  # the last confirmed piece's end
            # further back than kept: the start line's offsets (repeats rather than loses)
            out[s] = self.first[s] if have <= 0 or index < 0 else kept[index]
        return out


@dataclass
class Run:
    """What one trigger wrote into one trigger log file: its start line and its pieces after it."""

    token: str
    start: dict[str, int]
    count: dict[str, int] = field(default_factory=lambda: {s: 0 for s in STREAMS})


def runs_in(lines: Iterable[bytes | str], job_id: str, runs: list[Run] | None = None) -> bool:
    """Add the runs of ``job_id`` in one trigger log file to ``runs`` (Airflow 3's JSON lines;
    other lines are skipped): each start line begins a run; the pieces its logger's
    ``.stdout``/``.stderr`` children wrote after it are counted. True if any line was a JSON
    record (a file of another format says nothing about what was written)."""
    runs = [] if runs is None else runs
    records = False
    current: Run | None = None
    children: dict[str, str] = {}
    for raw in lines:
        try:
            rec = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(rec, dict):
            continue
        records = True
        text = rec.get("event")
        logger = rec.get("logger") or rec.get("logger_name") or ""
        if not isinstance(text, str):
            continue
        m = START_RE.match(text)
        if m:
            if m.group("job") != str(job_id):
                current = None
                continue
            current = Run(m.group("token"), {s: int(m.group(s)) for s in STREAMS})
            runs.append(current)
            children = {f"{logger}.{s}": s for s in STREAMS}
            continue
        if current is not None and logger in children:
            current.count[children[logger]] += 1
    return records


def resume_point(runs: Iterable[Run], deferred: Mapping[str, Any]) -> tuple[dict[str, int], dict[str, int]]:
    """Where a trigger starts: ``(offsets, pieces to skip)``. The latest run of this deferral (a
    start at or past the offsets the task deferred with) went furthest, since each trigger starts
    where the one before reached; none: the deferral's offsets, nothing to skip."""
    base = normalize_offsets(deferred)
    ours = [r for r in runs if all(r.start[s] >= base[s] for s in STREAMS)]
    if not ours:
        return base, {s: 0 for s in STREAMS}
    last = max(ours, key=lambda r: (sum(r.start.values()), sum(r.count.values())))
    return dict(last.start), dict(last.count)


def run_of(runs: Iterable[Run], token: str) -> Run | None:
    """This trigger's own run (by its token), if its file is readable here."""
    for run in runs:
        if run.token == token:
            return run
    return None

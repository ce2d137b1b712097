"""Watching a remote job until it ends: the bookkeeping both waiting loops share.

The operator waits in the worker (a sync loop around ``OrchesjobHook.wait``), the trigger in the
triggerer (an async loop around the batched poll). Both drive one :class:`Watch`: it counts
consecutive connection failures against ``max_reconnect_attempts`` and picks the backoff, writes
new log lines to the task log, moves the log offsets on, and knows the deadline. The loops keep
only what differs: how they wait and what they do at the end.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from orchesjob_provider.client.records import JobLogs, JobRecord, normalize_offsets
from orchesjob_provider.utils.messages import waiting_message
from remote_agent.common.vocab import STREAMS


def reconnect_delay(attempt: int, cap: float = 30.0) -> float:
    """Exponential backoff with jitter so reconnecting waiters do not retry in lockstep."""
    base = min(2.0 ** (attempt - 1), cap)
    return base / 2 + random.uniform(0, base / 2)


def log_chunk_lines(log: Any, res: JobLogs, prefix: str = "") -> None:
    """Write the new log bytes of a poll/wait answer to ``log`` line by line."""
    for stream in STREAMS:
        chunk = res.logs.get(stream)
        if chunk is None or not chunk.data:
            continue
        text = chunk.data.decode("utf-8", "replace")
        label = "" if stream == "stdout" else "[stderr] "
        for line in text.splitlines():
            log.info("%s%s%s", prefix, label, line)


class Watch:
    """The state of one wait for one job: log offsets, the last record seen, the failure count.

    :param log: where the job's log lines and the retry warnings go.
    :param offsets: log bytes already shown (``{"stdout": n, "stderr": m}``).
    :param deadline: Unix time after which the wait is over (None: no deadline).
    :param max_failures: consecutive failed polls tolerated; one more and the wait gives up.
    :param stream_logs: write the job's log lines (else only the record is followed).
    :param show: writes one answer's log lines (default: ``log_chunk_lines`` to ``log``).
    :param clock: ``time.time`` (a fake one in tests).
    """

    def __init__(
        self,
        log: Any,
        offsets: Mapping[str, Any] | None,
        *,
        deadline: float | None,
        max_failures: int,
        stream_logs: bool = True,
        show: Callable[[JobLogs], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.log = log
        self.show = show or (lambda res: log_chunk_lines(log, res))
        self.offsets = normalize_offsets(offsets)
        self.deadline = deadline
        self.max_failures = max_failures
        self.stream_logs = stream_logs
        self.clock = clock
        self.failures = 0
        self.job: JobRecord | None = None
        self.waiting: str | None = None  # the last "WAITING on the host for ..." line logged

    def time_left(self) -> float | None:
        return None if self.deadline is None else self.deadline - self.clock()

    @property
    def expired(self) -> bool:
        left = self.time_left()
        return left is not None and left <= 0

    def capped(self, seconds: float) -> float:
        """``seconds``, or less when the deadline comes first (never below zero)."""
        left = self.time_left()
        return seconds if left is None else max(0.0, min(seconds, left))

    def failed(self, error: BaseException) -> float | None:
        """A poll failed to reach the agent: the delay before the next, or None to give up."""
        self.failures += 1
        if self.failures > self.max_failures:
            return None
        delay = reconnect_delay(self.failures)
        retry = (self.failures, self.max_failures, delay)
        self.log.warning("orchesjob: %s (retry %d/%d in %.1fs)", error, *retry)
        return delay

    def give_up_message(self, error: BaseException) -> str:
        return f"giving up after {self.failures - 1} retries: {error}"

    def seen(self, res: JobLogs, show: bool = True) -> None:
        """A poll answered: the failure count restarts, new lines are shown and the offsets move
        on (unless ``show`` is False: the lines are left to whoever goes on from the offsets)."""
        self.failures = 0
        if res.job is not None:
            self.job = res.job
            self.say_waiting(res.job)
        if self.stream_logs and show:
            self.show(res)
            self.offsets = res.next_offsets(self.offsets)

    def say_waiting(self, job: JobRecord) -> None:
        """Log what a job queued for named locks/slots waits for, whenever that changes."""
        line = waiting_message(job)
        if line is not None and line != self.waiting:
            self.log.info("%s", line)
        if line is None and self.waiting is not None:
            self.log.info("Remote job %s got its locks and slots: status %s", job.job_id, job.status)
        self.waiting = line

    @staticmethod
    def showed_bytes(res: JobLogs) -> bool:
        return any(c.data for c in res.logs.values())


class MaskedLog:
    """A front for a logger that writes ``info`` lines with ``values`` replaced by ``***``.

    For the job's own output lines: Airflow's masker filters the task log too, but not every
    place a line can go (the console of ``dag.test()``, a logger without the masker's filter)."""

    def __init__(self, log: Any, values: Iterable[str]) -> None:
        self.log = log
        self.values = sorted((v for v in values if v), key=len, reverse=True)

    def info(self, msg: str, *args: Any) -> None:
        line = msg % args if args else msg
        for value in self.values:
            line = line.replace(value, "***")
        self.log.info("%s", line)

"""Batched starts as the provider speaks them: one start's request fields, the per-start answers
of a ``starts`` reply, and the group commit that lets threads sharing a hook send theirs in one
call.

A start costs the host an SSH session and a Python start (most of its ~65 ms); a batch pays
them once. The agent decides each start of a batch in its own transaction (docs/PROTOCOL.md,
``starts``), so batching changes the cost, never a decision. Sans-I/O except the group commit,
which only coordinates threads: the hooks exec.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar, Union

from orchesjob_provider.client.records import JobRecord
from orchesjob_provider.client.retry import CallRetry
from orchesjob_provider.client.wire import CALL_SLACK
from orchesjob_provider.exceptions import OrchesjobBusy, OrchesjobError, error_class

#: starts per ``starts`` request (the agent takes up to 1,000; a smaller batch answers sooner)
MAX_BATCH = 200

#: the keyword arguments of ``OrchesjobHook.start`` a start mapping may carry
START_ARGS = frozenset({
    "argv", "run_key", "cwd", "env", "strict", "mode", "start_timeout", "rerun_unknown", "epoch",
    "grace_seconds", "check", "locks", "slots", "queue_timeout", "task_instance",
})


def start_fields(
    argv: Sequence[str],
    run_key: str,
    *,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    strict: bool = False,
    mode: str = "resume",
    start_timeout: float = 10,
    rerun_unknown: bool = False,
    epoch: str | None = None,
    grace_seconds: float = 5,
    check: Mapping[str, Any] | None = None,
    locks: Mapping[str, Sequence[str]] | None = None,
    slots: Mapping[str, int] | None = None,
    queue_timeout: float | None = None,
    task_instance: str | None = None,
) -> dict[str, Any]:
    """The request fields of one start (``start`` alone, or an entry of ``starts``); None values
    are left out, as build_request leaves them out of a request."""
    fields: dict[str, Any] = {
        "run_key": run_key,
        "argv": list(argv),
        "cwd": cwd,
        "env": dict(env or {}),
        "strict": bool(strict),
        "mode": mode,
        "start_timeout": start_timeout,
        "epoch": epoch,
        "grace_seconds": grace_seconds if epoch is not None else None,
        "rerun_unknown": True if rerun_unknown else None,
        "check": dict(check) if check is not None else None,
        "locks": {m: list(names) for m, names in locks.items()} if locks else None,
        "slots": dict(slots) if slots else None,
        "queue_timeout": float(queue_timeout) if queue_timeout is not None else None,
        "task_instance": task_instance,
    }
    return {k: v for k, v in fields.items() if v is not None}


def fields_of(start: Mapping[str, Any]) -> dict[str, Any]:
    """A start given as ``OrchesjobHook.start``'s keyword arguments, as request fields."""
    unknown = sorted(set(start) - START_ARGS)
    if unknown:
        raise TypeError(f"unknown start argument(s): {', '.join(unknown)}")
    return start_fields(**start)


def seconds_needed(fields: Mapping[str, Any]) -> float:
    """How long the agent may take over one start: its supervisor's ready wait, plus the grace
    of stopping a superseded job (the caller adds its slack)."""
    return float(fields.get("start_timeout", 10)) + float(fields.get("grace_seconds") or 0)


def call_seconds(starts: Sequence[Mapping[str, Any]]) -> float:
    """The call timeout of one ``start``/``starts`` exec: every start's time, plus the slack."""
    return sum(seconds_needed(f) for f in starts) + CALL_SLACK


def outcome(reply: Mapping[str, Any]) -> tuple[str, JobRecord]:
    """(action, job) of one start's reply; a superseded job is named in ``job.raw``."""
    job = reply["job"]
    if reply.get("superseded") and isinstance(job, dict):
        job = {**job, "superseded": reply["superseded"]}
    return str(reply.get("action")), JobRecord.from_dict(job)


#: one start's answer in a batch: (action, job), or the error that start alone would raise
StartAnswer = Union[tuple[str, JobRecord], OrchesjobError]


def answers(reply: Mapping[str, Any], count: int, *, where: str) -> list[StartAnswer]:
    """The answer to each start of a ``starts`` reply, in order: (action, job) or the typed error
    that start alone would have raised. A reply that does not hold ``count`` answers is the
    agent's error for all of them."""
    items = reply.get("starts")
    if not isinstance(items, list) or len(items) != count:
        err = OrchesjobError(f"orchesjob starts on {where}: the reply holds no answer for each start")
        return [err] * count
    out: list[StartAnswer] = []
    for item in items:
        if isinstance(item, dict) and item.get("ok"):
            out.append(outcome(item))
            continue
        error = (item.get("error") if isinstance(item, dict) else None) or {}
        code = int(error.get("code") or 1)
        message = str(error.get("message") or "unknown agent error")
        out.append(error_class(code)(f"orchesjob start on {where}: {message}", code=code,
                                     kind=error.get("kind"), op="start"))
    return out


def busy(answer: object) -> bool:
    """A start the agent rolled back because its database was busy: safe to send again."""
    return isinstance(answer, OrchesjobBusy)


class BusyResend:
    """Which starts of a batch to send in each ``starts`` exec, shared by the sync and async hook.

    The agent rolls back a start it found its database busy for, so sending that start again is
    safe; every other answer is final. Each exec sends only the starts still busy, after a
    jittered backoff (as CallRetry's), at most ``CallRetry.max_execs`` execs; after the last, a
    busy start's answer is its busy error. The hooks' loop is::

        while (part := plan.part()) is not None:
            sleep(plan.take(exec_starts(part)))
    """

    def __init__(self, batch: Sequence[dict[str, Any]], *, where: str) -> None:
        self.batch = list(batch)
        self.where = where
        self.execs = 0
        self._answered: list[StartAnswer | None] = [None] * len(self.batch)
        self._todo = list(range(len(self.batch)))
        self._delay = CallRetry.first_busy_delay

    def part(self) -> list[dict[str, Any]] | None:
        """The starts the next exec sends; None when there is nothing more to send."""
        return [self.batch[i] for i in self._todo] if self._todo else None

    def take(self, reply: Mapping[str, Any]) -> float:
        """Record the reply to the last :meth:`part`; the seconds to wait before the next one."""
        self.execs += 1
        for i, answer in zip(self._todo, answers(reply, len(self._todo), where=self.where)):
            self._answered[i] = answer
        self._todo = [i for i in self._todo if busy(self._answered[i])]
        if not self._todo or self.execs >= CallRetry.max_execs:
            self._todo = []
            return 0.0
        pause = self._delay + random.uniform(0, self._delay)
        self._delay *= 2
        return pause

    def answers(self) -> list[StartAnswer]:
        """One answer per start of the batch, in order."""
        return [a for a in self._answered if a is not None]


T = TypeVar("T")
R = TypeVar("R")


class _Slot(Generic[T, R]):
    __slots__ = ("done", "error", "item", "result")

    def __init__(self, item: T) -> None:
        self.item = item
        self.done = False
        self.result: R | None = None
        self.error: BaseException | None = None


class GroupCommit(Generic[T, R]):
    """Threads that submit while a flush is under way go together in the next one.

    No timer and no wait for company: a lone submitter flushes at once (a batch of one), and
    while one flush runs, every submitter that arrives queues; when it ends, one of them sends
    everything queued (up to ``max_batch``). So a hook used by one thread behaves as before,
    and N threads starting jobs on one host cost about N / batch execs. ``flush`` returns one
    result per item, in order: a value, or an exception raised to that item's submitter only.
    """

    def __init__(self, flush: Callable[[list[T]], Sequence[R | BaseException]], max_batch: int = MAX_BATCH):
        self._flush = flush
        self._max = max(1, max_batch)
        self._cond = threading.Condition()
        self._queue: list[_Slot[T, R]] = []
        self._flushing = False
        self.flushes = 0  # how many flushes ran (tests and benchmarks count them)

    def submit(self, item: T) -> R:
        slot: _Slot[T, R] = _Slot(item)
        with self._cond:
            self._queue.append(slot)
        while True:
            with self._cond:
                while self._flushing and not slot.done:
                    self._cond.wait()
                if slot.done:
                    break
                self._flushing = True
                batch, self._queue = self._queue[: self._max], self._queue[self._max :]
            self._run(batch)
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]

    def _run(self, batch: list[_Slot[T, R]]) -> None:
        try:
            try:
                results = list(self._flush([s.item for s in batch]))
                if len(results) != len(batch):
                    raise RuntimeError(f"a flush of {len(batch)} items gave {len(results)} results")
            except BaseException as exc:  # the whole call failed: each submitter sees it
                results = [exc] * len(batch)
            for s, r in zip(batch, results):
                if isinstance(r, BaseException):
                    s.error = r
                else:
                    s.result = r
        finally:
            with self._cond:
                for s in batch:
                    s.done = True
                self.flushes += 1
                self._flushing = False
                self._cond.notify_all()

"""The watch channel's lines (docs/PROTOCOL.md, "watch"): pure building and parsing, no I/O.

The provider opens one ``rpc`` channel per host whose first line is a ``watch`` request, then
writes ``sub``/``unsub``/``record`` commands and reads events, one JSON object per line. A
``job`` event is a ``poll`` item plus the subscription id, so it becomes the same
:class:`JobLogs` the batched poll gives and the trigger handles both alike.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchesjob_provider.client.records import JobLogs, normalize_offsets
from orchesjob_provider.client.wire import PROTOCOL, json_line

#: Seconds between the agent's rounds: a job's end reaches the trigger within about this long.
WATCH_INTERVAL = 0.2
#: Seconds between the agent's liveness checks of every watched job (a supervisor killed -9).
WATCH_CHECK_EVERY = 5.0


def _line(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=True, separators=(",", ":")).encode("ascii") + b"\n"


def open_line(
    state_dir: str | None, interval: float = WATCH_INTERVAL, check_every: float = WATCH_CHECK_EVERY
) -> bytes:
    """The first line of a watch channel (an ``rpc`` request that keeps stdin open)."""
    req: dict[str, Any] = {
        "protocol": PROTOCOL,
        "op": "watch",
        "interval": interval,
        "check_every": check_every,
    }
    if state_dir:
        req["home"] = state_dir
    return _line(req)


def sub_line(sid: str, job_id: str, offsets: Mapping[str, Any] | None) -> bytes:
    """Watch ``job_id`` from ``offsets`` (the bytes the caller has shown; None: no logs)."""
    return _line(
        {
            "cmd": "sub",
            "sid": sid,
            "job_id": job_id,
            "offsets": None if offsets is None else normalize_offsets(offsets),
        }
    )


def unsub_line(sid: str) -> bytes:
    return _line({"cmd": "unsub", "sid": sid})


def record_line(sid: str, job_id: str, offsets: Mapping[str, Any]) -> bytes:
    """Store ``offsets`` as the job's ``log_shown`` (batched by the agent, one write per round)."""
    return _line({"cmd": "record", "sid": sid, "job_id": job_id, "offsets": normalize_offsets(offsets)})


@dataclass(frozen=True)
class WatchMessage:
    """One line from the agent: ``kind`` is hello, job, recorded, error, tick or garbage."""

    kind: str
    sid: str | None = None
    job_id: str | None = None
    logs: JobLogs | None = None
    message: str = ""
    raw: Mapping[str, Any] | None = None


def parse_line(line: bytes) -> WatchMessage:
    """Parse one line from the agent; never raises (a line that is not ours is ``garbage``)."""
    try:
        obj = json_line(line)
    except ValueError:
        return WatchMessage("garbage", message=line[:200].decode("utf-8", "replace").strip())
    if not isinstance(obj, dict):
        return WatchMessage("garbage", message=str(obj)[:200])
    kind = obj.get("event")
    if kind is None and obj.get("ok") is False:  # the agent refused the request (old or bad)
        error = obj.get("error") or {}
        return WatchMessage("refused", message=str(error.get("message") or "watch refused"), raw=obj)
    sid = obj.get("sid") if isinstance(obj.get("sid"), str) else None
    job_id = obj.get("job_id") if isinstance(obj.get("job_id"), str) else None
    if kind == "job" and job_id:
        try:
            logs = JobLogs.from_reply(job_id, obj)
        except (KeyError, TypeError, ValueError) as e:
            return WatchMessage("garbage", message=f"bad job event: {e}")
        return WatchMessage("job", sid=sid, job_id=job_id, logs=logs, raw=obj)
    if kind == "error":
        error = obj.get("error") or {}
        return WatchMessage("error", sid=sid, message=str(error.get("message") or "watch error"), raw=obj)
    if kind in ("hello", "recorded", "tick"):
        return WatchMessage(kind, sid=sid, job_id=job_id, raw=obj)
    return WatchMessage("garbage", message=str(obj)[:200])


def starts_at(res: JobLogs, offsets: Mapping[str, int]) -> bool:
    """Every log chunk of ``res`` starts exactly at the caller's offsets.

    The caller owns the offsets; an event that would skip or repeat a byte (one sent before a
    resubscribe, or from a channel that dropped) is not shown but answered with a new ``sub``.
    """
    return all(chunk.offset == int(offsets.get(s, 0)) for s, chunk in res.logs.items())

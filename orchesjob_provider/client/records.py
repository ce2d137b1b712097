"""What the agent replies, as typed values: a job (``JobRecord``), a piece of its log
(``LogChunk``) and a read of both logs (``JobLogs``). Pure: no SSH, no Airflow.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from orchesjob_provider.exceptions import OrchesjobError
from remote_agent.common import vocab
from remote_agent.common.vocab import STREAMS, SUCCEEDED

#: WAITING: queued on the host for named locks or slots (the agent stores it as STARTING)
ACTIVE_STATUSES = frozenset(vocab.REPORTED_ACTIVE)


TERMINAL_STATUSES = frozenset(vocab.TERMINAL)


DEFAULT_LOG_LIMIT = 65536


# ---------------------------------------------------------------------------------------------
# Typed results
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class JobRecord:
    """A job as the agent reports it (the full dict is kept in ``raw``)."""

    job_id: str
    run_key: str
    status: str
    exit_code: int | None = None
    attempt_no: int | None = None
    command: list[str] = field(default_factory=list)
    pid: int | None = None
    strict: bool = False
    rerun_of_job_id: str | None = None
    abort_reason: str | None = None
    lost_reason: str | None = None
    cwd: str | None = None
    started_at: int | None = None
    finished_at: int | None = None
    acked_at: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> JobRecord:
        if not isinstance(d, Mapping) or "job_id" not in d or "status" not in d:
            raise OrchesjobError(f"agent returned a malformed job record: {str(d)[:200]}")
        return cls(
            job_id=str(d["job_id"]),
            run_key=str(d.get("run_key") or ""),
            status=str(d["status"]),
            exit_code=d.get("exit_code"),
            attempt_no=d.get("attempt_no"),
            command=list(d.get("command") or []),
            pid=d.get("pid"),
            strict=bool(d.get("strict")),
            rerun_of_job_id=d.get("rerun_of_job_id"),
            abort_reason=d.get("abort_reason"),
            lost_reason=d.get("lost_reason"),
            cwd=d.get("cwd"),
            started_at=d.get("started_at"),
            finished_at=d.get("finished_at"),
            acked_at=d.get("acked_at"),
            raw=dict(d),
        )

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.status == SUCCEEDED

    def to_dict(self) -> dict[str, Any]:
        return dict(self.raw) if self.raw else {"job_id": self.job_id, "status": self.status}


@dataclass(frozen=True)
class LogChunk:
    """Bytes ``[offset, next_offset)`` of one log stream."""

    offset: int
    next_offset: int
    size: int
    data: bytes
    eof: bool

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LogChunk:
        data = base64.b64decode(d.get("data_b64") or "")
        offset = int(d.get("offset") or 0)
        return cls(
            offset=offset,
            next_offset=int(d.get("next_offset", offset + len(data))),
            size=int(d.get("size") or 0),
            data=data,
            eof=bool(d.get("eof")),
        )

    @property
    def more(self) -> bool:
        """More bytes are already available past this chunk."""
        return self.next_offset < self.size


@dataclass(frozen=True)
class JobLogs:
    """One ``poll``/``wait`` answer for one job: the record (None if unknown) and new log bytes."""

    job_id: str
    job: JobRecord | None
    logs: dict[str, LogChunk] = field(default_factory=dict)
    timed_out: bool = False

    @classmethod
    def from_reply(cls, job_id: str, reply: Mapping[str, Any], timed_out: bool = False) -> JobLogs:
        """One job's entry of a ``poll`` reply, or a whole ``wait`` reply."""
        job = reply.get("job")
        logs = reply.get("logs") or {}
        return cls(
            job_id=job_id,
            job=JobRecord.from_dict(job) if job else None,
            logs={s: LogChunk.from_dict(c) for s, c in logs.items() if s in STREAMS and c},
            timed_out=timed_out,
        )

    def next_offsets(self, offsets: Mapping[str, int]) -> dict[str, int]:
        out = {s: int(offsets.get(s, 0)) for s in STREAMS}
        for s, chunk in self.logs.items():
            out[s] = chunk.next_offset
        return out

    @property
    def more(self) -> bool:
        return any(c.more for c in self.logs.values())

    @property
    def eof(self) -> bool:
        return bool(self.logs) and all(c.eof for c in self.logs.values())


def normalize_offsets(offsets: Mapping[str, Any] | None) -> dict[str, int]:
    offsets = offsets or {}
    return {s: int(offsets.get(s) or 0) for s in STREAMS}

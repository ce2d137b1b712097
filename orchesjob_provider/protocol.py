"""The agent's JSON protocol as the provider speaks it (docs/PROTOCOL.md), and the trigger's events.

Pure: no SSH, no Airflow beyond the error classes. Every function here turns values into values
(a request into bytes, one exec's exit code and output into a reply or a typed error, a trigger
event into a dict and back), so the fast unit tests can check each branch in microseconds.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from orchesjob_provider.exceptions import AgentUnavailable, OrchesjobError, error_class
from remote_agent.common import vocab
from remote_agent.common.vocab import (  # the one spelling of statuses, start actions and streams
    ABORTED,
    ACTIONS,
    ADOPTED,
    CANCELLED,
    FAILED,
    KEPT,
    LOST,
    REATTACHED,
    RUNNING,
    STARTED,
    STARTING,
    STATUSES,
    STREAMS,
    SUCCEEDED,
    WAITING,
)

PROTOCOL = 1
#: WAITING: queued on the host for named locks or slots (the agent stores it as STARTING)
ACTIVE_STATUSES = frozenset(vocab.REPORTED_ACTIVE)
TERMINAL_STATUSES = frozenset(vocab.TERMINAL)
DEFAULT_LOG_LIMIT = 65536
#: Extra seconds a call may take beyond the agent-side timeout before the client gives up.
CALL_SLACK = 60.0

#: The kinds of event the trigger yields (the ``status`` of its payload).
EVENT_TERMINAL = "terminal"  # the job ended: ``job`` is its final record
EVENT_TIMEOUT = "timeout"  # ``timeout_at`` passed first
EVENT_ERROR = "error"  # the watch failed (``message`` says why); the job may still run


def abort_timeout(grace_seconds: float) -> float:
    """How long an ``abort`` call may take: the agent's SIGTERM→SIGKILL grace plus the slack."""
    return grace_seconds + CALL_SLACK


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


# ---------------------------------------------------------------------------------------------
# Requests and replies
# ---------------------------------------------------------------------------------------------
def build_request(op: str, state_dir: str | None, args: Mapping[str, Any]) -> bytes:
    req: dict[str, Any] = {"protocol": PROTOCOL, "op": op}
    if state_dir:
        req["home"] = state_dir
    req.update({k: v for k, v in args.items() if v is not None})
    # ensure_ascii: lone surrogates (undecodable bytes, os.fsdecode) travel as \udcXX escapes.
    return json.dumps(req, ensure_ascii=True).encode("ascii")


def poll_args(
    jobs: Iterable[tuple[str, Mapping[str, Any] | None]], limit: int, record: bool
) -> dict[str, Any]:
    """The arguments of one ``poll`` call for many jobs (sync ``poll`` and the async batch poller).

    An entry with offsets asks for new log bytes too; ``record`` asks the agent to store those
    offsets as the bytes already shown (a later try continues the task log from there).
    """
    entries: list[dict[str, Any]] = []
    for job_id, offsets in jobs:
        entry: dict[str, Any] = {"job_id": job_id}
        if offsets is not None:
            entry["offsets"] = normalize_offsets(offsets)
        entries.append(entry)
    return {"jobs": entries, "limit": limit, "record": True if record else None}


def last_line(data: bytes) -> str:
    lines = [ln.strip() for ln in data.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


#: Exit code and stderr marker of remote/bootstrap.py when the agent directory is missing,
#: damaged or not safely ours (bundle.REDEPLOY_EXIT; bundle.py stays free of this module).
REDEPLOY_EXIT = 86
REDEPLOY_MARK = b"orchesjob-agent-redeploy:"


def is_missing_agent(rc: int | None, out: bytes, err: bytes) -> bool:
    """The bootstrap found no usable agent (first use on this host, removed, damaged, unsafe).

    Only the exit code and the bootstrap's stderr line count: whatever a login shell prints on
    stdout (a banner) cannot hide it or fake it.
    """
    return rc == REDEPLOY_EXIT and REDEPLOY_MARK in err


def parse_reply(
    op: str, rc: int | None, out: bytes, err: bytes, *, where: str, remote_python: str
) -> dict[str, Any]:
    """Turn (exit code, stdout, stderr) of one rpc exec into the reply dict or a typed error."""
    text = out.strip()
    reply: Any = None
    if text:
        try:
            reply = json.loads(text.splitlines()[-1])
        except ValueError:
            reply = None
    if isinstance(reply, dict) and "ok" in reply:
        if reply.get("ok"):
            return reply
        error = reply.get("error") or {}
        code = int(error.get("code") or rc or 1)
        message = str(error.get("message") or last_line(err) or "unknown agent error")
        cls = error_class(code)
        raise cls(f"orchesjob {op} on {where}: {message}", code=code, kind=error.get("kind"), op=op)
    if rc == 127:
        raise AgentUnavailable(
            f"remote python {remote_python!r} was not found on {where} (exit 127): install Python 3.6+ "
            f"there or set remote_python to the interpreter's path",
            op=op,
        )
    if rc == 126:
        raise AgentUnavailable(
            f"remote python {remote_python!r} on {where} is not executable (exit 126); "
            f"set remote_python to a working interpreter",
            op=op,
        )
    detail = last_line(err) or last_line(out) or "no output"
    if is_missing_agent(rc, out, err):
        detail = f"the agent directory is still unusable after a deploy: {detail}"
    if b"SyntaxError" in err:
        detail = f"the interpreter {remote_python!r} is too old for the agent (needs Python 3.6+): {detail}"
    raise AgentUnavailable(
        f"orchesjob agent call {op!r} on {where} failed (exit {rc}): {detail}", code=rc or 1, op=op
    )


def check_deploy(rc: int, out: bytes, err: bytes, *, where: str, remote_path: str) -> None:
    """The result of one deploy exec: nothing when the bundle is in place, else why not."""
    if rc != 0:
        raise AgentUnavailable(
            f"could not upload the orchesjob agent to {where}:{remote_path} (exit {rc}): "
            f"{last_line(err) or last_line(out) or 'no output'}",
            op="deploy",
        )


# ---------------------------------------------------------------------------------------------
# Outcomes and trigger events
# ---------------------------------------------------------------------------------------------
def failure_message(job: JobRecord) -> str:
    """One line saying how a job that did not succeed ended."""
    phase = job.raw.get("phase") if job.raw else None
    if job.status == FAILED and phase == vocab.RECHECK_FAILED:
        return (f"Remote job {job.job_id} {vocab.RECHECK_FAILED_TEXT} (the command exited {job.exit_code},"
                f" the check then exited {(job.raw.get('check') or {}).get('exit_code')})")
    if job.status == FAILED and phase == vocab.CHECK_ERROR:
        ran = job.raw.get("target_pid") is not None
        return (f"Remote job {job.job_id}: its check could not decide (it could not start, was killed"
                f" or timed out; see its stderr above){'' if ran else ' and nothing ran'}")
    if job.status == FAILED:
        if job.exit_code is not None and job.exit_code < 0:
            if job.exit_code == -1:
                return f"Remote job {job.job_id} could not be launched (see its stderr above)"
            return f"Remote job {job.job_id} failed: killed by signal {-job.exit_code}"
        return f"Remote job {job.job_id} failed with exit code {job.exit_code}"
    if job.status == ABORTED:
        return f"Remote job {job.job_id} was ABORTED ({job.abort_reason or 'no reason given'})"
    if job.status == LOST:
        return f"Remote job {job.job_id} was LOST ({job.lost_reason or 'its processes are gone'})"
    if job.status == CANCELLED:
        # the agent's reason, e.g. "queue timeout: waited 600s for write lock 'x': held by job ..."
        reason = job.abort_reason
        return f"Remote job {job.job_id} was CANCELLED" + (f" ({reason})" if reason else "")
    return f"Remote job {job.job_id} ended with status {job.status} (exit code {job.exit_code})"


def waiting_message(job: JobRecord) -> str | None:
    """One line for the task log while a job waits on the host for named locks or slots: what it
    waits for and who holds it (the agent's ``waiting_for``); None when it does not wait."""
    if job.status != WAITING:
        return None
    parts = []
    for b in job.raw.get("waiting_for") or []:
        if not isinstance(b, Mapping):
            continue
        if b.get("mode") == "slot":
            what = f"slot {b.get('resource')!r} (capacity {b.get('capacity')})"
        else:
            what = f"{b.get('mode')} lock {b.get('resource')!r}"
        state = "held" if b.get("holding") else "queued ahead"
        parts.append(f"{what} {state} by job {b.get('job_id')} (run key {b.get('run_key')})")
    deadline = job.raw.get("queue_deadline")
    until = ""
    if isinstance(deadline, (int, float)):
        import datetime

        stamp = datetime.datetime.fromtimestamp(deadline, datetime.timezone.utc).isoformat(timespec="seconds")
        until = f"; gives up at {stamp} (queue timeout)"
    return f"Remote job {job.job_id} is WAITING on the host for " + ("; ".join(parts) or "its turn") + until


@dataclass(frozen=True)
class WatchEvent:
    """The payload of the trigger's one event, as the trigger builds it and operator/sensor read it.

    The dict form (``to_payload``) is what Airflow stores and hands to ``execute_complete``:
    ``status`` (an ``EVENT_*`` kind), ``job_id``, ``run_key``, ``job`` (the record as a dict, or
    None), ``offsets`` (log bytes already written to the task log) and ``message``.
    """

    status: str
    job_id: str | None = None
    run_key: str | None = None
    job: JobRecord | None = None
    offsets: dict[str, int] = field(default_factory=dict)
    message: str = ""

    def to_payload(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "job_id": self.job_id,
            "run_key": self.run_key,
            "job": self.job.to_dict() if self.job is not None else None,
            "offsets": dict(self.offsets),
            "message": self.message,
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> WatchEvent:
        job = payload.get("job")
        job_id = payload.get("job_id")
        return cls(
            status=str(payload.get("status")),
            job_id=str(job_id) if job_id is not None else None,
            run_key=payload.get("run_key"),
            job=JobRecord.from_dict(job) if job else None,
            offsets=normalize_offsets(payload.get("offsets")),
            message=str(payload.get("message") or ""),
        )


__all__ = [
    "ABORTED",
    "ACTIONS",
    "ACTIVE_STATUSES",
    "ADOPTED",
    "CALL_SLACK",
    "CANCELLED",
    "DEFAULT_LOG_LIMIT",
    "EVENT_ERROR",
    "EVENT_TERMINAL",
    "EVENT_TIMEOUT",
    "FAILED",
    "KEPT",
    "LOST",
    "PROTOCOL",
    "REATTACHED",
    "RUNNING",
    "STARTED",
    "STARTING",
    "STATUSES",
    "STREAMS",
    "SUCCEEDED",
    "TERMINAL_STATUSES",
    "WAITING",
    "JobLogs",
    "JobRecord",
    "LogChunk",
    "WatchEvent",
    "abort_timeout",
    "build_request",
    "check_deploy",
    "failure_message",
    "is_missing_agent",
    "last_line",
    "normalize_offsets",
    "parse_reply",
    "poll_args",
    "waiting_message",
]

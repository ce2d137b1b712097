"""Turning stored rows into orchesjob's JSON job object, and writing JSON (tables: tables.py)."""

import json
import sys

from remote_agent.common.timeutil import to_iso
from remote_agent.common.vocab import STDERR, STDOUT, WAITING
from remote_agent.store import jobsql, paths

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    from typing import Any, Dict, List, Optional, Tuple  # noqa: F401


_TIMES = ("started_at", "finished_at", "updated_at", "aborted_at")


def job_object(row, state_dir):
    # type: (Dict[str, Any], str) -> Dict[str, Any]
    """The orchesjob 1.1.0 job object (same keys, same order), then our added keys."""
    target_pid = row.get("target_pid")
    worker_pid = row.get("worker_pid")  # the job's supervisor, under orchesjob's name
    job_id = row["job_id"]
    out = {
        "job_id": job_id,
        "run_key": row["run_key"],
        "command": jobsql.command_of(row),
        "pid": target_pid or worker_pid,
        "pid_kind": "target" if target_pid is not None else ("worker" if worker_pid is not None else None),
        "worker_pid": worker_pid,
        "target_pid": target_pid,
        "status": WAITING if row.get("lock_waiting") else row["status"],
        "exit_code": row["exit_code"],
        "stdout_file": paths.log_path(state_dir, job_id, STDOUT),
        "stderr_file": paths.log_path(state_dir, job_id, STDERR),
        "attempt_no": row["attempt_no"],
        "strict": bool(row["strict"]),
        "rerun_of_job_id": row["rerun_of_job_id"],
        "rerun_reason": row["rerun_reason"],
        "abort_reason": row["abort_reason"],
    }  # type: Dict[str, Any]
    for key in (*_TIMES, "acked_at"):
        out[key] = row.get(key)
        out[key + "_iso"] = to_iso(row.get(key))
    out["lost_reason"] = row.get("lost_reason")
    out["cwd"] = jobsql.cwd_of(row)
    out["log_shown"] = {STDOUT: row.get("stdout_shown", 0), STDERR: row.get("stderr_shown", 0)}
    out["host_id"] = row.get("host_id")  # the host that runs it (None: before hosts were recorded)
    out["epoch"] = row.get("epoch")
    out["task_instance"] = row.get("task_instance")
    # check / run / recheck (jobs/checkspec.py): null for a job without a check
    out["phase"] = row.get("phase")
    out["check"] = ({"argv": json.loads(row["check_argv"]), "timeout": row.get("check_timeout"),
                     "exit_code": row.get("check_exit_code")} if row.get("check_argv") else None)
    if row.get("lock_waiting"):  # jobs/lockqueue.with_wait_info: what it waits for and who is in the way
        out["waiting_for"] = row.get("waiting_for") or []
        out["queued_at"] = row.get("queued_at")
        out["queue_deadline"] = row.get("queue_deadline")
    return out


def override_object(row):
    # type: (Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]
    if row is None:
        return None
    out = {}  # type: Dict[str, Any]
    for key in ("allowed_at", "used_at"):
        out[key] = row[key]
        out[key + "_iso"] = to_iso(row[key])
    out["reason"] = row["reason"]
    out["expires_at"] = row["expires_at"]
    out["expires_at_iso"] = to_iso(row["expires_at"])
    return out


def print_json(data):
    # type: (Any) -> None
    """orchesjob's output format: indent=2, ASCII-escaped, trailing newline."""
    sys.stdout.write(to_json(data) + "\n")


_encode_str = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]


def to_json(value, level=0):
    # type: (Any, int) -> str
    """``json.dumps(value, indent=2)``, byte for byte (tests/unit/agent/test_render.py).

    With an indent, CPython's json encodes in pure Python, a generator step per key and value
    (about 300 for one job object, more than the status query itself costs); this writes the
    containers itself and leaves strings to json's C escaper. Floats, keys that are not
    strings and other types go to json.dumps, which also raises what it would raise."""
    if isinstance(value, str):
        return _encode_str(value)  # type: ignore[no-any-return]
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if type(value) is int:
        return int.__repr__(value)
    inner = "\n" + "  " * (level + 1)
    if type(value) is dict and all(type(k) is str for k in value):
        if not value:
            return "{}"
        return "{" + ",".join(inner + _encode_str(k) + ": " + to_json(v, level + 1)
                              for k, v in value.items()) + inner[:-2] + "}"
    if type(value) in (list, tuple):
        if not value:
            return "[]"
        return "[" + ",".join(inner + to_json(v, level + 1) for v in value) + inner[:-2] + "]"
    return json.dumps(value, indent=2).replace("\n", inner[:-2])

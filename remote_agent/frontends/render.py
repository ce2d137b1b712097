"""Turning stored rows into orchesjob's JSON job object, and into a table for people."""

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
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


_COLUMNS = (("JOB_ID", "job_id"), ("RUN_KEY", "run_key"), ("ATTEMPT", "attempt_no"),
            ("STATUS", "status"), ("EXIT", "exit_code"), ("PID", "pid"),
            ("STARTED", "started_at_iso"), ("FINISHED", "finished_at_iso"), ("COMMAND", "command"))


def _cell(value):
    # type: (Any) -> str
    if value is None:
        return "-"
    if isinstance(value, list):
        text = " ".join(value)
    else:
        text = str(value)
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= 60 else text[:57] + "..."


def print_table(jobs):
    # type: (List[Dict[str, Any]]) -> None
    """A fixed-width listing for people; scripts should keep using the JSON.

    A PHASE column (check / run / recheck) follows STATUS when any listed job has a check."""
    columns = _COLUMNS  # type: Tuple[Tuple[str, str], ...]
    if any(job.get("phase") for job in jobs):
        columns = (*_COLUMNS[:4], ("PHASE", "phase"), *_COLUMNS[4:])
    rows = [[title for title, _ in columns]]
    rows += [[_cell(job.get(key)) for _, key in columns] for job in jobs]
    widths = [max(len(r[i]) for r in rows) for i in range(len(columns))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    out = "\n".join(lines) + "\n"
    sys.stdout.buffer.write(out.encode("utf-8", "replace"))


def print_locks_table(resources):
    # type: (List[Dict[str, Any]]) -> None
    """``orchesjob locks --format table``: one line per holder and per waiter."""
    titles = ["KIND", "NAME", "MODE", "STATE", "POS", "JOB_ID", "RUN_KEY", "SINCE"]
    rows = [titles]
    for res in resources:
        for state, people in (("holds", res["holders"]), ("waits", res["waiters"])):
            for p in people:
                mode = p["mode"] if p.get("capacity") is None else "{}/{}".format(p["mode"], p["capacity"])
                since = p.get("granted_at") if state == "holds" else p.get("queued_at")
                rows.append([_cell(res["kind"]), _cell(res["name"]), _cell(mode), state,
                             _cell(p.get("position")), _cell(p["job_id"]), _cell(p.get("run_key")),
                             _cell(to_iso(int(since)) if since is not None else None)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(titles))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    sys.stdout.buffer.write(("\n".join(lines) + "\n").encode("utf-8", "replace"))

"""``--format table``: fixed-width listings for people (status, list, locks); scripts keep the
JSON (render.py). A module of its own, loaded per command that asks for a table: the JSON
answers, which pollers and the hooks run over and over, never load it."""

import sys

from remote_agent.common.timeutil import to_iso

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    from typing import Any, Dict, List, Tuple  # noqa: F401


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


def print_jobs(jobs):
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


def print_locks(resources):
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

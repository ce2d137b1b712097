"""What a person on the host reads: ``orchesjob list`` (filtered history) and ``logs --follow``.

Both are reads: they never migrate, never take the write lock, and cost the same at any
history size (``list`` walks the index on started_at newest first and stops at its limit).
"""

import time

from remote_agent.common.errors import EXIT_NOT_FOUND, AgentError, bad_args
from remote_agent.common.validate import check_limit
from remote_agent.common.vocab import ACTIVE, STATUSES, TERMINAL
from remote_agent.jobs.liveness import reconcile
from remote_agent.jobs.reader import Reader
from remote_agent.store import logs, paths, reads, sqlite

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    from typing import IO, Any, Dict, List, Optional  # noqa: F401
    Row = Dict[str, Any]

#: ``list`` shows this many jobs unless told otherwise (``--limit 0``: all).
DEFAULT_LIMIT = 100
#: ``logs --follow`` looks for new bytes this often (and at once while bytes keep coming).
FOLLOW_INTERVAL = 0.2


def parse_statuses(values):
    # type: (Optional[List[str]]) -> List[str]
    """``--status`` values (repeatable, comma-separated, any case) as statuses; none: all."""
    if not values:
        return list(STATUSES)
    out = []  # type: List[str]
    for value in values:
        for word in value.split(","):
            word = word.strip().upper()
            if word not in STATUSES:
                raise bad_args("unknown status {!r}; known: {}".format(word, ", ".join(STATUSES)))
            if word not in out:
                out.append(word)
    return out


def prefix_glob(prefix):
    # type: (str) -> str
    """A GLOB matching run keys that start with ``prefix`` (its wildcards taken literally)."""
    return "".join("[{}]".format(c) if c in "*?[" else c for c in prefix) + "*"


#: ``list --run-key/--prefix`` looks keys up by their literal prefix when fewer than this many
#: jobs share it (their rows are then sorted); otherwise it walks the jobs newest first.
FEW_KEYS = 5000


def literal_prefix(glob):
    # type: (str) -> str
    """The part of a GLOB before its first wildcard (``[c]`` of one character counts as ``c``)."""
    out = []
    i = 0
    while i < len(glob):
        c = glob[i]
        if c in "*?":
            break
        if c == "[":
            if i + 2 < len(glob) and glob[i + 2] == "]" and glob[i + 1] not in "^]":
                out.append(glob[i + 1])
                i += 3
                continue
            break
        out.append(c)
        i += 1
    return "".join(out)


def prefix_range(prefix):
    # type: (str) -> Optional[List[str]]
    """[low, high): exactly the strings that start with ``prefix`` (BINARY order is code point
    order for UTF-8), or None when there is no usable bound."""
    if not prefix:
        return None
    last = ord(prefix[-1]) + 1
    if 0xD800 <= last <= 0xDFFF:
        last = 0xE000  # surrogates are not characters: the next one is U+E000
    if last > 0x10FFFF:
        return None
    return [prefix, prefix[:-1] + chr(last)]


def list_jobs(state_dir, statuses, key_glob=None, since=None, until=None, limit=DEFAULT_LIMIT):
    # type: (str, List[str], Optional[str], Optional[int], Optional[int], Optional[int]) -> List[Row]
    """Jobs matching the filters, newest first, as they really are (active ones reconciled).

    An active row may turn out LOST or finished, so the few active rows are read and judged
    first and filtered by their real status; the terminal ones come from the index with the
    limit applied in SQL. Both lists are complete up to ``limit``, so their merge is exact.
    """
    if limit is not None:
        check_limit(limit)
    conn = sqlite.open_read(state_dir)
    if conn is None:
        return []
    try:
        bounds = prefix_range(literal_prefix(key_glob)) if key_glob is not None else None
        if (bounds is not None
                and reads.count_key_range(conn, bounds[0], bounds[1], FEW_KEYS) >= FEW_KEYS):
            bounds = None  # a prefix most keys share: walking newest first finds them sooner
        rows = [dict(reconcile(conn, r), seq=r["seq"])
                for r in reads.list_jobs(conn, ACTIVE, key_glob, since, until, key_range=bounds)]
        rows = [r for r in rows if r["status"] in statuses]
        wanted = [s for s in statuses if s in TERMINAL]
        if wanted:
            # A job that ends between the two reads (its outcome stored by the watch channel or
            # a finisher meanwhile) is in both: the reconciled active copy stands, once.
            seen = {r["job_id"] for r in rows}
            rows += [r for r in reads.list_jobs(conn, wanted, key_glob, since, until, limit, key_range=bounds)
                     if r["job_id"] not in seen]
    finally:
        conn.close()
    rows.sort(key=lambda r: (r["started_at"], r["seq"]), reverse=True)
    return rows[:limit] if limit else rows


def follow(state_dir, run_key, job_id, stream, out):
    # type: (str, Optional[str], Optional[str], str, Any) -> None
    """Write the job's log to ``out`` from its start, then its new bytes as they come, until
    the job is terminal and every byte is written (``tail -f`` that knows when to stop)."""
    reader = Reader(state_dir)
    f = None  # type: Optional[IO[bytes]]
    try:
        row = reader.resolve(run_key, job_id)
        path = paths.log_path(state_dir, row["job_id"], stream)
        while True:
            done = row["status"] in TERMINAL  # judged before reading: no byte after it is missed
            if f is None:
                try:
                    f = open(path, "rb")
                except FileNotFoundError:
                    if done:
                        raise AgentError("Log file not found: {}".format(path), EXIT_NOT_FOUND) from None
            if f is not None:
                logs.copy_out(f, out)
            if done:
                return
            time.sleep(FOLLOW_INTERVAL)
            row = reader.require_job(row["job_id"])
    finally:
        reader.close()
        if f is not None:
            f.close()

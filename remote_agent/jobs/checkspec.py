"""A job's check as data: the request's ``check`` parsed, the columns it stores on the job row,
and the spec read back from a row (for whoever finishes the job). Pure, apart from reading the
row; running a check is worker/checkrun.py.
"""

import json

from remote_agent.common.errors import bad_args
from remote_agent.store import jobsql
from remote_agent.store.sqlite import open_read

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    from typing import Any, Dict, List, Optional, Tuple  # noqa: F401
    Spec = Tuple[List[str], float]


#: Seconds a check may run unless the request says otherwise.
DEFAULT_TIMEOUT = 300.0


def parse(value):
    # type: (Any) -> Optional[Spec]
    """A request's ``check`` ({"argv": [...], "timeout": s}) as (argv, timeout), or None."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"argv", "timeout"}:
        raise bad_args("check must be an object with 'argv' (list of strings) and optional 'timeout'")
    argv = value.get("argv")
    if not argv or not isinstance(argv, list) or not all(isinstance(a, str) and "\0" not in a for a in argv):
        raise bad_args("check.argv must be a non-empty list of strings without NUL bytes")
    timeout = value.get("timeout")
    if timeout is None:
        timeout = DEFAULT_TIMEOUT
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 7 * 86400:
        raise bad_args("check.timeout must be a number of seconds > 0 (at most 7 days)")
    return list(argv), float(timeout)


def columns(spec):
    # type: (Optional[Spec]) -> Dict[str, Any]
    """The job row's columns for a spec (nothing for a job without a check)."""
    if spec is None:
        return {}
    return {"check_argv": json.dumps(spec[0]), "check_timeout": spec[1], "phase": "checking"}


def spec_of(row):
    # type: (Optional[Dict[str, Any]]) -> Optional[Spec]
    """The job's check as stored on its row, or None."""
    if not row or not row.get("check_argv"):
        return None
    return json.loads(row["check_argv"]), float(row.get("check_timeout") or DEFAULT_TIMEOUT)


def load_row(state_dir, job_id):
    # type: (str, str) -> Optional[Dict[str, Any]]
    """The job's row, read on a connection of its own (None if it cannot be read)."""
    try:
        conn = open_read(state_dir)
    except Exception:
        return None
    if conn is None:
        return None
    try:
        return jobsql.get_job(conn, job_id)
    except Exception:
        return None
    finally:
        conn.close()


def recheck_of(conn, state_dir, job_id):
    # type: (Any, str, str) -> Optional[Tuple[Spec, Optional[str]]]
    """(the job's check, its stored cwd), or None without a check: read on the finisher's open
    connection when it has one (no new connection for the common job without a check)."""

    row = None
    if conn is not None:
        try:
            row = jobsql.get_job(conn, job_id)
        except Exception:
            row = None
    if row is None:
        row = load_row(state_dir, job_id)
    spec = spec_of(row)
    if spec is None or row is None:
        return None
    return spec, jobsql.cwd_of(row)



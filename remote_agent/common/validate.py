"""Checks on what callers send (run keys, job ids, commands, free text) and new job ids."""

import os

from remote_agent.common.errors import bad_args

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    from typing import Any, List, Optional  # noqa: F401


MAX_RUN_KEY = 2048


def check_run_key(run_key):
    # type: (Any) -> str
    if not isinstance(run_key, str) or not run_key:
        raise bad_args("run_key is required")
    if len(run_key) > MAX_RUN_KEY:
        raise bad_args("run_key is too long ({} characters; the limit is {})".format(
            len(run_key), MAX_RUN_KEY))
    if any(ord(c) < 32 or ord(c) == 127 for c in run_key):
        raise bad_args("run_key must not contain control characters (newline, tab, ...)")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in run_key):
        raise bad_args("run_key must be valid UTF-8 text")
    return run_key


def text(value):
    # type: (Optional[str]) -> Optional[str]
    """Free text from a command line (reasons) as storable UTF-8: undecodable bytes become U+FFFD."""
    if value is None:
        return None
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def check_job_id(job_id):
    # type: (Any) -> str
    if not isinstance(job_id, str) or not job_id:
        raise bad_args("job_id is required")
    if "/" in job_id or "\\" in job_id:
        raise bad_args("Invalid job_id: contains path separator")
    if len(job_id) > 200 or any(ord(c) < 32 for c in job_id):
        raise bad_args("Invalid job_id: {!r}".format(job_id[:60]))
    return job_id


def check_argv(argv):
    # type: (Any) -> List[str]
    if not argv:
        raise bad_args("command is required (provide it after --)")
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise bad_args("command must be a list of strings")
    if any("\0" in a for a in argv):
        raise bad_args("command arguments must not contain NUL bytes")
    return argv


#: the largest number of seconds a duration option takes (start/queue/check timeouts, graces):
#: thirty years; beyond that a deadline is no longer a date the platform can hold
MAX_SECONDS = 1e9
#: the largest ``limit`` of a listing (0 = all)
MAX_LIST_LIMIT = 10 ** 9


def check_seconds(name, value, allow_none=True):
    # type: (str, Any, bool) -> Any
    """A duration: a finite number from 0 to MAX_SECONDS (None when allowed)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value \
            or not 0 <= value <= MAX_SECONDS:
        raise bad_args("{} must be a number of seconds from 0 to {:g}".format(name, MAX_SECONDS))
    return float(value)


def env_seconds(name, default):
    # type: (str, float) -> float
    """A duration the agent's environment sets (``ORCHESJOB_KILL_GRACE``,
    ``ORCHESJOB_BUSY_TIMEOUT``): a number >= 0, else ``default`` (unset or not a number)."""
    raw = os.environ.get(name)
    try:
        return max(0.0, float(raw)) if raw else default
    except ValueError:
        return default


def check_limit(value):
    # type: (Any) -> int
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LIST_LIMIT:
        raise bad_args("limit must be a whole number from 0 to {}".format(MAX_LIST_LIMIT))
    return value


def check_path(name, value):
    # type: (str, Any) -> Optional[str]
    """A directory a caller names (cwd, the state dir): a non-empty string without NUL."""
    if value is None:
        return None
    if not isinstance(value, str) or not value or "\0" in value:
        raise bad_args("{} must be a non-empty path without NUL bytes".format(name))
    return value


#: the largest environment a start takes: Linux's execve refuses more than a quarter of the
#: stack limit for argv and environment together (2 MiB with the usual 8 MiB), and any one
#: "NAME=value" string over 128 KiB
MAX_ENV_BYTES = 1024 * 1024
MAX_ENV_STRING = 128 * 1024


def check_env_size(env):
    # type: (Optional[Any]) -> None
    """Refuse an environment the kernel would refuse at exec, before anything is stored."""
    if not env:
        return
    total = 0
    for k, v in env.items():
        size = len(k.encode("utf-8", "surrogateescape")) + len(v.encode("utf-8", "surrogateescape")) + 2
        if size > MAX_ENV_STRING:
            raise bad_args("env {!r} is {} bytes; one variable may hold at most {}".format(
                k[:60], size, MAX_ENV_STRING))
        total += size
    if total > MAX_ENV_BYTES:
        raise bad_args("env is {} bytes in {} variables; the limit is {} bytes".format(
            total, len(env), MAX_ENV_BYTES))


def new_job_id():
    # type: () -> str
    """A random (version 4) UUID, without importing uuid (it costs start-up time)."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = bytes(b).hex()
    return "-".join((h[:8], h[8:12], h[12:16], h[16:20], h[20:]))

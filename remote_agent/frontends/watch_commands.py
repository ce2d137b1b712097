"""The watch channel's requests and commands, parsed (pure): the ``watch`` request's options and
each ``sub``/``unsub``/``record`` line a caller writes (docs/agent/protocol.md, ``watch``)."""

import json

from remote_agent.common.errors import bad_args
from remote_agent.common.validate import check_job_id
from remote_agent.common.vocab import STREAMS

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    from typing import Any, Dict, Tuple  # noqa: F401

DEFAULT_INTERVAL = 0.2
DEFAULT_CHECK_EVERY = 5.0
DEFAULT_LIMIT = 65536
MAX_SID = 200
COMMANDS = ("sub", "unsub", "record")


def _number(req, key, default, low, high):
    # type: (Dict[str, Any], str, float, float, float) -> float
    value = req.get(key, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad_args("request field {!r} must be a number".format(key))
    return max(low, min(float(value), high))


def options(req):
    # type: (Dict[str, Any]) -> Tuple[float, float, int]
    """(interval, check_every, limit) of a watch request, clamped to sane ranges."""
    interval = _number(req, "interval", DEFAULT_INTERVAL, 0.02, 5.0)
    check_every = _number(req, "check_every", DEFAULT_CHECK_EVERY, interval, 300.0)
    limit = int(_number(req, "limit", DEFAULT_LIMIT, 1024, 8 << 20))
    return interval, check_every, limit


def parse_command(line):
    # type: (bytes) -> Dict[str, Any]
    """One command line -> ``{"cmd", "sid", "job_id"?, "offsets"?}``; AgentError(bad args) if bad.

    ``sub``: watch ``job_id`` (offsets: the log bytes the caller has shown, or null for no logs);
    ``unsub``: stop; ``record``: store ``offsets`` as shown (the job's ``log_shown``).
    """
    try:
        obj = json.loads(line.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise bad_args("watch command is not valid JSON") from None
    if not isinstance(obj, dict):
        raise bad_args("watch command must be a JSON object")
    cmd = obj.get("cmd")
    if cmd not in COMMANDS:
        raise bad_args("unknown watch command {!r}; known: {}".format(cmd, ", ".join(COMMANDS)))
    sid = obj.get("sid")
    if not isinstance(sid, str) or not sid or len(sid) > MAX_SID:
        raise bad_args("watch command needs a sid (a string of 1-{} chars)".format(MAX_SID))
    out = {"cmd": cmd, "sid": sid}  # type: Dict[str, Any]
    if cmd in ("sub", "record"):
        out["job_id"] = check_job_id(obj.get("job_id"))
        offsets = obj.get("offsets")
        if offsets is not None and not (isinstance(offsets, dict) and all(
                k in STREAMS and isinstance(v, int) and not isinstance(v, bool) and v >= 0
                for k, v in offsets.items())):
            raise bad_args("offsets must map 'stdout'/'stderr' to byte offsets >= 0")
        if cmd == "record" and not offsets:
            raise bad_args("record needs offsets")
        out["offsets"] = None if offsets is None else {s: int(offsets.get(s, 0)) for s in STREAMS}
    return out

"""The agent's wire protocol as the provider speaks it (docs/PROTOCOL.md): requests out, replies
and exit codes in.

Sans-I/O: no SSH, no Airflow beyond the error classes. Every function here turns values into
values (a request into bytes, one exec's exit code and output into a reply or a typed error), so
the fast unit tests can check each branch in microseconds. The typed replies are records.py,
the trigger's events triggers/events.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from orchesjob_provider.client.records import normalize_offsets
from orchesjob_provider.exceptions import AgentUnavailable, error_class

PROTOCOL = 1
#: Extra seconds a call may take beyond the agent-side timeout before the client gives up.
CALL_SLACK = 60.0


def abort_timeout(grace_seconds: float) -> float:
    """How long an ``abort`` call may take: the agent's SIGTERM→SIGKILL grace plus the slack."""
    return grace_seconds + CALL_SLACK


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


def json_line(line: bytes | str) -> Any:
    """One line of the agent's output as JSON, also behind a login banner that did not end its
    line (a shell rc file that prints without a newline glues its text to the agent's first
    line). Raises ValueError when neither the line nor its part from the first ``{"`` parses."""
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    try:
        return json.loads(text)
    except ValueError:
        start = text.find('{"')
        if start <= 0:
            raise
        return json.loads(text[start:])


def parse_reply(
    op: str, rc: int | None, out: bytes, err: bytes, *, where: str, remote_python: str
) -> dict[str, Any]:
    """Turn (exit code, stdout, stderr) of one rpc exec into the reply dict or a typed error."""
    text = out.strip()
    reply: Any = None
    if text:
        try:
            reply = json_line(text.splitlines()[-1])
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

"""The machine protocol (docs/PROTOCOL.md): one JSON request on stdin, one JSON reply.

The provider sends the whole job spec here instead of on a command line, so no user
string is ever parsed by a remote shell and no secret shows up in ``ps``.
"""

import json
import os
import sqlite3
import sys

from remote_agent import PROTOCOL, __version__
from remote_agent.common.errors import EXIT_ERROR, EXIT_NOT_FOUND, AgentError, bad_args, error_body
from remote_agent.common.validate import check_argv, check_job_id, check_path, check_run_key
from remote_agent.common.vocab import STREAMS, TERMINAL
from remote_agent.frontends import render
from remote_agent.jobs.reader import Reader, wait_for
from remote_agent.store import jobsql, paths, sqlite

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    from typing import Any, Callable, Dict, List, Optional  # noqa: F401
    Handler = Callable[[Dict[str, Any], str], Dict[str, Any]]


DEFAULT_LIMIT = 65536
MAX_LIMIT = 8 << 20
MAX_WAIT = 600.0


def _get(req, key, kind, default=None, required=False):
    # type: (Dict[str, Any], str, Any, Any, bool) -> Any
    value = req.get(key, default)
    if value is None:
        if required:
            raise bad_args("request field {!r} is required".format(key))
        return default
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise bad_args("request field {!r} must be {}".format(key, getattr(kind, "__name__", kind)))
    return value


def _env(req):
    # type: (Dict[str, Any]) -> Optional[Dict[str, str]]
    env = _get(req, "env", dict, {})
    for k, v in env.items():
        if not isinstance(v, str) or not k or "=" in k or "\0" in k or "\0" in v:
            raise bad_args("env must map names (no '=' or NUL) to strings")
    return env or None


def _limit(req):
    # type: (Dict[str, Any]) -> int
    return max(1, min(_get(req, "limit", int, DEFAULT_LIMIT), MAX_LIMIT))


def _offsets(spec):
    # type: (Dict[str, Any]) -> Optional[Dict[str, int]]
    offsets = spec.get("offsets")
    if offsets is None:
        return None
    if not isinstance(offsets, dict) or not all(
            k in STREAMS and isinstance(v, int) and v >= 0 for k, v in offsets.items()):
        raise bad_args("offsets must map 'stdout'/'stderr' to byte offsets >= 0")
    return offsets


def _record_shown(state_dir, shown):
    # type: (str, List[Any]) -> None
    """Store the offsets callers say they have shown (``"record": true``), one transaction."""
    if not shown:
        return
    from remote_agent.store import db  # per request that records: the writer's path, ~1 ms

    with db.writing(state_dir) as conn:
        for job_id, offsets in shown:
            jobsql.record_shown(conn, job_id, offsets)


def _logs(state_dir, row, offsets, limit):
    # type: (str, Dict[str, Any], Dict[str, int], int) -> Dict[str, Any]
    from remote_agent.store.logs import read_chunk  # per request with log offsets: < 0.5 ms

    terminal = row["status"] in TERMINAL
    return {s: read_chunk(state_dir, row["job_id"], s, off, limit, terminal) for s, off in offsets.items()}


def op_ping(req, state_dir):
    # type: (Dict[str, Any], str) -> Dict[str, Any]
    from remote_agent.host import identity, procs  # per op: ping only (which host answers), < 1 ms
    from remote_agent.store import fstype as fs  # per op: ping only (how it keeps its database), < 1 ms

    fstype = fs.state_fs_type(state_dir)
    return {"home": state_dir, "python": "{}.{}.{}".format(*sys.version_info[:3]),
            "sqlite": sqlite3.sqlite_version, "boot_id": procs.boot_id(), "host_id": identity.host_id(),
            "state_fs": fstype, "journal_mode": "delete" if fs.is_network_fs(fstype) else "wal"}


def op_start(req, state_dir):
    # type: (Dict[str, Any], str) -> Dict[str, Any]
    from remote_agent.ops import start  # per op: ops/start + worker/, ~3 ms

    return start_reply(*start.start(state_dir, **start_args(req)), state_dir=state_dir)


def start_args(req):
    # type: (Dict[str, Any]) -> Dict[str, Any]
    """A ``start`` request's fields as ops/start.start's keyword arguments (checked)."""
    mode = _get(req, "mode", str, "resume")
    if mode not in ("resume", "new"):
        raise bad_args("mode must be 'resume' or 'new'")
    argv = check_argv(_get(req, "argv", list, required=True))
    claims, queue_timeout = _claims(req)
    return dict(
        run_key=_get(req, "run_key", str, required=True), argv=argv,
        cwd=_get(req, "cwd", str), env=_env(req), strict=_get(req, "strict", bool, False),
        resume=mode == "resume", sync=False, start_timeout=_get(req, "start_timeout", float, 10.0),
        rerun_unknown=_get(req, "rerun_unknown", bool, False),
        epoch=_get(req, "epoch", str), grace=_get(req, "grace_seconds", float, 5.0), check=_check(req),
        claims=claims, queue_timeout=queue_timeout, task_instance=_get(req, "task_instance", str))


def start_reply(result, row, state_dir):
    # type: (Any, Dict[str, Any], str) -> Dict[str, Any]
    out = {"action": result.action, "strict_override_used": result.strict_override_used,
           "job": render.job_object(row, state_dir)}  # type: Dict[str, Any]
    if result.superseded is not None:
        old = result.superseded
        out["superseded"] = {"job_id": old["job_id"], "status": old["status"],
                             "aborted": old["status"] not in TERMINAL}
    return out


def _check(req):
    # type: (Dict[str, Any]) -> Any
    if req.get("check") is None:
        return None
    from remote_agent.jobs.checkspec import parse  # per start with a check: < 1 ms

    return parse(req["check"])


def _claims(req):
    # type: (Dict[str, Any]) -> Any
    """start's ``locks``, ``slots`` and ``queue_timeout`` as (claims or None, timeout)."""
    locks_arg, slots_arg = req.get("locks"), req.get("slots")
    timeout = _get(req, "queue_timeout", float)
    if not locks_arg and not slots_arg:
        if timeout is not None:
            raise bad_args("queue_timeout needs locks or slots")
        return None, None
    from remote_agent.jobs import lockrule  # per start with locks or slots: < 1 ms

    if timeout is not None and timeout < 0:
        raise bad_args("queue_timeout must be >= 0 seconds")
    return lockrule.normalize(locks_arg, slots_arg), timeout


def op_locks(req, state_dir):
    # type: (Dict[str, Any], str) -> Dict[str, Any]
    """Holders and waiters of every named lock and slot (``orchesjob locks``); read-only."""
    from remote_agent.jobs import lockqueue  # per command: the lock queue and its rule, ~1 ms

    reader = Reader(state_dir)
    try:
        return {"locks": lockqueue.listing(reader.conn)}
    finally:
        reader.close()


#: log bytes one ``poll`` reply carries at most, over all its jobs (each stream gets an equal
#: share, at least POLL_MIN_SHARE): the rest comes with the next poll (``size`` > ``next_offset``)
POLL_MAX_BYTES = 16 * 1024 * 1024
POLL_MIN_SHARE = 1024


def op_poll(req, state_dir):
    # type: (Dict[str, Any], str) -> Dict[str, Any]
    specs = _get(req, "jobs", list, required=True)
    # every stream its share of the reply's budget: many chatty jobs cannot make one reply hold
    # jobs x 2 x MAX_LIMIT bytes, and none starves the others of their turn
    limit = min(_limit(req), max(POLL_MIN_SHARE, POLL_MAX_BYTES // (2 * max(1, len(specs)))))
    for spec in specs:
        if not isinstance(spec, dict):
            raise bad_args("each entry of 'jobs' must be an object with a job_id")
        check_job_id(spec.get("job_id"))
        _offsets(spec)
    if _get(req, "record", bool, False):
        _record_shown(state_dir, [(s["job_id"], s["offsets"]) for s in specs if s.get("offsets")])
    reader = Reader(state_dir)
    out = []  # type: List[Dict[str, Any]]
    try:
        for spec in specs:
            job_id = spec["job_id"]
            offsets = _offsets(spec)
            row = reader.job(job_id)
            item = {"job_id": job_id, "job": render.job_object(row, state_dir) if row else None}  # type: Dict[str, Any]
            if row is not None and offsets is not None:
                item["logs"] = _logs(state_dir, row, offsets, limit)
            out.append(item)
    finally:
        reader.close()
    return {"jobs": out}


def op_status(req, state_dir):
    # type: (Dict[str, Any], str) -> Dict[str, Any]
    """The latest job of a run key, or null when the key has none (a sensor may be early)."""
    run_key = check_run_key(_get(req, "run_key", str, required=True))
    reader = Reader(state_dir)
    try:
        row = reader.latest(run_key)
    except AgentError as exc:
        if exc.code != EXIT_NOT_FOUND:
            raise
        return {"job": None}
    finally:
        reader.close()
    return {"job": render.job_object(row, state_dir)}


def op_wait(req, state_dir):
    # type: (Dict[str, Any], str) -> Dict[str, Any]
    job_id = check_job_id(_get(req, "job_id", str, required=True))
    timeout = min(max(0.0, _get(req, "timeout", float, 30.0)), MAX_WAIT)
    until = _get(req, "until", str, "terminal")
    if until not in ("terminal", "output"):
        raise bad_args("until must be 'terminal' or 'output'")
    offsets = _offsets(req)
    if offsets and _get(req, "record", bool, False):
        _record_shown(state_dir, [(job_id, offsets)])
    reader = Reader(state_dir)
    try:
        row, timed_out = wait_for(reader, job_id, timeout, offsets if until == "output" else None,
                                       _limit(req))
    finally:
        reader.close()
    out = {"job": render.job_object(row, state_dir), "timed_out": timed_out}  # type: Dict[str, Any]
    if offsets is not None:
        out["logs"] = _logs(state_dir, row, offsets, _limit(req))
    return out


def op_ack(req, state_dir):
    # type: (Dict[str, Any], str) -> Dict[str, Any]
    from remote_agent.ops import abort  # per op: ops/abort + host/stop, ~2 ms

    row = abort.ack(state_dir, _get(req, "job_id", str, required=True))
    return {"job": render.job_object(row, state_dir)}


def op_abort(req, state_dir):
    # type: (Dict[str, Any], str) -> Dict[str, Any]
    from remote_agent.ops import abort  # per op: ops/abort + host/stop, ~2 ms

    row, flags = abort.abort(state_dir, None, check_job_id(_get(req, "job_id", str, required=True)),
                            _get(req, "reason", str), _get(req, "grace_seconds", float, 5.0),
                            ack=_get(req, "ack", bool, False))
    out = {"job": render.job_object(row, state_dir), "aborted": True}  # type: Dict[str, Any]
    out.update(flags)
    return out


def op_starts(req, state_dir):
    # type: (Dict[str, Any], str) -> Dict[str, Any]
    from remote_agent.frontends import rpc_batch  # per op: batched starts only, < 0.5 ms

    return rpc_batch.op_starts(req, state_dir, start_args, start_reply)


OPS = {"ping": op_ping, "start": op_start, "starts": op_starts, "status": op_status, "poll": op_poll,
       "wait": op_wait, "ack": op_ack, "abort": op_abort, "locks": op_locks}  # type: Dict[str, Handler]


def _reply(op, body):
    # type: (Optional[str], Dict[str, Any]) -> None
    out = {"ok": "error" not in body, "protocol": PROTOCOL, "agent_version": __version__, "op": op}
    out.update(body)
    try:
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # the caller went away: nobody to answer, and no traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.stderr.write("orchesjob rpc: the caller closed the reply channel before the answer\n")


#: the largest request ``rpc`` reads (bytes): a start's env and command fit many times over;
#: a larger one is refused (exit 2) before it is parsed, without reading the rest
MAX_REQUEST = 16 * 1024 * 1024


def _read_request(fd=0):
    # type: (int) -> Any
    """(bytes, None) for a one-shot request (everything up to EOF), or (bytes after the first
    line, request) when the first line is a ``watch`` request: its commands follow on stdin, so
    reading to EOF would wait for the channel to close. Read from the fd, unbuffered, so the
    watch sees every byte after its first line. Linear in the request's size (chunks joined
    once; only a new chunk is searched for the first newline) and bounded by MAX_REQUEST."""
    chunks = []  # type: List[bytes]
    size = 0
    newline = False
    while True:
        data = os.read(fd, 65536)
        if not data:
            return b"".join(chunks), None
        chunks.append(data)
        size += len(data)
        if size > MAX_REQUEST:
            raise bad_args("request is larger than {} bytes (the limit); nothing was done".format(
                MAX_REQUEST))
        if not newline and b"\n" in data:
            newline = True
            raw = b"".join(chunks)
            chunks = [raw]
            first, rest = raw.split(b"\n", 1)
            if b'"watch"' in first:
                try:
                    req = json.loads(first.decode("utf-8"))
                except (ValueError, UnicodeDecodeError):
                    req = None
                if (isinstance(req, dict) and req.get("op") == "watch"
                        and req.get("protocol", PROTOCOL) == PROTOCOL):
                    return rest, req


def serve():
    # type: () -> int
    """Answer one request; the exit code equals the error code (0 on success)."""
    op = None  # type: Optional[str]
    state_dir = ""
    try:
        raw, watching = _read_request()
        if watching is not None:  # a long-lived watch: commands follow on stdin (watch.py)
            from remote_agent.frontends import watch  # per op: the watch channel's server, ~2 ms

            op = "watch"
            given = check_path("home", _get(watching, "home", str) or _get(watching, "state_dir", str))
            state_dir = paths.expand(given) if given else paths.default_state_dir()
            return watch.serve(watching, state_dir, raw)
        try:
            req = json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise bad_args("request is not valid JSON: {}".format(exc)) from None
        if not isinstance(req, dict):
            raise bad_args("request must be a JSON object")
        op = req.get("op")
        proto = req.get("protocol", PROTOCOL)
        if proto != PROTOCOL:
            raise bad_args("protocol {!r} is not supported (this agent speaks {})".format(proto, PROTOCOL))
        if not isinstance(op, str) or op not in OPS:
            raise bad_args("unknown op {!r}; known: {}".format(op, ", ".join(sorted(OPS))))
        # "home" is the protocol's historical name for the state dir; "state_dir" also works.
        given = check_path("home", _get(req, "home", str) or _get(req, "state_dir", str))
        state_dir = paths.expand(given) if given else paths.default_state_dir()
        body = OPS[op](req, state_dir)
    except AgentError as exc:
        return _error(op, exc)
    except sqlite3.Error as exc:
        return _error(op, sqlite.db_error(exc, state_dir))
    except Exception as exc:
        return _error(op, AgentError("internal error: {}: {}".format(type(exc).__name__, exc), EXIT_ERROR))
    _reply(op, body)
    return 0


def _error(op, exc):
    # type: (Optional[str], AgentError) -> int
    body = error_body(exc)
    _reply(op, {"error": body})
    sys.stderr.write("orchesjob: {}\n".format(body["message"]))
    return exc.code



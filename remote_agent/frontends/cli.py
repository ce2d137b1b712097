"""The ``orchesjob`` command line: orchesjob 1.1.0's commands, flags, JSON and exit codes.

Every failure ends as one ``orchesjob: <message>`` line on stderr and a documented exit
code (see common/errors.py); argparse's usage dumps are folded into that one line too.

Per-command loading: this module holds what a poller runs over and over (status, logs, wait)
and the fast parser of the hot commands' common forms; every other command is in
cli_commands.py, loaded per command, and argparse (cli_parser.py) only for what the fast
parser leaves to it. The deployed agent's boot file sends the hooks' ``rpc`` straight to
rpc.py, before any of this is loaded.
"""

import os
import sqlite3
import sys

from remote_agent.common.errors import EXIT_ERROR, EXIT_NOT_FOUND, AgentError, bad_args
from remote_agent.common.vocab import STDOUT, STREAMS
from remote_agent.frontends import render
from remote_agent.jobs.reader import Reader, wait_for
from remote_agent.store import paths, sqlite

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    from typing import Any, Callable, Dict, List, NoReturn, Optional, Set  # noqa: F401


class Args(object):
    """The parsed command line (what argparse's Namespace would hold)."""

    def __init__(self, **values):
        # type: (**Any) -> None
        self.__dict__.update(values)


# The hot commands' flags, for the fast path below: (type, default). Selector flags of
# mutually exclusive groups are listed in FAST_ONE_OF.
FAST = {
    "status": {"--run-key": (str, None), "--job-id": (str, None), "--running": (bool, False),
               "--all": (bool, False), "--format": (("json", "table"), "json")},
    "logs": {"--run-key": (str, None), "--job-id": (str, None), "--stream": (STREAMS, STDOUT)},
    "start": {"--run-key": (str, None), "--sync": (bool, False), "--start-timeout": (float, 10.0),
              "--strict": (bool, False), "--cwd": (str, None), "--lock-write": (list, None),
              "--lock-read": (list, None), "--slot": (list, None), "--queue-timeout": (float, None)},
    "list": {"--status": (str, None), "--run-key": (str, None), "--prefix": (str, None),
             "--since": (str, None), "--until": (str, None), "--limit": (int, 100),
             "--format": (("json", "jsonl", "table"), "json")},
}  # type: Dict[str, Dict[str, Any]]


FAST_ONE_OF = {"status": ("run_key", "job_id", "running"), "logs": ("run_key", "job_id"),
                "start": ("run_key",)}  # type: Dict[str, Any]


def fast_parse(argv):
    # type: (List[str]) -> Optional[Args]
    """Parse the common forms of status/logs/start/list without argparse, or return None.

    Building the argparse tree costs more than the whole status query, so the hot commands
    take this path. Anything it is not sure of (help, '=' forms, abbreviations, errors)
    returns None and goes to argparse, which gives the same result or the same error.
    """
    if not argv or argv[0] not in FAST:
        return None
    name, spec = argv[0], FAST[argv[0]]
    values = {"subcommand": name}  # type: Dict[str, Any]
    for flag, (_, default) in spec.items():
        values[flag[2:].replace("-", "_")] = default
    i = 1
    seen = set()  # type: Set[str]
    while i < len(argv):
        token = argv[i]
        if name == "start" and (token == "--" or not token.startswith("-")):
            break
        if token not in spec or token in seen:
            return None  # (a repeated flag: argparse decides, e.g. list --status twice)
        seen.add(token)
        kind = spec[token][0]
        dest = token[2:].replace("-", "_")
        if kind is bool:
            values[dest] = True
            i += 1
            continue
        if i + 1 >= len(argv) or argv[i + 1].startswith("-"):
            return None
        raw = argv[i + 1]
        if isinstance(kind, tuple):
            if raw not in kind:
                return None
            values[dest] = raw
        elif kind is list:  # a repeatable flag (--lock-write NAME ...)
            values[dest] = (values[dest] or []) + [raw]
        elif kind is float or kind is int:
            try:
                values[dest] = kind(raw)
            except ValueError:
                return None
        else:
            values[dest] = raw
        i += 2
    if name == "start":
        values["command"] = argv[i:]
    one_of = FAST_ONE_OF.get(name)
    if one_of and len([d for d in one_of if values[d] not in (None, False)]) != 1:
        return None
    return Args(**values)


def _with_override(reader, row):
    # type: (Reader, Dict[str, Any]) -> Dict[str, Any]
    out = render.job_object(row, reader.state_dir)
    out["strict_override"] = render.override_object(reader.override(row["run_key"]))
    return out


def cmd_status(args, state_dir):
    # type: (Any, str) -> None
    if args.all and not args.run_key:
        raise bad_args("status --all requires --run-key")
    reader = Reader(state_dir)
    try:
        if args.running:
            out = [_with_override(reader, r) for r in reader.running()]  # type: Any
        elif args.all:
            override = render.override_object(reader.override(args.run_key))
            out = []
            for r in reader.history(args.run_key):
                item = render.job_object(r, state_dir)
                item["strict_override"] = override
                out.append(item)
        else:
            out = _with_override(reader, reader.resolve(args.run_key, args.job_id))
    finally:
        reader.close()
    if args.format == "table":
        from remote_agent.frontends import tables  # per command with --format table: < 0.5 ms

        tables.print_jobs(out if isinstance(out, list) else [out])
    else:
        render.print_json(out)


def cmd_logs(args, state_dir):
    # type: (Any, str) -> None
    if getattr(args, "follow", False):
        from remote_agent.frontends import listing  # per command: ~1 ms, only logs --follow

        listing.follow(state_dir, args.run_key, args.job_id, args.stream, sys.stdout.buffer)
        return
    reader = Reader(state_dir)
    try:
        row = reader.resolve(args.run_key, args.job_id)
    finally:
        reader.close()
    path = paths.log_path(state_dir, row["job_id"], args.stream)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise AgentError("Log file not found: {}".format(path), EXIT_NOT_FOUND) from None
    from remote_agent.store import logs  # per command: logs only, < 0.5 ms

    with f:
        logs.copy_out(f, sys.stdout.buffer)


def cmd_wait(args, state_dir):
    # type: (Any, str) -> None
    reader = Reader(state_dir)
    try:
        row = reader.resolve(args.run_key, args.job_id)
        row, timed_out = wait_for(reader, row["job_id"], args.timeout)
    finally:
        reader.close()
    out = render.job_object(row, state_dir)
    out["timed_out"] = timed_out
    render.print_json(out)


#: The commands this module runs itself; every other one is cli_commands.cmd_<name>.
HOT = {"status": cmd_status, "logs": cmd_logs, "wait": cmd_wait}


def command(name):
    # type: (str) -> Callable[[Any, str], None]
    if name in HOT:
        return HOT[name]
    from remote_agent.frontends import cli_commands  # per command beyond the hot ones: < 1 ms

    return getattr(cli_commands, "cmd_" + name)  # type: ignore[no-any-return]


def _parse_slowly(argv):
    # type: (List[str]) -> Any
    from remote_agent.frontends.cli_parser import build_parser  # argparse: ~5 ms, off the hot path

    return build_parser().parse_args(argv)


def fail(message, code):
    # type: (str, int) -> NoReturn
    """The one way out on error: a single stderr line, nothing on stdout."""
    line = " ".join(str(message).split()) or "unknown error"
    sys.stderr.write("orchesjob: {}\n".format(line))
    sys.stderr.flush()
    sys.exit(code)


def main(argv=None):
    # type: (Optional[List[str]]) -> None
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["rpc"]:  # hot path for the provider: skip building the argparse tree
        from remote_agent.frontends import rpc  # per command: the provider's entry, loads per op

        sys.exit(rpc.serve())
    state_dir = ""
    try:
        state_dir = paths.default_state_dir()
        args = fast_parse(argv) or _parse_slowly(argv)  # type: Any
        if args.subcommand == "rpc":
            from remote_agent.frontends import rpc  # per command: as above

            sys.exit(rpc.serve())
        command(args.subcommand)(args, state_dir)
    except AgentError as exc:
        fail(exc.message, exc.code)
    except sqlite3.Error as exc:
        err = sqlite.db_error(exc, state_dir)
        fail(err.message, err.code)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except BrokenPipeError:
        sys.stderr.close()
        os._exit(EXIT_ERROR)
    except Exception as exc:  # never a traceback: say what broke in one line
        fail("internal error: {}: {}".format(type(exc).__name__, exc), EXIT_ERROR)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        os._exit(EXIT_ERROR)

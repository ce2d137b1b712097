"""The ``orchesjob`` command line: orchesjob 1.1.0's commands, flags, JSON and exit codes.

Every failure ends as one ``orchesjob: <message>`` line on stderr and a documented exit
code (see errors.py); argparse's usage dumps are folded into that one line too.
"""

import os
import sqlite3
import sys

from remote_agent import __version__, jobs, render, store
from remote_agent.errors import EXIT_ERROR, EXIT_INVALID_ARGS, AgentError, bad_args
from remote_agent.timeutil import ISO_HINT, parse_datetime, parse_ttl, to_iso

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    from typing import Any, Dict, List, NoReturn, Optional  # noqa: F401



def _examples(*lines):
    # type: (*str) -> str
    return "examples:\n" + "\n".join("  " + line for line in lines)


def _job_selector(p, required=True):
    # type: (Any, bool) -> Any
    group = p.add_mutually_exclusive_group(required=required)
    group.add_argument("--run-key", dest="run_key", metavar="RUN_KEY", help="the job's idempotency key")
    group.add_argument("--job-id", dest="job_id", metavar="JOB_ID", help="one job by id")
    return group


def build_parser():
    # type: () -> Any
    import argparse

    class _Parser(argparse.ArgumentParser):
        """argparse that reports a usage error as one line and exit code 2."""

        def error(self, message):
            # type: (str) -> NoReturn
            raise AgentError(message, EXIT_INVALID_ARGS)

    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="orchesjob",
        description="Idempotent one-shot job runner: a run key never has two active jobs.",
        epilog=_examples(
            "orchesjob start --run-key nightly-2026-01-01 -- /jobs/import.sh --date 2026-01-01",
            "orchesjob status --run-key nightly-2026-01-01",
            "orchesjob status --running --format table",
        ) + "\n\nexit codes: 0 ok, 1 error, 2 bad arguments, 3 not found, 4 wrong state, 5 database busy",
        formatter_class=fmt,
    )
    parser.add_argument("--version", action="version", version="orchesjob " + __version__)
    sub = parser.add_subparsers(dest="subcommand", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "start", help="start a job (or return the active one for its run key)", formatter_class=fmt,
        description="Start CMD under RUN_KEY unless a job for that key is already active.",
        epilog=_examples("orchesjob start --run-key backup-42 -- tar czf /backups/42.tgz /data",
                         "orchesjob start --run-key billing-2026-01 --strict --sync -- ./bill.sh"))
    p.add_argument("--run-key", required=True, dest="run_key", metavar="RUN_KEY", help="idempotency key")
    p.add_argument("--sync", action="store_true", help="wait for the job to finish")
    p.add_argument("--start-timeout", type=float, default=10.0, metavar="S",
                   help="seconds an async start waits for the target's pid (default 10)")
    p.add_argument("--strict", action="store_true",
                   help="never run a finished key again unless it was unlocked")
    p.add_argument("--cwd", metavar="DIR", help="working directory of the command")
    p.add_argument("command", nargs=argparse.REMAINDER, help="command to run (after --)")

    p = sub.add_parser(
        "status", help="show a job, a key's history, or the running jobs", formatter_class=fmt,
        epilog=_examples("orchesjob status --run-key backup-42", "orchesjob status --run-key backup-42 --all",
                         "orchesjob status --running --format table"))
    g = _job_selector(p)
    g.add_argument("--running", action="store_true", help="list all STARTING/RUNNING jobs")
    p.add_argument("--all", action="store_true", help="every attempt of --run-key, newest first")
    p.add_argument("--format", choices=("json", "table"), default="json", help="output format")

    p = sub.add_parser(
        "logs", help="print a job's stdout or stderr", formatter_class=fmt,
        epilog=_examples("orchesjob logs --run-key backup-42",
                         "orchesjob logs --job-id JOB_ID --stream stderr"))
    _job_selector(p)
    p.add_argument("--stream", default="stdout", choices=("stdout", "stderr"), help="log stream")

    p = sub.add_parser(
        "clean", help="delete finished jobs and their logs", formatter_class=argparse.RawTextHelpFormatter,
        description=(
            "Delete terminal job data. STARTING/RUNNING jobs are never deleted.\n"
            "A key's attempt counter survives, so a strict key stays consumed until `unlock`.\n\n"
            "Selection rules:\n"
            "  * Specify --all to delete all terminal job data.\n"
            "  * Specify --job-id to delete one terminal job.\n"
            "  * Otherwise, specify at least one of --before or --after.\n"
            "  * --before and --after may be combined as a range.\n"
            "  * --run-key may be combined with --all, --before, or --after.\n"
            "  * --job-id cannot be combined with other selection options."),
        epilog=_examples("orchesjob clean --before 2026-01-01 --dry-run",
                         "orchesjob clean --all --run-key backup-42"))
    p.add_argument("--before", metavar="DATETIME", help="jobs finished before this (exclusive)")
    p.add_argument("--after", metavar="DATETIME", help="jobs finished at or after this (inclusive)")
    p.add_argument("--all", action="store_true", help="all matching terminal jobs")
    p.add_argument("--job-id", metavar="JOB_ID", help="one terminal job")
    p.add_argument("--run-key", metavar="RUN_KEY", help="only this run key")
    p.add_argument("--dry-run", action="store_true", dest="dry_run", help="list, delete nothing")

    p = sub.add_parser(
        "abort", help="stop a running job (SIGTERM, then SIGKILL)", formatter_class=fmt,
        epilog=_examples("orchesjob abort --run-key backup-42 --reason 'disk full' --grace-seconds 10"))
    _job_selector(p)
    p.add_argument("--reason", default=None, help="stored as abort_reason")
    p.add_argument("--grace-seconds", type=float, default=5.0, metavar="S",
                   help="seconds between SIGTERM and SIGKILL (default 5)")

    p = sub.add_parser(
        "unlock", help="allow the next start --strict of a finished key", formatter_class=fmt,
        epilog=_examples("orchesjob unlock --run-key billing-2026-01 --reason 'fixed input' --ttl 1h"))
    p.add_argument("--run-key", required=True, dest="run_key", metavar="RUN_KEY")
    p.add_argument("--reason", default=None, help="becomes the new job's rerun_reason")
    p.add_argument("--ttl", default=None, help="how long the unlock stays valid: 90, 90s, 2m, 1h, 1d")

    p = sub.add_parser(
        "rerun", help="run a finished job's command again as a new attempt", formatter_class=fmt,
        epilog=_examples("orchesjob rerun --run-key backup-42 --reason 'retry after fix' --sync"))
    _job_selector(p)
    p.add_argument("--sync", action="store_true", help="wait for the job to finish")
    p.add_argument("--start-timeout", type=float, default=10.0, metavar="S")
    p.add_argument("--reason", default=None, help="stored as rerun_reason")

    p = sub.add_parser(
        "ack", help="mark a finished job's result as consumed (resume protocol)", formatter_class=fmt,
        epilog=_examples("orchesjob ack --job-id JOB_ID"))
    p.add_argument("--job-id", required=True, dest="job_id", metavar="JOB_ID")

    p = sub.add_parser(
        "wait", help="block until a job is finished (or the timeout passes)", formatter_class=fmt,
        epilog=_examples("orchesjob wait --run-key backup-42 --timeout 60"))
    _job_selector(p)
    p.add_argument("--timeout", type=float, default=None, metavar="S", help="give up after S seconds")

    sub.add_parser(
        "rpc", help="machine protocol: one JSON request on stdin, one JSON reply (docs/PROTOCOL.md)",
        formatter_class=fmt, epilog=_examples("echo '{\"op\": \"ping\"}' | orchesjob rpc"))
    return parser


class Args(object):
    """The parsed command line (what argparse's Namespace would hold)."""

    def __init__(self, **values):
        # type: (**Any) -> None
        self.__dict__.update(values)


# The hot commands' flags, for the fast path below: (type, default). Selector flags of
# mutually exclusive groups are listed in _FAST_ONE_OF.
_FAST = {
    "status": {"--run-key": (str, None), "--job-id": (str, None), "--running": (bool, False),
               "--all": (bool, False), "--format": (("json", "table"), "json")},
    "logs": {"--run-key": (str, None), "--job-id": (str, None), "--stream": (("stdout", "stderr"), "stdout")},
    "start": {"--run-key": (str, None), "--sync": (bool, False), "--start-timeout": (float, 10.0),
              "--strict": (bool, False), "--cwd": (str, None)},
}  # type: Dict[str, Dict[str, Any]]
_FAST_ONE_OF = {"status": ("run_key", "job_id", "running"), "logs": ("run_key", "job_id"),
                "start": ("run_key",)}


def fast_parse(argv):
    # type: (List[str]) -> Optional[Args]
    """Parse the common forms of status/logs/start without argparse, or return None.

    Building the argparse tree costs more than the whole status query, so the hot commands
    take this path. Anything it is not sure of (help, '=' forms, abbreviations, errors)
    returns None and goes to argparse, which gives the same result or the same error.
    """
    if not argv or argv[0] not in _FAST:
        return None
    name, spec = argv[0], _FAST[argv[0]]
    values = {"subcommand": name}  # type: Dict[str, Any]
    for flag, (_, default) in spec.items():
        values[flag[2:].replace("-", "_")] = default
    i = 1
    while i < len(argv):
        token = argv[i]
        if name == "start" and (token == "--" or not token.startswith("-")):
            break
        if token not in spec:
            return None
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
        elif kind is float:
            try:
                values[dest] = float(raw)
            except ValueError:
                return None
        else:
            values[dest] = raw
        i += 2
    if name == "start":
        values["command"] = argv[i:]
    chosen = [d for d in _FAST_ONE_OF[name] if values[d] not in (None, False)]
    if len(chosen) != 1:
        return None
    return Args(**values)


def _start_reply(result, row, home, strict, sync):
    # type: (jobs.StartResult, Dict[str, Any], str, bool, bool) -> Dict[str, Any]
    out = render.job_object(row, home)
    out.update({
        "accepted": not result.existing,
        "existing": result.existing,
        "mode": "sync" if sync else "async",
        "strict": strict,
        "strict_override_used": result.strict_override_used,
    })
    return out


def _with_override(reader, row):
    # type: (jobs.Reader, Dict[str, Any]) -> Dict[str, Any]
    out = render.job_object(row, reader.home)
    out["strict_override"] = render.override_object(reader.override(row["run_key"]))
    return out


def cmd_start(args, home):
    # type: (Any, str) -> None
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    result, row = jobs.start(home, args.run_key, command, cwd=args.cwd, strict=args.strict,
                             sync=args.sync, start_timeout=args.start_timeout)
    render.print_json(_start_reply(result, row, home, args.strict, args.sync))


def cmd_status(args, home):
    # type: (Any, str) -> None
    if args.all and not args.run_key:
        raise bad_args("status --all requires --run-key")
    reader = jobs.Reader(home)
    try:
        if args.running:
            out = [_with_override(reader, r) for r in reader.running()]  # type: Any
        elif args.all:
            override = render.override_object(reader.override(args.run_key))
            out = []
            for r in reader.history(args.run_key):
                item = render.job_object(r, home)
                item["strict_override"] = override
                out.append(item)
        else:
            out = _with_override(reader, reader.resolve(args.run_key, args.job_id))
    finally:
        reader.close()
    if args.format == "table":
        render.print_table(out if isinstance(out, list) else [out])
    else:
        render.print_json(out)


def cmd_logs(args, home):
    # type: (Any, str) -> None
    reader = jobs.Reader(home)
    try:
        row = reader.resolve(args.run_key, args.job_id)
    finally:
        reader.close()
    path = store.log_path(home, row["job_id"], args.stream)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise AgentError("Log file not found: {}".format(path), 3) from None
    with f:
        out = sys.stdout.buffer
        while True:
            block = f.read(1 << 20)
            if not block:
                break
            out.write(block)
        out.flush()


def _clean_datetime(flag, value):
    # type: (str, Optional[str]) -> Optional[int]
    if value is None:
        return None
    try:
        return parse_datetime(value)
    except ValueError:
        raise bad_args("Invalid {}: {!r}. {}".format(flag, value, ISO_HINT)) from None


def cmd_clean(args, home):
    # type: (Any, str) -> None
    if args.job_id:
        if args.before or args.after or args.all or args.run_key:
            raise bad_args("clean: --job-id cannot be combined with --before, --after, --all, or --run-key")
    elif args.all:
        if args.before or args.after:
            raise bad_args("clean: --all cannot be combined with --before or --after")
    elif not args.before and not args.after:
        raise bad_args("clean: one of --before, --after, --all, or --job-id is required")
    before = _clean_datetime("--before", args.before)
    after = _clean_datetime("--after", args.after)
    rows, errors = jobs.clean(home, job_id=args.job_id, run_key=args.run_key, before=before, after=after,
                              everything=args.all, dry_run=args.dry_run)
    items = []
    for r in rows:
        selected = r["finished_at"] if r["finished_at"] is not None else r["started_at"]
        items.append({"job_id": r["job_id"], "run_key": r["run_key"], "selected_at": selected,
                      "selected_at_iso": to_iso(selected)})
    render.print_json({"deleted": len(rows), "errors": errors, "dry_run": args.dry_run, "items": items})


def cmd_abort(args, home):
    # type: (Any, str) -> None
    row, flags = jobs.abort(home, args.run_key, args.job_id, args.reason, args.grace_seconds)
    out = render.job_object(row, home)
    out["aborted"] = True
    out.update(flags)
    render.print_json(out)


def cmd_unlock(args, home):
    # type: (Any, str) -> None
    ttl = None
    if args.ttl is not None:
        try:
            ttl = parse_ttl(args.ttl)
        except ValueError as exc:
            raise bad_args(str(exc)) from None
    res = jobs.unlock(home, args.run_key, args.reason, ttl)
    render.print_json({
        "unlocked": True, "run_key": res["run_key"], "reason": res["reason"],
        "allowed_at": res["allowed_at"], "allowed_at_iso": to_iso(res["allowed_at"]),
        "expires_at": res["expires_at"], "expires_at_iso": to_iso(res["expires_at"]),
    })


def cmd_rerun(args, home):
    # type: (Any, str) -> None
    result, row = jobs.rerun(home, args.run_key, args.job_id, args.reason, args.sync, args.start_timeout)
    out = _start_reply(result, row, home, False, args.sync)
    out["rerun"] = True
    render.print_json(out)


def cmd_ack(args, home):
    # type: (Any, str) -> None
    render.print_json(render.job_object(jobs.ack(home, args.job_id), home))


def cmd_wait(args, home):
    # type: (Any, str) -> None
    reader = jobs.Reader(home)
    try:
        row = reader.resolve(args.run_key, args.job_id)
        row, timed_out = jobs.wait_for(reader, row["job_id"], args.timeout)
    finally:
        reader.close()
    out = render.job_object(row, home)
    out["timed_out"] = timed_out
    render.print_json(out)


COMMANDS = {
    "start": cmd_start, "status": cmd_status, "logs": cmd_logs, "clean": cmd_clean,
    "abort": cmd_abort, "unlock": cmd_unlock, "rerun": cmd_rerun, "ack": cmd_ack, "wait": cmd_wait,
}


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
        from remote_agent import rpc

        sys.exit(rpc.serve())
    home = ""
    try:
        home = store.default_home()
        args = fast_parse(argv) or build_parser().parse_args(argv)  # type: Any
        if args.subcommand == "rpc":
            from remote_agent import rpc

            sys.exit(rpc.serve())
        COMMANDS[args.subcommand](args, home)
    except AgentError as exc:
        fail(exc.message, exc.code)
    except sqlite3.Error as exc:
        err = store.db_error(exc, home)
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

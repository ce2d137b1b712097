"""The ``orchesjob`` commands beyond the hot reads: start, list, locks, clean, abort, ack,
unlock and rerun, with orchesjob 1.1.0's flags, JSON and messages.

Loaded per command by cli.py (which keeps status, logs and wait, the commands a poller runs
over and over: a status pays for every line of code it loads); each command loads its own ops/
or jobs/ module in turn, with a one-line note of what that costs.
"""

import json
import sys

from remote_agent.common.errors import bad_args
from remote_agent.common.timeutil import ISO_HINT, now_ts, parse_datetime, parse_ttl, to_iso
from remote_agent.frontends import render
from remote_agent.jobs.reader import Reader

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    from typing import Any, Dict, Optional  # noqa: F401

    from remote_agent.jobs.decide import StartResult  # noqa: F401


def cmd_start(args, state_dir):
    # type: (Any, str) -> None
    from remote_agent.ops import start  # per command: ops/start + worker/, ~3 ms

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    claims, queue_timeout = _claims(args)
    result, row = start.start(state_dir, args.run_key, command, cwd=args.cwd, strict=args.strict,
                                  sync=args.sync, start_timeout=args.start_timeout, check=_check_spec(args),
                                  claims=claims, queue_timeout=queue_timeout)
    render.print_json(_start_reply(result, row, state_dir, args.strict, args.sync))


def _start_reply(result, row, state_dir, strict, sync):
    # type: (StartResult, Dict[str, Any], str, bool, bool) -> Dict[str, Any]
    out = render.job_object(row, state_dir)
    out.update({
        "accepted": not result.existing,
        "existing": result.existing,
        "mode": "sync" if sync else "async",
        "strict": strict,
        "strict_override_used": result.strict_override_used,
    })
    return out


def _check_spec(args):
    # type: (Any) -> Any
    """start's --check-shell / --check-argv-json / --check-timeout as a check spec, or None."""
    shell, raw = getattr(args, "check_shell", None), getattr(args, "check_argv_json", None)
    timeout = getattr(args, "check_timeout", None)
    if shell is None and raw is None:
        if timeout is not None:
            raise bad_args("--check-timeout needs --check-shell or --check-argv-json")
        return None
    if raw is not None:
        try:
            argv = json.loads(raw)
        except ValueError as exc:
            raise bad_args("--check-argv-json is not valid JSON: {}".format(exc)) from None
    else:
        argv = ["/bin/sh", "-c", shell]
    from remote_agent.jobs.checkspec import parse  # per start with a check: < 1 ms

    return parse({"argv": argv, "timeout": timeout})


def _claims(args):
    # type: (Any) -> Any
    """--lock-write/--lock-read/--slot/--queue-timeout as (claims or None, timeout); the fast
    parser never sets them (it hands such command lines to argparse)."""
    writes, reads = getattr(args, "lock_write", None), getattr(args, "lock_read", None)
    slot_args = getattr(args, "slot", None)
    timeout = getattr(args, "queue_timeout", None)
    if not (writes or reads or slot_args):
        if timeout is not None:
            raise bad_args("--queue-timeout needs --lock-write, --lock-read or --slot")
        return None, None
    from remote_agent.jobs import lockrule  # per start with locks or slots: < 1 ms

    slots = {}  # type: Dict[str, Any]
    for text in slot_args or ():
        name, capacity = lockrule.parse_slot(text)
        slots[name] = capacity
    if timeout is not None and timeout < 0:
        raise bad_args("--queue-timeout must be >= 0 seconds")
    return lockrule.normalize({"write": list(writes or ()), "read": list(reads or ())}, slots), timeout


def cmd_list(args, state_dir):
    # type: (Any, str) -> None
    from remote_agent.frontends import listing  # per command: ~1 ms, only list

    if args.run_key is not None and args.prefix is not None:
        raise bad_args("list: --run-key and --prefix cannot be combined")
    if args.limit < 0:
        raise bad_args("list: --limit must be >= 0 (0: no limit)")
    glob = args.run_key if args.run_key is not None else (
        listing.prefix_glob(args.prefix) if args.prefix is not None else None)
    statuses = [args.status] if isinstance(args.status, str) else args.status  # fast path: one value
    rows = listing.list_jobs(state_dir, listing.parse_statuses(statuses), glob,
                             _clean_datetime("--since", args.since), _clean_datetime("--until", args.until),
                             args.limit or None)
    jobs = [render.job_object(r, state_dir) for r in rows]
    if args.format == "table":
        from remote_agent.frontends import tables  # per command with --format table: < 0.5 ms

        tables.print_jobs(jobs)
    elif args.format == "jsonl":
        sys.stdout.write("".join(json.dumps(j) + "\n" for j in jobs))
    else:
        render.print_json(jobs)


def _clean_datetime(flag, value):
    # type: (str, Optional[str]) -> Optional[int]
    if value is None:
        return None
    try:
        return parse_datetime(value)
    except ValueError:
        raise bad_args("Invalid {}: {!r}. {}".format(flag, value, ISO_HINT)) from None


def cmd_locks(args, state_dir):
    # type: (Any, str) -> None
    """Holders and waiters of every named lock and slot (read-only)."""
    from remote_agent.jobs import lockqueue  # per command: the lock queue and its rule, ~1 ms

    reader = Reader(state_dir)
    try:
        resources = lockqueue.listing(reader.conn)
    finally:
        reader.close()
    if args.format == "table":
        from remote_agent.frontends import tables  # per command with --format table: < 0.5 ms

        tables.print_locks(resources)
    else:
        render.print_json({"locks": resources})


def cmd_clean(args, state_dir):
    # type: (Any, str) -> None
    from remote_agent.ops import clean  # per command: ops/clean + worker/lockwait, ~2 ms

    older_than, keep = getattr(args, "older_than", None), getattr(args, "keep", None)
    retention = older_than is not None or keep is not None
    if retention and (args.job_id or args.all or args.before or args.after):
        raise bad_args("clean: --older-than and --keep cannot be combined with --before, --after, --all "
                       "or --job-id")
    if args.job_id:
        if args.before or args.after or args.all or args.run_key:
            raise bad_args("clean: --job-id cannot be combined with --before, --after, --all, or --run-key")
    elif args.all:
        if args.before or args.after:
            raise bad_args("clean: --all cannot be combined with --before or --after")
    elif not args.before and not args.after and not retention:
        raise bad_args("clean: one of --before, --after, --all, or --job-id is required")  # orchesjob 1.1.0
    if keep is not None and keep < 0:
        raise bad_args("clean: --keep must be >= 0")
    before = _clean_datetime("--before", args.before)
    after = _clean_datetime("--after", args.after)
    if older_than is not None:
        try:
            before = now_ts() - parse_ttl(older_than)
        except ValueError as exc:
            raise bad_args("clean: --older-than: {}".format(exc)) from None
    rows, errors = clean.clean(state_dir, job_id=args.job_id, run_key=args.run_key, before=before,
                               after=after, everything=args.all, dry_run=args.dry_run, keep=keep,
                               acked_only=retention)
    items = []
    for r in rows:
        selected = r["finished_at"] if r["finished_at"] is not None else r["started_at"]
        items.append({"job_id": r["job_id"], "run_key": r["run_key"], "selected_at": selected,
                      "selected_at_iso": to_iso(selected)})
    render.print_json({"deleted": len(rows), "errors": errors, "dry_run": args.dry_run, "items": items})


def cmd_abort(args, state_dir):
    # type: (Any, str) -> None
    from remote_agent.ops import abort  # per command: ops/abort + host/stop, ~2 ms

    row, flags = abort.abort(state_dir, args.run_key, args.job_id, args.reason, args.grace_seconds,
                           ack=args.ack)
    out = render.job_object(row, state_dir)
    out["aborted"] = True
    out.update(flags)
    render.print_json(out)


def cmd_ack(args, state_dir):
    # type: (Any, str) -> None
    from remote_agent.ops import abort  # per command: ops/abort + host/stop, ~2 ms

    render.print_json(render.job_object(abort.ack(state_dir, args.job_id), state_dir))


def cmd_unlock(args, state_dir):
    # type: (Any, str) -> None
    from remote_agent.ops import keys  # per command: ops/keys + ops/start + worker/, ~4 ms

    ttl = None
    if args.ttl is not None:
        try:
            ttl = parse_ttl(args.ttl)
        except ValueError as exc:
            raise bad_args(str(exc)) from None
    res = keys.unlock(state_dir, args.run_key, args.reason, ttl)
    render.print_json({
        "unlocked": True, "run_key": res["run_key"], "reason": res["reason"],
        "allowed_at": res["allowed_at"], "allowed_at_iso": to_iso(res["allowed_at"]),
        "expires_at": res["expires_at"], "expires_at_iso": to_iso(res["expires_at"]),
    })


def cmd_rerun(args, state_dir):
    # type: (Any, str) -> None
    from remote_agent.ops import keys  # per command: ops/keys + ops/start + worker/, ~4 ms

    result, row = keys.rerun(state_dir, args.run_key, args.job_id, args.reason, args.sync,
                           args.start_timeout)
    out = _start_reply(result, row, state_dir, False, args.sync)
    out["rerun"] = True
    render.print_json(out)

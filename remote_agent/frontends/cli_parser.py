"""The argparse tree of the ``orchesjob`` command line: help, usage errors, rare forms.

Loaded only when ``cli.fast_parse`` cannot take the command line (building the tree costs
more than a whole status query), so the hot commands never import argparse.
"""

import argparse

from remote_agent import __version__
from remote_agent.common.errors import EXIT_INVALID_ARGS, AgentError
from remote_agent.common.vocab import STDOUT, STREAMS

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    from typing import Any, NoReturn  # noqa: F401


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
                         "orchesjob start --run-key billing-2026-01 --strict --sync -- ./bill.sh",
                         "orchesjob start --run-key load-7 --check-shell 'test -e /data/7.done'"
                         " -- ./load.sh 7",
                         "orchesjob start --run-key load-7 --lock-write warehouse.orders \\",
                         "    --lock-read raw/orders --slot heavy-io=2 --queue-timeout 600 -- ./load.sh"))
    p.add_argument("--run-key", required=True, dest="run_key", metavar="RUN_KEY", help="idempotency key")
    p.add_argument("--sync", action="store_true", help="wait for the job to finish")
    p.add_argument("--start-timeout", type=float, default=10.0, metavar="S",
                   help="seconds an async start waits for the target's pid (default 10)")
    p.add_argument("--strict", action="store_true",
                   help="never run a finished key again unless it was unlocked")
    p.add_argument("--cwd", metavar="DIR", help="working directory of the command")
    check = p.add_mutually_exclusive_group()
    check.add_argument("--check-shell", metavar="STR", dest="check_shell",
                       help="check command, run by /bin/sh -c: exit 0 = already done, the command does"
                            " not run; else it runs and the check must pass afterwards")
    check.add_argument("--check-argv-json", metavar="JSON", dest="check_argv_json",
                       help="the check as a JSON list of strings (no shell),"
                            " e.g. '[\"test\", \"-e\", \"/done\"]'")
    p.add_argument("--check-timeout", type=float, default=None, metavar="S",
                   help="seconds the check may run (default 300); a timeout fails the job")
    p.add_argument("--lock-write", action="append", dest="lock_write", metavar="NAME", default=[],
                   help="a resource the job writes: nobody else reads or writes it meanwhile (repeatable)")
    p.add_argument("--lock-read", action="append", dest="lock_read", metavar="NAME", default=[],
                   help="a resource the job reads: shared with other readers, not with a writer (repeatable)")
    p.add_argument("--slot", action="append", dest="slot", metavar="NAME=N", default=[],
                   help="at most N jobs of slot NAME at once on this host, this one included (repeatable)")
    p.add_argument("--queue-timeout", type=float, default=None, dest="queue_timeout", metavar="S",
                   help="give up (status CANCELLED, nothing run) after waiting S s for locks and slots")
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
                         "orchesjob logs --job-id JOB_ID --stream stderr",
                         "orchesjob logs --run-key backup-42 --follow"))
    _job_selector(p)
    p.add_argument("--stream", default=STDOUT, choices=STREAMS, help="log stream")
    p.add_argument("--follow", "-f", action="store_true",
                   help="keep printing new output until the job has ended (then exit 0)")

    p = sub.add_parser(
        "list", help="list jobs, newest first, with filters", formatter_class=fmt,
        description="Jobs newest first (by start time). Filters combine; --status repeats.",
        epilog=_examples("orchesjob list --status FAILED,LOST --since 2026-01-01 --format table",
                         "orchesjob list --prefix af/nightly/ --limit 20",
                         "orchesjob list --run-key 'billing-*' --until 2026-02-01T00:00:00Z"))
    p.add_argument("--status", action="append", metavar="STATUS",
                   help="only these statuses (comma-separated or repeated), e.g. RUNNING,FAILED")
    p.add_argument("--run-key", dest="run_key", metavar="GLOB",
                   help="run keys matching this glob (* ? [...], case-sensitive); no wildcard: exact")
    p.add_argument("--prefix", metavar="PREFIX", help="run keys starting with PREFIX (taken literally)")
    p.add_argument("--since", metavar="DATETIME", help="started at or after (inclusive)")
    p.add_argument("--until", metavar="DATETIME", help="started before (exclusive)")
    p.add_argument("--limit", type=int, default=100, metavar="N", help="at most N jobs (default 100; 0: all)")
    p.add_argument("--format", choices=("json", "jsonl", "table"), default="json",
                   help="json (one array, like status), jsonl (one job a line) or table")

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
            "  * --job-id cannot be combined with other selection options.\n"
            "  * Retention: --older-than and/or --keep (each with --run-key if wanted) delete\n"
            "    only acknowledged results: a result no Airflow try has reported yet stays,\n"
            "    so a retry can still adopt it. Both together: old AND beyond the newest N."),
        epilog=_examples("orchesjob clean --before 2026-01-01 --dry-run",
                         "orchesjob clean --all --run-key backup-42",
                         "orchesjob clean --older-than 30d --keep 5   # daily, from cron"))
    p.add_argument("--before", metavar="DATETIME", help="jobs finished before this (exclusive)")
    p.add_argument("--after", metavar="DATETIME", help="jobs finished at or after this (inclusive)")
    p.add_argument("--all", action="store_true", help="all matching terminal jobs")
    p.add_argument("--job-id", metavar="JOB_ID", help="one terminal job")
    p.add_argument("--run-key", metavar="RUN_KEY", help="only this run key")
    p.add_argument("--older-than", metavar="AGE", dest="older_than",
                   help="retention: acknowledged jobs that finished more than AGE ago (90s, 2h, 30d)")
    p.add_argument("--keep", type=int, metavar="N",
                   help="retention: keep the newest N jobs of each run key, delete older acknowledged ones")
    p.add_argument("--dry-run", action="store_true", dest="dry_run", help="list, delete nothing")

    p = sub.add_parser(
        "abort", help="stop a running job (SIGTERM, then SIGKILL)", formatter_class=fmt,
        epilog=_examples("orchesjob abort --run-key backup-42 --reason 'disk full' --grace-seconds 10"))
    _job_selector(p)
    p.add_argument("--reason", default=None, help="stored as abort_reason")
    p.add_argument("--grace-seconds", type=float, default=5.0, metavar="S",
                   help="seconds between SIGTERM and SIGKILL (default 5)")
    p.add_argument("--ack", action="store_true",
                   help="also acknowledge the job (a finished one too): the next resume start runs anew")

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

    p = sub.add_parser(
        "locks", help="named locks and slots: who holds them, who waits (first come first)",
        formatter_class=fmt, epilog=_examples("orchesjob locks", "orchesjob locks --format table"))
    p.add_argument("--format", choices=("json", "table"), default="json", help="output format")

    sub.add_parser(
        "rpc", help="machine protocol: one JSON request on stdin, one JSON reply (docs/PROTOCOL.md)",
        formatter_class=fmt, epilog=_examples("echo '{\"op\": \"ping\"}' | orchesjob rpc"))
    return parser

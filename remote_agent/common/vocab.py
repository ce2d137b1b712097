"""The words the agent and the provider share: job statuses and what a start did, and the one
rule both apply to them (``outcome_unknown``).

One module, standard library only and valid on CPython 3.6, imported by the agent (which
stores and reports these words) and by the provider (which branches on them), so a status or
an action is spelled in exactly one place. The JSON protocol and the orchesjob-compatible
command line carry the same strings.
"""

# --- job statuses (orchesjob 1.1.0's seven) ------------------------------------------------
STARTING = "STARTING"
RUNNING = "RUNNING"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
LOST = "LOST"
CANCELLED = "CANCELLED"
ABORTED = "ABORTED"

#: A job that holds its run key: a start for the key returns it instead of launching.
ACTIVE = (STARTING, RUNNING)
#: A job whose outcome is recorded; only these are acknowledged, cleaned or rerun.
TERMINAL = (SUCCEEDED, FAILED, LOST, CANCELLED, ABORTED)
#: A STARTING job queued for named locks or slots it cannot take yet (jobs/lockrule.py). Stored as
#: STARTING (so every rule for active jobs holds, and older agents sharing the file see an
#: active job); replies and tables report it as WAITING until its turn comes.
WAITING = "WAITING"
#: The statuses a reply may report for a job that holds its run key.
REPORTED_ACTIVE = (WAITING, *ACTIVE)
STATUSES = REPORTED_ACTIVE + TERMINAL

# --- what a start in resume mode did (the reply's "action") --------------------------------
STARTED = "started"        # a new attempt was launched
REATTACHED = "reattached"  # the key's job is still active: watch it
ADOPTED = "adopted"        # the key's job ended and its result counts (unacknowledged, or retried)
KEPT = "kept"              # strict key already ran: its recorded result stands
#: the key's job is LOST after its target started and nobody knows how it ended (it may have
#: completed): not run again until ``orchesjob unlock`` or a request with ``rerun_unknown``
UNKNOWN = "unknown"

ACTIONS = (STARTED, REATTACHED, ADOPTED, KEPT, UNKNOWN)

# --- the two log streams ---------------------------------------------------------------------
STDOUT = "stdout"
STDERR = "stderr"
STREAMS = (STDOUT, STDERR)

# --- a job's check phases (the ``phase`` column; null for a job without a check) -------------
#: The check runs before the command (status STARTING: a retry reattaches to it).
CHECKING = "checking"
#: The check failed (the desired state is not there): the command runs.
RUNNING_PHASE = "running"
#: The command exited 0: the check runs again to prove it worked (status still RUNNING).
RECHECKING = "rechecking"
#: The check passed before any run: SUCCEEDED without running the command.
SATISFIED = "satisfied"
#: The command ran and the check then passed: SUCCEEDED.
VERIFIED = "verified"
#: The command exited 0 but the check still fails: FAILED (exit_code stays 0).
RECHECK_FAILED = "recheck_failed"
#: The check could not say (not launchable, killed by a signal, timed out): FAILED, nothing ran.
CHECK_ERROR = "check_error"
PHASES = (CHECKING, RUNNING_PHASE, RECHECKING, SATISFIED, VERIFIED, RECHECK_FAILED, CHECK_ERROR)
#: What the provider says (and the agent's log section ends with) when a recheck fails.
RECHECK_FAILED_TEXT = "ran, but the check still fails"

#: The lost reason of a job whose host rebooted: its target was killed with the host.
REBOOTED = "host rebooted since the job started"

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    from typing import Any, Dict  # noqa: F401


# --- a judgement both sides of the wire make alike ------------------------------------------
# the agent when it decides a start (jobs/decide.py), the provider when it words a LOST job
# (orchesjob_provider/operators/outcome.py): pure, and here so that the Airflow worker imports
# one small module of the agent, this one.

def outcome_unknown(row):
    # type: (Dict[str, Any]) -> bool
    """True for a LOST job that may have completed: its target had started, its exit status
    is unknown, and neither a host reboot (which killed the target) nor the orchesjob 1.1.0
    import (whose LOST rows keep their old meaning) explains the loss."""
    reason = row.get("lost_reason") or ""
    return (row["status"] == LOST and row.get("target_pid") is not None and row.get("exit_code") is None
            and bool(reason) and not reason.startswith((REBOOTED, "imported from orchesjob")))

"""What the operator and the sensor say in the task log: a start's action, why a job failed
(``failure_message``), what a waiting job waits for (``waiting_message``), and why an unknown
outcome fails."""

from __future__ import annotations

import shlex
from collections.abc import Mapping

from orchesjob_provider.client.records import JobRecord
from remote_agent.common import vocab
from remote_agent.common.vocab import (
    ABORTED,
    ADOPTED,
    CANCELLED,
    FAILED,
    KEPT,
    LOST,
    REATTACHED,
    SATISFIED,
    STARTED,
    UNKNOWN,
    VERIFIED,
    WAITING,
)

ACTION_TEXT = {
    STARTED: "started a new remote job",
    REATTACHED: "reattached to the running remote job (an earlier try started it)",
    ADOPTED: "adopted the finished remote job: its result counts (no new run)",
    KEPT: "strict run key already ran; kept its recorded result (no new run; `orchesjob unlock` to rerun)",
    UNKNOWN: "the remote job's outcome is unknown (it may have completed); not run again",
}


#: What the success line adds for a job with a check (its ``phase``).
PHASE_TEXT = {
    SATISFIED: ": its check passed before any run - the desired state was already there, so the command"
    " did not run",
    VERIFIED: ": the command ran and its check passed afterwards",
}


def unknown_outcome_message(job: JobRecord, where: str) -> str:
    """Why a job whose outcome is unknown fails the task, and how a person releases it."""
    return (
        f"Remote job {job.job_id} (run key {job.run_key}, attempt {job.attempt_no}) on {where} has an "
        f"unknown outcome: {job.lost_reason or 'LOST'}. It may have completed, so it is not run again "
        f"(every retry fails the same way). Check what it did (its stdout/stderr: "
        f"{job.raw.get('stdout_file')}), then release it: on the host run "
        f"`orchesjob unlock --run-key {shlex.quote(job.run_key)}`, or set rerun_unknown_outcome=True "
        f"on the task; then retry or clear the task. (With a check_command, the next try's check "
        f"decides instead.)"
    )


def start_lines(action: str, job: JobRecord, where: str, run_key: str) -> list[tuple[str, str]]:
    """What a try logs about its start (the worker's, or its trigger's with ``start_in_triggerer``),
    as (logger method, line): what was done to which job, an earlier run it superseded, and why an
    acknowledged success is adopted."""
    out: list[tuple[str, str]] = []
    superseded = job.raw.get("superseded")
    if isinstance(superseded, Mapping):
        how = "aborted" if superseded.get("aborted") else "acknowledged"
        old = f"{superseded.get('job_id')} ({superseded.get('status')})"
        out.append(("info", f"orchesjob superseded: the task was cleared; {how} job {old} of the earlier run "
                    "and started a new attempt"))
    out.append(("info", f"orchesjob {action}: {ACTION_TEXT.get(action, action)} — job {job.job_id}, attempt "
                f"{job.attempt_no}, status {job.status}, on {where}"))
    out.append(("info", f"Run key: {run_key}"))
    if action == ADOPTED and job.raw.get("acked_at"):
        out.append(("warning", f"An earlier try of this clear epoch already reported job {job.job_id}'s "
                    "success, yet Airflow retried: it never recorded that try's outcome (api-server or "
                    "worker lost). The success is adopted, not run again; clear the task to run it again."))
    waiting = waiting_message(job)
    if waiting:
        out.append(("info", waiting))
    return out


# ---------------------------------------------------------------------------------------------
# Outcomes and trigger events
# ---------------------------------------------------------------------------------------------
def failure_message(job: JobRecord) -> str:
    """One line saying how a job that did not succeed ended."""
    phase = job.raw.get("phase") if job.raw else None
    if job.status == FAILED and phase == vocab.RECHECK_FAILED:
        return (f"Remote job {job.job_id} {vocab.RECHECK_FAILED_TEXT} (the command exited {job.exit_code},"
                f" the check then exited {(job.raw.get('check') or {}).get('exit_code')})")
    if job.status == FAILED and phase == vocab.CHECK_ERROR:
        ran = job.raw.get("target_pid") is not None
        return (f"Remote job {job.job_id}: its check could not decide (it could not start, was killed"
                f" or timed out; see its stderr above){'' if ran else ' and nothing ran'}")
    if job.status == FAILED:
        if job.exit_code is not None and job.exit_code < 0:
            if job.exit_code == -1:
                return f"Remote job {job.job_id} could not be launched (see its stderr above)"
            return f"Remote job {job.job_id} failed: killed by signal {-job.exit_code}"
        return f"Remote job {job.job_id} failed with exit code {job.exit_code}"
    if job.status == ABORTED:
        return f"Remote job {job.job_id} was ABORTED ({job.abort_reason or 'no reason given'})"
    if job.status == LOST:
        return f"Remote job {job.job_id} was LOST ({job.lost_reason or 'its processes are gone'})"
    if job.status == CANCELLED:
        # the agent's reason, e.g. "queue timeout: waited 600s for write lock 'x': held by job ..."
        reason = job.abort_reason
        return f"Remote job {job.job_id} was CANCELLED" + (f" ({reason})" if reason else "")
    return f"Remote job {job.job_id} ended with status {job.status} (exit code {job.exit_code})"


def waiting_message(job: JobRecord) -> str | None:
    """One line for the task log while a job waits on the host for named locks or slots: what it
    waits for and who holds it (the agent's ``waiting_for``); None when it does not wait."""
    if job.status != WAITING:
        return None
    parts = []
    for b in job.raw.get("waiting_for") or []:
        if not isinstance(b, Mapping):
            continue
        if b.get("mode") == "slot":
            what = f"slot {b.get('resource')!r} (capacity {b.get('capacity')})"
        else:
            what = f"{b.get('mode')} lock {b.get('resource')!r}"
        state = "held" if b.get("holding") else "queued ahead"
        parts.append(f"{what} {state} by job {b.get('job_id')} (run key {b.get('run_key')})")
    deadline = job.raw.get("queue_deadline")
    until = ""
    if isinstance(deadline, (int, float)):
        import datetime

        stamp = datetime.datetime.fromtimestamp(deadline, datetime.timezone.utc).isoformat(timespec="seconds")
        until = f"; gives up at {stamp} (queue timeout)"
    return f"Remote job {job.job_id} is WAITING on the host for " + ("; ".join(parts) or "its turn") + until

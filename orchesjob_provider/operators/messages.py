"""What the operator says in the task log about a start's action, and why an unknown outcome fails."""

from __future__ import annotations

import shlex

from orchesjob_provider.protocol import ADOPTED, KEPT, REATTACHED, STARTED, JobRecord
from remote_agent.common.vocab import SATISFIED, UNKNOWN, VERIFIED

ACTION_TEXT = {
    STARTED: "started a new remote job",
    REATTACHED: "reattached to the running remote job (an earlier try started it)",
    ADOPTED: "adopted the finished, unacknowledged remote job (no new run)",
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

"""Issue 9: the pure parts of check / run / recheck and of ``orchesjob list`` (no processes)."""

from orchesjob_provider.client import records
from orchesjob_provider.utils import messages


# --- provider: messages and the operator's argument ------------------------------------------
def test_failure_messages_of_the_check_phases() -> None:
    rec = records.JobRecord.from_dict({"job_id": "j", "status": "FAILED", "exit_code": 0,
                                 "phase": "recheck_failed", "check": {"exit_code": 1}, "target_pid": 5})
    assert messages.failure_message(rec) == (
        "Remote job j ran, but the check still fails (the command exited 0, the check then exited 1)")
    rec = records.JobRecord.from_dict({"job_id": "j", "status": "FAILED", "phase": "check_error",
                                 "target_pid": None})
    assert messages.failure_message(rec).endswith("and nothing ran")

"""Issue 8 items 2 and 8, in-process: the unknown-outcome rows of the start decision table,
a job of another host left alone by reconcile, and no WAL on a network filesystem (real SQLite
files; the filesystem type is crafted, since no network filesystem can be mounted here)."""



from remote_agent.common import vocab
from remote_agent.common.vocab import outcome_unknown
from remote_agent.jobs.liveness import REBOOTED

UNKNOWN_REASON = "supervisor (pid 7) was killed and the target (pid 8) has ended; exit status unknown"


def lost(reason=UNKNOWN_REASON, target_pid=8, exit_code=None, acked_at=None):
    return {"job_id": "j1", "status": vocab.LOST, "lost_reason": reason, "target_pid": target_pid,
            "exit_code": exit_code, "acked_at": acked_at}


def test_outcome_unknown_only_when_the_target_started_and_no_reboot_explains_it() -> None:
    assert outcome_unknown(lost())
    never_started = "supervisor (pid 7) exited before starting the target"
    assert not outcome_unknown(lost(target_pid=None, reason=never_started))
    assert not outcome_unknown(lost(reason=REBOOTED))
    assert not outcome_unknown(lost(exit_code=0))  # an exit status was recorded after all
    assert not outcome_unknown(lost(reason=None))  # orchesjob 1.1.0's LOST rows (imported)
    imported = "imported from orchesjob 1.1.0 beside a newer active job of its key"
    assert not outcome_unknown(lost(reason=imported))
    assert not outcome_unknown(dict(lost(), status=vocab.FAILED))

"""Small judgements that both sides of the wire make alike: the agent when it decides a start
(jobs/decide.py) and the provider when it words a LOST job (orchesjob_provider/operators).
Pure, standard library only, and imported by the Airflow worker: keep it tiny.
"""

from remote_agent.common.vocab import LOST, REBOOTED

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    from typing import Any, Dict
    Row = Dict[str, Any]


__all__ = ["REBOOTED", "outcome_unknown"]


def outcome_unknown(row):
    # type: (Row) -> bool
    """True for a LOST job that may have completed: its target had started, its exit status
    is unknown, and neither a host reboot (which killed the target) nor the orchesjob 1.1.0
    import (whose LOST rows keep their old meaning) explains the loss."""
    reason = row.get("lost_reason") or ""
    return (row["status"] == LOST and row.get("target_pid") is not None and row.get("exit_code") is None
            and bool(reason) and not reason.startswith((REBOOTED, "imported from orchesjob")))

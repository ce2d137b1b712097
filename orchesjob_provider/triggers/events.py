"""The trigger's events: what ``OrchesjobTrigger`` yields and the operator and sensor read back
(``WatchEvent`` and its ``EVENT_*`` kinds), as a payload Airflow can store.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from orchesjob_provider.client.records import JobRecord, normalize_offsets

#: The kinds of event the trigger yields (the ``status`` of its payload).
EVENT_TERMINAL = "terminal"  # the job ended: ``job`` is its final record


EVENT_TIMEOUT = "timeout"  # ``timeout_at`` passed first


EVENT_ERROR = "error"  # the watch failed (``message`` says why); the job may still run


EVENT_REFUSED = "refused"  # start_in_triggerer: the agent refused the start (``message`` says why)


@dataclass(frozen=True)
class WatchEvent:
    """The payload of the trigger's one event, as the trigger builds it and operator/sensor read it.

    The dict form (``to_payload``) is what Airflow stores and hands to ``execute_complete``:
    ``status`` (an ``EVENT_*`` kind), ``job_id``, ``run_key``, ``job`` (the record as a dict, or
    None), ``offsets`` (log bytes already written to the task log) and ``message``.
    """

    status: str
    job_id: str | None = None
    run_key: str | None = None
    job: JobRecord | None = None
    offsets: dict[str, int] = field(default_factory=dict)
    message: str = ""

    def to_payload(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "job_id": self.job_id,
            "run_key": self.run_key,
            "job": self.job.to_dict() if self.job is not None else None,
            "offsets": dict(self.offsets),
            "message": self.message,
        }

    def is_for(self, job_id: str | None = None, run_key: str | None = None) -> bool:
        """Whether this event is about the job (or run key) a resumed try waits for.

        An old try's trigger can still fire while it is being cancelled, and Airflow applies its
        event to whichever try now owns the trigger id (SQLite reuses ids): such an event must
        never decide a try that waits for another job. None on both sides: nothing to check.
        """
        if job_id is not None:
            return self.job_id == job_id
        if run_key is not None:
            return self.run_key == run_key
        return True

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> WatchEvent:
        job = payload.get("job")
        job_id = payload.get("job_id")
        return cls(
            status=str(payload.get("status")),
            job_id=str(job_id) if job_id is not None else None,
            run_key=payload.get("run_key"),
            job=JobRecord.from_dict(job) if job else None,
            offsets=normalize_offsets(payload.get("offsets")),
            message=str(payload.get("message") or ""),
        )

"""The provider's side of named locks: argument checks, what the task log says while a job waits,
why a cancelled job failed. Pure, milliseconds."""

from __future__ import annotations

import os
import tempfile

import pytest

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="orchesjob-unit-airflow-home-"))
pytest.importorskip("airflow", reason="Airflow is not installed in this interpreter")

from orchesjob_provider.client import records
from orchesjob_provider.operators.validation import has_template, validate_locks, validate_slots
from orchesjob_provider.utils import messages
from orchesjob_provider.utils.waiting import Watch


def waiting_job(**extra):
    raw = {
        "job_id": "J2",
        "run_key": "k2",
        "status": "WAITING",
        "waiting_for": [
            {"job_id": "J1", "run_key": "k1", "mode": "write", "resource": "warehouse.orders",
             "holding": True},
            {"job_id": "J0", "run_key": "k0", "mode": "slot", "resource": "io", "capacity": 2,
             "holding": False},
        ],
    }
    raw.update(extra)
    return records.JobRecord.from_dict(raw)


def test_waiting_is_an_active_status():
    job = waiting_job()
    assert job.is_active and not job.is_terminal


def test_waiting_message_names_resource_holder_and_deadline():
    text = messages.waiting_message(waiting_job(queue_deadline=0))
    assert text == (
        "Remote job J2 is WAITING on the host for write lock 'warehouse.orders' held by job J1 (run key k1); "
        "slot 'io' (capacity 2) queued ahead by job J0 (run key k0); gives up at 1970-01-01T00:00:00+00:00 "
        "(queue timeout)"
    )
    assert messages.waiting_message(records.JobRecord.from_dict({"job_id": "J", "status": "RUNNING"})) is None


def test_cancelled_failure_message_carries_the_reason():
    job = records.JobRecord.from_dict(
        {"job_id": "J", "status": "CANCELLED", "abort_reason": "queue timeout: 5s"})
    assert messages.failure_message(job) == "Remote job J was CANCELLED (queue timeout: 5s)"
    bare = records.JobRecord.from_dict({"job_id": "J", "status": "CANCELLED"})
    assert messages.failure_message(bare) == "Remote job J was CANCELLED"


class _Log:
    def __init__(self):
        self.lines: list[str] = []

    def info(self, msg, *args):
        self.lines.append(msg % args if args else msg)

    warning = info


def test_watch_logs_the_wait_once_per_change_and_the_grant():
    log = _Log()
    w = Watch(log, None, deadline=None, max_failures=3)
    job = waiting_job()
    for _ in range(3):
        w.seen(records.JobLogs(job_id="J2", job=job))
    assert len(log.lines) == 1 and "is WAITING on the host" in log.lines[0]
    w.seen(records.JobLogs(job_id="J2",
                           job=records.JobRecord.from_dict({"job_id": "J2", "status": "RUNNING"})))
    assert log.lines[-1] == "Remote job J2 got its locks and slots: status RUNNING"


def test_validate_locks_and_slots():
    assert validate_locks(None) is None and validate_slots(None) is None
    assert validate_locks({"write": ["a"], "read": ("b",)}) == {"write": ["a"], "read": ["b"]}
    assert validate_locks({"write": []}) is None
    assert validate_slots({"io": 2}) == {"io": 2}


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: validate_locks(["a"]), "locks must be a dict"),
        (lambda: validate_locks({"exclusive": ["a"]}), "unknown key 'exclusive'"),
        (lambda: validate_locks({"write": "a"}), "must be a list of resource names"),
        (lambda: validate_locks({"write": [""]}), "non-empty str"),
        (lambda: validate_locks({"write": ["a"], "read": ["a"]}), "both read and write"),
        (lambda: validate_slots({"io": 0}), "must be an int >= 1"),
        (lambda: validate_slots({"io": True}), "must be an int >= 1"),
        (lambda: validate_slots(["io"]), "slots must be a dict"),
    ],
)
def test_bad_locks_and_slots_fail_with_one_line(call, message):
    from orchesjob_provider.version_compat import AirflowException

    with pytest.raises(AirflowException) as exc:
        call()
    assert message in str(exc.value) and str(exc.value).startswith("OrchesjobOperator: ")


def test_operator_checks_static_locks_at_parse_time_and_leaves_templates_for_later():
    from orchesjob_provider.operators.orchesjob import OrchesjobOperator
    from orchesjob_provider.version_compat import AirflowException

    with pytest.raises(AirflowException, match="both read and write"):
        OrchesjobOperator(task_id="t", ssh_conn_id="c", command="true", locks={"write": ["a"], "read": ["a"]})
    with pytest.raises(AirflowException, match="queue_timeout needs locks or slots"):
        OrchesjobOperator(task_id="t", ssh_conn_id="c", command="true", queue_timeout=5)
    op = OrchesjobOperator(task_id="t", ssh_conn_id="c", command="true", locks={"write": ["{{ ds }}"]},
                           slots={"io": 2}, queue_timeout=30)
    assert "locks" in op.template_fields and "slots" in op.template_fields
    assert has_template(op.locks) and op.queue_timeout == 30.0

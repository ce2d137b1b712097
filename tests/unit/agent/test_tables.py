"""``--format table`` (frontends/tables.py): fixed-width listings for people, byte for byte.

A table is read by a person on a terminal: a hostile string (a run key with a newline or an
escape sequence, a command of kilobytes) must neither break the columns nor reach the terminal
as control characters, and what is not known prints as ``-``."""

from __future__ import annotations

from typing import Any

from remote_agent.frontends.tables import print_jobs, print_locks


def job(**kw: Any) -> dict[str, Any]:
    row = {"job_id": "j1", "run_key": "k", "attempt_no": 1, "status": "SUCCEEDED", "exit_code": 0,
           "pid": None, "started_at_iso": "2026-12-05T10:00:00Z", "finished_at_iso": None,
           "command": ["sh", "-c", "true"]}
    row.update(kw)
    return row


def test_jobs_line_up_and_unknowns_are_dashes(capsysbinary: Any) -> None:
    print_jobs([job(), job(job_id="j22", run_key="a/longer/key", status="RUNNING", exit_code=None, pid=4242)])
    assert capsysbinary.readouterr().out.decode().splitlines() == [
        "JOB_ID  RUN_KEY       ATTEMPT  STATUS     EXIT  PID   STARTED               FINISHED  COMMAND",
        "j1      k             1        SUCCEEDED  0     -     2026-12-05T10:00:00Z  -         sh -c true",
        "j22     a/longer/key  1        RUNNING    -     4242  2026-12-05T10:00:00Z  -         sh -c true",
    ]


def test_hostile_strings_keep_to_one_line_and_sixty_characters(capsysbinary: Any) -> None:
    print_jobs([job(run_key="evil\nkey\x1b[31m", command=["x" * 500])])
    lines = capsysbinary.readouterr().out.decode().splitlines()
    assert len(lines) == 2 and "\x1b" not in lines[1]
    assert "evil?key?[31m" in lines[1]
    assert lines[1].endswith("x" * 57 + "...")


def test_a_phase_column_only_when_a_job_has_a_check(capsysbinary: Any) -> None:
    print_jobs([job(), job(job_id="j2", phase="recheck")])
    header, first, second = capsysbinary.readouterr().out.decode().splitlines()
    assert header.split()[:5] == ["JOB_ID", "RUN_KEY", "ATTEMPT", "STATUS", "PHASE"]
    assert first.split()[4] == "-" and second.split()[4] == "recheck"
    print_jobs([job()])
    assert "PHASE" not in capsysbinary.readouterr().out.decode()


def test_an_empty_listing_is_the_header(capsysbinary: Any) -> None:
    print_jobs([])
    header = b"JOB_ID  RUN_KEY  ATTEMPT  STATUS  EXIT  PID  STARTED  FINISHED  COMMAND\n"
    assert capsysbinary.readouterr().out == header


def test_locks_one_line_per_holder_and_waiter(capsysbinary: Any) -> None:
    print_locks([
        {"kind": "slot", "name": "db", "holders": [
            {"mode": "shared", "capacity": 2, "job_id": "j1", "run_key": "a", "granted_at": 0}],
         "waiters": [{"mode": "shared", "capacity": 2, "position": 1, "job_id": "j2", "run_key": None,
                      "queued_at": 60}]},
        {"kind": "lock", "name": "nightly\tjob", "holders": [
            {"mode": "exclusive", "job_id": "j3", "run_key": "b", "granted_at": None}], "waiters": []},
    ])
    assert capsysbinary.readouterr().out.decode().splitlines() == [
        "KIND  NAME         MODE       STATE  POS  JOB_ID  RUN_KEY  SINCE",
        "slot  db           shared/2   holds  -    j1      a        1970-01-01T00:00:00+00:00",
        "slot  db           shared/2   waits  1    j2      -        1970-01-01T00:01:00+00:00",
        "lock  nightly?job  exclusive  holds  -    j3      b        -",
    ]

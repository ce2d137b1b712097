"""No duplicates under concurrency: many starters released at the same instant."""

import json
import os
import sqlite3
import subprocess
import time

import pytest
from agent_helpers import wait_until

N = 50


def release_together(agent, argvs, inputs=None):
    """Start one process per argv, all blocked on a FIFO, then release them at once.

    Each process is ``sh -c 'read _ < FIFO; exec "$@"'``: the test holds the FIFO open while
    every process opens it, then closes it, so all reads return EOF in the same instant.
    """
    fifo = str(agent.workdir / "barrier.fifo")
    os.mkfifo(fifo)
    holder = os.open(fifo, os.O_RDWR)  # never blocks; keeps readers waiting until closed
    procs = []
    try:
        for i, argv in enumerate(argvs):
            stdin = subprocess.DEVNULL
            if inputs is not None:
                path = agent.workdir / (f"req-{i}.json")
                path.write_bytes(inputs[i])
                stdin = open(str(path), "rb")
            procs.append(
                subprocess.Popen(
                    ["sh", "-c", 'read _ < "$0"; exec "$@"', fifo, *list(argv)],
                    stdin=stdin,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=agent.env,
                    cwd=str(agent.workdir),
                )
            )
            if stdin is not subprocess.DEVNULL:
                stdin.close()

        def all_waiting():
            n = 0
            for p in procs:
                try:
                    fds = os.listdir(f"/proc/{p.pid}/fd")
                    if any(os.readlink(f"/proc/{p.pid}/fd/{fd}") == fifo for fd in fds):
                        n += 1
                except OSError:
                    pass
            return n == len(procs)

        wait_until(all_waiting, timeout=30, message="all starters at the barrier")
    finally:
        os.close(holder)
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        results.append((p.returncode, out, err))
    return results


def _abort_all(agent, key):
    for job in agent.ok("status", "--running"):
        if job["run_key"] == key:
            agent.run("abort", "--job-id", job["job_id"], "--grace-seconds", "1")


@pytest.mark.beyond_orchesjob
def test_50_concurrent_cli_starts_one_execution(agent):
    key = agent.key()
    marker = agent.workdir / "runs"
    cmd = ["sh", "-c", f"echo run >> '{marker}'; exec sleep 60"]
    argv = [*agent.argv, "start", "--run-key", key, "--", *cmd]
    results = release_together(agent, [argv] * N)
    try:
        replies = []
        for code, out, err in results:
            assert code == 0 and b"Traceback" not in err, (code, out, err)
            replies.append(json.loads(out))
        assert sum(r["accepted"] for r in replies) == 1
        assert sum(r["existing"] for r in replies) == N - 1
        assert len({r["job_id"] for r in replies}) == 1
        assert len(agent.ok("status", "--run-key", key, "--all")) == 1
        wait_until(marker.exists, message="the one run")
        assert marker.read_text() == "run\n"
    finally:
        _abort_all(agent, key)


@pytest.mark.beyond_orchesjob
def test_50_concurrent_rpc_resume_starts_one_execution(agent):
    key = agent.key()
    marker = agent.workdir / "runs"
    req = json.dumps(
        {
            "protocol": 1,
            "op": "start",
            "run_key": key,
            "mode": "resume",
            "argv": ["sh", "-c", f"echo run >> '{marker}'; exec sleep 60"],
        }
    ).encode()
    results = release_together(agent, [[*agent.argv, "rpc"]] * N, inputs=[req] * N)
    try:
        replies = []
        for code, out, err in results:
            assert code == 0 and b"Traceback" not in err, (code, out, err)
            replies.append(json.loads(out))
        actions = [r["action"] for r in replies]
        assert actions.count("started") == 1, actions
        assert set(actions) <= {"started", "reattached"}, actions
        assert len({r["job"]["job_id"] for r in replies}) == 1
        assert len(agent.ok("status", "--run-key", key, "--all")) == 1
        wait_until(marker.exists, message="the one run")
        assert marker.read_text() == "run\n"
    finally:
        _abort_all(agent, key)


@pytest.mark.beyond_orchesjob
def test_concurrent_rerun_and_start_never_two_active(agent):
    key = agent.key()
    marker = agent.workdir / "runs"
    first = agent.start_ok(key, "sh", "-c", f"echo run >> '{marker}'; exec sleep 60", sync=False)
    agent.ok("abort", "--job-id", first["job_id"], "--grace-seconds", "1")
    argvs = []
    for i in range(20):
        if i % 2:
            argvs.append([*agent.argv, "rerun", "--job-id", first["job_id"]])
        else:
            argvs.append(
                [
                    *agent.argv,
                    "start",
                    "--run-key",
                    key,
                    "--",
                    "sh",
                    "-c",
                    f"echo run >> '{marker}'; exec sleep 60",
                ]
            )
    results = release_together(agent, argvs)
    try:
        for code, out, err in results:
            assert code in (0, 4) and b"Traceback" not in err, (code, out, err)
        active = [j for j in agent.ok("status", "--running") if j["run_key"] == key]
        assert len(active) == 1
        accepted = [json.loads(out) for code, out, _ in results if code == 0]
        assert len({r["job_id"] for r in accepted}) == 1
        wait_until(lambda: marker.exists() and marker.read_text().count("run") >= 2, message="second run")
        assert marker.read_text() == "run\nrun\n"
    finally:
        _abort_all(agent, key)


@pytest.mark.beyond_orchesjob
def test_creation_waits_for_a_writer_holding_the_new_database(agent):
    """Creating the database must wait out another writer, not fail at once.

    Switching a fresh (rollback-journal) file to WAL reads the header and then upgrades to a
    write lock; SQLite refuses that upgrade at once, without its busy handler, while another
    connection holds RESERVED. 50 starters on a fresh state dir hit exactly this (CI, 3.6 leg).
    The agent has to retry within its busy timeout like any other lock wait.
    """
    agent.home.mkdir(mode=0o700, parents=True, exist_ok=True)
    holder = sqlite3.connect(str(agent.db_path), isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # RESERVED on the still-empty, rollback-mode file
    # the order, not a clock: the start has not answered while the other writer holds the
    # lock (however long the machine takes to run it); it answers once the test lets go
    starter = subprocess.Popen([*agent.argv, "start", "--run-key", agent.key(), "--", "true"],
                               env=agent.make_env({"ORCHESJOB_BUSY_TIMEOUT": "600"}),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    agent.spawned.append(starter)
    try:
        time.sleep(1.0)
        assert starter.poll() is None, ("start returned before the other writer let go",
                                        starter.communicate())
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    out, err = starter.communicate(timeout=60)
    assert starter.returncode == 0, (out, err)
    job = json.loads(out)
    assert agent.wait_status(job["job_id"])["status"] == "SUCCEEDED"

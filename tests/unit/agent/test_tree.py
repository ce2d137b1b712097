"""Fast in-process tests of the agent's host identity, process-tree and exit-record modules.

Real processes and real files, no sshd: each test runs in well under a second.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from remote_agent.host import tree


def _wait(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_job_processes_finds_setsid_and_marked_escapees(tmp_path):
    job_id = "unit-" + os.urandom(4).hex()
    env = dict(os.environ, **{tree.JOB_ENV: job_id})
    pidfile = tmp_path / "escapee"
    # The main process (own group) starts a child that leaves the group with setsid.
    main = subprocess.Popen(
        ["sh", "-c", f"setsid sh -c 'echo $$ > {pidfile}; exec sleep 30' & exec sleep 30"],
        env=env, start_new_session=True,
    )
    try:
        escapee = int(_wait(lambda: (pidfile.exists() and pidfile.read_text().strip()) or None))
        found = dict(tree.job_processes(job_id, group=main.pid))
        assert main.pid in found and escapee in found  # group member + environment marker
        assert dict(tree.job_processes(job_id, group=main.pid, scan_env=False)).keys() == {main.pid}
        assert tree.signal_all(tree.job_processes(job_id, group=main.pid), signal.SIGKILL) == 2
        _wait(lambda: not tree.alive(list(found.items())) or None)
    finally:
        main.kill()
        main.wait()


def test_pid_reuse_is_never_signalled():
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        started = tree.alive([(sleeper.pid, 0)])
        assert started == []  # wrong start time: not the recorded process
        assert tree.signal_all([(sleeper.pid, 1)], signal.SIGKILL) == 0
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="child subreaper is Linux only")
def test_subreaper_adopts_a_double_forked_grandchild():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the would-be supervisor
        code = 1
        try:
            os.close(r)
            ok = tree.become_subreaper()
            child = subprocess.Popen(
                ["sh", "-c", "sleep 30 >/dev/null 2>&1 & echo $!"], stdout=subprocess.PIPE
            )
            grandchild = int(child.stdout.readline().strip())
            child.wait()  # the grandchild is now an orphan
            with open(f"/proc/{grandchild}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            os.kill(grandchild, signal.SIGKILL)
            os.waitpid(grandchild, 0)  # ours to reap: it was adopted
            os.write(w, f"{int(ok)} {int(ppid == os.getpid())}".encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    out = os.read(r, 100).decode()
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0 and out == "1 1", out


def test_close_inherited_fds_keeps_only_what_is_asked():
    r, w = os.pipe()
    extra = os.open(os.devnull, os.O_RDONLY)
    os.set_inheritable(extra, True)
    pid = os.fork()
    if pid == 0:
        tree.close_inherited_fds(keep=(w,))
        closed = []
        for fd in (r, extra, w):
            try:
                os.fstat(fd)
            except OSError:
                closed.append(fd)
        os.write(w, " ".join(map(str, closed)).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    os.close(w)
    closed = [int(x) for x in os.read(r, 1000).split()]
    os.close(r)
    os.close(extra)
    assert closed == [r, extra]  # w was kept; everything else above 2 is gone


IGNORES_TERM = "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); " \
               "sys.stdout.write('ready\\n'); sys.stdout.flush(); time.sleep(30)"


def _start_of(pid):
    with open(f"/proc/{pid}/stat", "rb") as f:
        return int(f.read().rsplit(b")", 1)[1].split()[19])


def test_end_processes_terms_once_then_kills_after_the_grace():
    obeys = subprocess.Popen(["sleep", "30"])
    stubborn = subprocess.Popen([sys.executable, "-c", IGNORES_TERM], stdout=subprocess.PIPE)
    try:
        assert stubborn.stdout.readline() == b"ready\n"
        procs = [(p.pid, _start_of(p.pid)) for p in (obeys, stubborn)]
        t0 = time.monotonic()

        def find():
            for p in (obeys, stubborn):
                p.poll()  # reap, as the supervisor does with reap=True
            return tree.alive(procs)

        sent_term, sent_kill = tree.end_processes(find, 0.5, signal.SIGTERM, signal.SIGKILL)
        took = time.monotonic() - t0
        assert (sent_term, sent_kill) == (True, True)
        assert obeys.wait(1) == -signal.SIGTERM and stubborn.wait(1) == -signal.SIGKILL
        assert took >= 0.5, took  # the grace was waited out (a lower bound: load only lengthens it)
    finally:
        for p in (obeys, stubborn):
            p.kill()
            p.wait()


def test_end_processes_sends_no_second_term_to_what_the_caller_termed():
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        procs = [(sleeper.pid, _start_of(sleeper.pid))]

        def find():
            sleeper.poll()
            return tree.alive(procs)

        # termed=[...]: the caller already sent SIGTERM (here it did not), so only the KILL comes.
        assert tree.end_processes(find, 0.2, signal.SIGTERM, signal.SIGKILL, termed=procs) == (False, True)
        assert sleeper.wait(1) == -signal.SIGKILL
    finally:
        sleeper.kill()
        sleeper.wait()


def test_kill_grace_from_the_environment(monkeypatch):
    monkeypatch.delenv("ORCHESJOB_KILL_GRACE", raising=False)
    assert tree.kill_grace() == tree.KILL_GRACE_DEFAULT == 5.0
    monkeypatch.setenv("ORCHESJOB_KILL_GRACE", "1.5")
    assert tree.kill_grace() == 1.5
    monkeypatch.setenv("ORCHESJOB_KILL_GRACE", "soon")
    assert tree.kill_grace() == 5.0


# --- reconcile with an exit record, and the supervisor's retried writes ----------------------

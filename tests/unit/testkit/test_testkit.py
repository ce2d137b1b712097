"""Fast tests of the test kit's pure helpers (testkit.procs, .ci, .prereqs, scripts/prereqs.sh)
and of the CI rule "a skipped fault/e2e test is a failure" (tests/conftest.py), in seconds."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from testkit import REPO, ci, netns, prereqs, procs, sshd

ROOT = Path(REPO)


# ---------------------------------------------------------------- procs.wait_until
def test_wait_until_returns_the_first_truthy_value():
    calls = []

    def pred():
        calls.append(1)
        return len(calls) >= 3 and "done"

    assert procs.wait_until(pred, timeout=5, interval=0.001) == "done"
    assert len(calls) == 3


def test_wait_until_times_out_with_message_last_value_and_diagnostics():
    with pytest.raises(AssertionError) as exc:  # WaitTimeout is an AssertionError (a hang: pytest's timeout)
        procs.wait_until(lambda: 0, timeout=0.05, interval=0.01, message="the moon", diag=lambda: "DIAG")
    assert isinstance(exc.value, procs.WaitTimeout)
    text = str(exc.value)
    assert "waiting for the moon" in text and "last value 0" in text and text.endswith("\nDIAG")


# ---------------------------------------------------------------- procs: ports
def test_free_port_is_bindable():
    port = procs.free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def _serve_once(banner: bytes):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)

    def loop():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                conn.sendall(banner)

    threading.Thread(target=loop, daemon=True).start()
    return srv


def test_port_open_plain_and_with_banner():
    assert not procs.port_open(procs.free_port(), timeout=0.5)
    srv = _serve_once(b"SSH-2.0-test\r\n")
    try:
        port = srv.getsockname()[1]
        assert procs.port_open(port)
        assert procs.port_open(port, banner=b"SSH-")
        assert not procs.port_open(port, banner=b"HTTP")
    finally:
        srv.close()


# ---------------------------------------------------------------- procs: pids
def test_pid_alive():
    assert procs.pid_alive(os.getpid())
    assert not procs.pid_alive(None) and not procs.pid_alive(0) and not procs.pid_alive(-1)
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    procs.wait_until(lambda: procs.proc_state(p.pid) in ("Z", ""), timeout=10)
    assert not procs.pid_alive(p.pid)  # a zombie is not alive
    p.wait()
    assert not procs.pid_alive(p.pid)


def test_proc_helpers_see_a_child():
    p = subprocess.Popen(["sleep", "30"])
    try:
        assert procs.proc_ppid(p.pid) == os.getpid()
        assert p.pid in procs.descendants(os.getpid())
        # between fork and exec the child's cmdline is empty (or the parent's): wait for the exec
        assert procs.wait_until(lambda: "sleep 30" in procs.proc_cmdline(p.pid), timeout=5)
        assert procs.pid_start_time(p.pid) is not None
    finally:
        procs.terminate(p.pid, timeout=5)
        p.wait(5)


# ---------------------------------------------------------------- ci
@pytest.mark.parametrize(
    "value, expected",
    [("true", True), ("TRUE", True), ("1", True), ("yes", True), ("", False), ("false", False), ("0", False)],
)
def test_in_ci(value, expected):
    assert ci.in_ci({"CI": value}) is expected


def test_in_ci_unset():
    assert ci.in_ci({}) is False


@pytest.mark.parametrize(
    "nodeid, markers, expected",
    [
        ("tests/faults/test_netns_loss.py::test_x", [], True),
        ("tests/e2e/test_resume_after_crash.py", [], True),
        ("tests/e2e", [], True),
        ("tests/unit/test_x.py::test_y", ["netns"], True),
        ("tests/provider/test_x.py::test_y", ["e2e", "ssh"], True),
        ("tests/agent/test_x.py::test_y", ["fault"], True),
        ("tests/provider/test_x.py::test_y", ["ssh", "airflow"], False),
        ("tests/faultsy/test_x.py::test_y", [], False),
        ("tests/agent/test_e2e_like.py::test_faults", [], False),
    ],
)
def test_is_proof(nodeid, markers, expected):
    assert ci.is_proof(nodeid, markers) is expected


# ---------------------------------------------------------------- prereqs: no apt-get under pytest
def test_require_names_the_package_and_the_fix(monkeypatch):
    monkeypatch.setitem(prereqs.PACKAGES, "nftables", "no-such-binary-oj")
    with pytest.raises(netns.NetnsError, match=r"^nftables is missing: run scripts/test.sh or "
                                               r"apt-get install nftables$"):
        netns.ensure_nft()
    monkeypatch.setitem(prereqs.PACKAGES, "openssh-server", "/nonexistent/usr/sbin/sshd")
    with pytest.raises(sshd.HarnessError, match=r"openssh-server is missing: run scripts/test\.sh"):
        sshd.ensure_packages()


def test_no_apt_get_in_the_test_kit():
    for path in (ROOT / "testkit").glob("*.py"):
        assert "apt-get\"" not in path.read_text() and "'apt-get'" not in path.read_text(), path


def _prereqs_sh(script: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["/bin/bash", "-c", f"source {ROOT / 'scripts' / 'prereqs.sh'}; {script}"],
        capture_output=True, text=True, timeout=30, env={"PATH": os.environ.get("PATH", ""), **env},
    )


def test_prereqs_sh_lists_what_is_missing_by_binary(tmp_path):
    # An empty PATH: the PATH-found binaries (ssh-keygen, nft, ip) are missing; those checked by
    # absolute path (/usr/sbin/sshd, /usr/bin/python3) are as installed as they really are.
    r = _prereqs_sh("prereqs_missing", PATH=str(tmp_path))
    assert r.returncode == 0, r.stderr
    missing = r.stdout.split()
    assert {"openssh-client", "nftables", "iproute2"} <= set(missing)
    assert ("openssh-server" in missing) == (not os.access("/usr/sbin/sshd", os.X_OK))
    r = _prereqs_sh("prereqs_missing nftables iproute2", PATH=str(tmp_path))
    assert r.stdout.split() == ["nftables", "iproute2"]


def test_prereqs_sh_table_matches_testkit():
    r = _prereqs_sh('for p in "${PREREQS_ALL[@]}"; do echo "$p=$(prereqs_binary "$p")"; done')
    assert dict(line.split("=", 1) for line in r.stdout.split()) == prereqs.PACKAGES


@pytest.mark.skipif(not shutil.which("nft") or not shutil.which("ip"), reason="nft/ip not installed here")
def test_prereqs_sh_install_dry_run():
    # nothing missing: no apt-get at all
    r = _prereqs_sh("prereqs_install nftables iproute2", PREREQS_DRY_RUN="1")
    assert r.returncode == 0 and "all present" in r.stdout and "apt-get" not in r.stdout, r
    # pretend two are missing: one update, one install of exactly those, noninteractive & quiet
    r = _prereqs_sh("prereqs_install", PREREQS_DRY_RUN="1", PREREQS_ABSENT="nftables iproute2")
    assert r.returncode == 0, r.stderr
    apt = [ln for ln in r.stdout.splitlines() if ln.startswith("+ apt-get")]
    assert apt == [
        "+ apt-get update -qq",
        "+ apt-get install -y -qq --no-install-recommends -o Dpkg::Use-Pty=0 nftables iproute2",
    ], r.stdout


# ---------------------------------------------------------------- the CI rule of tests/conftest.py
SESSION_FILES = {
    "tests/faults/test_cut.py": """
        import pytest
        def test_cut():
            pytest.skip("no namespace here")
    """,
    "tests/e2e/test_stack.py": """
        import pytest
        pytest.skip("no Airflow here", allow_module_level=True)
    """,
    "tests/unit/test_marked.py": """
        import pytest
        @pytest.mark.netns
        def test_marked():
            pytest.skip("marked netns")
        def test_plain():
            pytest.skip("an ordinary skip")
        @pytest.mark.xfail(reason="known")
        def test_xfail():
            raise ValueError
    """,
}


def _session(tmp_path: Path, ci_value: str | None) -> subprocess.CompletedProcess:
    for rel, src in SESSION_FILES.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(src))
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "tests" / "conftest.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    netns: x\n    e2e: x\n    ssh: x\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("CI", "ORCHESJOB_TEST_RUN_DIR") and not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = REPO
    if ci_value is not None:
        env["CI"] = ci_value
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "-rA", "-q",
         "--continue-on-collection-errors", "--rootdir", str(tmp_path), "-c", str(tmp_path / "pytest.ini"),
         "tests"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )


def test_ci_turns_a_skipped_fault_or_e2e_test_into_a_failure(tmp_path):
    r = _session(tmp_path, "true")
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    for reason in ("no namespace here", "no Airflow here", "marked netns"):
        assert f"CI=true: a skipped fault/e2e test is a failure: {reason}" in out, out
    assert "SKIPPED [1] tests/unit/test_marked.py" in out and "an ordinary skip" in out, out
    assert "XFAIL" in out, out


def test_without_ci_those_tests_only_skip(tmp_path):
    r = _session(tmp_path, None)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "CI=true" not in out, out
    assert "4 skipped" in out and "1 xfailed" in out, out

"""Issue 9 item 3: the deploy leaves ~/.orchesjob/bin/orchesjob, a launcher a person can type.

Run locally under a temporary HOME exactly as the hook sends the deploy (deploy_command through
/bin/sh, the bundle on stdin); the launcher is then run as a person would run it."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from orchesjob_provider.bundle import deploy_command, get_bundle
from orchesjob_provider.client.wire import REDEPLOY_EXIT

PYTHON = os.environ.get("AGENT_PYTHON") or sys.executable
BUNDLE = get_bundle()


def deploy(home: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["/bin/sh", "-c", deploy_command(PYTHON, BUNDLE)], input=BUNDLE.data,
                          capture_output=True, env=dict(os.environ, HOME=str(home)), timeout=120)


def launcher(home: Path) -> Path:
    return home / ".orchesjob" / "bin" / "orchesjob"


def run(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": f"{home}/.orchesjob/bin:/usr/bin:/bin", "HOME": str(home),
           "ORCHESJOB_HOME": str(home / "state")}
    return subprocess.run(["orchesjob", *args], capture_output=True, env=env, timeout=60)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    r = deploy(h)
    assert r.returncode == 0, r.stderr
    return h


def test_deploy_leaves_a_private_launcher_that_runs_the_agent(home: Path) -> None:
    path = launcher(home)
    assert stat.S_IMODE(path.stat().st_mode) == 0o700 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    text = path.read_text()
    agent_dir = home / ".orchesjob" / "agent" / BUNDLE.file_name
    assert f"# agent-dir: {agent_dir}\n" in text and text.startswith("#!/bin/sh\n"), text
    r = run(home, "start", "--run-key", "by-hand", "--sync", "--", "sh", "-c", "echo hi")
    assert r.returncode == 0 and json.loads(r.stdout)["status"] == "SUCCEEDED", r.stderr
    r = run(home, "list", "--format", "table")
    assert r.returncode == 0 and b"by-hand" in r.stdout, r
    r = run(home, "status", "--run-key", "nope")
    assert r.returncode == 3 and r.stderr.startswith(b"orchesjob: "), r  # the agent's exit codes pass through
    assert not list(path.parent.glob("*.tmp.*"))


def test_a_second_deploy_replaces_it_atomically_and_keeps_it_working(home: Path) -> None:
    before = launcher(home).stat().st_ino
    r = deploy(home)  # verified: the launcher is written again (new inode: rename, not rewrite)
    assert r.returncode == 0 and b"verified" in r.stdout, r
    assert launcher(home).stat().st_ino != before
    assert run(home, "status", "--running").returncode == 0


def test_a_newer_agent_keeps_the_launcher(home: Path) -> None:
    """Another provider deployed a newer agent: an older one's deploy leaves the launcher alone."""
    base = home / ".orchesjob" / "agent"
    newer = base / "agent-ffffffffffffffff"
    shutil.copytree(base / BUNDLE.file_name, newer)
    init = newer / "remote_agent" / "__init__.py"
    init.write_text(init.read_text().replace('__version__ = "', '__version__ = "99.', 1))
    text = launcher(home).read_text().replace(str(base / BUNDLE.file_name), str(newer))
    launcher(home).write_text(text)
    assert deploy(home).returncode == 0
    assert f"# agent-dir: {newer}\n" in launcher(home).read_text()
    shutil.rmtree(newer)  # gone (pruned): the next deploy points the launcher back
    assert deploy(home).returncode == 0
    assert f"# agent-dir: {base / BUNDLE.file_name}\n" in launcher(home).read_text()


def test_the_launcher_refuses_an_agent_someone_else_could_have_written(home: Path) -> None:
    agent_dir = home / ".orchesjob" / "agent" / BUNDLE.file_name
    os.chmod(agent_dir, 0o777)
    r = run(home, "status", "--running")
    assert r.returncode == REDEPLOY_EXIT and b"only it can write" in r.stderr and r.stdout == b"", r
    os.chmod(agent_dir, 0o700)
    (agent_dir / "remote_agent" / "frontends" / "cli.py").write_text("")  # damaged: empty file
    r = run(home, "status", "--running")
    assert r.returncode == REDEPLOY_EXIT and b"wrong size" in r.stderr, r


def test_a_foreign_bin_entry_is_replaced(home: Path) -> None:
    path = launcher(home)
    path.unlink()
    path.symlink_to("/bin/false")  # whatever sits there, the deploy renames its own file over it
    assert deploy(home).returncode == 0
    assert not path.is_symlink() and run(home, "status", "--running").returncode == 0

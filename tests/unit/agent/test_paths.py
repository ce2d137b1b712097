"""The state dir: ``~`` expanded by the agent (the SSH user's home), created 0700 when missing,
an existing one's mode left alone (the agent never chmods what it did not create)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from remote_agent.store import db, paths

REPO = Path(__file__).resolve().parents[3]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


RUN_RPC = ("import sys; sys.path.insert(0, sys.argv[1]);"
           " from remote_agent.frontends.cli import main; main(['rpc'])")


def rpc(request: dict, home: Path, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k != "ORCHESJOB_HOME"}
    argv = [sys.executable, "-I", "-S", "-c", RUN_RPC, str(REPO)]
    r = subprocess.run(argv, input=json.dumps(request).encode(), capture_output=True, timeout=60,
                       env={**clean, "HOME": str(home), **env})
    reply = json.loads(r.stdout)
    assert reply["ok"], reply
    return reply


def test_tilde_in_home_or_state_dir_is_the_ssh_users_home(tmp_path: Path) -> None:
    for n, field in enumerate(("home", "state_dir")):
        reply = rpc({"op": "start", "run_key": "k", "argv": ["true"], field: f"~/oj-{n}"}, tmp_path)
        assert reply["job"]["stdout_file"].startswith(f"{tmp_path}/oj-{n}/logs/")
        assert (tmp_path / f"oj-{n}" / "orchesjob.db").exists()
    assert not list(Path.cwd().glob("~*")) and not (tmp_path / "~").exists()
    assert rpc({"op": "ping", "home": "~/oj-0"}, tmp_path)["home"] == f"{tmp_path}/oj-0"
    assert rpc({"op": "ping"}, tmp_path, ORCHESJOB_HOME="~/oj-env")["home"] == f"{tmp_path}/oj-env"
    assert paths.expand("~/x") == os.path.expanduser("~/x") and paths.expand("/a/~b") == "/a/~b"


def test_a_missing_state_dir_is_created_0700_with_its_missing_parents(tmp_path: Path) -> None:
    state = tmp_path / "a" / "b" / "state"
    old = os.umask(0o022)
    try:
        with db.writing(str(state)):
            pass
    finally:
        os.umask(old)
    assert mode(tmp_path / "a") == mode(tmp_path / "a" / "b") == mode(state) == mode(state / "logs") == 0o700


def test_an_existing_state_dir_keeps_its_mode_on_every_write(tmp_path: Path) -> None:
    state = tmp_path / "shared-state"
    state.mkdir()
    os.chmod(state, 0o750)  # chosen by an admin, e.g. for a group of operators
    for _ in range(2):
        with db.writing(str(state)):
            pass
    assert mode(state) == 0o750 and mode(state / "logs") == 0o700

"""Shared pytest fixtures and rules (stdlib + pytest only: must import without Airflow).

`sshd` (session): an SSHTarget for the loopback OpenSSH server (testkit.ssh_target). Every test
marked `ssh` gets it set up even without naming the fixture. When sshd cannot be provided (not
root, openssh-server missing...) those tests are skipped with the reason, except under CI=true
where that is a failure.

Also: one scratch dir per test run (env ORCHESJOB_TEST_RUN_DIR) shared by the xdist workers,
e.g. for the migrated Airflow DB template of tests/provider/conftest.py.

testkit is imported from the repo root (pyproject: pythonpath = ["."]); markers are registered
in pyproject.toml only.
"""
import os
import shutil
import tempfile
from typing import Any, Dict

import pytest

from testkit.ci import in_ci
from testkit.ssh_target import HarnessError, SSHTarget, get_target, release

_state: Dict[str, Any] = {}  # "target": SSHTarget | "error": str


def _acquire() -> SSHTarget:
    if "target" in _state:
        return _state["target"]
    if "error" not in _state:
        try:
            target = get_target()
        except HarnessError as e:
            _state["error"] = str(e)
        except Exception as e:  # anything else the harness hits is also "no sshd here"
            _state["error"] = f"{type(e).__name__}: {e}"
        else:
            _state["target"] = target
            for k, v in target.env().items():
                os.environ.setdefault(k, v)   # for subprocesses (airflow, scripts)
            return target
    msg = "loopback sshd unavailable: {}".format(_state["error"])
    if in_ci():
        pytest.fail(msg + " (CI=true: a missing sshd is a failure, not a skip)", pytrace=False)
    pytest.skip(msg)
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def sshd() -> SSHTarget:
    return _acquire()


def pytest_configure(config):
    """One scratch dir per test run, shared by the xdist workers (they inherit the environment).

    Made by the controller (or the only process without xdist) and removed when it ends.
    """
    if hasattr(config, "workerinput") or os.environ.get("ORCHESJOB_TEST_RUN_DIR"):
        return
    os.environ["ORCHESJOB_TEST_RUN_DIR"] = tempfile.mkdtemp(prefix="orchesjob-test-run-")
    config._orchesjob_run_dir = os.environ["ORCHESJOB_TEST_RUN_DIR"]


def pytest_unconfigure(config):
    run_dir = getattr(config, "_orchesjob_run_dir", None)
    if run_dir:
        shutil.rmtree(run_dir, ignore_errors=True)
        os.environ.pop("ORCHESJOB_TEST_RUN_DIR", None)


def pytest_runtest_setup(item):
    if item.get_closest_marker("ssh") is not None:
        _acquire()


def pytest_sessionfinish(session, exitstatus):
    target = _state.pop("target", None)
    if target is not None:
        release(target)

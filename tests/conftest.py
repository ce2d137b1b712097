"""Shared pytest fixtures and rules (stdlib + pytest only: must import without Airflow).

`sshd` (session): an SSHTarget for the loopback OpenSSH server (testkit.ssh_target). Every test
marked `ssh` gets it set up even without naming the fixture. When sshd cannot be provided (not
root, openssh-server missing...) those tests are skipped with the reason, except under CI=true
where that is a failure.

CI=true: a skipped fault or end-to-end proof (under tests/faults or tests/e2e, or marked
`netns`/`e2e`) is reported as a failure, "CI=true: a skipped fault/e2e test is a failure: <reason>":
a skip there means the proof did not run (testkit.ci holds the decision).

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

from testkit.ci import in_ci, is_proof, skip_is_failure_message
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


# ----------------------------------------------------------------- CI: a skipped proof fails
def _skip_reason(rep) -> str:
    longrepr = rep.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (path, lineno, "Skipped: reason")
        reason = str(longrepr[2])
        return reason[len("Skipped: "):] if reason.startswith("Skipped: ") else reason
    return str(longrepr)


def _fail_skipped_proof(rep, markers) -> None:
    if rep.skipped and not hasattr(rep, "wasxfail") and in_ci() and is_proof(rep.nodeid, markers):
        rep.outcome = "failed"
        rep.longrepr = skip_is_failure_message(_skip_reason(rep))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_skipped_proof(outcome.get_result(), [m.name for m in item.iter_markers()])


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """A whole module skipped at import (pytest.skip(allow_module_level=True)) counts too."""
    outcome = yield
    markers = [m.name for m in getattr(collector, "own_markers", [])]
    _fail_skipped_proof(outcome.get_result(), markers)

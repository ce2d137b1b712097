"""scripts/check_wheel.py, the content gate of scripts/check_package.sh: its failure mode too."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SCRIPT = os.path.join(REPO, "scripts", "check_wheel.py")
DIST_INFO = "airflow_provider_orchesjob-9.9.9.dist-info"
ENTRY_POINTS = (
    "[apache_airflow_provider]\nprovider_info = orchesjob_provider.get_provider_info:get_provider_info\n"
    "\n[console_scripts]\norchesjob = remote_agent.frontends.cli:main\n"
)


#: every (sub)package's __init__.py in this checkout: a wheel must hold them all
INITS = tuple(sorted(
    os.path.relpath(os.path.join(root, "__init__.py"), REPO).replace(os.sep, "/")
    for pkg in ("remote_agent", "orchesjob_provider")
    for root, _, files in os.walk(os.path.join(REPO, pkg)) if "__init__.py" in files))


def _wheel(tmp_path, extra: tuple[str, ...] = (), version: str = "9.9.9", drop: str = "") -> str:
    path = str(tmp_path / "airflow_provider_orchesjob-9.9.9-py3-none-any.whl")
    with zipfile.ZipFile(path, "w") as zf:
        for name in (*INITS, *extra):
            if name != drop:
                zf.writestr(name, "")
        zf.writestr(f"{DIST_INFO}/METADATA", f"Metadata-Version: 2.4\nName: x\nVersion: {version}\n\n")
        zf.writestr(f"{DIST_INFO}/entry_points.txt", ENTRY_POINTS)
    return path


def _check(path: str, version: str = "9.9.9") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, SCRIPT, path, "--version", version], capture_output=True, text=True, timeout=30
    )


def test_a_wheel_of_the_two_packages_passes(tmp_path):
    r = _check(_wheel(tmp_path, ("orchesjob_provider/hooks/orchesjob.py",)))
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def test_a_wheel_without_one_of_the_subpackages_is_rejected(tmp_path):
    assert "remote_agent/store/__init__.py" in INITS and "orchesjob_provider/client/__init__.py" in INITS
    r = _check(_wheel(tmp_path, drop="remote_agent/store/__init__.py"))
    assert r.returncode == 1 and "remote_agent/store/__init__.py is missing" in r.stderr, r.stderr


def test_a_wheel_with_tests_is_rejected(tmp_path):
    r = _check(_wheel(tmp_path, ("tests/unit/test_x.py", "testkit/sshd.py")))
    assert r.returncode == 1
    assert "tests/unit/test_x.py: not part of the packages" in r.stderr
    assert "testkit/sshd.py: not part of the packages" in r.stderr


def test_tests_or_bytecode_inside_a_package_are_rejected(tmp_path):
    r = _check(
        _wheel(
            tmp_path, ("orchesjob_provider/tests/test_y.py", "remote_agent/__pycache__/cli.cpython-312.pyc")
        )
    )
    assert r.returncode == 1
    assert r.stderr.count("do not belong in the wheel") == 2, r.stderr


def test_a_version_other_than_the_agents_is_rejected(tmp_path):
    r = _check(_wheel(tmp_path), version="1.0.0")
    assert r.returncode == 1 and "metadata version 9.9.9 != 1.0.0" in r.stderr


AGENT_INITS = tuple(i for i in INITS if i.startswith("remote_agent/"))


def _agent_wheel(tmp_path, *, requires_python: str = ">=3.6", extra_meta: str = "",
                 entry_points: str = "[console_scripts]\norchesjob = remote_agent.frontends.cli:main\n",
                 extra: tuple[str, ...] = ()) -> str:
    path = str(tmp_path / "orchesjob_agent-9.9.9-py3-none-any.whl")
    info = "orchesjob_agent-9.9.9.dist-info"
    with zipfile.ZipFile(path, "w") as zf:
        for name in (*AGENT_INITS, *extra):
            zf.writestr(name, "")
        zf.writestr(f"{info}/METADATA", "Metadata-Version: 2.4\nName: orchesjob-agent\nVersion: 9.9.9\n"
                    f"Requires-Python: {requires_python}\n{extra_meta}\n")
        zf.writestr(f"{info}/entry_points.txt", entry_points)
    return path


def _check_agent(path: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SCRIPT, path, "--version", "9.9.9", "--agent-only"],
                          capture_output=True, text=True, timeout=30)


def test_the_agent_only_wheel_passes_with_remote_agent_alone(tmp_path):
    r = _check_agent(_agent_wheel(tmp_path))
    assert r.returncode == 0, r.stderr


def test_the_agent_only_wheel_rejects_the_provider_a_dependency_and_a_newer_python(tmp_path):
    r = _check_agent(_agent_wheel(tmp_path, extra=("orchesjob_provider/__init__.py",)))
    assert r.returncode == 1 and "not part of the packages ('remote_agent',)" in r.stderr
    r = _check_agent(_agent_wheel(tmp_path, extra_meta="Requires-Dist: paramiko"))
    assert r.returncode == 1 and "nothing beyond the standard library" in r.stderr
    r = _check_agent(_agent_wheel(tmp_path, requires_python=">=3.9"))
    assert r.returncode == 1 and "Requires-Python" in r.stderr
    r = _check_agent(_agent_wheel(tmp_path, entry_points=ENTRY_POINTS))
    assert r.returncode == 1 and "must not register an Airflow provider" in r.stderr

"""Fixtures for the agent test suite; see agent_helpers.py for how the agent is run.

Markers registered here: ``smoke`` (fast, broad; the only tests run on the CPython versions
between 3.6 and the newest) and ``beyond_orchesjob`` (a deliberate difference from orchesjob
1.1.0 or a new feature: skipped when AGENT_CMD points the suite at the real orchesjob).
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from agent_helpers import UNDER_ORCHESJOB, Agent


def pytest_configure(config):
    config.addinivalue_line("markers", "smoke: fast, broad agent tests run on every CPython version")
    config.addinivalue_line(
        "markers",
        "beyond_orchesjob: checks a deliberate difference or a new feature; skipped under AGENT_CMD",
    )
    config.addinivalue_line("markers", "ssh: needs the loopback sshd started by scripts/sshd_fixture")


@pytest.fixture(autouse=True)
def _skip_beyond_orchesjob(request):
    if UNDER_ORCHESJOB and request.node.get_closest_marker("beyond_orchesjob"):
        pytest.skip("beyond orchesjob 1.1.0 (AGENT_CMD is set)")


@pytest.fixture
def agent(tmp_path):
    workdir = tmp_path / "work"
    workdir.mkdir()
    a = Agent(tmp_path / "ojhome", workdir)
    yield a
    a.kill_leftovers()

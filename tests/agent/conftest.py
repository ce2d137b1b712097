"""Fixtures for the agent test suite; see agent_helpers.py for how the agent is run.

Markers (registered in pyproject.toml): ``smoke`` (fast, broad) and ``beyond_orchesjob`` (a
deliberate difference from orchesjob 1.1.0 or a new feature: skipped when AGENT_CMD points the
suite at the real orchesjob).
"""

import pytest
from agent_helpers import UNDER_ORCHESJOB, Agent


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

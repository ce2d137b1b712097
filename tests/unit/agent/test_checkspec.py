"""Issue 9: the pure parts of check / run / recheck and of ``orchesjob list`` (no processes)."""

import pytest

from remote_agent.common import vocab
from remote_agent.common.errors import EXIT_INVALID_ARGS, AgentError
from remote_agent.jobs import checkspec


# --- checkspec.parse ---------------------------------------------------------------------------
def test_check_spec_parsing() -> None:
    assert checkspec.parse(None) is None
    assert checkspec.parse({"argv": ["test", "-e", "/x"]}) == (
        ["test", "-e", "/x"], checkspec.DEFAULT_TIMEOUT)
    assert checkspec.parse({"argv": ["true"], "timeout": 2}) == (["true"], 2.0)
    for bad in ("true", ["true"], {"argv": []}, {"argv": "true"}, {"argv": [1]}, {"argv": ["a\0b"]},
                {"argv": ["true"], "timeout": 0}, {"argv": ["true"], "timeout": True},
                {"argv": ["true"], "timeout": "5"}, {"argv": ["true"], "shell": True}):
        with pytest.raises(AgentError) as err:
            checkspec.parse(bad)
        assert err.value.code == EXIT_INVALID_ARGS, bad


def test_check_columns_round_trip() -> None:
    spec = (["sh", "-c", "test -e 'a b'"], 7.5)
    cols = checkspec.columns(spec)
    assert cols["phase"] == vocab.CHECKING
    assert checkspec.spec_of(cols) == spec
    assert checkspec.columns(None) == {} and checkspec.spec_of({"check_argv": None}) is None

"""Issue 9: the pure parts of check / run / recheck and of ``orchesjob list`` (no processes)."""

import pytest

from orchesjob_provider.operators.validation import validate_check
from orchesjob_provider.version_compat import AirflowException


def test_validate_check() -> None:
    assert validate_check("test -e /x", None) == ["/bin/sh", "-c", "test -e /x"]
    assert validate_check("test -e /x", "/bin/bash") == ["/bin/bash", "-c", "test -e /x"]
    assert validate_check(["test", "-e", "/x"], "/bin/bash") == ["test", "-e", "/x"]  # shell: strings only
    with pytest.raises(AirflowException, match=r"^OrchesjobOperator: check_command: command is empty$"):
        validate_check("  ", None)

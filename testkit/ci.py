"""CI=true and the rule that a skipped fault or end-to-end proof fails the run there.

The rule itself is applied in tests/conftest.py (pytest_runtest_makereport); the decision is
here, pure, so tests/unit/test_testkit.py checks it in milliseconds.
"""

import os
from typing import Iterable, Optional

#: Test directories (relative to the repo root) whose tests are fault or end-to-end proofs.
PROOF_DIRS = ("tests/faults", "tests/e2e")
#: Markers that make any test such a proof.
PROOF_MARKERS = ("netns", "e2e", "fault")


def in_ci(environ: Optional[dict] = None) -> bool:
    """True when CI is set to 1/true/yes (any case)."""
    env = os.environ if environ is None else environ
    return str(env.get("CI", "")).strip().lower() in ("1", "true", "yes")


def is_proof(relpath: str, markers: Iterable[str] = ()) -> bool:
    """Is the test at ``relpath`` (node id or file path, relative to the repo root, with any
    markers) a fault or end-to-end proof?"""
    path = relpath.replace(os.sep, "/").split("::", 1)[0]
    if any(path == d or path.startswith(d + "/") for d in PROOF_DIRS):
        return True
    return any(m in PROOF_MARKERS for m in markers)


def skip_is_failure_message(reason: str) -> str:
    return f"CI=true: a skipped fault/e2e test is a failure: {reason}"

"""Helpers shared by the network-fault tests (imported by tests/faults/conftest.py and the tests)."""

from __future__ import annotations

import os
import uuid

CONN_ID = "orch_netns"
CONN_TIMEOUT = 5


class SideFile:
    """~user/side-<token> on the target: the job appends one line per execution."""

    def __init__(self, home: str):
        self.token = uuid.uuid4().hex[:12]
        self.name = f"side-{self.token}"
        self.path = os.path.join(home, self.name)

    def shell(self, seconds: float) -> str:
        return f"echo x >> ~/{self.name}; sleep {seconds}"

    def executions(self) -> int:
        try:
            with open(self.path) as f:
                return len(f.read().splitlines())
        except FileNotFoundError:
            return 0

    def exists(self) -> bool:
        return os.path.exists(self.path)

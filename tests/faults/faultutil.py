"""Helpers shared by the network-fault tests (imported by tests/faults/conftest.py and the tests)."""

from __future__ import annotations

import importlib.util
import os
import sys
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONN_ID = "orch_netns"
CONN_TIMEOUT = 5


def netns_module():
    mod = sys.modules.get("orchesjob_netns_host")
    if mod is None:
        spec = importlib.util.spec_from_file_location(
            "orchesjob_netns_host", os.path.join(REPO, "scripts", "netns_host.py")
        )
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules["orchesjob_netns_host"] = mod
        spec.loader.exec_module(mod)
    return mod


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

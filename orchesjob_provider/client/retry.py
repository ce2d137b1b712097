"""The retry policy of one agent call, shared by the sync and the async hook.

A small pure object: the hook's loop execs, hands the result to :meth:`CallRetry.after`, and
does what the returned step says (return the reply, deploy the agent, or sleep and resend).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from orchesjob_provider.client.wire import is_missing_agent, parse_reply
from orchesjob_provider.exceptions import OrchesjobBusy

DEPLOY = "deploy"  # deploy the agent, then resend
RESEND = "resend"  # sleep ``delay`` seconds, then resend
DONE = "done"  # ``reply`` is the answer


@dataclass(frozen=True)
class CallStep:
    action: str
    reply: dict[str, Any] | None = None
    delay: float = 0.0


class CallRetry:
    """What to do after each exec of one call.

    * the agent is missing on the host (first use, removed, damaged or unsafe: the launcher's
      exit 86, whatever a login shell printed): deploy it once (which repairs), then resend;
    * the agent was busy (its transaction was rolled back, so resending is safe): resend after a
      jittered exponential backoff (0.2 s, 0.4 s, ... each plus up to as much again at random);
    * anything else is the answer, or its typed error; and after ``max_execs`` execs the last
      busy error is raised.
    """

    max_execs = 6
    first_busy_delay = 0.2

    def __init__(self, op: str, *, remote_python: str, jitter: Callable[[float], float] | None = None):
        self.op = op
        self.remote_python = remote_python
        self.execs = 0
        self.deployed = False
        self.busy_delay = self.first_busy_delay
        self._jitter = jitter or (lambda d: random.uniform(0, d))

    def after(self, rc: int, out: bytes, err: bytes, *, where: str) -> CallStep:
        """The next step after one exec's (exit code, stdout, stderr); ``where`` names the host."""
        self.execs += 1
        if is_missing_agent(rc, out, err) and not self.deployed:
            self.deployed = True
            return CallStep(DEPLOY)
        try:
            reply = parse_reply(self.op, rc, out, err, where=where, remote_python=self.remote_python)
            return CallStep(DONE, reply=reply)
        except OrchesjobBusy:
            if self.execs >= self.max_execs:
                raise
        delay = self.busy_delay + self._jitter(self.busy_delay)
        self.busy_delay *= 2
        return CallStep(RESEND, delay=delay)

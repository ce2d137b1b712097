"""Where a task's agent lives, and the one way operators, sensors and triggers build their hooks
from it. (Operators and sensors build their ``OrchesjobTrigger`` themselves, from the same
fields: this module never imports the triggers, which import it.)"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchesjob_provider.hooks.async_orchesjob import AsyncOrchesjobHook
    from orchesjob_provider.hooks.orchesjob import OrchesjobHook


@dataclass(frozen=True)
class AgentAddress:
    """An ``ssh`` connection id, the interpreter on the host, and the agent's state dir there."""

    ssh_conn_id: str
    remote_python: str = "python3"
    state_dir: str | None = None

    def hook(self) -> OrchesjobHook:
        from orchesjob_provider.hooks.orchesjob import OrchesjobHook

        return OrchesjobHook(
            ssh_conn_id=self.ssh_conn_id, remote_python=self.remote_python, state_dir=self.state_dir
        )

    def async_hook(self) -> AsyncOrchesjobHook:
        from orchesjob_provider.hooks.async_orchesjob import AsyncOrchesjobHook

        return AsyncOrchesjobHook(
            ssh_conn_id=self.ssh_conn_id, remote_python=self.remote_python, state_dir=self.state_dir
        )


class AgentTaskMixin:
    """For operators and sensors with ``ssh_conn_id``, ``remote_python`` and ``state_dir``:
    ``agent`` (their :class:`AgentAddress`) and ``hook`` (one sync hook per task instance)."""

    ssh_conn_id: str
    remote_python: str
    state_dir: str | None
    _hook: OrchesjobHook | None = None

    @property
    def agent(self) -> AgentAddress:
        return AgentAddress(self.ssh_conn_id, self.remote_python, self.state_dir)

    @property
    def hook(self) -> OrchesjobHook:
        if self._hook is None:
            self._hook = self.agent.hook()
        return self._hook

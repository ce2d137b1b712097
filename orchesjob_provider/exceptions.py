"""The provider's errors: what the agent reports (``code``/``kind`` as in docs/PROTOCOL.md) and
what the transport reports when the agent cannot be reached or run."""

from __future__ import annotations

from orchesjob_provider.version_compat import AirflowException


class OrchesjobError(AirflowException):
    """An error reported by the agent (``code``/``kind`` as in PROTOCOL.md) or by the transport."""

    code = 1
    kind = "error"

    def __init__(self, message: str, *, code: int | None = None, kind: str | None = None, op: str = ""):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if kind is not None:
            self.kind = kind
        self.op = op


class OrchesjobBadRequest(OrchesjobError):
    code = 2
    kind = "bad_request"


class OrchesjobNotFound(OrchesjobError):
    code = 3
    kind = "not_found"


class OrchesjobWrongState(OrchesjobError):
    code = 4
    kind = "wrong_state"


class OrchesjobBusy(OrchesjobError):
    code = 5
    kind = "busy"


class AgentUnavailable(OrchesjobError):
    """The agent could not be reached or run: SSH, authentication, host key, python, deploy."""

    code = -1
    kind = "unavailable"


#: The agent's documented exit codes (1 general, 2 bad arguments, 3 not found, 4 wrong state,
#: 5 lock/busy) and the error each one raises; any other code is a plain OrchesjobError.
ERRORS_BY_CODE: dict[int, type[OrchesjobError]] = {
    cls.code: cls for cls in (OrchesjobBadRequest, OrchesjobNotFound, OrchesjobWrongState, OrchesjobBusy)
}


def error_class(code: int) -> type[OrchesjobError]:
    return ERRORS_BY_CODE.get(code, OrchesjobError)


__all__ = [
    "ERRORS_BY_CODE",
    "AgentUnavailable",
    "OrchesjobBadRequest",
    "OrchesjobBusy",
    "OrchesjobError",
    "OrchesjobNotFound",
    "OrchesjobWrongState",
    "error_class",
]

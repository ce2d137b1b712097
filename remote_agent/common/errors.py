"""Errors the agent reports, each tied to one documented exit code.

Every failure leaves the process as one ``orchesjob: <message>`` line on stderr and one of
these exit codes, so a shell script (or the provider) can branch on the code alone.
"""

MYPY = False
if MYPY:  # the hints (type comments) are for mypy only
    from typing import Any, Dict  # noqa: F401

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_INVALID_ARGS = 2
EXIT_NOT_FOUND = 3
EXIT_INVALID_STATE = 4
EXIT_LOCK_ERROR = 5

KINDS = {
    EXIT_ERROR: "error",
    EXIT_INVALID_ARGS: "bad_request",
    EXIT_NOT_FOUND: "not_found",
    EXIT_INVALID_STATE: "wrong_state",
    EXIT_LOCK_ERROR: "busy",
}


class AgentError(Exception):
    """A failure with a user-facing message and its exit code."""

    def __init__(self, message, code=EXIT_ERROR):
        # type: (str, int) -> None
        super().__init__(message)
        self.message = message
        self.code = code

    @property
    def kind(self):
        # type: () -> str
        return KINDS.get(self.code, "error")


def error_body(exc):
    # type: (AgentError) -> Dict[str, Any]
    """The protocol's ``error`` object (code, kind, the message on one line): rpc replies, the
    watch channel's error events and each failed entry of ``starts`` say it alike."""
    return {"code": exc.code, "kind": exc.kind, "message": " ".join(exc.message.split())}


def bad_args(message):
    # type: (str) -> AgentError
    return AgentError(message, EXIT_INVALID_ARGS)


def not_found(message):
    # type: (str) -> AgentError
    return AgentError(message, EXIT_NOT_FOUND)


def wrong_state(message):
    # type: (str) -> AgentError
    return AgentError(message, EXIT_INVALID_STATE)

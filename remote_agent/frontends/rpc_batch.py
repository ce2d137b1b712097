"""The ``starts`` op: many ``start`` requests answered by one agent process.

A start costs the host an SSH session, a Python start and a fork; the first two are most of it
(~50 of ~65 ms). A caller starting many jobs on one host (a hook shared by threads, a trigger
starting its task's job) sends them in one request instead. Nothing is shared between the
starts but the process: each is a whole ``start`` (rpc.op_start) with its own decision in its
own ``BEGIN IMMEDIATE`` transaction and its own launch, in the order sent, so a batch decides
exactly as the same starts sent one after the other would. One start's error (a bad field, a
busy database) is that start's answer; the others go on.
"""

import sqlite3

from remote_agent.common.errors import EXIT_ERROR, AgentError, bad_args, error_body
from remote_agent.store import sqlite

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    from typing import Any, Callable, Dict, List, Optional, Tuple  # noqa: F401

#: the most starts one request may carry (each waits for its job's supervisor to be ready,
#: a few ms; the caller's timeout grows with the batch)
MAX_STARTS = 1000


def _guarded(state_dir, fn, *args):
    # type: (str, Callable[..., Any], *Any) -> Tuple[Any, Optional[Dict[str, Any]]]
    """(``fn(*args)``, None), or (None, the error as this start's answer)."""
    try:
        return fn(*args), None
    except AgentError as exc:
        err = exc
    except sqlite3.Error as exc:
        err = sqlite.db_error(exc, state_dir)
    except Exception as exc:  # one start's bug must not cost the others their answer
        err = AgentError("internal error: {}: {}".format(type(exc).__name__, exc), EXIT_ERROR)
    return None, {"ok": False, "error": error_body(err)}


def op_starts(req, state_dir, start_args, start_reply):
    # type: (Dict[str, Any], str, Callable[[Dict[str, Any]], Dict[str, Any]], Callable[..., Dict[str, Any]]) -> Dict[str, Any]
    """``{"starts": [<start request>, ...]}`` -> ``{"starts": [<start reply>, ...]}``, one per
    request in its order; each reply has ``ok`` and either the start's fields or ``error``.

    Two passes: every start is decided and launched (ops/start.begin) before the first one's
    supervisor is waited for (ops/start.finish), so the supervisors get ready side by side
    instead of one after the other; each start's ``start_timeout`` counts from its own launch."""
    items = req.get("starts")
    if not isinstance(items, list) or not items:
        raise bad_args("request field 'starts' must be a non-empty list of start requests")
    if len(items) > MAX_STARTS:
        raise bad_args("at most {} starts per request ({} sent); nothing was done".format(
            MAX_STARTS, len(items)))
    from remote_agent.ops import start  # per op: ops/start + worker/, ~3 ms

    def begin(item):
        # type: (Any) -> Tuple[Any, Any, float]
        if not isinstance(item, dict):
            raise bad_args("each entry of 'starts' must be an object (a start request)")
        args = start_args(item)
        result, launched = start.begin(state_dir, **args)
        return result, launched, args["start_timeout"]

    def finish(result, launched, timeout):
        # type: (Any, Any, float) -> Dict[str, Any]
        return start_reply(result, start.finish(state_dir, result, launched, False, timeout), state_dir)

    begun = [_guarded(state_dir, begin, item) for item in items]
    replies = []  # type: List[Dict[str, Any]]
    for value, error in begun:
        if error is None:
            reply, error = _guarded(state_dir, finish, *value)
        if error is None:
            reply["ok"] = True
        replies.append(reply if error is None else error)
    return {"starts": replies}

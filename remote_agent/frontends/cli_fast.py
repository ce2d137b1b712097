"""The hot path of the command line: status, logs, start and list parsed without argparse.

Building the argparse tree (cli_parser.py) costs more than the whole status query, so the
hot commands' common forms are parsed here; anything else goes to argparse.
"""

from remote_agent.common.vocab import STDOUT, STREAMS

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    from typing import Any, Dict, List, Optional, Set  # noqa: F401


class Args(object):
    """The parsed command line (what argparse's Namespace would hold)."""

    def __init__(self, **values):
        # type: (**Any) -> None
        self.__dict__.update(values)


# The hot commands' flags, for the fast path below: (type, default). Selector flags of
# mutually exclusive groups are listed in FAST_ONE_OF.
FAST = {
    "status": {"--run-key": (str, None), "--job-id": (str, None), "--running": (bool, False),
               "--all": (bool, False), "--format": (("json", "table"), "json")},
    "logs": {"--run-key": (str, None), "--job-id": (str, None), "--stream": (STREAMS, STDOUT)},
    "start": {"--run-key": (str, None), "--sync": (bool, False), "--start-timeout": (float, 10.0),
              "--strict": (bool, False), "--cwd": (str, None), "--lock-write": (list, None),
              "--lock-read": (list, None), "--slot": (list, None), "--queue-timeout": (float, None)},
    "list": {"--status": (str, None), "--run-key": (str, None), "--prefix": (str, None),
             "--since": (str, None), "--until": (str, None), "--limit": (int, 100),
             "--format": (("json", "jsonl", "table"), "json")},
}  # type: Dict[str, Dict[str, Any]]


FAST_ONE_OF = {"status": ("run_key", "job_id", "running"), "logs": ("run_key", "job_id"),
                "start": ("run_key",)}  # type: Dict[str, Any]


def fast_parse(argv):
    # type: (List[str]) -> Optional[Args]
    """Parse the common forms of status/logs/start without argparse, or return None.

    Building the argparse tree costs more than the whole status query, so the hot commands
    take this path. Anything it is not sure of (help, '=' forms, abbreviations, errors)
    returns None and goes to argparse, which gives the same result or the same error.
    """
    if not argv or argv[0] not in FAST:
        return None
    name, spec = argv[0], FAST[argv[0]]
    values = {"subcommand": name}  # type: Dict[str, Any]
    for flag, (_, default) in spec.items():
        values[flag[2:].replace("-", "_")] = default
    i = 1
    seen = set()  # type: Set[str]
    while i < len(argv):
        token = argv[i]
        if name == "start" and (token == "--" or not token.startswith("-")):
            break
        if token not in spec or token in seen:
            return None  # (a repeated flag: argparse decides, e.g. list --status twice)
        seen.add(token)
        kind = spec[token][0]
        dest = token[2:].replace("-", "_")
        if kind is bool:
            values[dest] = True
            i += 1
            continue
        if i + 1 >= len(argv) or argv[i + 1].startswith("-"):
            return None
        raw = argv[i + 1]
        if isinstance(kind, tuple):
            if raw not in kind:
                return None
            values[dest] = raw
        elif kind is list:  # a repeatable flag (--lock-write NAME ...)
            values[dest] = (values[dest] or []) + [raw]
        elif kind is float or kind is int:
            try:
                values[dest] = kind(raw)
            except ValueError:
                return None
        else:
            values[dest] = raw
        i += 2
    if name == "start":
        values["command"] = argv[i:]
    one_of = FAST_ONE_OF.get(name)
    if one_of and len([d for d in one_of if values[d] not in (None, False)]) != 1:
        return None
    return Args(**values)

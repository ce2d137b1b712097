"""Named locks and slots on the host, the pure part: what a job claims, and whose turn it is.

A job may declare resources it reads (shared), resources it writes (exclusive) and named slots
with a capacity (at most N jobs of that slot at once). A job with claims is queued on the host
in first-come order (``lock_queue.seq``) and its supervisor starts the target only once
``decide_turn`` says so (lockwait.py does the waiting). Holding is derived from the job's row:
a queued job holds what it claimed from its grant until its row leaves STARTING/RUNNING, so a
job that ends, is aborted, or is found LOST frees everything, whichever process noticed.

Standard library only, no I/O: unit-tested in tests/unit/test_locks_decision.py.
"""

from remote_agent.common.errors import bad_args
from remote_agent.common.vocab import STARTING, WAITING

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    from typing import Any, Dict, List, Optional, Tuple  # noqa: F401
    Claims = Dict[str, Any]
    Entry = Dict[str, Any]

READ = "read"
WRITE = "write"
SLOT = "slot"
#: Longest resource or slot name, and most claims one job may make (a typo should not build a
#: queue entry nobody can read).
MAX_NAME = 200
MAX_CLAIMS = 64


def check_name(name, what):
    # type: (Any, str) -> str
    if not isinstance(name, str) or not name.strip():
        raise bad_args("{} name must be a non-empty string".format(what))
    if len(name) > MAX_NAME:
        raise bad_args("{} name is too long ({} characters; the limit is {})".format(
            what, len(name), MAX_NAME))
    if any(ord(c) < 32 or ord(c) == 127 or 0xD800 <= ord(c) <= 0xDFFF for c in name):
        raise bad_args("{} name {!r} must be text without control characters".format(what, name[:60]))
    return name


def normalize(locks=None, slots=None):
    # type: (Any, Any) -> Optional[Claims]
    """Validated claims ``{"read": [...], "write": [...], "slots": {name: capacity}}`` (sorted,
    without duplicates), or None when nothing is claimed. Bad input raises exit 2, one line.

    ``locks``: ``{"read": [names], "write": [names]}``; a name in both is an error (write
    includes read). ``slots``: ``{name: capacity}``, capacity an int >= 1.
    """
    if locks is None:
        locks = {}
    if slots is None:
        slots = {}
    if not isinstance(locks, dict):
        raise bad_args("locks must be an object {\"read\": [names], \"write\": [names]}")
    unknown = sorted(k for k in locks if k not in (READ, WRITE))
    if unknown:
        raise bad_args("locks has unknown key {!r}: use 'read' and 'write'".format(unknown[0]))
    out = {READ: [], WRITE: [], "slots": {}}  # type: Claims
    for mode in (READ, WRITE):
        names = locks.get(mode) or []
        if isinstance(names, str) or not isinstance(names, list):
            raise bad_args("locks[{!r}] must be a list of resource names".format(mode))
        out[mode] = sorted(set(check_name(n, "{} lock".format(mode)) for n in names))
    both = sorted(set(out[READ]) & set(out[WRITE]))
    if both:
        raise bad_args("lock {!r} is declared both read and write: declare it once"
                       " (write includes read)".format(both[0]))
    if not isinstance(slots, dict):
        raise bad_args("slots must be an object {name: capacity}")
    for name, capacity in slots.items():
        check_name(name, "slot")
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise bad_args("slot {!r} capacity must be an integer >= 1, not {!r}".format(name, capacity))
        out["slots"][name] = capacity
    if len(out[READ]) + len(out[WRITE]) + len(out["slots"]) > MAX_CLAIMS:
        raise bad_args("too many locks and slots (the limit is {} per job)".format(MAX_CLAIMS))
    if not (out[READ] or out[WRITE] or out["slots"]):
        return None
    return out


def parse_slot(text):
    # type: (str) -> Tuple[str, int]
    """``NAME=N`` from the command line (``--slot heavy-io=2``)."""
    name, sep, raw = text.rpartition("=")
    if not sep or not name:
        raise bad_args("--slot must be NAME=CAPACITY (e.g. heavy-io=2), not {!r}".format(text))
    try:
        capacity = int(raw)
    except ValueError:
        raise bad_args("--slot {!r}: capacity must be an integer >= 1".format(text)) from None
    return name, capacity


def _conflicts(mine, other):
    # type: (Claims, Claims) -> List[Tuple[str, str]]
    """The (mode, resource) claims of ``mine`` that ``other``'s claims exclude."""
    theirs_write = set(other.get(WRITE) or ())
    theirs_any = theirs_write | set(other.get(READ) or ())
    out = [(WRITE, r) for r in mine.get(WRITE) or () if r in theirs_any]
    out += [(READ, r) for r in mine.get(READ) or () if r in theirs_write]
    return out


def decide_turn(job_id, queue):
    # type: (str, List[Entry]) -> Tuple[bool, List[Dict[str, Any]]]
    """May ``job_id`` take its claims now? Returns (yes, blockers). Pure.

    ``queue``: every queued job that still holds its run key (STARTING/RUNNING), in first-come
    order, each ``{"job_id", "run_key", "claims", "granted"}``; ``job_id`` must be in it.
    ``blockers``: one ``{"job_id", "run_key", "mode", "resource", "holding"}`` per claim of ours
    that another job stands in the way of (holding: it has its grant; else it waits ahead of us).

    The rule is strict first-come per resource (nobody overtakes an earlier job that wants the
    same resource, so a writer is never starved by a stream of readers):

    ===========================  ===============================================================
    our claim                    blocked by
    ===========================  ===============================================================
    write R                      any job ahead of us, or holding, that claims R (read or write)
    read R                       any job ahead of us, or holding, that writes R
    slot S with capacity N       N or more jobs ahead of us, or holding, that claim slot S
    ===========================  ===============================================================

    A slot's capacity is the one *this* job declares (each job says how many of its kind it
    tolerates beside itself). Locks and slots are separate namespaces. Claims of different
    resources never interact, except that a job waiting for one resource keeps its place (and
    blocks later jobs) for all of its others too.
    """
    index = next(i for i, e in enumerate(queue) if e["job_id"] == job_id)
    me = queue[index]
    blockers = []  # type: List[Dict[str, Any]]
    in_slot = {}  # type: Dict[str, List[Entry]]
    for i, other in enumerate(queue):
        if i == index or not (i < index or other.get("granted")):
            continue
        for mode, resource in _conflicts(me["claims"], other["claims"]):
            blockers.append(_blocker(other, mode, resource))
        for slot in other["claims"].get("slots") or {}:
            in_slot.setdefault(slot, []).append(other)
    for slot, capacity in sorted((me["claims"].get("slots") or {}).items()):
        users = in_slot.get(slot, [])
        if len(users) >= capacity:
            blockers += [_blocker(u, SLOT, slot, capacity) for u in users]
    return not blockers, blockers


def _blocker(entry, mode, resource, capacity=None):
    # type: (Entry, str, str, Optional[int]) -> Dict[str, Any]
    out = {"job_id": entry["job_id"], "run_key": entry.get("run_key"), "mode": mode,
           "resource": resource, "holding": bool(entry.get("granted"))}
    if capacity is not None:
        out["capacity"] = capacity
    return out


def describe(blockers):
    # type: (List[Dict[str, Any]]) -> str
    """One line: what a job waits for and who holds it (the task log and the timeout message)."""
    parts = []
    for b in blockers:
        what = "slot {!r} (capacity {})".format(b["resource"], b.get("capacity")) if b["mode"] == SLOT \
            else "{} lock {!r}".format(b["mode"], b["resource"])
        parts.append("{}: {} by job {} (run key {})".format(
            what, "held" if b["holding"] else "queued ahead", b["job_id"], b.get("run_key")))
    return "; ".join(parts) or "its turn"


def claim_list(claims):
    # type: (Optional[Claims]) -> List[Tuple[str, str, Optional[int]]]
    """(mode, name, capacity) for every claim, locks first: the rows of ``orchesjob locks``."""
    if not claims:
        return []
    out = [(mode, name, None) for mode in (WRITE, READ) for name in claims.get(mode) or ()]  # type: List[Tuple[str, str, Optional[int]]]
    out += [(SLOT, name, cap) for name, cap in sorted((claims.get("slots") or {}).items())]
    return out


def listing(queue):
    # type: (List[Entry]) -> List[Dict[str, Any]]
    """``orchesjob locks``: per resource (locks, then slots, by name), its holders and its
    waiters in queue order. ``queue`` as for ``decide_turn``, entries also carrying
    ``status``, ``queued_at`` and ``granted_at``."""
    by = {}  # type: Dict[Tuple[str, str], Dict[str, Any]]
    position = 0
    for entry in queue:
        if not entry.get("granted"):
            position += 1
        for mode, name, cap in claim_list(entry["claims"]):
            kind = "slot" if mode == SLOT else "lock"
            item = by.setdefault((kind, name), {"kind": kind, "name": name, "holders": [], "waiters": []})
            status = entry.get("status")
            if status == STARTING and not entry.get("granted"):
                status = WAITING
            who = {"job_id": entry["job_id"], "run_key": entry.get("run_key"), "mode": mode,
                   "status": status, "queued_at": entry.get("queued_at"),
                   "granted_at": entry.get("granted_at")}
            if cap is not None:
                who["capacity"] = cap
            if entry.get("granted"):
                item["holders"].append(who)
            else:
                who["position"] = position
                item["waiters"].append(who)
    return [by[k] for k in sorted(by)]

"""Where the agent keeps its state: the state dir, its database and its job logs.

One name in code, ``state_dir``; orchesjob called it "home" ($ORCHESJOB_HOME), and so does
the JSON protocol's request field (which also accepts "state_dir").
"""

import os
import stat

from remote_agent.common.errors import EXIT_ERROR, AgentError


class UnsafePath(AgentError):
    """A path of the state dir that another user (or a group) could have written: refused."""

    def __init__(self, message):
        # type: (str) -> None
        super().__init__(message, EXIT_ERROR)


def default_state_dir():
    # type: () -> str
    """State dir: $ORCHESJOB_HOME, else /var/lib/orchesjob for root, else the XDG state dir.

    orchesjob 1.1.0 always used /var/lib/orchesjob, which a non-root SSH user cannot
    create; root keeps that path so existing scripts find their state.
    """
    env = os.environ.get("ORCHESJOB_HOME")
    if env:
        return expand(env)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return "/var/lib/orchesjob"
    xdg = os.environ.get("XDG_STATE_HOME")
    if xdg and os.path.isabs(xdg):
        return os.path.join(xdg, "orchesjob")
    return os.path.join(os.path.expanduser("~"), ".local", "state", "orchesjob")


def expand(state_dir):
    # type: (str) -> str
    """``~/x`` or ``~user/x`` as given by a DAG (the provider sends it verbatim): the SSH user's."""
    return os.path.expanduser(state_dir) if state_dir.startswith("~") else state_dir


#: The files of a state dir that are checked before any use (besides the dirs themselves).
DB_FILES = ("orchesjob.db", "orchesjob.db-wal", "orchesjob.db-shm", "orchesjob.db-journal")
_checked = set()  # type: set


def _owner(uid):
    # type: (int) -> str
    try:
        import pwd  # only on the error path

        return "{} (uid {})".format(pwd.getpwuid(uid).pw_name, uid)
    except (ImportError, KeyError):
        return "uid {}".format(uid)


def refusal(path, st, want_dir):
    # type: (str, os.stat_result, bool) -> str
    """The one line that refuses an untrusted path: what it is, its owner and mode, the fix."""
    if stat.S_ISLNK(st.st_mode):
        kind = "a symlink"
    elif stat.S_ISDIR(st.st_mode):
        kind = "a directory"
    elif stat.S_ISREG(st.st_mode):
        kind = "a file"
    else:
        kind = "a special file"
    euid = os.geteuid()
    if st.st_uid != euid or stat.S_ISLNK(st.st_mode) or kind == "a special file":
        fix = "remove it (or set ORCHESJOB_HOME to a new directory of your own)"
    else:
        fix = "check its contents, then chmod go-w it (or set ORCHESJOB_HOME to a new directory)"
    return ("unsafe state dir: {} is {} owned by {} with mode {:04o}; the agent uses only a {} "
            "owned by {} that is not a symlink and not writable by group or others: {}".format(
                path, kind, _owner(st.st_uid), stat.S_IMODE(st.st_mode),
                "directory" if want_dir else "regular file", _owner(euid), fix))


def trusted(path, want_dir):
    # type: (str, bool) -> bool
    """True if ``path`` is a real directory (or regular file) of the effective user that group
    and others cannot write; False if it does not exist; UnsafePath (an AgentError) otherwise.
    lstat: a symlink is never followed."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    kind_ok = stat.S_ISDIR(st.st_mode) if want_dir else stat.S_ISREG(st.st_mode)
    if not kind_ok or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise UnsafePath(refusal(path, st, want_dir))
    return True


def trusted_fd(fd, path):
    # type: (int, str) -> None
    """The same check for a file the agent opened (O_NOFOLLOW) that may have existed before."""
    st = os.fstat(fd)
    kind_ok = stat.S_ISREG(st.st_mode) or stat.S_ISFIFO(st.st_mode)
    if not kind_ok or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        os.close(fd)
        raise UnsafePath(refusal(path, st, False))


def _check_parent(state_dir):
    # type: (str) -> None
    """Whoever can write the state dir's parent can rename the state dir away and put another in
    its place: the parent must be the user's or root's, and writable by group or others only
    with the sticky bit (as /tmp). Symlinks above the state dir are followed (``/home`` may
    be one): only the state dir itself must be a real directory."""
    parent = os.path.dirname(os.path.abspath(state_dir))
    try:
        st = os.stat(parent)
    except OSError:
        return
    if st.st_uid not in (0, os.geteuid()) or (st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX):
        raise UnsafePath(
            "unsafe state dir: its parent {} is a directory owned by {} with mode {:04o}, so another "
            "user could replace the state dir {}; the parent must belong to {} or root and be "
            "writable by group or others only with the sticky bit: move the state dir (set "
            "ORCHESJOB_HOME) into a directory of your own".format(
                parent, _owner(st.st_uid), stat.S_IMODE(st.st_mode), state_dir, _owner(os.geteuid())))


def check_state_dir(state_dir):
    # type: (str) -> bool
    """Check an existing state dir once per process: the dir, ``logs``, ``locks`` and the
    database files must be trusted (``trusted``). False if the state dir does not exist."""
    if state_dir in _checked:
        return True
    if not trusted(state_dir, True):
        return False
    _check_parent(state_dir)
    prefix = os.path.join(state_dir, "")  # one join, not six: every command runs this
    for sub in ("logs", "locks"):
        trusted(prefix + sub, True)
    for name in DB_FILES:
        trusted(prefix + name, False)
    _checked.add(state_dir)
    return True


def _mkdir(path):
    # type: (str) -> None
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass  # checked right after: whoever made it, it must be trusted


def ensure_state_dir(state_dir):
    # type: (str) -> None
    """Create what is missing of the state dir and its logs dir, mode 0700 whatever the umask
    (missing parents too), then check all of it (``check_state_dir``). The agent never chmods
    or takes over what it did not create: an untrusted path is refused (UnsafePath)."""
    if state_dir in _checked:
        return
    old_umask = os.umask(0o077)
    try:
        if not trusted(state_dir, True):
            parent = os.path.dirname(os.path.abspath(state_dir))
            if not os.path.isdir(parent):
                os.makedirs(parent, 0o700, exist_ok=True)
            _check_parent(state_dir)
            _mkdir(state_dir)
            trusted(state_dir, True)
        _check_parent(state_dir)
        logs = os.path.join(state_dir, "logs")
        if not trusted(logs, True):
            _mkdir(logs)
    finally:
        os.umask(old_umask)
    check_state_dir(state_dir)


def ensure_subdir(state_dir, name):
    # type: (str, str) -> str
    """``<state_dir>/<name>``, created 0700 if missing, and trusted (UnsafePath otherwise)."""
    path = os.path.join(state_dir, name)
    if not trusted(path, True):
        _mkdir(path)
        trusted(path, True)
    return path


def db_path(state_dir):
    # type: (str) -> str
    return os.path.join(state_dir, "orchesjob.db")


def log_path(state_dir, job_id, stream):
    # type: (str, str, str) -> str
    return os.path.join(state_dir, "logs", "{}.{}".format(job_id, stream))


def open_log(state_dir, job_id, stream, append=True):
    # type: (str, str, str, bool) -> int
    """A job's log opened for writing (created 0600), never through a symlink, and refused
    (UnsafePath) if it is not this user's own file: a log another user made is never written."""
    path = log_path(state_dir, job_id, stream)
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_APPEND if append else 0)
    fd = os.open(path, flags, 0o600)
    trusted_fd(fd, path)
    return fd

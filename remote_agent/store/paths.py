"""Where the agent keeps its state: the state dir, its database and its job logs.

One name in code, ``state_dir``; orchesjob called it "home" ($ORCHESJOB_HOME), and so does
the JSON protocol's request field (which also accepts "state_dir").
"""

import os


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


def ensure_state_dir(state_dir):
    # type: (str) -> None
    """Create what is missing of the state dir and its logs dir, mode 0700 (parents included);
    an existing directory keeps its mode: the agent never chmods what it did not create."""
    logs = os.path.join(state_dir, "logs")
    if os.path.isdir(logs):
        return
    old_umask = os.umask(0o077)
    try:
        os.makedirs(logs, 0o700, exist_ok=True)
    finally:
        os.umask(old_umask)


def db_path(state_dir):
    # type: (str) -> str
    return os.path.join(state_dir, "orchesjob.db")


def log_path(state_dir, job_id, stream):
    # type: (str, str, str) -> str
    return os.path.join(state_dir, "logs", "{}.{}".format(job_id, stream))

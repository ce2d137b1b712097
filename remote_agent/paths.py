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
        return env
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return "/var/lib/orchesjob"
    xdg = os.environ.get("XDG_STATE_HOME")
    if xdg and os.path.isabs(xdg):
        return os.path.join(xdg, "orchesjob")
    return os.path.join(os.path.expanduser("~"), ".local", "state", "orchesjob")


def db_path(state_dir):
    # type: (str) -> str
    return os.path.join(state_dir, "orchesjob.db")


def log_path(state_dir, job_id, stream):
    # type: (str, str, str) -> str
    return os.path.join(state_dir, "logs", "{}.{}".format(job_id, stream))

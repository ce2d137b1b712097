# The agent bundle's orchesjob_boot.py: loaded by launch.py (the -c text of every call) from the
# agent directory once that directory is known to be ours, and run as main(agent_dir).
#
# Standard library only, valid on CPython 3.6, and cheap (a few stats; it loads as bytecode): it
# runs on every call. It checks that every file the bundle's MANIFEST lists is there, a regular
# file of this user that nobody else can write, with its size (a crash or a full disk during a
# deploy leaves empty or missing files), and so is every bytecode file under the packages'
# __pycache__ dirs (Python loads those instead of the sources), then imports and runs the
# agent. Anything wrong ends here, before the agent runs, with exit code 86 and one line on
# stderr; the hook then deploys again, which verifies every sha256 and the bytecode, and
# repairs or refuses (deploy.py).
import os
import sys

MYPY = False
if MYPY:
    from typing import NoReturn  # noqa: F401

REDEPLOY = 86


def _stop(message):
    # type: (str) -> NoReturn
    sys.stderr.write("orchesjob-agent-redeploy: %s\n" % message)
    sys.stderr.flush()  # block-buffered when not a tty before 3.9, and os._exit does not flush
    os._exit(REDEPLOY)


def _check(path, want_dir, uid):
    # type: (str, bool, int) -> os.stat_result
    try:
        st = os.lstat(path)
    except OSError:
        _stop("missing %s" % path)
    if (st.st_mode & 0o170000) != (0o040000 if want_dir else 0o100000):
        _stop("not a %s: %s" % ("directory" if want_dir else "regular file", path))
    if st.st_uid != uid:
        _stop("unsafe: %s is owned by uid %d, not %d" % (path, st.st_uid, uid))
    if st.st_mode & 0o022:
        _stop("unsafe: %s is writable by group or others (mode %o)" % (path, st.st_mode & 0o7777))
    return st


def main(agent_dir):
    # type: (str) -> None
    uid = os.getuid()
    _check(os.path.join(agent_dir, "MANIFEST"), False, uid)
    try:
        with open(os.path.join(agent_dir, "MANIFEST"), "rb") as f:
            manifest = f.read().decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        _stop("unreadable %s/MANIFEST" % agent_dir)
    checked = {agent_dir}
    for line in manifest:
        try:
            _digest, size_text, name = line.split(" ", 2)
            size = int(size_text)
        except ValueError:
            _stop("damaged %s/MANIFEST" % agent_dir)
        path = os.path.join(agent_dir, name)
        parent = os.path.dirname(path)
        if parent not in checked:
            _check(parent, True, uid)
            checked.add(parent)
        if _check(path, False, uid).st_size != size:
            _stop("damaged: %s has the wrong size" % path)
    # The bytecode Python will load instead of the sources: every file under each package's
    # __pycache__ must be this user's and writable by nobody else, like the sources.
    for parent in sorted(checked):
        cache = os.path.join(parent, "__pycache__")
        if not os.path.lexists(cache):
            continue
        _check(cache, True, uid)
        try:
            names = os.listdir(cache)
        except OSError:
            _stop("unreadable %s" % cache)
        for name in names:
            _check(os.path.join(cache, name), False, uid)
    try:
        from remote_agent.frontends.cli import main as agent_main
    except (ImportError, SyntaxError, ValueError, EOFError) as exc:  # EOFError: a cut .pyc
        _stop("damaged: cannot import the agent (%s: %s)" % (type(exc).__name__, exc))
    agent_main(sys.argv[2:])

# The first code every agent call runs on the target, sent as `python3 -I -S -c <this> DIR rpc`.
#
# Standard library only, valid on CPython 3.6, and cheap (a few stats): it runs on every call.
# Before anything from the deployed directory is imported it checks that the directory chain
# ~/.orchesjob, ~/.orchesjob/agent, DIR, DIR/remote_agent is made of real directories owned by
# this user and writable by nobody else, and that every file the bundle's MANIFEST lists is
# there with its size (a crash or a full disk during a deploy leaves empty or missing files).
# Anything wrong ends here, before the agent runs, with exit code 86 and one line on stderr;
# the hook then deploys again, which verifies every hash and repairs or refuses.
import os
import sys

MYPY = False
if MYPY:
    from typing import NoReturn  # noqa: F401

REDEPLOY = 86


def _stop(message):
    # type: (str) -> NoReturn
    sys.stderr.write("orchesjob-agent-redeploy: %s\n" % message)
    sys.stdout.flush()
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


def _main():
    # type: () -> None
    agent_dir = os.path.expanduser(sys.argv[1])
    uid = os.getuid()
    base = os.path.dirname(agent_dir)
    for path in (os.path.dirname(base), base, agent_dir):
        _check(path, True, uid)
    try:
        with open(os.path.join(agent_dir, "MANIFEST"), "rb") as f:
            manifest = f.read().decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        _stop("missing or unreadable %s/MANIFEST" % agent_dir)
    checked = {agent_dir}
    for line in manifest:
        try:
            _digest, size, name = line.split(" ", 2)
            int(size)
        except ValueError:
            _stop("damaged %s/MANIFEST" % agent_dir)
        path = os.path.join(agent_dir, name)
        parent = os.path.dirname(path)
        if parent not in checked:
            _check(parent, True, uid)
            checked.add(parent)
        if _check(path, False, uid).st_size != int(size):
            _stop("damaged: %s has the wrong size" % path)
    sys.path.insert(0, agent_dir)
    try:
        from remote_agent.cli import main
    except (ImportError, SyntaxError, ValueError) as exc:
        _stop("damaged: cannot import the agent (%s: %s)" % (type(exc).__name__, exc))
    main(sys.argv[2:])


if __name__ == "__main__":  # `python3 -c` runs this text as __main__
    _main()

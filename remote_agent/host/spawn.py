"""The agent's one fork+exec, and waiting for children: used by the supervisor (the target),
the check runner (the check), and nothing else.

Hand-rolled instead of subprocess.Popen: importing subprocess costs ~5 ms of every start.
"""

import os
import signal

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    from typing import Dict, List, Optional  # noqa: F401


def spawn(argv, cwd, env, out_fd, err_fd):
    # type: (List[str], Optional[str], Optional[Dict[str, str]], int, int) -> int
    """fork + exec the target as a new session (its pid is its process group).

    Hand-rolled instead of subprocess.Popen: importing subprocess costs ~5 ms of every
    start. An exec failure comes back through a close-on-exec pipe as an OSError, as
    Popen would raise it.
    """
    err_r, err_w = os.pipe()  # non-inheritable: closed by a successful exec
    pid = os.fork()
    if pid == 0:
        try:
            os.close(err_r)
            os.setsid()
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(out_fd, 1)
            os.dup2(err_fd, 2)
            for name in ("SIGPIPE", "SIGXFSZ"):  # Python ignores these; the target must not
                if hasattr(signal, name):
                    signal.signal(getattr(signal, name), signal.SIG_DFL)
            if cwd:
                try:
                    os.chdir(cwd)
                except OSError as exc:
                    exc.filename = "working directory " + repr(cwd)
                    raise
            if env is None:
                os.execvp(argv[0], argv)
            else:
                os.execvpe(argv[0], argv, env)
        except BaseException as exc:
            where = getattr(exc, "filename", None) or repr(argv[0])
            text = "{}:{}: {}".format(getattr(exc, "errno", 0) or 0, where,
                                      getattr(exc, "strerror", None) or exc)
            os.write(err_w, text.encode("utf-8", "backslashreplace"))
        finally:
            os._exit(127)
    os.close(err_w)
    chunks = []
    while True:
        chunk = os.read(err_r, 4096)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(err_r)
    if chunks:
        os.waitpid(pid, 0)
        code, _, text = b"".join(chunks).decode("utf-8", "replace").partition(":")
        raise OSError(int(code) if code.isdigit() else 0, text)
    return pid


def exit_code(status):
    # type: (int) -> int
    """A wait status as an exit code: the status, or -N if signal N killed it (as Popen)."""
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def wait_exit(pid):
    # type: (int) -> int
    """Exit code of a child (see _exit_code), reaping every other child that ends meanwhile:
    a subreaper's adopted orphans."""
    while True:
        try:
            ended, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return -1  # cannot happen while ``pid`` is our unreaped child
        if ended == pid:
            return exit_code(status)


def unreaped_child(pid):
    # type: (int) -> bool
    """True while ``pid`` is a child of this process not yet reaped (running or a zombie): its
    pid, and so its process group number, cannot belong to anybody else. Asks without reaping."""
    waitid = getattr(os, "waitid", None)
    if waitid is None:  # no waitid (macOS): best effort
        return True
    try:
        waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


def reap_into(statuses):
    # type: (Dict[int, int]) -> None
    """Collect every exited child without blocking, keeping its wait status by pid."""
    while True:
        try:
            ended, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if ended == 0:
            return
        statuses[ended] = status

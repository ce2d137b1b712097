"""The light job: what stays alive on the host while a job runs is one bash process (~0.3 MB
of proportional memory), not a Python supervisor (~4.5 MB).

The forked Python supervisor (supervisor.py) prepares everything as before (session, state,
logs, the job's environment), then forks the *wrapper*: a child that makes itself the job's
subreaper and session, puts the descriptors the job needs on fixed numbers, and execs bash
with the fixed script ``SCRIPT`` (no user data in it; the job's argv comes as positional
arguments). bash starts the target as a job of its own (``set -m``: its own process group,
SIGINT/SIGQUIT not ignored, which a POSIX sh without job control would do to a background
job), reports the target's pid, and waits, using no CPU. The Python supervisor records the
wrapper as the job's worker (``worker_pid``/``worker_start``) and the target, tells the
launcher, and exits. When the target ends, bash writes the exit record at once (exitrec.py's
format, ``printf`` to a temporary file that ``mktemp`` made new with an unpredictable name,
and ``mv``): from then on readers report the outcome,
as they did a few milliseconds after the end with the classic supervisor.

Most jobs on a local filesystem end with nothing left to do (a network filesystem can be shared
by several hosts, so there the finisher always runs: see ``_quick_end``): the target exited by
itself (no signal reached it or the wrapper) and left no process behind (bash, a subreaper, has
no children: it reads ``/proc/$$/task/$$/children``, which every orphan of the job would be
in). Then bash simply exits. The exit record is the outcome; the job's row says RUNNING until
the next reader or writer of the row stores it (liveness.reconcile: the worker is gone and the
record is there; the watch channel stores the ends of each round in one transaction). That is
what makes a thousand jobs ending together cheap: a Python start per end was ~35 ms of host CPU
each, and with a scan of every process for leftovers ~100 ms (benchmarks/fanout_bench.py). What
is given up: the record is renamed into place but not fsynced (a host crash right after the end
can leave no record; the job then reads LOST with an unknown outcome, as if the host had
crashed a moment earlier).

Otherwise (a signal, an exit code above 128, processes left behind, no subreaper) bash execs the
*finisher* - the same interpreter and the same agent directory - in the same process (still
the subreaper, still the recorded worker: exec keeps pid and start time), which runs
``finish``: the record again, fsynced, the leftovers ended after the grace, the
final status written with retries. If the finisher cannot start (the agent's directory pruned
meanwhile), the record bash wrote still decides the outcome.

Which pid is the worker: the wrapper, from bash through the finisher. A plain ``kill <worker>``
reaches bash, whose trap sends SIGTERM to the target's process group (as the Python
supervisor did); abort, liveness and reconcile see the same identities as before.

The classic supervisor is kept. It runs sync starts (their launcher, a Python process, stays
for the whole run anyway; the finisher would add a Python start to a short job), and every job
the light job cannot run with the same behaviour: no bash >= 4.2 in /bin or /usr/bin,
``ORCHESJOB_LIGHT=0``, a target that would not start (missing, not executable, not a script
with ``#!`` nor an ELF binary, a bad working directory: the classic path reports those
exactly, as exit code -1), or an environment
carrying ``SHELLOPTS``/``BASHOPTS`` (read-only in bash, so the target would see bash's).

Jobs with locks or slots, and jobs with a check, run light too: the Python supervisor waits for
their turn and runs the check (finite work) before it hands over. The wrapper then holds the
job's lock-queue wake channel (``FD_HELD``, closed for the target), and its finisher after it,
so waiters wake when the job's worker ends, as before. With a check the wrapper writes no exit
record and always runs its finisher, which rechecks first and records after (checkrun.py): the
recheck's environment is the finisher's, i.e. the job's as bash passed it on.

What differs from the classic supervisor: the exit status comes from bash, which reports a
signal death as 128+N; an exit code 129...192 is stored as -(code - 128), "killed by signal"
(a target that exits with such a code itself reads as killed: in practice a shell whose last
command was killed by that signal).
"""

import fcntl
import os
import signal
import sys

from remote_agent.common.vocab import RUNNING, STARTING
from remote_agent.host import procs, tree
from remote_agent.store import exitrec
from remote_agent.store.fstype import network_fs_type
from remote_agent.store.sqlite import busy_timeout
from remote_agent.worker import handoff

MYPY = False
if MYPY:  # typing costs ~3 ms of start-up; the hints (type comments) are for mypy only
    from typing import Dict, List, Optional, Tuple  # noqa: F401

    from remote_agent.worker.finish import Db  # noqa: F401

#: ``ORCHESJOB_LIGHT=0`` in the agent's environment keeps the classic Python supervisor.
LIGHT_ENV = "ORCHESJOB_LIGHT"
#: ``ORCHESJOB_QUICK_END=0``: every light job runs its finisher (stores its row at its end),
#: for a state dir that several hosts share on a filesystem not recognised as a network one.
QUICK_END_ENV = "ORCHESJOB_QUICK_END"
BASH_CANDIDATES = ("/bin/bash", "/usr/bin/bash")
#: Descriptor numbers in the wrapper: pid report (to the supervisor), the sync launcher's
#: pipe, the two logs, the supervisor's go-ahead (end-of-file once RUNNING is recorded).
FD_PID, FD_NOTIFY, FD_OUT, FD_ERR, FD_ACK = 3, 4, 5, 6, 7
#: The lock-queue wake channel of a job with locks or slots (lockwait.py), held by the wrapper
#: and then its finisher: waiters wake when the last of them ends, never because of the target.
FD_HELD = 8

#: The wrapper, run as ``bash -p -c SCRIPT orchesjob-job <fixed args> -- <argv>``. ``-p``: no
#: BASH_ENV file, no functions imported from the environment (the job's environment cannot
#: change what this script does). Positional: python, agent root, state dir, job id, the
#: exit-record path, kill grace, busy timeout, subreaper flag, SHLVL, PWD and OLDPWD of the
#: job's environment ("x<value>" or "" when unset: bash sets or drops them), the quick-end flag
#: (1: may end without the finisher, see above), ``--``, the argv.
#: bash's environment is the job's: the script assigns no variable before the target is forked
#: (so the target sees exactly the job's environment) and names its own ``_oj_*`` after.
#: The target's subshell reports its own pid and start time (/proc/self/stat, read by bash
#: itself before it execs the target) on ``FD_PID``: bash reaps its children as they end, so
#: a fast target's /proc entry can be gone before anyone else reads it, and a pid without a
#: start time is no identity (host/procs.py). It uses ``_oj_st`` for that and unsets it:
#: a variable of that name in the job's environment does not reach the target.
SCRIPT = r"""set -m
trap '_oj_t=1; _oj_s=1; kill -TERM -- "-$_oj_pid" 2>/dev/null' TERM
trap '_oj_t=1; _oj_s=1' HUP INT
(
  { read -r _oj_st; } 2>/dev/null </proc/self/stat
  printf '%s %s\n' "$BASHPID" "${_oj_st##*) }" >&3
  unset _oj_st
  case $9 in x*) SHLVL=${9#x};; *) unset SHLVL;; esac
  case ${10} in x*) PWD=${10#x};; *) unset PWD;; esac
  case ${11} in x*) OLDPWD=${11#x};; *) unset OLDPWD;; esac
  shift 13
  exec "$@" 1>&5 2>&6 3>&- 4>&- 5>&- 6>&- 7<&- 8>&-
) &
_oj_pid=$!
set +m
exec 3>&- 5>&- 6>&-
umask 077
_oj_t=1
while [ -n "$_oj_t" ]; do _oj_t=; wait "$_oj_pid"; _oj_rc=$?; done
read -r _oj_go <&7
exec 7<&-
_oj_code=$_oj_rc
if [ "$_oj_rc" -gt 128 ] && [ "$_oj_rc" -le 192 ]; then _oj_code=$((128 - _oj_rc)); fi
printf -v _oj_now '%(%s)T' -1
if [ -n "$5" ]; then
  _oj_tmp=$(command -p mktemp "$5.tmp.XXXXXXXXXX") && printf 'v1 %d %d\n' "$_oj_code" "$_oj_now" >"$_oj_tmp" \
    && command -p mv -f "$_oj_tmp" "$5" && _oj_rec=1
fi
if [ -n "$_oj_rec" ] && [ "$8" = 1 ] && [ "${12}" = 1 ] && [ -z "$_oj_s" ] && [ "$_oj_rc" -le 128 ] \
   && [ "${_oj_now:-0}" -gt 0 ]; then
  _oj_kids=x
  { _oj_kids=; read -r -d '' _oj_kids; } 2>/dev/null <"/proc/$$/task/$$/children"
  if [ -z "$_oj_kids" ]; then exit 0; fi
fi
_oj_fin='import sys; sys.path.insert(0, sys.argv[1]); '
_oj_fin=$_oj_fin'from remote_agent.worker.finish import finish_main; finish_main(sys.argv[2:])'
exec "$1" -I -S -c "$_oj_fin" "$2" "$3" "$4" "$_oj_pid" "$_oj_code" "$6" "$7" "$8" "$_oj_now"
"""


def bash_path():
    # type: () -> Optional[str]
    """The bash to use, or None if there is none (or ``ORCHESJOB_LIGHT=0``)."""
    if os.environ.get(LIGHT_ENV, "1") == "0":
        return None
    for path in BASH_CANDIDATES:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def _resolve(name, cwd, env):
    # type: (str, Optional[str], Dict[str, str]) -> Optional[str]
    """The file execvp would run for ``name``, or None if it would fail."""
    if "/" in name:
        candidates = [os.path.join(cwd or os.getcwd(), name)]
    else:
        candidates = [os.path.join(d or ".", name)
                      for d in env.get("PATH", os.defpath).split(os.pathsep)]
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
        if "/" not in name and os.path.exists(path):
            return None  # execvp would stop here (EACCES): let the classic path say so
    return None


#: above this many environment variables the classic supervisor starts the job: bash's start-up
#: is quadratic in their number (8,000: 0.8 s, 20,000: 5 s, 100,000: minutes), Python's is not
LIGHT_MAX_ENV = 2000


def _startable(argv, cwd, env):
    # type: (List[str], Optional[str], Dict[str, str]) -> bool
    """True if the target will start as the classic supervisor would start it: its working
    directory is usable and argv[0] is an executable ELF binary or ``#!`` script."""
    if not argv or "SHELLOPTS" in env or "BASHOPTS" in env or len(env) > LIGHT_MAX_ENV:
        return False
    if cwd is not None and not (os.path.isdir(cwd) and os.access(cwd, os.X_OK)):
        return False
    path = _resolve(argv[0], cwd, env)
    if path is None:
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head[:2] == b"#!" or head == b"\x7fELF"


def agent_root():
    # type: () -> str
    """The directory that holds the ``remote_agent`` package (the deployed agent-<sha>)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _exec_wrapper(bash, args, cwd, env, fds):
    # type: (str, List[str], Optional[str], Dict[str, str], Dict[int, int]) -> None
    """In the forked wrapper: own session, subreaper, fixed descriptors, then exec bash."""
    os.setsid()
    if cwd:
        os.chdir(cwd)  # inherited by bash and so by the target
    reaper = tree.become_subreaper()
    # Python ignores SIGPIPE and SIGXFSZ; an ignored signal survives exec and bash could not
    # reset it for the target.
    for name in ("SIGPIPE", "SIGXFSZ"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    moved = {}  # type: Dict[int, int]
    for src in fds.values():
        moved[src] = fcntl.fcntl(src, fcntl.F_DUPFD, 10)  # out of the way of the fixed numbers
    for target, src in fds.items():
        os.dup2(moved[src], target)  # dup2 makes the copy inheritable
    tree.close_inherited_fds(keep=fds.keys())
    args[7] = "1" if reaper else "0"
    os.execve(bash, [bash, "-p", "-c", SCRIPT, "orchesjob-job", *args], env)


def start(state_dir, job_id, argv, cwd, env, out_fd, err_fd, notify_fd, held=None, record=True):
    # type: (str, str, List[str], Optional[str], Dict[str, str], int, int, int, Optional[int], bool) -> Optional[Tuple[int, int, Optional[int], int]]
    """Fork the wrapper and read the target's pid and start time: (wrapper pid, target pid,
    target start time or None, go-ahead fd),
    or None if the light job is not for this target (nothing was started then).

    ``held``: a descriptor the wrapper keeps open until it and its finisher end (the lock-queue
    wake channel). ``record`` False: the wrapper writes no exit record; its finisher does, after
    the recheck (a job with a check: its record must wait for the verdict).

    The caller records RUNNING, then closes the go-ahead fd: only then does the wrapper run
    the finisher, so a fast target's final status never overtakes its RUNNING row."""
    python = _python()
    bash = bash_path()
    if not python or bash is None or not _startable(argv, cwd, env):
        return None
    state_dir = os.path.abspath(state_dir)  # the finisher runs in the job's directory
    record_path = exitrec.path(state_dir, job_id) if record else ""
    args = [python, agent_root(), state_dir, job_id,
            record_path, repr(tree.kill_grace()), repr(busy_timeout()),
            "0", _opt(env, "SHLVL"), _opt(env, "PWD"), _opt(env, "OLDPWD"), _quick_end(state_dir),
            "--", *argv]
    pid_r, pid_w = os.pipe()
    ack_r, ack_w = os.pipe()
    fds = {FD_PID: pid_w, FD_NOTIFY: notify_fd, FD_OUT: out_fd, FD_ERR: err_fd, FD_ACK: ack_r}
    if held is not None:
        fds[FD_HELD] = held
    wrapper = os.fork()
    if wrapper == 0:
        try:
            _exec_wrapper(bash, args, cwd, env, fds)
        finally:
            os._exit(127)
    os.close(pid_w)
    os.close(ack_r)
    chunks = []
    while True:
        chunk = os.read(pid_r, 64)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(pid_r)
    fields = b"".join(chunks).split()
    if not fields or not fields[0].isdigit():  # bash did not start: no target either
        os.close(ack_w)
        try:
            os.waitpid(wrapper, 0)
        except OSError:
            pass
        return None
    # fields[1:] are /proc/<pid>/stat's from field 3 (state) on: the start time is field 22
    start = int(fields[20]) if len(fields) > 20 and fields[20].isdigit() else None
    return wrapper, int(fields[0]), start, ack_w


def hand_over(db, state_dir, job_id, argv, cwd, env, out_fd, err_fd, notify_fd, held=None, record=True):
    # type: (Db, str, str, List[str], Optional[str], Dict[str, str], int, int, int, Optional[int], bool) -> bool
    """In the forked supervisor: start the wrapper, record it as the job's worker and the target
    as RUNNING, tell the launcher; False (nothing started): the supervisor runs the job itself.
    The logs are closed here once handed over. ``held``, ``record``: as in ``start``."""
    started = start(state_dir, job_id, argv, cwd, env, out_fd, err_fd, notify_fd, held, record)
    if started is None:
        return False
    os.close(out_fd)
    os.close(err_fd)
    wrapper, pid, pid_start, go_ahead = started
    running = db.write(job_id, (STARTING,), status=RUNNING, target_pid=pid,
                       target_start=pid_start, worker_pid=wrapper,
                       worker_start=procs.start_time(wrapper))
    if running is False:
        # Aborted between launch and record: end the job's processes (the wrapper's finisher
        # then keeps the exit code under the stored status).
        def find():
            # type: () -> List[tree.Proc]
            return tree.job_processes(job_id, supervisor_pid=wrapper, group=pid, scan_env=False)

        tree.end_processes(find, tree.kill_grace(), signal.SIGTERM, signal.SIGKILL)
    else:
        handoff.tell(notify_fd, handoff.READY)
    os.close(go_ahead)  # the wrapper may run its finisher now
    db.close()
    return True


def _quick_end(state_dir):
    # type: (str) -> str
    """"1" if the wrapper may end without its finisher: only on a local filesystem. A state
    dir on a network filesystem can be shared by several hosts, and only a job's own host
    judges it (host/identity.py): the others would read it RUNNING until somebody on its host did."""
    if os.environ.get(QUICK_END_ENV, "1") == "0":
        return "0"
    return "0" if network_fs_type(state_dir) else "1"


def _python():
    # type: () -> str
    return sys.executable


def _opt(env, name):
    # type: (Dict[str, str], str) -> str
    return "x" + env[name] if name in env else ""



#!/usr/bin/env python3
"""A throwaway OpenSSH server on 127.0.0.1 for the test suites (stdlib only, Python 3.7+).

    python3 -m testkit.sshd start [--state-dir D] [--port N]   # idempotent; prints JSON
    python3 -m testkit.sshd env   [--state-dir D]              # `export ORCHESJOB_SSH_*=...`
    python3 -m testkit.sshd status|stop [--state-dir D]

What `start` does (needs root for the first two):
  * checks that openssh-server and openssh-client are installed (scripts/prereqs.sh installs
    them before any test starts; nothing here runs apt-get: a missing one is a HarnessError
    "openssh-server is missing: run scripts/test.sh or apt-get install openssh-server");
  * creates the non-root login user `orchtest` (home /home/orchtest, /bin/bash) if missing;
  * generates, in the state dir: an ed25519 host key, an ed25519 client key pair (authorized for
    the user in ~orchtest/.ssh/authorized_keys), a known_hosts file for [127.0.0.1]:PORT and
    an sshd_config; starts `/usr/sbin/sshd -f sshd_config -E sshd.log` and waits for the port;
  * writes `sshd.json` (see `Info`) in the state dir and prints it.

The state dir defaults to $ORCHESJOB_SSHD_STATE or /tmp/orchesjob-sshd. Each state dir is one
server; start/stop take a lock on it. testkit.ssh_target uses start()/stop()/load().
"""

import argparse
import fcntl
import json
import os
import pwd
import shlex
import subprocess
import sys
import time

from testkit import prereqs, procs

DEFAULT_STATE_DIR = "/tmp/orchesjob-sshd"
DEFAULT_USER = "orchtest"
SSHD = "/usr/sbin/sshd"
HOST = "127.0.0.1"

# Interpreters the target user might run the agent with (first usable one = target_python).
TARGET_PYTHON_CANDIDATES = ["/usr/bin/python3", "/usr/local/bin/python3"]

# env var name -> Info key (`env` prints these; testkit.ssh_target sets them for subprocesses)
ENV_VARS = [
    ("ORCHESJOB_SSHD_JSON", "json_path"),
    ("ORCHESJOB_SSH_HOST", "host"),
    ("ORCHESJOB_SSH_PORT", "port"),
    ("ORCHESJOB_SSH_USER", "user"),
    ("ORCHESJOB_SSH_KEY", "key_path"),
    ("ORCHESJOB_SSH_KEY_TEXT", "key_text"),
    ("ORCHESJOB_SSH_KNOWN_HOSTS", "known_hosts_path"),
    ("ORCHESJOB_SSH_HOST_KEY", "host_public_key"),
    ("ORCHESJOB_SSH_HOST_KEY_FINGERPRINT", "host_key_fingerprint"),
    ("ORCHESJOB_SSH_TARGET_PYTHON", "target_python"),
]


class HarnessError(Exception):
    """sshd cannot be provided here (not root, openssh-server missing, sshd would not start...)."""


def log(msg):
    sys.stderr.write(f"[testkit.sshd] {msg}\n")
    sys.stderr.flush()


def state_dir_default():
    return os.environ.get("ORCHESJOB_SSHD_STATE") or DEFAULT_STATE_DIR


def _run(argv, **kw):
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.STDOUT)
    kw.setdefault("stdin", subprocess.DEVNULL)
    p = subprocess.run(argv, text=True, **kw)
    if p.returncode != 0:
        raise HarnessError(f"command failed ({p.returncode}): {' '.join(argv)}\n{p.stdout or ''}")
    return p.stdout or ""


def is_root():
    return os.geteuid() == 0


# ---------------------------------------------------------------- system preparation (root)

def ensure_packages():
    """Raise HarnessError naming the package when sshd or the ssh client tools are missing."""
    for package in ("openssh-server", "openssh-client"):
        prereqs.require(package, HarnessError)


def ensure_user(user):
    """Create the throwaway login user; return its pwd entry."""
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        if not is_root():
            raise HarnessError(f"user {user} does not exist and not root (cannot useradd)") from None
        log(f"useradd {user}")
        _run(["useradd", "--create-home", "--shell", "/bin/bash", user])
        pw = pwd.getpwnam(user)
    if pw.pw_uid == 0:
        raise HarnessError(f"refusing to use {user}: it is uid 0")
    if is_root():
        # With UsePAM no, sshd refuses accounts whose password field starts with "!" (locked,
        # the useradd default). "*" = no password login possible, but not "locked".
        try:
            with open("/etc/shadow") as f:
                locked = any(line.split(":")[0] == user and line.split(":")[1].startswith("!")
                             for line in f)
        except OSError:
            locked = False
        if locked:
            _run(["usermod", "-p", "*", user])
        if not os.path.isdir(pw.pw_dir):
            os.makedirs(pw.pw_dir, 0o755)
            os.chown(pw.pw_dir, pw.pw_uid, pw.pw_gid)
    return pw


def _edit_authorized_keys(path, edit, owner=None):
    """Rewrite ``path`` as ``edit(lines)`` under an exclusive lock, atomically.

    Several harnesses (a test run's, a private one in tests/test_harness.py, a concurrent run)
    share one login user: an unlocked read-modify-write can drop another harness's key, and a
    truncate-then-write leaves an empty file that sshd reads meanwhile. So: flock a sidecar file,
    write a temporary file, rename it into place.
    """
    import fcntl

    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(path) as f:
                lines = f.read().splitlines()
        except OSError:
            lines = []
        new = edit(lines)
        if new == lines and os.path.exists(path):
            return
        tmp = f"{path}.tmp.{os.getpid()}"
        with open(tmp, "w") as f:
            f.write("".join(line + "\n" for line in new))
        os.chmod(tmp, 0o600)
        if owner is not None:
            os.chown(tmp, *owner)
        os.rename(tmp, path)


def _key_body(line):
    return " ".join(line.split()[:2])


def authorize_key(pw, pubkey_line):
    """Add the client public key to ~user/.ssh/authorized_keys (append once; keep others)."""
    ssh_dir = os.path.join(pw.pw_dir, ".ssh")
    path = os.path.join(ssh_dir, "authorized_keys")
    if not os.path.isdir(ssh_dir):
        os.makedirs(ssh_dir, 0o700)
    os.chmod(ssh_dir, 0o700)
    owner = (pw.pw_uid, pw.pw_gid) if is_root() else None
    if owner:
        os.chown(ssh_dir, *owner)

    def add(lines):
        if any(_key_body(line) == _key_body(pubkey_line) for line in lines):
            return lines
        return [*lines, pubkey_line.strip()]

    _edit_authorized_keys(path, add, owner)


# ---------------------------------------------------------------- files in the state dir

def paths(state_dir):
    j = os.path.join
    return {
        "state_dir": state_dir,
        "json_path": j(state_dir, "sshd.json"),
        "config_path": j(state_dir, "sshd_config"),
        "log_path": j(state_dir, "sshd.log"),
        "pid_path": j(state_dir, "sshd.pid"),
        "host_key_path": j(state_dir, "ssh_host_ed25519_key"),
        "key_path": j(state_dir, "id_ed25519"),
        "known_hosts_path": j(state_dir, "known_hosts"),
        "lock_path": j(state_dir, ".lock"),
    }


def _keygen(path, comment):
    if not os.path.exists(path):
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path])
    os.chmod(path, 0o600)


def _read(path):
    with open(path) as f:
        return f.read()


def free_port():
    return procs.free_port(HOST)


def port_open(port, host=HOST, timeout=0.5, banner=True):
    """True when something accepts on host:port (and, with banner=True, speaks SSH).
    The banner comes from a freshly exec'd sshd child: allow for a loaded machine."""
    return procs.port_open(port, host, timeout=max(timeout, 2.0), banner=b"SSH-" if banner else None,
                           read_timeout=max(timeout, 5.0))


def write_config(p, port, user):
    cfg = """\
# generated by testkit/sshd.py
Port {port}
ListenAddress {host}
HostKey {host_key}
PidFile {pid}
AuthorizedKeysFile .ssh/authorized_keys
AllowUsers {user}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
MaxStartups 200:30:400
MaxSessions 200
MaxAuthTries 6
LoginGraceTime 30
AllowTcpForwarding yes
X11Forwarding no
AcceptEnv LANG LC_*
Subsystem sftp internal-sftp
LogLevel VERBOSE
""".format(port=port, host=HOST, host_key=p["host_key_path"], pid=p["pid_path"], user=user)
    with open(p["config_path"], "w") as f:
        f.write(cfg)


# ---------------------------------------------------------------- process handling

def _pid_is_our_sshd(pid, config_path):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return False
    # The listener rewrites its title: "sshd: /usr/sbin/sshd -f CFG -E LOG [listener] ..."
    return b"sshd" in raw and config_path.encode() in raw


def _read_pid(p):
    try:
        return int(_read(p["pid_path"]).strip())
    except (OSError, ValueError):
        return None


def load(state_dir=None):
    """Info dict of a server running from state_dir, or None (stale files are ignored)."""
    p = paths(state_dir or state_dir_default())
    try:
        info = json.loads(_read(p["json_path"]))
    except (OSError, ValueError):
        return None
    pid = _read_pid(p)
    # connect() only: the kernel answers from the listen backlog even when the box is busy
    if not pid or not _pid_is_our_sshd(pid, p["config_path"]) or not port_open(info["port"], banner=False):
        return None
    info["pid"] = pid
    return info


class _Lock:
    def __init__(self, path):
        self.path = path

    def __enter__(self):
        self.fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def ssh_base_argv(info, tty=False):
    """`ssh` client argv (without the remote command) for the harness's target."""
    argv = [
        "ssh", "-F", "/dev/null",
        "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "UserKnownHostsFile={}".format(info["known_hosts_path"]),
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "IdentitiesOnly=yes",
        "-o", "IdentityAgent=none",
        "-o", "ConnectTimeout=10",
        "-o", "LogLevel=ERROR",
        "-i", info["key_path"],
        "-p", str(info["port"]),
        "-l", info["user"],
    ]
    argv.append("-tt" if tty else "-T")
    argv.append(info["host"])
    return argv


def _probe_target(info):
    """Log in once; find which python3 interpreters the target user can run."""
    cands = list(TARGET_PYTHON_CANDIDATES)
    try:
        from glob import glob
        root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
        cands += sorted(glob(os.path.join(root, "versions", "3.*", "bin", "python3")))
    except Exception:
        pass
    quoted = " ".join(shlex.quote(c) for c in cands)
    script = (f"id -u; for p in {quoted}; do "
              "[ -x \"$p\" ] && \"$p\" -c 'import sys' 2>/dev/null && echo \"$p\"; done; true")
    last = ""
    for _ in range(20):
        p = subprocess.run([*ssh_base_argv(info), script], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=30)
        if p.returncode == 0:
            lines = p.stdout.split()
            return int(lines[0]), lines[1:]
        last = p.stderr
        time.sleep(0.25)
    raise HarnessError("sshd is up but key login as {} fails: {}".format(info["user"], last.strip()))


def start(state_dir=None, port=None, user=None):
    """Start (or reuse) the server for state_dir; return its Info dict."""
    state_dir = os.path.abspath(state_dir or state_dir_default())
    user = user or os.environ.get("ORCHESJOB_SSH_USER_NAME") or DEFAULT_USER
    if not os.path.isdir(state_dir):
        os.makedirs(state_dir, 0o755)
    # The target user never needs to read the state dir (its key lives in ~/.ssh), but keep it
    # traversable so e.g. a log path can be shown; private keys are 0600.
    os.chmod(state_dir, 0o755)
    p = paths(state_dir)
    with _Lock(p["lock_path"]):
        info = load(state_dir)
        if info is not None:
            return info
        if not is_root():
            raise HarnessError(f"not root: cannot create user {user} / run sshd "
                               "for another user")
        ensure_packages()
        pw = ensure_user(user)
        if not os.path.isdir("/run/sshd"):
            os.makedirs("/run/sshd", 0o755)   # privilege separation dir
        _keygen(p["host_key_path"], "orchesjob-test-host")
        _keygen(p["key_path"], "orchesjob-test-client")
        client_pub = _read(p["key_path"] + ".pub").strip()
        authorize_key(pw, client_pub)
        host_pub = " ".join(_read(p["host_key_path"] + ".pub").split()[:2])
        fingerprint = _run(["ssh-keygen", "-l", "-E", "sha256", "-f",
                            p["host_key_path"] + ".pub"]).split()[1]

        if port is None and os.environ.get("ORCHESJOB_SSHD_PORT"):
            port = int(os.environ["ORCHESJOB_SSHD_PORT"])
        fixed_port = port is not None
        last_err = ""
        for _attempt in range(5):
            use_port = port if fixed_port else free_port()
            with open(p["known_hosts_path"], "w") as f:
                f.write(f"[{HOST}]:{use_port} {host_pub}\n[localhost]:{use_port} {host_pub}\n")
            write_config(p, use_port, user)
            _run([SSHD, "-t", "-f", p["config_path"]])
            old_pid = _read_pid(p)
            if old_pid and _pid_is_our_sshd(old_pid, p["config_path"]):
                _audit(p, f"start: replacing unresponsive sshd pid {old_pid}")
                _kill(old_pid)
            for f in (p["pid_path"],):
                if os.path.exists(f):
                    os.unlink(f)
            with open(p["log_path"], "a") as f:
                f.write(f"---- start {time.strftime('%Y-%m-%d %H:%M:%S')} port {use_port}\n")
            subprocess.run([SSHD, "-f", p["config_path"], "-E", p["log_path"]],
                           stdin=subprocess.DEVNULL, check=False)
            deadline = time.time() + 10
            while time.time() < deadline:
                if _read_pid(p) and port_open(use_port):
                    break
                time.sleep(0.05)
            if _read_pid(p) and port_open(use_port):
                break
            last_err = _tail(p["log_path"])
            if fixed_port:
                break
        else:
            use_port = None
        if not (_read_pid(p) and use_port and port_open(use_port)):
            raise HarnessError("sshd did not start; log tail:\n%s" % (last_err or _tail(p["log_path"])))

        info = {
            "host": HOST,
            "port": use_port,
            "user": user,
            "uid": pw.pw_uid,
            "home": pw.pw_dir,
            "key_path": p["key_path"],
            "key_text": _read(p["key_path"]),
            "public_key": client_pub,
            "known_hosts_path": p["known_hosts_path"],
            "host_public_key": host_pub,
            "host_key_fingerprint": fingerprint,
            "state_dir": state_dir,
            "json_path": p["json_path"],
            "config_path": p["config_path"],
            "log_path": p["log_path"],
            "pid": _read_pid(p),
        }
        uid, pythons = _probe_target(info)
        if uid == 0:
            raise HarnessError("target user logged in as uid 0")
        if not pythons:
            tried = ", ".join(TARGET_PYTHON_CANDIDATES)
            raise HarnessError(f"no python3 the target user {user} can run (tried {tried})")
        info["target_python"] = pythons[0]
        info["target_pythons"] = pythons
        tmp = p["json_path"] + ".tmp"
        with open(tmp, "w") as f:
            json.dump(info, f, indent=2, sort_keys=True)
        os.chmod(tmp, 0o600)
        os.rename(tmp, p["json_path"])
        log(f"sshd pid {info['pid']} listening on {HOST}:{use_port} (user {user}, state {state_dir})")
        return info


def _audit(p, what):
    """Note in sshd's log who stopped it (sshd itself only logs "Received signal 15")."""
    try:
        with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
            parent = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        parent = "?"
    try:
        with open(p["log_path"], "a") as f:
            f.write(f"---- {time.strftime('%H:%M:%S')} {what} (harness pid {os.getpid()}, "
                    f"parent {os.getppid()}: {parent[:200]})\n")
    except OSError:
        pass


def _tail(path, n=30):
    return procs.tail(path, n)


def _kill(pid, timeout=5.0):
    procs.terminate(pid, timeout)


def stop(state_dir=None):
    """Stop the listening sshd of state_dir (sessions already open keep their own process)."""
    state_dir = os.path.abspath(state_dir or state_dir_default())
    p = paths(state_dir)
    if not os.path.isdir(state_dir):
        return False
    with _Lock(p["lock_path"]):
        pid = _read_pid(p)
        stopped = False
        if pid and _pid_is_our_sshd(pid, p["config_path"]):
            _audit(p, f"stop: SIGTERM to sshd pid {pid}")
            _kill(pid)
            stopped = True
        _deauthorize(p)
        for f in (p["pid_path"], p["json_path"]):
            if os.path.exists(f):
                os.unlink(f)
        return stopped


def _deauthorize(p):
    """Remove this state dir's client key from the target user's authorized_keys."""
    try:
        info = json.loads(_read(p["json_path"]))
        key_body = _key_body(_read(p["key_path"] + ".pub"))
        path = os.path.join(info["home"], ".ssh", "authorized_keys")
        st = os.stat(path)
    except (OSError, ValueError, KeyError):
        return
    _edit_authorized_keys(
        path,
        lambda lines: [line for line in lines if _key_body(line) != key_body],
        (st.st_uid, st.st_gid) if is_root() else None,
    )


def env_lines(info):
    out = []
    for name, key in ENV_VARS:
        val = info.get(key)
        out.append("export {}={}".format(name, shlex.quote("" if val is None else str(val))))
    return out


def env_dict(info):
    return {name: "" if info.get(key) is None else str(info.get(key)) for name, key in ENV_VARS}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=["start", "stop", "status", "env", "ssh"])
    ap.add_argument("--state-dir", default=None)
    ap.add_argument("--port", type=int, default=None)
    ap.add_argument("--user", default=None)
    ap.add_argument("command", nargs="*", help="for `ssh`: remote command (put it after --)")
    a = ap.parse_args(argv)
    try:
        if a.action == "start":
            info = start(a.state_dir, a.port, a.user)
            safe = dict(info, key_text=f"<{len(info['key_text'])} bytes, see key_path>")
            print(json.dumps(safe, indent=2, sort_keys=True))
        elif a.action == "stop":
            print("stopped" if stop(a.state_dir) else "not running")
        elif a.action in ("status", "env", "ssh"):
            info = load(a.state_dir)
            if info is None:
                log("not running (state dir %s)" % (a.state_dir or state_dir_default()))
                return 3
            if a.action == "status":
                print(f"running: pid {info['pid']} port {info['port']}")
            elif a.action == "env":
                print("\n".join(env_lines(info)))
            else:
                cmd = a.command
                remote = cmd[0] if len(cmd) == 1 else " ".join(shlex.quote(c) for c in cmd)
                os.execvp("ssh", [*ssh_base_argv(info), remote])
    except HarnessError as e:
        log(f"ERROR: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

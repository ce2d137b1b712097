"""The loopback sshd for tests: a dataclass describing it and helpers to use it (stdlib only).

The server comes from testkit.sshd. `get_target()` reuses a server that is already
running (scripts/test.sh starts one and exports ORCHESJOB_SSHD_JSON) or starts a private one in
a temporary state dir (stopped again by `release()`).

    from testkit.ssh_target import SSHTarget

    def test_x(sshd):                       # session fixture from tests/conftest.py
        r = sshd.run(["python3", "-c", "print(1)"])       # argv: quoted for the remote shell
        r = sshd.run("echo $HOME; id -u")                  # str: run by the remote shell
        p = sshd.popen("sleep 30", stdout=subprocess.PIPE)  # an SSH session you can kill
"""
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Union

from testkit import sshd as harness
from testkit.sshd import HarnessError

__all__ = ["HarnessError", "SSHTarget", "get_target", "release"]

Command = Union[str, Sequence[str]]


@dataclass
class SSHTarget:
    host: str
    port: int
    user: str
    key_path: str                 # client private key file (0600, owned by the test runner)
    key_text: str                 # the same key, OpenSSH PEM text (for a connection's private_key)
    known_hosts_path: str         # has "[127.0.0.1]:PORT ssh-ed25519 ..." (and [localhost]:PORT)
    host_public_key: str          # "ssh-ed25519 AAAA..." (SSHHook's `host_key` extra accepts it)
    host_key_fingerprint: str = ""  # "SHA256:..."
    target_python: str = "/usr/bin/python3"  # an interpreter the target user can run
    home: str = ""                # the target user's home directory
    uid: int = -1
    state_dir: str = ""
    log_path: str = ""            # sshd's own log (LogLevel VERBOSE)
    json_path: str = ""
    info: Dict[str, Any] = field(default_factory=dict, repr=False)
    started_here: bool = field(default=False, repr=False)

    @classmethod
    def from_info(cls, info, started_here=False):
        return cls(
            host=info["host"], port=int(info["port"]), user=info["user"], key_path=info["key_path"],
            key_text=info["key_text"], known_hosts_path=info["known_hosts_path"],
            host_public_key=info["host_public_key"],
            host_key_fingerprint=info.get("host_key_fingerprint", ""),
            target_python=info.get("target_python") or "/usr/bin/python3",
            home=info.get("home", ""), uid=int(info.get("uid", -1)),
            state_dir=info.get("state_dir", ""), log_path=info.get("log_path", ""),
            json_path=info.get("json_path", ""), info=dict(info), started_here=started_here,
        )

    # ---- the ssh client binary -------------------------------------------------------
    def ssh_argv(self, command: Optional[Command] = None, tty: bool = False,
                 extra_options: Sequence[str] = ()) -> List[str]:
        """argv for the `ssh` binary: BatchMode, this key only, this known_hosts only.

        command: a str is handed to the remote shell as is; a list is shell-quoted first.
        """
        argv = harness.ssh_base_argv(self.info, tty=tty)
        host = argv.pop()
        argv += [*list(extra_options), host]
        if command is not None:
            argv.append(command if isinstance(command, str)
                        else " ".join(shlex.quote(c) for c in command))
        return argv

    def run(self, command: Command, input: Union[str, bytes, None] = None, timeout: float = 60,
            check: bool = False, text: bool = True, **kw) -> "subprocess.CompletedProcess":
        """Run a command as the target user over a fresh SSH session; capture stdout/stderr."""
        if input is None:
            kw.setdefault("stdin", subprocess.DEVNULL)
        elif isinstance(input, str) and not text:
            input = input.encode()
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        return subprocess.run(self.ssh_argv(command), input=input, timeout=timeout, check=check,
                              text=text, **kw)

    def popen(self, command: Command, tty: bool = False, **kw) -> "subprocess.Popen":
        """Start an SSH session running `command` and return it; kill it to drop the session
        (e.g. for the "job survives SSH session close" tests). tty=True gives the remote
        command a pty, so closing the session sends it SIGHUP like an interactive login."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.Popen(self.ssh_argv(command, tty=tty), **kw)

    # ---- for Airflow connections and subprocesses ---------------------------------------
    def conn_extra(self, use_key_text: bool = False) -> Dict[str, Any]:
        """`extra` of an Airflow `ssh` connection to this target, host key verified."""
        extra = {"host_key": self.host_public_key, "no_host_key_check": False}
        if use_key_text:
            extra["private_key"] = self.key_text
        else:
            extra["key_file"] = self.key_path
        return extra

    def conn_uri(self, conn_type: str = "ssh") -> str:
        """AIRFLOW_CONN_<ID> value (JSON form, understood by Airflow 2.10+ and 3.x)."""
        return json.dumps({"conn_type": conn_type, "host": self.host, "port": self.port,
                           "login": self.user, "extra": self.conn_extra()})

    def env(self) -> Dict[str, str]:
        """ORCHESJOB_SSH_* variables (same names `python3 -m testkit.sshd env` prints)."""
        return harness.env_dict(self.info)


def get_target() -> SSHTarget:
    """Reuse a running server or start a private one. Raises HarnessError."""
    h = harness
    json_path = os.environ.get("ORCHESJOB_SSHD_JSON")
    candidates = []
    if json_path:
        candidates.append(os.path.dirname(json_path))
    candidates.append(h.state_dir_default())
    for state_dir in candidates:
        info = h.load(state_dir)
        if info is not None:
            return SSHTarget.from_info(info, started_here=False)
    if json_path:
        state_dir = os.path.dirname(json_path)
        if not (h.is_root() and os.path.isdir(state_dir)):
            raise h.HarnessError(f"ORCHESJOB_SSHD_JSON={json_path} but no sshd is running there")
        # The shared server is gone (killed?): restart it in place, same keys, and say so loudly.
        # Its owner (scripts/test.sh) stops that state dir at the end as before.
        warnings.warn(f"loopback sshd of {state_dir} was not running; restarted it (see its sshd.log)",
                      RuntimeWarning, stacklevel=2)
        sys.stderr.write(f"[ssh_target] sshd of {state_dir} was not running; restarting it\n")
        info = h.start(state_dir)
        for k, v in h.env_dict(info).items():
            os.environ[k] = v
        return SSHTarget.from_info(info, started_here=False)
    state_dir = tempfile.mkdtemp(prefix="orchesjob-sshd-")
    info = h.start(state_dir)
    return SSHTarget.from_info(info, started_here=True)


def release(target: SSHTarget) -> None:
    """Stop the server if get_target() started it."""
    if target.started_here:
        harness.stop(target.state_dir)
        shutil.rmtree(target.state_dir, ignore_errors=True)

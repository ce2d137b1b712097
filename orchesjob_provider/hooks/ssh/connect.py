"""The connect side of both hooks: socket tuning, one exec on a paramiko channel, asyncssh
options from an Airflow ``ssh`` connection, and the one catalogue of connect-error messages
(paramiko and asyncssh alike).

A failed connect is reported as one actionable line: what went wrong, for which host and
connection, and what to change. Both libraries' exceptions are first sorted into the same kinds
(``connect_error_kind``), and each kind has one message (``CONNECT_ERRORS``).
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import sys
from dataclasses import dataclass
from typing import Any

from orchesjob_provider.exceptions import AgentUnavailable
from orchesjob_provider.hooks.ssh.host_keys import HostKeyCheck, host_key_policy
from orchesjob_provider.hooks.ssh.host_keys import parse_host_key as parse_host_key  # re-exported
from orchesjob_provider.version_compat import AirflowException, aget_connection, aget_extra_dejson

KEEPALIVE_SECONDS = 5
STALE_SECONDS = 2.0  # an exec that fails this fast met a connection that was already dead


def dead_after(conn_timeout: float) -> float:
    """Seconds of unanswered traffic after which a connection counts as dead."""
    return max(5.0, conn_timeout)


def tune_socket(sock: Any, dead_after: float) -> None:
    """TCP_NODELAY (small request/reply exchanges otherwise stall on delayed ACKs), and a dead
    peer detected within ``dead_after`` seconds instead of TCP's ~15 minutes of retransmits."""
    if not isinstance(sock, socket.socket):
        return
    options = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1), (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    if hasattr(socket, "TCP_USER_TIMEOUT"):
        options.append((socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(dead_after * 1000)))
    for level, name, value in options:
        try:
            sock.setsockopt(level, name, value)
        except OSError:
            pass


def run_on_channel(
    transport: Any, command: str, stdin: bytes, timeout: float | None, *, open_timeout: float
) -> tuple[int, bytes, bytes]:
    """One exec on a paramiko transport: send ``stdin``, close it, read stdout/stderr to EOF,
    return (exit code, stdout, stderr)."""
    chan = transport.open_session(timeout=open_timeout)
    try:
        chan.settimeout(timeout)
        chan.exec_command(command)
        try:
            if stdin:
                chan.sendall(stdin)
            chan.shutdown_write()
        except OSError:
            # The remote command exited without reading stdin (e.g. "python3: not found"):
            # the channel is closed but its output and exit status are there to read.
            if not transport.is_active():
                raise
        out = bytearray()
        err = bytearray()
        while True:
            data = chan.recv(65536)
            if not data:
                break
            out += data
        while True:
            data = chan.recv_stderr(65536)
            if not data:
                break
            err += data
        return chan.recv_exit_status(), bytes(out), bytes(err)
    finally:
        chan.close()


# ---------------------------------------------------------------------------------------------
# Connect errors: one catalogue
# ---------------------------------------------------------------------------------------------
CONNECT_ERRORS: dict[str, str] = {
    "host_key_changed": (
        "host key for {hostport} does not match the one expected by connection {conn_id!r} "
        "(host_key extra or known_hosts); if the host was reinstalled, update host_key"
    ),
    "host_key_unknown": (
        "host key for {hostport} is not in known_hosts; add it to the connection extra "
        "host_key (e.g. 'ssh-ed25519 AAAA...') or set no_host_key_check (connection {conn_id!r})"
    ),
    # asyncssh does not tell an unknown key from a changed one
    "host_key_unverifiable": (
        "host key for {hostport} is not in known_hosts or does not match the connection's host_key "
        "({detail}); add it to the connection extra host_key or set no_host_key_check "
        "(connection {conn_id!r})"
    ),
    "auth": (
        "SSH authentication failed for {username}@{hostport} (connection {conn_id!r}): the server "
        "rejected the key/password; check login and the private_key/key_file extra"
    ),
    "unreachable": (
        "cannot reach SSH server {hostport} (connection {conn_id!r}): {detail}; "
        "check the network path to the host"
    ),
    "refused": (
        "cannot reach SSH server {hostport} (connection {conn_id!r}): connection refused; "
        "check host/port and that sshd runs"
    ),
    "resolve": "cannot resolve SSH host {host!r} (connection {conn_id!r}): {detail}",
    "timeout": (
        "timed out connecting to SSH server {hostport} (connection {conn_id!r}, conn_timeout="
        "{conn_timeout}); check network/firewall"
    ),
    "os": "cannot reach SSH server {hostport} (connection {conn_id!r}): {detail}",
    "airflow": "SSH connection {conn_id!r} to {hostport} failed: {detail}",
    "other": "SSH connection {conn_id!r} to {hostport} failed: {detail}",
}


def connect_error_kind(e: BaseException) -> tuple[str, str]:
    """(kind, detail) of a failed connect, from paramiko or asyncssh.

    The libraries are looked up in ``sys.modules``: an exception of a library that was never
    imported cannot be at hand, and a worker need not import asyncssh to word its errors.
    """
    paramiko = sys.modules.get("paramiko")
    asyncssh = sys.modules.get("asyncssh")
    if paramiko is not None:
        if isinstance(e, paramiko.BadHostKeyException):
            return "host_key_changed", str(e)
        if isinstance(e, paramiko.AuthenticationException):
            return "auth", str(e)
        if isinstance(e, paramiko.ssh_exception.NoValidConnectionsError):
            causes = list(getattr(e, "errors", {}).values())
            e = causes[0] if causes else ConnectionRefusedError(errno.ECONNREFUSED, "refused")
    if asyncssh is not None:
        if isinstance(e, asyncssh.HostKeyNotVerifiable):
            return "host_key_unverifiable", str(e)
        if isinstance(e, asyncssh.PermissionDenied):
            return "auth", str(e)
    if isinstance(e, OSError) and e.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "unreachable", os.strerror(e.errno).lower()
    if isinstance(e, ConnectionRefusedError):
        return "refused", str(e)
    if isinstance(e, socket.gaierror):
        return "resolve", str(e)
    if isinstance(e, (socket.timeout, TimeoutError, asyncio.TimeoutError)):
        return "timeout", str(e)
    if isinstance(e, OSError):
        return "os", str(e.strerror or e)
    if "not found in known_hosts" in str(e):
        return "host_key_unknown", str(e)
    if isinstance(e, AirflowException):
        return "airflow", str(e)
    return "other", f"{type(e).__name__}: {e}"


def connect_error(
    e: BaseException, *, username: str, host: str, port: int, conn_id: str, conn_timeout: Any
) -> str:
    """The one-line message for a failed connect to ``username@host:port``."""
    kind, detail = connect_error_kind(e)
    return CONNECT_ERRORS[kind].format(
        hostport=f"{host}:{port}",
        host=host,
        username=username,
        conn_id=conn_id,
        conn_timeout=conn_timeout,
        detail=detail,
    )


# ---------------------------------------------------------------------------------------------
# asyncssh connect options
# ---------------------------------------------------------------------------------------------
def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes", "on")


@dataclass(frozen=True)
class ConnectTarget:
    host: str
    port: int
    username: str
    options: dict[str, Any]
    host_key_check: HostKeyCheck | None = None

    @property
    def where(self) -> str:
        return f"{self.username}@{self.host}:{self.port}"

    def error(self, e: BaseException, conn_id: str) -> str:
        verdict = self.host_key_check.verdict if self.host_key_check is not None else None
        asyncssh = sys.modules.get("asyncssh")
        if asyncssh is not None and isinstance(e, asyncssh.HostKeyNotVerifiable) and verdict:
            # worded like the worker's error for the same case
            kind = {"changed": "host_key_changed", "unknown": "host_key_unknown"}.get(verdict)
            if kind:
                return CONNECT_ERRORS[kind].format(
                    hostport=f"{self.host}:{self.port}", conn_id=conn_id, detail=str(e)
                )
        return connect_error(
            e,
            username=self.username,
            host=self.host,
            port=self.port,
            conn_id=conn_id,
            conn_timeout=self.options.get("connect_timeout"),
        )


def _client_keys(asyncssh: Any, extras: dict[str, Any], opts: dict[str, Any]) -> None:
    if extras.get("private_key"):
        passphrase = extras.get("private_key_passphrase") or extras.get("passphrase") or None
        opts["client_keys"] = [asyncssh.import_private_key(extras["private_key"], passphrase)]
    elif extras.get("key_file"):
        # loaded here (a worker thread) rather than by asyncssh.connect on the loop thread
        opts["client_keys"] = asyncssh.load_keypairs([extras["key_file"]])
    elif "look_for_keys" in extras and not _truthy(extras["look_for_keys"]):
        opts["client_keys"] = None


async def build_connect_options(ssh_conn_id: str, conn_timeout: float | None = None) -> ConnectTarget:
    """asyncssh ``connect`` options from the same Airflow ``ssh`` connection the sync hook uses."""
    import asyncssh

    conn = await aget_connection(ssh_conn_id)
    extras = await aget_extra_dejson(conn) if conn.extra else {}
    host = conn.host
    if not host:
        raise AgentUnavailable(f"SSH connection {ssh_conn_id!r} has no host")
    port = int(conn.port or 22)
    username = conn.login
    if not username:
        from getpass import getuser

        username = getuser()
    opts: dict[str, Any] = {"host": host, "port": port, "username": username}
    if conn.password:
        opts["password"] = conn.password
    try:  # key parsing (a passphrase's KDF can take a second) and key files: off the loop
        await asyncio.to_thread(_client_keys, asyncssh, extras, opts)
    except (ValueError, asyncssh.Error) as e:
        raise AgentUnavailable(f"SSH connection {ssh_conn_id!r} is misconfigured: {e}") from None
    check = HostKeyCheck(await host_key_policy(extras, host, port, ssh_conn_id))
    opts.update(check.options())
    timeout = conn_timeout or extras.get("conn_timeout")
    opts["connect_timeout"] = float(timeout) if timeout else 30.0
    opts["keepalive_interval"] = KEEPALIVE_SECONDS
    opts["keepalive_count_max"] = 3
    if extras.get("ciphers"):
        opts["encryption_algs"] = list(extras["ciphers"])
    if str(extras.get("compress", "true")).lower() == "false":
        opts["compression_algs"] = None
    return ConnectTarget(host=host, port=port, username=username, options=opts, host_key_check=check)

"""Hooks that talk to the orchesjob agent on a remote host over SSH.

``OrchesjobHook`` (sync, paramiko through the SSH provider's ``SSHHook``) is used by operators
and sensors in the worker; ``AsyncOrchesjobHook`` (asyncssh) is used by the trigger. Both speak
the JSON protocol of docs/PROTOCOL.md: one fixed command line per call, the request on stdin::

    <remote_python> -I -S ~/.orchesjob/agent/agent-<sha256[:16]>/__main__.py rpc

No user string ever reaches the remote shell; the agent bundle is deployed on first use.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import json
import logging
import os
import random
import shlex
import socket
import struct
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchesjob_provider.hooks.agent_bundle import REMOTE_DIR, AgentBundle, get_bundle
from orchesjob_provider.version_compat import (
    AirflowException,
    BaseHook,
    aget_connection,
    aget_extra_dejson,
)

PROTOCOL = 1
STREAMS = ("stdout", "stderr")
ACTIVE_STATUSES = frozenset({"STARTING", "RUNNING"})
TERMINAL_STATUSES = frozenset({"SUCCEEDED", "FAILED", "LOST", "CANCELLED", "ABORTED"})
DEFAULT_LOG_LIMIT = 65536
#: Extra seconds a call may take beyond the agent-side timeout before the client gives up.
CALL_SLACK = 60.0


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------
class OrchesjobError(AirflowException):
    """An error reported by the agent (``code``/``kind`` as in PROTOCOL.md) or by the transport."""

    code = 1
    kind = "error"

    def __init__(self, message: str, *, code: int | None = None, kind: str | None = None, op: str = ""):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if kind is not None:
            self.kind = kind
        self.op = op


class OrchesjobBadRequest(OrchesjobError):
    code = 2
    kind = "bad_request"


class OrchesjobNotFound(OrchesjobError):
    code = 3
    kind = "not_found"


class OrchesjobWrongState(OrchesjobError):
    code = 4
    kind = "wrong_state"


class OrchesjobBusy(OrchesjobError):
    code = 5
    kind = "busy"


class AgentUnavailable(OrchesjobError):
    """The agent could not be reached or run: SSH, authentication, host key, python, deploy."""

    code = -1
    kind = "unavailable"


_ERRORS_BY_CODE: dict[int, type[OrchesjobError]] = {
    2: OrchesjobBadRequest,
    3: OrchesjobNotFound,
    4: OrchesjobWrongState,
    5: OrchesjobBusy,
}


# ---------------------------------------------------------------------------------------------
# Typed results
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class JobRecord:
    """A job as the agent reports it (the full dict is kept in ``raw``)."""

    job_id: str
    run_key: str
    status: str
    exit_code: int | None = None
    attempt_no: int | None = None
    command: list[str] = field(default_factory=list)
    pid: int | None = None
    strict: bool = False
    rerun_of_job_id: str | None = None
    abort_reason: str | None = None
    lost_reason: str | None = None
    cwd: str | None = None
    started_at: int | None = None
    finished_at: int | None = None
    acked_at: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> JobRecord:
        if not isinstance(d, Mapping) or "job_id" not in d or "status" not in d:
            raise OrchesjobError(f"agent returned a malformed job record: {str(d)[:200]}")
        return cls(
            job_id=str(d["job_id"]),
            run_key=str(d.get("run_key") or ""),
            status=str(d["status"]),
            exit_code=d.get("exit_code"),
            attempt_no=d.get("attempt_no"),
            command=list(d.get("command") or []),
            pid=d.get("pid"),
            strict=bool(d.get("strict")),
            rerun_of_job_id=d.get("rerun_of_job_id"),
            abort_reason=d.get("abort_reason"),
            lost_reason=d.get("lost_reason"),
            cwd=d.get("cwd"),
            started_at=d.get("started_at"),
            finished_at=d.get("finished_at"),
            acked_at=d.get("acked_at"),
            raw=dict(d),
        )

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCEEDED"

    def to_dict(self) -> dict[str, Any]:
        return dict(self.raw) if self.raw else {"job_id": self.job_id, "status": self.status}


@dataclass(frozen=True)
class LogChunk:
    """Bytes ``[offset, next_offset)`` of one log stream."""

    offset: int
    next_offset: int
    size: int
    data: bytes
    eof: bool

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LogChunk:
        data = base64.b64decode(d.get("data_b64") or "")
        offset = int(d.get("offset") or 0)
        return cls(
            offset=offset,
            next_offset=int(d.get("next_offset", offset + len(data))),
            size=int(d.get("size") or 0),
            data=data,
            eof=bool(d.get("eof")),
        )

    @property
    def more(self) -> bool:
        """More bytes are already available past this chunk."""
        return self.next_offset < self.size


@dataclass(frozen=True)
class JobLogs:
    """One ``poll``/``wait`` answer for one job: the record (None if unknown) and new log bytes."""

    job_id: str
    job: JobRecord | None
    logs: dict[str, LogChunk] = field(default_factory=dict)
    timed_out: bool = False

    def next_offsets(self, offsets: Mapping[str, int]) -> dict[str, int]:
        out = {s: int(offsets.get(s, 0)) for s in STREAMS}
        for s, chunk in self.logs.items():
            out[s] = chunk.next_offset
        return out

    @property
    def more(self) -> bool:
        return any(c.more for c in self.logs.values())

    @property
    def eof(self) -> bool:
        return bool(self.logs) and all(c.eof for c in self.logs.values())


def _job_logs(job_id: str, reply: Mapping[str, Any], timed_out: bool = False) -> JobLogs:
    job = reply.get("job")
    logs = reply.get("logs") or {}
    return JobLogs(
        job_id=job_id,
        job=JobRecord.from_dict(job) if job else None,
        logs={s: LogChunk.from_dict(c) for s, c in logs.items() if s in STREAMS and c},
        timed_out=timed_out,
    )


KEEPALIVE_SECONDS = 5
STALE_SECONDS = 2.0  # an exec that fails this fast met a connection that was already dead


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


def normalize_offsets(offsets: Mapping[str, Any] | None) -> dict[str, int]:
    offsets = offsets or {}
    return {s: int(offsets.get(s) or 0) for s in STREAMS}


# ---------------------------------------------------------------------------------------------
# Shared protocol helpers (sync and async)
# ---------------------------------------------------------------------------------------------
def rpc_command(remote_python: str, bundle: AgentBundle) -> str:
    """The one fixed command line of every call (only constants and a quoted interpreter)."""
    return f"{shlex.quote(remote_python)} -I -S {bundle.remote_path}/__main__.py rpc"


# Runs on the target under the user's python with the zip on stdin: checks the hash, unpacks
# into a temporary sibling, precompiles with the target's own interpreter, and renames into
# place (atomic; a concurrent deploy of the same bundle simply loses the rename). Stdlib only,
# valid on CPython 3.6.
_DEPLOY_SCRIPT = """
import compileall, hashlib, io, os, shutil, sys, zipfile
data = sys.stdin.buffer.read()
sha = sys.argv[1]
if hashlib.sha256(data).hexdigest() != sha:
    sys.stderr.write("orchesjob: agent upload corrupted (%d bytes, sha256 mismatch)\\n" % len(data))
    sys.exit(1)
final = os.path.join(os.path.expanduser(sys.argv[2]), "agent-" + sha[:16])
if os.path.isdir(final):
    sys.exit(0)
tmp = "%s.tmp.%d" % (final, os.getpid())
zipfile.ZipFile(io.BytesIO(data)).extractall(tmp)
compileall.compile_dir(tmp, quiet=2)
try:
    os.rename(tmp, final)
except OSError:
    shutil.rmtree(tmp, ignore_errors=True)
    if not os.path.isdir(final):
        raise
"""


def deploy_command(remote_python: str, bundle: AgentBundle) -> str:
    """Upload and unpack the bundle (bytes on stdin); only constants and quoted values."""
    return (
        f"umask 077 && mkdir -p {REMOTE_DIR} && chmod 700 ~/.orchesjob {REMOTE_DIR} && "
        f"{shlex.quote(remote_python)} -I -S -c {shlex.quote(_DEPLOY_SCRIPT)} "
        f"{bundle.sha256} {shlex.quote(REMOTE_DIR)}"
    )


def build_request(op: str, state_dir: str | None, args: Mapping[str, Any]) -> bytes:
    req: dict[str, Any] = {"protocol": PROTOCOL, "op": op}
    if state_dir:
        req["home"] = state_dir
    req.update({k: v for k, v in args.items() if v is not None})
    # ensure_ascii: lone surrogates (undecodable bytes, os.fsdecode) travel as \udcXX escapes.
    return json.dumps(req, ensure_ascii=True).encode("ascii")


def _last_line(data: bytes) -> str:
    lines = [ln.strip() for ln in data.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def is_missing_agent(rc: int | None, out: bytes, err: bytes) -> bool:
    """python could not open the agent's directory (first use on this host, or it was removed)."""
    return rc == 2 and not out.strip() and b"can't open file" in err


def parse_reply(
    op: str, rc: int | None, out: bytes, err: bytes, *, where: str, remote_python: str
) -> dict[str, Any]:
    """Turn (exit code, stdout, stderr) of one rpc exec into the reply dict or a typed error."""
    text = out.strip()
    reply: Any = None
    if text:
        try:
            reply = json.loads(text.splitlines()[-1])
        except ValueError:
            reply = None
    if isinstance(reply, dict) and "ok" in reply:
        if reply.get("ok"):
            return reply
        error = reply.get("error") or {}
        code = int(error.get("code") or rc or 1)
        cls = _ERRORS_BY_CODE.get(code, OrchesjobError)
        message = str(error.get("message") or _last_line(err) or "unknown agent error")
        raise cls(f"orchesjob {op} on {where}: {message}", code=code, kind=error.get("kind"), op=op)
    if rc == 127:
        raise AgentUnavailable(
            f"remote python {remote_python!r} was not found on {where} (exit 127): install Python 3.6+ "
            f"there or set remote_python to the interpreter's path",
            op=op,
        )
    if rc == 126:
        raise AgentUnavailable(
            f"remote python {remote_python!r} on {where} is not executable (exit 126); "
            f"set remote_python to a working interpreter",
            op=op,
        )
    detail = _last_line(err) or _last_line(out) or "no output"
    if b"SyntaxError" in err:
        detail = f"the interpreter {remote_python!r} is too old for the agent (needs Python 3.6+): {detail}"
    raise AgentUnavailable(
        f"orchesjob agent call {op!r} on {where} failed (exit {rc}): {detail}", code=rc or 1, op=op
    )


def parse_host_key(host_key: str) -> tuple[str, bytes]:
    """(key type, key blob) from ``"ssh-ed25519 AAAA..."`` or just the base64 part."""
    parts = host_key.strip().split()
    b64 = parts[1] if len(parts) >= 2 else parts[0]
    blob = base64.b64decode(b64)
    (n,) = struct.unpack(">I", blob[:4])
    key_type = blob[4 : 4 + n].decode("ascii")
    return key_type, blob


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes", "on")


# ---------------------------------------------------------------------------------------------
# The sync hook
# ---------------------------------------------------------------------------------------------
class OrchesjobHook(BaseHook):
    """
    Run and watch jobs on a remote host through the orchesjob agent, over SSH.

    Built on the SSH provider's :class:`~airflow.providers.ssh.hooks.ssh.SSHHook`, which reads the
    ``ssh`` connection (login, password, ``private_key``/``key_file`` extras, ``host_key``,
    ``no_host_key_check``, ``conn_timeout``, proxy command from ``~/.ssh/config``...). Host keys are
    verified unless the connection sets ``no_host_key_check`` (also with old SSH providers whose
    default was not to check). One paramiko client per hook instance, reused for every call, with
    TCP_NODELAY on its socket. Each call is one SSH exec; the agent is uploaded on first use.

    :param ssh_conn_id: an Airflow connection of type ``ssh``.
    :param remote_python: the interpreter on the target (a name on its PATH or an absolute path).
    :param state_dir: the agent's state dir on the target (default: the agent's default for the
        SSH user, ``~/.local/state/orchesjob``).
    :param conn_timeout: overrides the connection's ``conn_timeout`` (seconds).
    :param ssh_hook_kwargs: more keyword arguments for ``SSHHook``.
    """

    conn_name_attr = "ssh_conn_id"
    default_conn_name = "ssh_default"
    conn_type = "ssh"
    hook_name = "Orchesjob (SSH)"

    def __init__(
        self,
        ssh_conn_id: str = default_conn_name,
        remote_python: str = "python3",
        state_dir: str | None = None,
        conn_timeout: int | None = None,
        ssh_hook_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.ssh_conn_id = ssh_conn_id
        self.remote_python = remote_python or "python3"
        self.state_dir = state_dir or None
        self.conn_timeout = conn_timeout
        self.ssh_hook_kwargs = dict(ssh_hook_kwargs or {})
        self._ssh_hook: Any = None
        self._connect_attempts = 1  # our retries of network errors (see ssh_hook)
        self._client: Any = None
        self.exec_count = 0  # SSH execs made by this hook (the hot path is one per call)

    # -- SSH ----------------------------------------------------------------------------------
    @property
    def ssh_hook(self) -> Any:
        if self._ssh_hook is None:
            from airflow.providers.ssh.hooks.ssh import SSHHook

            kwargs = dict(self.ssh_hook_kwargs)
            if self.conn_timeout is not None:
                kwargs.setdefault("conn_timeout", self.conn_timeout)
            try:
                hook = SSHHook(ssh_conn_id=self.ssh_conn_id, **kwargs)
            except AirflowException:
                raise
            except Exception as e:  # e.g. an unreadable host_key or private_key extra
                raise AgentUnavailable(
                    f"SSH connection {self.ssh_conn_id!r} is misconfigured: {type(e).__name__}: {e}"
                ) from None
            conn = hook.get_connection(self.ssh_conn_id)
            extras = conn.extra_dejson if conn.extra else {}
            # Old SSH providers (e.g. 3.14 on MWAA 2.10) skipped host key checks unless the
            # connection asked for them; we verify unless the connection explicitly opts out.
            if "no_host_key_check" not in extras and "no_host_key_check" not in kwargs:
                hook.no_host_key_check = False
            # SSHHook retries every failed connect (3 tries, 3-5 s apart); a wrong key or host
            # key never passes on a retry. Where the provider lets us (ssh provider 4.x+), keep
            # its retries for network errors only, so such a failure is reported at once.
            if hasattr(hook, "conn_retry_attempts"):
                self._connect_attempts, hook.conn_retry_attempts = hook.conn_retry_attempts, 1
            self._ssh_hook = hook
        return self._ssh_hook

    @property
    def where(self) -> str:
        try:
            h = self.ssh_hook
            return f"{h.username}@{h.remote_host}:{h.port}"
        except Exception:
            return f"connection {self.ssh_conn_id!r}"

    def get_conn(self) -> Any:
        """The paramiko ``SSHClient`` of this hook (connected on first use, reused after)."""
        if self._client is not None:
            transport = self._client.get_transport()
            if transport is not None and transport.is_active():
                return self._client
            self._close_client()
        hook = self.ssh_hook
        attempt = 1
        while True:
            try:
                client = hook.get_conn()
                break
            except Exception as e:
                if attempt >= self._connect_attempts or not isinstance(e, OSError):
                    raise AgentUnavailable(self._connect_error(e)) from None  # final, or out of tries
                attempt += 1
                time.sleep(3 + random.uniform(0, 2))  # SSHHook's own spacing
        transport = client.get_transport()
        tune_socket(getattr(transport, "sock", None), self._dead_after())
        # paramiko's keepalive expects no answer; it only keeps bytes in flight so that the
        # kernel's TCP_USER_TIMEOUT notices a dead peer (a cut link) within _dead_after().
        transport.set_keepalive(KEEPALIVE_SECONDS)
        self._client = client
        return client

    def _conn_timeout(self) -> float:
        return float(getattr(self._ssh_hook, "conn_timeout", None) or self.conn_timeout or 10)

    def _dead_after(self) -> float:
        """Seconds of unanswered traffic after which the connection counts as dead."""
        return max(5.0, self._conn_timeout())

    def _connect_error(self, e: BaseException) -> str:
        import paramiko

        h = self.ssh_hook
        hostport = f"{h.remote_host}:{h.port}"
        cid = self.ssh_conn_id
        if isinstance(e, paramiko.BadHostKeyException):
            return (
                f"host key for {hostport} does not match the one expected by connection {cid!r} "
                f"(host_key extra or known_hosts); if the host was reinstalled, update host_key"
            )
        if isinstance(e, paramiko.AuthenticationException):
            return (
                f"SSH authentication failed for {h.username}@{hostport} (connection {cid!r}): the server "
                f"rejected the key/password; check login and the private_key/key_file extra"
            )
        if isinstance(e, paramiko.ssh_exception.NoValidConnectionsError):
            causes = list(getattr(e, "errors", {}).values())
            e = causes[0] if causes else ConnectionRefusedError(errno.ECONNREFUSED, "refused")
        if isinstance(e, OSError) and e.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return (
                f"cannot reach SSH server {hostport} (connection {cid!r}): "
                f"{os.strerror(e.errno).lower()}; check the network path to the host"
            )
        if isinstance(e, ConnectionRefusedError):
            return (
                f"cannot reach SSH server {hostport} (connection {cid!r}): connection refused; "
                f"check host/port and that sshd runs"
            )
        if isinstance(e, socket.gaierror):
            return f"cannot resolve SSH host {h.remote_host!r} (connection {cid!r}): {e}"
        if isinstance(e, (socket.timeout, TimeoutError)):
            return (
                f"timed out connecting to SSH server {hostport} (connection {cid!r}, conn_timeout="
                f"{h.conn_timeout}); check network/firewall"
            )
        if isinstance(e, OSError):
            return f"cannot reach SSH server {hostport} (connection {cid!r}): {e.strerror or e}"
        msg = str(e)
        if "not found in known_hosts" in msg:
            return (
                f"host key for {hostport} is not in known_hosts; add it to the connection extra "
                f"host_key (e.g. 'ssh-ed25519 AAAA...') or set no_host_key_check (connection {cid!r})"
            )
        if isinstance(e, AirflowException):
            return f"SSH connection {cid!r} to {hostport} failed: {msg}"
        return f"SSH connection {cid!r} to {hostport} failed: {type(e).__name__}: {msg}"

    def _close_client(self) -> None:
        client, self._client = self._client, None
        if self._ssh_hook is not None:
            self._ssh_hook.client = None
        if client is not None:
            try:
                client.close()
            except Exception:
                pass

    def close(self) -> None:
        self._close_client()

    def _exec(self, command: str, stdin: bytes, timeout: float | None) -> tuple[int, bytes, bytes]:
        """One SSH exec: send ``stdin``, close it, read stdout/stderr to EOF, return the exit code."""
        client = self.get_conn()
        transport = client.get_transport()
        self.exec_count += 1
        chan = transport.open_session(timeout=self._conn_timeout())
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
            rc = chan.recv_exit_status()
            return rc, bytes(out), bytes(err)
        finally:
            chan.close()

    def _exec_retrying(self, command: str, stdin: bytes, timeout: float | None, op: str):
        """One exec; a connection found dead at once is reconnected and the call resent.

        Every op is idempotent, so resending is safe. A connection that dies *during* a call (a
        cut link, noticed after ``_dead_after()`` s) is not reconnected here: the call fails
        with a one-line error and the caller's backoff decides when to try again.
        """
        import paramiko

        for attempt in (1, 2):
            t0 = time.monotonic()
            try:
                return self._exec(command, stdin, timeout)
            except AgentUnavailable:
                raise
            except (paramiko.SSHException, EOFError, OSError) as e:
                self._close_client()
                stale = time.monotonic() - t0 < STALE_SECONDS
                if attempt == 2 or not stale:
                    if isinstance(e, (socket.timeout, TimeoutError)):
                        raise AgentUnavailable(
                            f"orchesjob {op} on {self.where}: no answer within {timeout:.0f}s", op=op
                        ) from None
                    raise AgentUnavailable(
                        f"orchesjob {op} on {self.where}: SSH connection lost ({type(e).__name__}: {e})",
                        op=op,
                    ) from None
                self.log.warning("SSH connection to %s lost (%s); reconnecting", self.where, e)
        raise AssertionError("unreachable")

    # -- deploy -------------------------------------------------------------------------------
    def deploy(self) -> AgentBundle:
        """Upload the agent to its content-addressed directory (idempotent)."""
        bundle = get_bundle()
        self.log.info(
            "Deploying the orchesjob agent to %s:%s (%d bytes)",
            self.where,
            bundle.remote_path,
            len(bundle.data),
        )
        command = deploy_command(self.remote_python, bundle)
        rc, out, err = self._exec_retrying(command, bundle.data, 120.0, "deploy")
        if rc != 0:
            raise AgentUnavailable(
                f"could not upload the orchesjob agent to {self.where}:{bundle.remote_path} (exit {rc}): "
                f"{_last_line(err) or _last_line(out) or 'no output'}",
                op="deploy",
            )
        return bundle

    # -- protocol -----------------------------------------------------------------------------
    def call(self, op: str, *, call_timeout: float | None = None, **args: Any) -> dict[str, Any]:
        """Run one agent operation and return its reply (``ok`` true), or raise a typed error."""
        bundle = get_bundle()
        payload = build_request(op, self.state_dir, args)
        timeout = call_timeout if call_timeout is not None else CALL_SLACK
        command = rpc_command(self.remote_python, bundle)
        busy_delay = 0.2
        deployed_now = False
        last_busy: tuple[int, bytes, bytes] = (1, b"", b"")
        for _ in range(6):
            rc, out, err = self._exec_retrying(command, payload, timeout, op)
            if is_missing_agent(rc, out, err) and not deployed_now:
                self.deploy()
                deployed_now = True
                continue
            try:
                return parse_reply(op, rc, out, err, where=self.where, remote_python=self.remote_python)
            except OrchesjobBusy:
                # The agent's transaction was rolled back: safe to resend.
                time.sleep(busy_delay + random.uniform(0, busy_delay))
                busy_delay *= 2
                last_busy = (rc, out, err)
        return parse_reply(op, *last_busy, where=self.where, remote_python=self.remote_python)

    def ping(self) -> dict[str, Any]:
        return self.call("ping")

    def start(
        self,
        argv: Sequence[str],
        run_key: str,
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        strict: bool = False,
        mode: str = "resume",
        start_timeout: float = 10,
    ) -> tuple[str, JobRecord]:
        """Start (or, in ``resume`` mode, reattach to/adopt) the job for ``run_key``."""
        reply = self.call(
            "start",
            run_key=run_key,
            argv=list(argv),
            cwd=cwd,
            env=dict(env or {}),
            strict=bool(strict),
            mode=mode,
            start_timeout=start_timeout,
            call_timeout=start_timeout + CALL_SLACK,
        )
        return str(reply.get("action")), JobRecord.from_dict(reply["job"])

    def poll(
        self,
        jobs: Iterable[tuple[str, Mapping[str, int] | None]],
        limit: int = DEFAULT_LOG_LIMIT,
        record: bool = False,
    ) -> list[JobLogs]:
        """Status (and new log bytes, for entries with offsets) of many jobs in one call.

        ``record=True``: the offsets sent are the bytes the caller has already shown; the agent
        stores them as the job's ``log_shown`` so a later try continues the task log from there.
        """
        req = []
        for job_id, offsets in jobs:
            entry: dict[str, Any] = {"job_id": job_id}
            if offsets is not None:
                entry["offsets"] = normalize_offsets(offsets)
            req.append(entry)
        reply = self.call("poll", jobs=req, limit=limit, record=True if record else None)
        return [_job_logs(str(j.get("job_id")), j) for j in reply.get("jobs") or []]

    def get_job(self, job_id: str) -> JobRecord | None:
        return self.poll([(job_id, None)])[0].job

    def wait(
        self,
        job_id: str,
        timeout: float = 30,
        offsets: Mapping[str, int] | None = None,
        until: str = "terminal",
        limit: int = DEFAULT_LOG_LIMIT,
        record: bool = False,
    ) -> JobLogs:
        """Block (on the host) up to ``timeout`` s until the job is terminal, or has new output."""
        reply = self.call(
            "wait",
            job_id=job_id,
            timeout=max(0.0, float(timeout)),
            until=until,
            offsets=normalize_offsets(offsets) if offsets is not None else None,
            limit=limit,
            record=True if record and offsets is not None else None,
            call_timeout=float(timeout) + CALL_SLACK,
        )
        return _job_logs(job_id, reply, timed_out=bool(reply.get("timed_out")))

    def ack(self, job_id: str) -> JobRecord:
        return JobRecord.from_dict(self.call("ack", job_id=job_id)["job"])

    def abort(
        self, job_id: str, reason: str = "aborted by Airflow", grace_seconds: float = 5
    ) -> dict[str, Any]:
        return self.call(
            "abort",
            job_id=job_id,
            reason=reason,
            grace_seconds=grace_seconds,
            call_timeout=grace_seconds + CALL_SLACK,
        )

    def status(self, *, run_key: str | None = None, job_id: str | None = None) -> JobRecord | None:
        """Latest job of a run key (or a job by id); None when there is none yet."""
        if job_id:
            return self.get_job(job_id)
        if not run_key:
            raise OrchesjobBadRequest("status needs a run_key or a job_id")
        try:
            reply = self.call("status", run_key=run_key)
        except OrchesjobNotFound:
            return None
        job = reply.get("job")
        return JobRecord.from_dict(job) if job else None

    def read_logs(
        self, job_id: str, offsets: Mapping[str, int], limit: int = 1 << 20, record: bool = False
    ) -> Iterable[tuple[JobLogs, dict[str, int]]]:
        """Read every log byte past ``offsets`` (terminal jobs: to EOF), one chunk set per yield."""
        offsets = normalize_offsets(offsets)
        while True:
            res = self.poll([(job_id, offsets)], limit=limit, record=record)[0]
            offsets = res.next_offsets(offsets)
            yield res, offsets
            if res.job is None or not res.more:
                return

    def test_connection(self) -> tuple[bool, str]:
        try:
            info = self.ping()
            return (
                True,
                f"orchesjob agent {info.get('agent_version')} on {self.where}, home {info.get('home')}",
            )
        except Exception as e:
            return False, str(e)


# ---------------------------------------------------------------------------------------------
# Async side (triggerer): shared asyncssh connections and a batched poll per host
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConnectTarget:
    where: str
    options: dict[str, Any]


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
    try:
        if extras.get("private_key"):
            passphrase = extras.get("private_key_passphrase") or extras.get("passphrase") or None
            opts["client_keys"] = [asyncssh.import_private_key(extras["private_key"], passphrase)]
        elif extras.get("key_file"):
            opts["client_keys"] = [extras["key_file"]]
        elif "look_for_keys" in extras and not _truthy(extras["look_for_keys"]):
            opts["client_keys"] = None
        no_check = _truthy(extras.get("no_host_key_check", False))
        if extras.get("host_key") and not no_check:
            key_type, blob = parse_host_key(extras["host_key"])
            key = asyncssh.import_public_key(f"{key_type} {base64.b64encode(blob).decode()}")
            opts["known_hosts"] = ([key], [], [])
        elif no_check:
            opts["known_hosts"] = None
        elif extras.get("known_hosts"):
            opts["known_hosts"] = extras["known_hosts"]
    except (ValueError, asyncssh.Error) as e:
        raise AgentUnavailable(f"SSH connection {ssh_conn_id!r} is misconfigured: {e}") from None
    timeout = conn_timeout or extras.get("conn_timeout")
    opts["connect_timeout"] = float(timeout) if timeout else 30.0
    opts["keepalive_interval"] = KEEPALIVE_SECONDS
    opts["keepalive_count_max"] = 3
    if extras.get("ciphers"):
        opts["encryption_algs"] = list(extras["ciphers"])
    if str(extras.get("compress", "true")).lower() == "false":
        opts["compression_algs"] = None
    return ConnectTarget(where=f"{username}@{host}:{port}", options=opts)


def async_connect_error(e: BaseException, where: str, ssh_conn_id: str) -> str:
    import asyncssh

    hostport = where.split("@", 1)[-1]
    if isinstance(e, asyncssh.HostKeyNotVerifiable):
        return (
            f"host key for {hostport} is not in known_hosts or does not match the connection's host_key "
            f"({e}); add it to the connection extra host_key or set no_host_key_check "
            f"(connection {ssh_conn_id!r})"
        )
    if isinstance(e, asyncssh.PermissionDenied):
        return (
            f"SSH authentication failed for {where} (connection {ssh_conn_id!r}): the server rejected the "
            f"key/password; check login and the private_key/key_file extra"
        )
    if isinstance(e, ConnectionRefusedError):
        return f"cannot reach SSH server {hostport} (connection {ssh_conn_id!r}): connection refused"
    if isinstance(e, (asyncio.TimeoutError, TimeoutError)):
        return f"timed out connecting to SSH server {hostport} (connection {ssh_conn_id!r})"
    return f"SSH connection {ssh_conn_id!r} to {hostport} failed: {type(e).__name__}: {e}"


class _SharedConnection:
    """One asyncssh connection per (conn_id, event loop), shared by all triggers, refcounted."""

    IDLE_CLOSE_SECONDS = 10.0

    def __init__(self, ssh_conn_id: str, conn_timeout: float | None):
        self.ssh_conn_id = ssh_conn_id
        self.conn_timeout = conn_timeout
        self.conn: Any = None
        self.where = f"connection {ssh_conn_id!r}"
        self.refs = 0
        self.lock = asyncio.Lock()
        self._idle_handle: asyncio.TimerHandle | None = None

    async def get(self) -> Any:
        async with self.lock:
            if self.conn is not None and not self._is_closed(self.conn):
                return self.conn
            self.conn = None
            import asyncssh

            target = await build_connect_options(self.ssh_conn_id, self.conn_timeout)
            self.where = target.where
            try:
                conn = await asyncssh.connect(**target.options)
            except (OSError, asyncssh.Error, asyncio.TimeoutError) as e:
                raise AgentUnavailable(async_connect_error(e, self.where, self.ssh_conn_id)) from None
            tune_socket(conn.get_extra_info("socket"), max(5.0, target.options["connect_timeout"]))
            self.conn = conn
            return conn

    @staticmethod
    def _is_closed(conn: Any) -> bool:
        transport = getattr(conn, "_transport", None)
        return transport is None or transport.is_closing()

    def invalidate(self, conn: Any) -> None:
        if conn is not None and self.conn is conn:
            self.conn = None
        if conn is not None:
            try:
                conn.abort()
            except Exception:
                pass

    def acquire(self) -> None:
        self.refs += 1
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None

    def release(self) -> None:
        self.refs = max(0, self.refs - 1)
        if self.refs == 0:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # finalized outside its loop (e.g. a generator closed by GC)
                self._close_if_idle()
                return
            self._idle_handle = loop.call_later(self.IDLE_CLOSE_SECONDS, self._close_if_idle)

    def _close_if_idle(self) -> None:
        self._idle_handle = None
        if self.refs == 0 and self.conn is not None:
            conn, self.conn = self.conn, None
            try:
                conn.close()
            except Exception:
                pass


class _BatchPoller:
    """Coalesces the ``poll`` requests of many triggers for one host into one exec at a time.

    While a poll exec is in flight, new requests queue up; when it returns, everything queued goes
    out in the next single exec (up to ``max_batch`` jobs). So the number of SSH channels per host
    stays at one however many jobs the triggerer watches.
    """

    max_batch = 500
    batch_bytes = 4 << 20

    def __init__(self, hook: AsyncOrchesjobHook):
        self.hook = hook
        self.pending: list[tuple[str, dict[str, int] | None, asyncio.Future]] = []
        self.task: asyncio.Task | None = None
        self.execs = 0  # number of poll execs sent (for tests/benchmarks)
        self.requests = 0  # number of job polls served

    async def poll(self, job_id: str, offsets: Mapping[str, int] | None) -> JobLogs:
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self.requests += 1
        self.pending.append((job_id, normalize_offsets(offsets) if offsets is not None else None, fut))
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._drain())
        return await fut

    async def _drain(self) -> None:
        await asyncio.sleep(0.01)  # let the requests of this loop iteration join the batch
        while self.pending:
            batch, self.pending = self.pending[: self.max_batch], self.pending[self.max_batch :]
            batch = [b for b in batch if not b[2].done()]
            if not batch:
                continue
            limit = max(4096, min(DEFAULT_LOG_LIMIT, self.batch_bytes // (2 * len(batch))))
            req = []
            for job_id, offsets, _ in batch:
                entry: dict[str, Any] = {"job_id": job_id}
                if offsets is not None:
                    entry["offsets"] = offsets
                req.append(entry)
            try:
                self.execs += 1
                record = True if any("offsets" in e for e in req) else None
                reply = await self.hook.call("poll", jobs=req, limit=limit, record=record)
                results = reply.get("jobs") or []
                for i, (job_id, _, fut) in enumerate(batch):
                    if fut.done():
                        continue
                    item = results[i] if i < len(results) else {"job_id": job_id, "job": None}
                    try:
                        fut.set_result(_job_logs(job_id, item))
                    except Exception as e:
                        fut.set_exception(e)
            except Exception as e:
                for _, _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)


def _quiet_asyncssh() -> None:
    """asyncssh logs every channel at INFO; a triggerer polling thousands of jobs would drown in it.
    Unless the deployment configured the ``asyncssh`` logger itself, keep it at WARNING."""
    logger = logging.getLogger("asyncssh")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)


_quiet_asyncssh()

# (conn_id, state_dir, remote_python, loop) -> shared objects. Weak on the loop: dag.test() and
# tests run one loop per trigger; the triggerer has one long-lived loop.
_SHARED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple, Any]] = weakref.WeakKeyDictionary()


def _loop_registry() -> dict[tuple, Any]:
    loop = asyncio.get_running_loop()
    reg = _SHARED.get(loop)
    if reg is None:
        reg = _SHARED[loop] = {}
    return reg


async def _run_with_stdin(conn: Any, command: str, stdin: bytes) -> Any:
    """``conn.run(command, input=stdin)``, except that a remote command which exits before its
    stdin is written (``python3: not found``, exit 127) is not reported as a lost connection.

    asyncssh writes ``input`` right after the channel opens; when the command has already
    exited, that write raises BrokenPipeError and the exit status and stderr that say why are
    lost with it. Here the write error is ignored and the status and output are read as usual.
    """
    process = await conn.create_process(command, encoding=None)
    try:
        process.stdin.write(stdin)
        process.stdin.write_eof()
    except BrokenPipeError:
        pass
    return await process.wait(check=False)


class AsyncOrchesjobHook:
    """Async counterpart of :class:`OrchesjobHook` for triggers (asyncssh; never blocks the loop).

    Connection options come from the same Airflow ``ssh`` connection (host, port, login, password,
    ``private_key``/``key_file``, ``host_key``/``known_hosts``/``no_host_key_check``,
    ``conn_timeout``): the triggerer runs elsewhere than the worker (MWAA), so key material must
    come from the connection. All hooks of one event loop share one connection per conn id, and
    their polls are batched per (conn id, state dir, remote python).
    """

    def __init__(
        self,
        ssh_conn_id: str,
        remote_python: str = "python3",
        state_dir: str | None = None,
        conn_timeout: float | None = None,
    ) -> None:
        self.ssh_conn_id = ssh_conn_id
        self.remote_python = remote_python or "python3"
        self.state_dir = state_dir or None
        self.conn_timeout = conn_timeout
        self._shared: _SharedConnection | None = None
        self._acquired = False

    @property
    def shared(self) -> _SharedConnection:
        if self._shared is None:
            reg = _loop_registry()
            key = ("conn", self.ssh_conn_id)
            shared = reg.get(key)
            if shared is None:
                shared = reg[key] = _SharedConnection(self.ssh_conn_id, self.conn_timeout)
            self._shared = shared
        return self._shared

    @property
    def poller(self) -> _BatchPoller:
        reg = _loop_registry()
        key = ("poller", self.ssh_conn_id, self.state_dir, self.remote_python)
        poller = reg.get(key)
        if poller is None:
            poller = reg[key] = _BatchPoller(self)
        return poller

    @property
    def where(self) -> str:
        return self.shared.where

    def acquire(self) -> None:
        if not self._acquired:
            self.shared.acquire()
            self._acquired = True

    def release(self) -> None:
        if self._acquired:
            self._acquired = False
            self.shared.release()

    async def __aenter__(self) -> AsyncOrchesjobHook:
        self.acquire()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.release()

    async def _exec(self, command: str, stdin: bytes, timeout: float, op: str) -> tuple[int, bytes, bytes]:
        import asyncssh

        conn = await self.shared.get()
        try:
            result = await asyncio.wait_for(_run_with_stdin(conn, command, stdin), timeout=timeout)
        except (OSError, asyncssh.Error, asyncio.TimeoutError) as e:
            self.shared.invalidate(conn)
            if isinstance(e, asyncio.TimeoutError):
                raise AgentUnavailable(
                    f"orchesjob {op} on {self.where}: no answer within {timeout:.0f}s"
                ) from None
            raise AgentUnavailable(
                f"orchesjob {op} on {self.where}: SSH connection lost ({type(e).__name__}: {e})", op=op
            ) from None
        rc = result.exit_status
        if rc is None:
            if not result.exit_signal:  # the channel closed without a status: the link went
                self.shared.invalidate(conn)
                raise AgentUnavailable(
                    f"orchesjob {op} on {self.where}: SSH connection lost (no exit status)", op=op
                )
            rc = -1
        return rc, bytes(result.stdout or b""), bytes(result.stderr or b"")

    async def deploy(self) -> None:
        bundle = get_bundle()
        command = deploy_command(self.remote_python, bundle)
        rc, out, err = await self._exec(command, bundle.data, 120.0, "deploy")
        if rc != 0:
            raise AgentUnavailable(
                f"could not upload the orchesjob agent to {self.where}:{bundle.remote_path} (exit {rc}): "
                f"{_last_line(err) or _last_line(out) or 'no output'}",
                op="deploy",
            )

    async def call(self, op: str, *, call_timeout: float | None = None, **args: Any) -> dict[str, Any]:
        bundle = get_bundle()
        payload = build_request(op, self.state_dir, args)
        timeout = call_timeout if call_timeout is not None else CALL_SLACK
        command = rpc_command(self.remote_python, bundle)
        deployed_now = False
        busy_delay = 0.2
        last: tuple[int, bytes, bytes] = (1, b"", b"")
        for _ in range(6):
            rc, out, err = await self._exec(command, payload, timeout, op)
            last = (rc, out, err)
            if is_missing_agent(rc, out, err) and not deployed_now:
                await self.deploy()
                deployed_now = True
                continue
            try:
                return parse_reply(op, rc, out, err, where=self.where, remote_python=self.remote_python)
            except OrchesjobBusy:
                await asyncio.sleep(busy_delay + random.uniform(0, busy_delay))
                busy_delay *= 2
        return parse_reply(op, *last, where=self.where, remote_python=self.remote_python)

    async def poll_job(self, job_id: str, offsets: Mapping[str, int] | None = None) -> JobLogs:
        """Status and new log bytes of one job, batched with every other trigger on this host."""
        return await self.poller.poll(job_id, offsets)

    async def status(self, *, run_key: str) -> JobRecord | None:
        """Latest job of a run key, None when there is none yet."""
        try:
            reply = await self.call("status", run_key=run_key)
        except OrchesjobNotFound:
            return None
        job = reply.get("job")
        return JobRecord.from_dict(job) if job else None

    async def abort(self, job_id: str, reason: str, grace_seconds: float = 5) -> dict[str, Any]:
        return await self.call(
            "abort",
            job_id=job_id,
            reason=reason,
            grace_seconds=grace_seconds,
            call_timeout=grace_seconds + 30,
        )


def reconnect_delay(attempt: int, cap: float = 30.0) -> float:
    """Exponential backoff with jitter so reconnecting triggers do not retry in lockstep."""
    base = min(2.0 ** (attempt - 1), cap)
    return base / 2 + random.uniform(0, base / 2)

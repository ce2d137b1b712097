"""Host keys: the triggerer (asyncssh) accepts exactly the server keys that the worker's
SSHHook.get_conn (paramiko) accepts, for every combination of the connection extras
``host_key``, ``no_host_key_check``, ``allow_host_key_change`` and the user's
~/.ssh/known_hosts (README, "Host keys"; proven by tests/provider/test_host_keys.py).

asyncssh is given an empty trust list, so it asks ``validate_host_public_key`` about every
server key, and the answer is ``HostKeyPolicy.verdict``: paramiko's rules as data. The
known_hosts file is read with paramiko's own parser (same lookup, hashed names, bad lines), in a
thread.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from dataclasses import dataclass
from typing import Any

from orchesjob_provider.exceptions import AgentUnavailable

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"


def parse_host_key(host_key: str) -> tuple[str, bytes]:
    """(key type, key blob) from ``"ssh-ed25519 AAAA..."`` or just the base64 part."""
    parts = host_key.strip().split()
    b64 = parts[1] if len(parts) >= 2 else parts[0]
    blob = base64.b64decode(b64)
    (n,) = struct.unpack(">I", blob[:4])
    key_type = blob[4 : 4 + n].decode("ascii")
    return key_type, blob


def check_known_hosts_extra(extras: dict[str, Any], conn_id: str) -> None:
    """The async-only ``known_hosts`` extra is refused unless it names the default file.

    SSHHook (the worker) has no such option: it always reads the user's ~/.ssh/known_hosts.
    Honouring another file in the triggerer only would trust different keys for one connection
    depending on where the task runs; ignoring it would silently drop a check the user asked for.
    """
    value = extras.get("known_hosts")
    if value is None or value == "":
        return
    if isinstance(value, str) and os.path.expanduser(value) == os.path.expanduser(DEFAULT_KNOWN_HOSTS):
        return
    raise AgentUnavailable(
        f"SSH connection {conn_id!r} is misconfigured: the known_hosts extra is not supported "
        "(the SSH provider's SSHHook ignores it, so workers and triggerer would trust different "
        "keys); remove it and use the host_key extra, or list the host in ~/.ssh/known_hosts "
        "of the user that runs the workers and the triggerer"
    )


def _flag(extras: dict[str, Any], name: str, conn_id: str) -> bool:
    """An on/off extra: absent or null is off; JSON true/false or the strings "true"/"false"
    (any case, surrounding blanks ignored) say it; anything else is refused, because the SSH
    provider's versions read other values differently (3.14 keeps its default "no check" for
    null) and a security switch must not depend on which one a worker has."""
    value = extras.get(name)
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise AgentUnavailable(
        f"SSH connection {conn_id!r} is misconfigured: the {name} extra must be true or false, "
        f"not {value!r}"
    )


@dataclass(frozen=True)
class HostKeyChecking:
    """The connection's host-key switches, decided once for the worker and the triggerer."""

    no_host_key_check: bool
    allow_host_key_change: bool


def host_key_checking(extras: dict[str, Any], conn_id: str) -> HostKeyChecking:
    """How both paths treat this connection's host keys (README / docs "Host keys").

    Keys are verified unless ``no_host_key_check`` is true; ``allow_host_key_change`` skips
    ~/.ssh/known_hosts. A ``host_key`` together with ``no_host_key_check`` is a contradiction
    (SSHHook's own "Must check host key when provided"), refused in both paths alike.
    """
    check_known_hosts_extra(extras, conn_id)
    no_check = _flag(extras, "no_host_key_check", conn_id)
    if extras.get("host_key") is not None and no_check:
        raise AgentUnavailable(
            f"SSH connection {conn_id!r} is misconfigured: ValueError: Must check host key when provided"
        )
    return HostKeyChecking(no_check, _flag(extras, "allow_host_key_change", conn_id))


@dataclass(frozen=True)
class HostKeyPolicy:
    """What SSHHook.get_conn (paramiko) accepts as the server's host key, as data.

    ``trusted`` are the keys paramiko looks the host up in, (key type, public blob) in order:
    the host's entries in ~/.ssh/known_hosts (not read with allow_host_key_change), else the
    ``host_key`` extra. ``accept_unknown``: what paramiko's missing-host-key policy does when
    ``trusted`` is empty (AutoAddPolicy with no_host_key_check, the do-nothing base policy with
    allow_host_key_change, else RejectPolicy).
    """

    trusted: tuple[tuple[str, bytes], ...]
    accept_unknown: bool

    def verdict(self, key_type: str, blob: bytes) -> str:
        """Verdict: "ok", "changed" (paramiko: BadHostKeyException) or "unknown" (RejectPolicy)."""
        if not self.trusted:
            return "ok" if self.accept_unknown else "unknown"
        for t, b in self.trusted:  # paramiko compares with the first listed key of that type
            if t == key_type:
                return "ok" if b == blob else "changed"
        return "changed"


def known_host_keys(path: str, host: str, port: int) -> tuple[tuple[str, bytes], ...]:
    """The keys ``path`` lists for host:port, parsed and looked up exactly as paramiko does
    (``load_system_host_keys``: an unreadable file lists nothing; ``[host]:port`` unless port
    22; the first key of each type). Blocking: call it in a thread."""
    import paramiko

    keys = paramiko.HostKeys()
    try:
        keys.load(os.path.expanduser(path))
    except OSError:
        return ()
    name = host if port == 22 else f"[{host}]:{port}"
    found = keys.lookup(name)
    if found is None:
        return ()
    return tuple((t, found[t].asbytes()) for t in found.keys())


async def host_key_policy(extras: dict[str, Any], host: str, port: int, conn_id: str) -> HostKeyPolicy:
    """SSHHook's host-key decision for this connection (see README, "Host keys")."""
    checking = host_key_checking(extras, conn_id)
    no_check, allow_change = checking.no_host_key_check, checking.allow_host_key_change
    host_key = extras.get("host_key")
    trusted: tuple[tuple[str, bytes], ...] = ()
    if not allow_change:
        try:
            trusted = await asyncio.to_thread(known_host_keys, DEFAULT_KNOWN_HOSTS, host, port)
        except Exception as e:  # paramiko's InvalidHostKey: the worker's connect fails on it too
            raise AgentUnavailable(
                f"SSH connection {conn_id!r}: cannot read ~/.ssh/known_hosts: {type(e).__name__}: {e}"
            ) from None
    if not trusted and host_key is not None:
        try:
            trusted = (parse_host_key(host_key),)
        except Exception as e:
            raise AgentUnavailable(
                f"SSH connection {conn_id!r} is misconfigured: {type(e).__name__}: {e}"
            ) from None
    return HostKeyPolicy(trusted=trusted, accept_unknown=no_check or allow_change)


class HostKeyCheck:
    """asyncssh ``client_factory``: every server host key goes through ``HostKeyPolicy``
    (asyncssh is given an empty trust list, so it asks ``validate_host_public_key``); the
    verdict is kept to word the error like the worker's."""

    def __init__(self, policy: HostKeyPolicy) -> None:
        self.policy = policy
        self.verdict: str | None = None

    def client_factory(self) -> Any:
        import asyncssh

        check = self

        class _Client(asyncssh.SSHClient):  # type: ignore[misc]
            def validate_host_public_key(self, host: str, addr: str, port: int, key: Any) -> bool:
                check.verdict = check.policy.verdict(key.get_algorithm(), key.public_data)
                return check.verdict == "ok"

        return _Client()

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"known_hosts": ([], [], []), "client_factory": self.client_factory}
        if self.policy.trusted:
            # paramiko offers the type of the first listed key first, then its defaults
            from asyncssh.public_key import get_default_public_key_algs

            first = self.policy.trusted[0][0].encode()
            algs = [first] if first != b"ssh-rsa" else [b"rsa-sha2-512", b"rsa-sha2-256", b"ssh-rsa"]
            rest = [a for a in get_default_public_key_algs() if a not in algs]
            opts["server_host_key_algs"] = [a.decode() for a in algs + rest]
        return opts

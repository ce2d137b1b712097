"""One catalogue of connect-error messages for the paramiko (worker) and asyncssh (triggerer)
paths: the libraries' own exception objects go in, one actionable line comes out."""

from __future__ import annotations

import errno
import os
import socket
import tempfile

import pytest

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="orchesjob-unit-airflow-home-"))
pytest.importorskip("airflow", reason="Airflow is not installed in this interpreter")
paramiko = pytest.importorskip("paramiko")
asyncssh = pytest.importorskip("asyncssh")

from orchesjob_provider.hooks.ssh.connect import (  # noqa: E402
    CONNECT_ERRORS,
    ConnectTarget,
    connect_error,
    connect_error_kind,
    parse_host_key,
    tune_socket,
)
from orchesjob_provider.version_compat import AirflowException  # noqa: E402

WHERE = dict(username="orch", host="db1", port=2222, conn_id="c1", conn_timeout=7)
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB8l6Bv8s4a7a8yH5Xq5lKx1u8kTqT3n0fZy4JYyqg0e"


def _pkey():
    return paramiko.Ed25519Key(data=parse_host_key(KEY)[1])


CASES = [
    # (exception, kind, words the message must hold)
    (
        lambda: paramiko.BadHostKeyException("db1", _pkey(), _pkey()),
        "host_key_changed",
        ["host key for db1:2222 does not match", "update host_key", "'c1'"],
    ),
    (
        lambda: paramiko.AuthenticationException("no"),
        "auth",
        ["SSH authentication failed for orch@db1:2222", "private_key/key_file"],
    ),
    (
        lambda: paramiko.ssh_exception.NoValidConnectionsError(
            {("db1", 2222): ConnectionRefusedError(111, "x")}
        ),
        "refused",
        ["cannot reach SSH server db1:2222", "connection refused; check host/port and that sshd runs"],
    ),
    (  # paramiko wraps the socket error: its cause decides
        lambda: paramiko.ssh_exception.NoValidConnectionsError(
            {("db1", 2222): OSError(errno.EHOSTUNREACH, "No route to host")}
        ),
        "unreachable",
        ["cannot reach SSH server db1:2222 (connection 'c1'): no route to host"],
    ),
    (
        lambda: paramiko.SSHException("Server '[db1]:2222' not found in known_hosts"),
        "host_key_unknown",
        ["is not in known_hosts; add it to the connection extra host_key", "no_host_key_check"],
    ),
    (
        lambda: asyncssh.HostKeyNotVerifiable("Host key is not trusted"),
        "host_key_unverifiable",
        ["host key for db1:2222 is not in known_hosts or does not match", "(Host key is not trusted)"],
    ),
    (
        lambda: asyncssh.PermissionDenied("Permission denied"),
        "auth",
        ["SSH authentication failed for orch@db1:2222", "check login"],
    ),
    (
        lambda: ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
        "refused",
        ["connection refused; check host/port"],
    ),
    (
        lambda: OSError(errno.EHOSTUNREACH, "No route to host"),
        "unreachable",
        ["cannot reach SSH server db1:2222 (connection 'c1'): no route to host; check the network path"],
    ),
    (lambda: OSError(errno.ENETUNREACH, "Network is unreachable"), "unreachable", ["network is unreachable"]),
    (
        lambda: socket.gaierror(-2, "Name or service not known"),
        "resolve",
        ["cannot resolve SSH host 'db1' (connection 'c1')"],
    ),
    (
        lambda: socket.timeout("timed out"),
        "timeout",
        ["timed out connecting to SSH server db1:2222 (connection 'c1', conn_timeout=7)"],
    ),
    (lambda: TimeoutError(), "timeout", ["timed out connecting"]),
    (
        lambda: OSError(errno.EPIPE, "Broken pipe"),
        "os",
        ["cannot reach SSH server db1:2222 (connection 'c1'): Broken pipe"],
    ),
    (
        lambda: AirflowException("tunnel broke"),
        "airflow",
        ["SSH connection 'c1' to db1:2222 failed: tunnel broke"],
    ),
    (lambda: ValueError("odd"), "other", ["SSH connection 'c1' to db1:2222 failed: ValueError: odd"]),
]


@pytest.mark.parametrize("make, kind, words", CASES, ids=[c[1] + str(i) for i, c in enumerate(CASES)])
def test_each_exception_has_its_one_line(make, kind, words):
    e = make()
    assert connect_error_kind(e)[0] == kind
    msg = connect_error(e, **WHERE)
    assert "\n" not in msg
    for w in words:
        assert w in msg, (w, msg)


def test_every_catalogue_entry_is_reachable():
    assert {c[1] for c in CASES} == set(CONNECT_ERRORS)


def test_connect_target_words_async_errors_with_the_same_catalogue():
    target = ConnectTarget(host="db1", port=2222, username="orch", options={"connect_timeout": 7.0})
    assert target.where == "orch@db1:2222"
    sync = connect_error(ConnectionRefusedError(111, "x"), **WHERE)
    assert target.error(ConnectionRefusedError(111, "x"), "c1") == sync
    assert "conn_timeout=7.0" in target.error(TimeoutError(), "c1")


def test_parse_host_key_and_socket_tuning():
    assert parse_host_key(KEY)[0] == "ssh-ed25519"
    assert parse_host_key(KEY.split()[1])[0] == "ssh-ed25519"
    tune_socket(object(), 5)  # not a socket: left alone
    with socket.socket() as s:
        tune_socket(s, 5)
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0


def test_asyncssh_logger_is_quieted_at_the_first_connect_not_at_import(monkeypatch):
    import logging

    from orchesjob_provider.hooks.ssh import shared

    logger = logging.getLogger("asyncssh")
    monkeypatch.setattr(logger, "level", logging.NOTSET)
    monkeypatch.setattr(shared, "_asyncssh_quieted", False)
    import importlib

    import orchesjob_provider.hooks.async_orchesjob
    import orchesjob_provider.hooks.orchesjob

    for module in (orchesjob_provider.hooks.async_orchesjob, orchesjob_provider.hooks.orchesjob):
        importlib.reload(module)  # run the module bodies again: no logging change there
    assert logger.level == logging.NOTSET
    shared.quiet_asyncssh()
    assert logger.level == logging.WARNING
    logger.setLevel(logging.DEBUG)  # a deployment's own choice later on is not overridden
    shared.quiet_asyncssh()
    assert logger.level == logging.DEBUG
    monkeypatch.setattr(shared, "_asyncssh_quieted", False)
    logger.setLevel(logging.INFO)  # nor one made before the first connect
    shared.quiet_asyncssh()
    assert logger.level == logging.INFO

"""Network faults between Airflow and a target host: a test host in its own network namespace.

Fixtures:
  * ``netns_host`` (function scope): a :class:`NetnsHost` (testkit.netns) with an sshd
    inside a fresh namespace, the same user/keys as the loopback ``sshd``, and the Airflow
    connection ``orch_netns`` (env ``AIRFLOW_CONN_ORCH_NETNS``: private_key + host_key extras,
    ``conn_timeout`` 5) pointing at it. ``cut()/restore()/loss(p)/clear_loss()`` inject faults.
  * ``netns_factory``: the same with options, e.g. ``netns_factory(client_alive=(1, 2))`` (the
    namespace sshd drops a client it cannot reach after ~3 s, so a cut kills the session).
  * ``agent_state_dir``, ``side_file``: a fresh agent state dir and a side-effect file on the
    target (shared filesystem), removed after the test.

Skips when not root or without iproute2/nftables (scripts/test.sh installs them first); when
root and ``ip`` exist but the namespace cannot be built, that is a skip locally and a failure
under CI=true (where every skip here fails the run anyway: tests/conftest.py). Everything
created is removed after each test, also on failure, and the fixture checks that nothing is left over
(namespace, veth, guard route, nft table, sshd and job processes inside the namespace).

The Airflow environment comes from testkit.airflow_env (shared with tests/provider when both are
collected in one session); Airflow itself is imported lazily, never at collection time.
"""

from __future__ import annotations

import os
import shutil
import uuid

import pytest
from faultutil import CONN_ID, CONN_TIMEOUT, SideFile

from testkit import airflow_env, netns, prereqs
from testkit.ci import in_ci

airflow_env.setup()  # no test here needs the metadata DB


def _unavailable(msg: str, hard: bool) -> None:
    if hard and in_ci():
        pytest.fail(f"{msg} (CI=true: root and iproute2 are present, so this is a failure)", pytrace=False)
    pytest.skip(msg)


@pytest.fixture
def netns_factory(sshd, monkeypatch):
    """``make(**NetnsHost options) -> NetnsHost``; the connection ``orch_netns`` follows the last one."""
    if os.geteuid() != 0:
        _unavailable("network-namespace fault tests need root", hard=False)
    if not prereqs.find("iproute2"):
        _unavailable(prereqs.missing_message("iproute2"), hard=False)
    hosts = []

    def make(**opts):
        try:
            netns.ensure_nft()
            host = netns.NetnsHost(harness_info=sshd.info, **opts)
            hosts.append(host)
            host.start()
        except netns.NetnsError as e:
            _unavailable(f"cannot build a network-namespace test host: {e}", hard=True)
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", host.conn_json(conn_timeout=CONN_TIMEOUT))
        host.conn_id = CONN_ID
        print(f"\n[netns] {host.ns}: sshd {host.user}@{host.host}:{host.port} (root end {host.root_addr})")
        return host

    yield make

    problems = []
    for host in hosts:
        try:
            host.teardown()
        except Exception as e:  # keep tearing down the others
            problems.append(f"{host.ns}: teardown failed: {e}")
        left = host.leftovers() if host.sshd_pid or host.state_dir else []
        if left:
            problems.append(f"{host.ns}: left over after teardown: {left}")
    if problems:
        pytest.fail("network-namespace cleanup: " + "; ".join(problems), pytrace=False)


@pytest.fixture
def netns_host(netns_factory):
    return netns_factory()


@pytest.fixture
def agent_state_dir(sshd):
    """A fresh agent state dir on the target (the target shares this machine's filesystem)."""
    path = f"{sshd.home}/oj-state/faults-{uuid.uuid4().hex[:12]}"
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def side_file(sshd):
    sf = SideFile(sshd.home)
    yield sf
    try:
        os.unlink(sf.path)
    except FileNotFoundError:
        pass

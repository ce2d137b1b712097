"""The namespace host itself: reachable, cut = silent black hole, nothing leaks afterwards."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest

pytestmark = [pytest.mark.netns, pytest.mark.ssh, pytest.mark.timeout(120)]


def _connect(host: str, port: int, timeout: float) -> tuple[str, float]:
    t0 = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            banner = s.recv(64)
            return ("banner" if banner.startswith(b"SSH-") else f"other:{banner!r}"), time.monotonic() - t0
    except OSError as e:
        return type(e).__name__ + (f"[{e.errno}]" if e.errno else ""), time.monotonic() - t0


def test_netns_host_reachable_cut_restore_and_teardown(netns_factory):
    from testkit import netns as nh

    host = netns_factory()

    # ssh login as the harness user, host key pinned to the namespace address
    r = subprocess.run(
        host.ssh_argv("id -un; cat /proc/net/route | wc -l"), capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == host.user

    assert _connect(host.host, host.port, 2)[0] == "banner"

    # silent cut: no error, the connect just times out
    host.cut()
    what, took = _connect(host.host, host.port, 1.5)
    assert what == "TimeoutError" and took >= 1.4, (what, took)  # a lower bound: load only lengthens it
    host.restore()
    assert _connect(host.host, host.port, 2)[0] == "banner"

    # root end down: the guard route makes it unreachable at once (never via the default route)
    host.cut("root")
    route = subprocess.run(["ip", "route", "get", host.host], capture_output=True, text=True)
    assert "eth" not in route.stdout and "via" not in route.stdout, route.stdout
    # at once: an error, not a timeout, although the connect would wait up to 60 s (the kind
    # of the outcome says it; the time it took is not asserted)
    what, took = _connect(host.host, host.port, 60)
    assert what.startswith("OSError"), (what, took)
    host.restore()
    assert _connect(host.host, host.port, 2)[0] == "banner"

    # nftables loss table lives in the namespace only
    host.loss(50)
    assert "numgen random mod 100 < 50" in host.ns_exec(["nft", "list", "ruleset"]).stdout
    assert "ojfault" not in subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    host.clear_loss()
    assert host.ns_exec(["nft", "list", "ruleset"]).stdout.strip() == ""

    # teardown leaves nothing (the fixture checks this again for every test)
    ns, veth, prefix = host.ns, host.veth_root, host.prefix
    host.teardown()
    assert host.leftovers() == []
    assert ns not in nh.list_namespaces()
    assert subprocess.run(["ip", "link", "show", veth], capture_output=True).returncode != 0
    assert (
        prefix
        not in subprocess.run(["ip", "route", "show", "table", "all"], capture_output=True, text=True).stdout
    )

"""The lower layer of testkit.netns: commands, errors, and the registry of live test namespaces.

Every namespace host writes /tmp/orchesjob-netns/<ns>.json naming its owner process; `sweep`
removes the hosts whose owner died without tearing down (a kill -9 of pytest), `destroy` removes
one host's namespace, veth pair, guard route, nft table and state, idempotently, and never touches
anything that is not one of ours (the `ojtest-` prefix).
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

from testkit import prereqs, sshd
from testkit.procs import pid_alive as _pid_alive
from testkit.procs import pid_start_time as _pid_start_time

SSHD = sshd.SSHD
NS_PREFIX = "ojtest-"
REGISTRY_DIR = "/tmp/orchesjob-netns"
NFT_TABLE = "ojfault"
GUARD_METRIC = "4242"


class NetnsError(Exception):
    """The namespace host cannot be provided (not root, no `ip netns`, sshd did not start...)."""


def log(msg):
    sys.stderr.write(f"[testkit.netns] {msg}\n")
    sys.stderr.flush()


def _run(argv, check=True, input=None, timeout=30):
    p = subprocess.run(
        argv,
        input=input,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        stdin=None if input is not None else subprocess.DEVNULL,
    )
    if check and p.returncode != 0:
        raise NetnsError(
            "command failed ({}): {}\n{}".format(p.returncode, " ".join(argv), (p.stdout or "").strip())
        )
    return p


def ensure_nft():
    """The `nft` binary; NetnsError naming nftables when it is missing (no apt-get here)."""
    return prereqs.require("nftables", NetnsError)


def check_prerequisites():
    """Raise NetnsError saying why a namespace host is impossible here; None when it is."""
    if os.geteuid() != 0:
        raise NetnsError("not root: ip netns / veth / nftables need root")
    prereqs.require("iproute2", NetnsError)
    prereqs.require("openssh-server", NetnsError)


# ---------------------------------------------------------------- registry of live namespaces


def _registry_path(ns):
    return os.path.join(REGISTRY_DIR, ns + ".json")


def list_namespaces():
    p = _run(["ip", "netns", "list"], check=False)
    return [
        line.split()[0]
        for line in (p.stdout or "").splitlines()
        if line.split() and line.split()[0].startswith(NS_PREFIX)
    ]


def _ns_pids(ns):
    p = _run(["ip", "netns", "pids", ns], check=False)
    return [int(x) for x in (p.stdout or "").split() if x.isdigit()]


def _kill_ns_processes(ns, grace=2.0):
    """SIGTERM then SIGKILL every process whose network namespace is `ns`."""
    pids = _ns_pids(ns)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.time() + grace
    while time.time() < deadline and _ns_pids(ns):
        time.sleep(0.05)
    for pid in _ns_pids(ns):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.time() + 5
    while time.time() < deadline and _ns_pids(ns):
        time.sleep(0.05)


def destroy(ns, veth_root=None, state_dir=None, prefix=None):
    """Remove everything of one namespace host (by name). Idempotent."""
    if not ns.startswith(NS_PREFIX):
        raise NetnsError(f"refusing to remove {ns!r}: not one of ours")
    errors = []
    if ns in list_namespaces():
        _run(["ip", "netns", "exec", ns, "nft", "delete", "table", "inet", NFT_TABLE], check=False)
        _kill_ns_processes(ns)
    if veth_root is None:
        veth_root = "ojr" + ns[len(NS_PREFIX) :]
    if _run(["ip", "link", "show", "dev", veth_root], check=False).returncode == 0:
        p = _run(["ip", "link", "del", "dev", veth_root], check=False)
        if p.returncode != 0:
            errors.append(p.stdout.strip())
    if ns in list_namespaces():
        p = _run(["ip", "netns", "del", ns], check=False)
        if p.returncode != 0:
            errors.append(p.stdout.strip())
    if prefix and re.match(r"^169\.254\.\d+\.\d+/30$", prefix):
        if _run(
            ["ip", "route", "show", "exact", prefix, "metric", GUARD_METRIC, "type", "unreachable"],
            check=False,
        ).stdout.strip():
            p = _run(["ip", "route", "del", "unreachable", prefix, "metric", GUARD_METRIC], check=False)
            if p.returncode != 0:
                errors.append(p.stdout.strip())
    if state_dir and os.path.isdir(state_dir):
        shutil.rmtree(state_dir, ignore_errors=True)
    try:
        os.unlink(_registry_path(ns))
    except OSError:
        pass
    if errors:
        raise NetnsError("teardown of {} incomplete: {}".format(ns, "; ".join(errors)))


def sweep(verbose=True):
    """Remove namespace hosts whose owner process is gone (a killed test run). Returns names."""
    removed = []
    for ns in list_namespaces():
        rec = None
        try:
            with open(_registry_path(ns)) as f:
                rec = json.load(f)
        except (OSError, ValueError):
            rec = None
        if rec is not None:
            owner, start = rec.get("owner_pid"), rec.get("owner_start")
            if owner and _pid_alive(owner) and _pid_start_time(owner) == start:
                continue  # a live run (maybe a concurrent one) owns it
        elif time.time() - _ns_mtime(ns) < 120:
            continue  # being created right now by someone else
        if verbose:
            log(f"sweeping leftover namespace {ns}")
        try:
            destroy(ns, (rec or {}).get("veth_root"), (rec or {}).get("state_dir"), (rec or {}).get("prefix"))
        except NetnsError as e:
            log(str(e))
        removed.append(ns)
    return removed


def _ns_mtime(ns):
    try:
        return os.stat("/run/netns/" + ns).st_mtime
    except OSError:
        return 0.0


def _load_record(ns):
    try:
        with open(_registry_path(ns)) as f:
            return json.load(f)
    except (OSError, ValueError):
        raise NetnsError(f"no namespace host {ns} (see `list`)") from None

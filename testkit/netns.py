#!/usr/bin/env python3
"""A test host in its own network namespace, reachable only over a veth pair (stdlib only).

    python3 -m testkit.netns up   [--state-dir D] [--client-alive 1:2]  # prints JSON, leaves it up
    python3 -m testkit.netns cut|restore|clear-loss NAME
    python3 -m testkit.netns loss NAME PERCENT
    python3 -m testkit.netns down NAME                                   # teardown
    python3 -m testkit.netns list | sweep                                # leftovers / remove them

From Python (tests/faults/conftest.py)::

    with NetnsHost(harness_info) as h:        # harness_info: testkit.sshd Info dict
        h.host, h.port, h.user, h.key_text, h.known_hosts_line
        h.cut(); h.restore()                  # link down / up (a silent black hole by default)
        h.loss(20); h.clear_loss()            # nftables: drop 20 % of packets each way

What `start()` does (root only):
  * `ip netns add ojtest-<6 hex>`; a veth pair `ojr<hex>` (root namespace) <-> `ojn<hex>`
    (inside), link-local addresses 169.254.X.(4k+1)/30 (root end) and .(4k+2)/30 (inside, the
    test host's address) on a /30 no other interface uses; `lo` up inside. No default route
    anywhere: the namespace can only talk to the root end, and the root namespace only gets a
    connected /30 route to the namespace.
  * a second OpenSSH server INSIDE the namespace (`ip netns exec NS /usr/sbin/sshd -f CFG -E LOG`)
    on HOST:22, a copy of the loopback harness's sshd_config with its own ListenAddress/Port/
    PidFile: same host key, same user (`orchtest`) and authorized key, so the same client key and
    host key work; a known_hosts file for the new address.
  * a state file /tmp/orchesjob-netns/<ns>.json naming the owner pid: `sweep` (and every new
    start) removes namespaces whose owner died without tearing down (kill -9 of pytest).

`cut(side)`: "ns" (default) sets the namespace end down: the root end loses carrier and every
packet in either direction vanishes without an error (a pulled cable further along the path;
new connections time out). "root" sets the root end down: its connected route disappears, so new
connections fail at once with ENETUNREACH. "both" does both. `restore()` sets both ends up.

`teardown()` (also `__exit__`, and an atexit hook): nft table, every process in the namespace
(the sshd listener, its sessions, jobs started there), the veth pair, the namespace, the state
files. Idempotent; it never touches anything it did not create.
"""

import argparse
import atexit
import json
import os
import random
import re
import shutil
import signal
import sys
import tempfile
import time

from testkit import sshd
from testkit.netns_registry import (
    GUARD_METRIC,
    NFT_TABLE,
    NS_PREFIX,
    REGISTRY_DIR,
    SSHD,
    NetnsError,
    _load_record,
    _ns_pids,
    _registry_path,
    _run,
    check_prerequisites,
    destroy,
    ensure_nft,
    list_namespaces,
    log,
    sweep,
)
from testkit.procs import pid_alive as _pid_alive
from testkit.procs import pid_start_time as _pid_start_time
from testkit.procs import port_open

__all__ = ["NS_PREFIX", "NetnsError", "NetnsHost", "check_prerequisites", "destroy", "ensure_nft",
           "list_namespaces", "sweep"]


# ---------------------------------------------------------------- the host


def _used_ipv4_nets():
    p = _run(["ip", "-4", "-o", "addr", "show"], check=False)
    nets = set()
    for m in re.finditer(r"inet (\d+)\.(\d+)\.(\d+)\.(\d+)/", p.stdout or ""):
        nets.add(tuple(int(x) for x in m.groups()[:3]))
    p = _run(["ip", "-4", "route", "show", "table", "all"], check=False)
    for m in re.finditer(r"(?m)^(?:\S+ )?(\d+)\.(\d+)\.(\d+)\.\d+", p.stdout or ""):
        nets.add(tuple(int(x) for x in m.groups()))
    return nets


def _port_open(host, port, timeout=0.5):
    return port_open(port, host, timeout=timeout, banner=b"SSH-")


class NetnsHost:
    """A test host in a network namespace with its own sshd. Use as a context manager."""

    def __init__(self, harness_info=None, harness_state_dir=None, port=22, client_alive=None, name=None):
        """
        harness_info: the loopback harness's Info dict (testkit.sshd load()/start()); or
        harness_state_dir: where that harness runs (default: the harness default); it must be
            running already (this never starts or stops it).
        client_alive: (interval, count) for the namespace sshd's ClientAliveInterval /
            ClientAliveCountMax, so the *server* drops a client it cannot reach (None: off).
        """
        self.harness_info = harness_info
        self.harness_state_dir = harness_state_dir
        self.port = int(port)
        self.client_alive = client_alive
        suffix = name or "".join(random.choice("0123456789abcdef") for _ in range(6))
        self.ns = NS_PREFIX + suffix
        self.veth_root = "ojr" + suffix
        self.veth_ns = "ojn" + suffix
        self.root_addr = None
        self.host = None
        self.state_dir = None
        self.sshd_pid = None
        self.prefix = None
        self.cut_side = None
        self.loss_percent = 0
        self._started = False
        self._torn_down = False

    # -- life cycle ---------------------------------------------------------------------------
    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.teardown()

    def start(self):
        check_prerequisites()
        if self._started:
            return self
        h = sshd
        info = self.harness_info
        if info is None:
            info = h.load(self.harness_state_dir)
            if info is None:
                where = self.harness_state_dir or h.state_dir_default()
                raise NetnsError(
                    f"the loopback sshd harness is not running in {where} "
                    "(start it first: python3 -m testkit.sshd start)"
                )
        self.harness_info = info
        hp = h.paths(info["state_dir"])
        self.user = info["user"]
        self.home = info.get("home", "")
        self.key_path = info["key_path"]
        self.key_text = info["key_text"]
        self.host_public_key = info["host_public_key"]
        self.target_python = info.get("target_python") or "/usr/bin/python3"
        sweep(verbose=True)
        self._started = True
        atexit.register(self.teardown)
        try:
            self._create(hp)
        except BaseException:
            self.teardown()
            raise
        return self

    def _create(self, hp):
        os.makedirs(REGISTRY_DIR, 0o700, exist_ok=True)
        self.state_dir = tempfile.mkdtemp(prefix=self.ns + ".", dir=REGISTRY_DIR)
        os.chmod(self.state_dir, 0o755)
        self.prefix = None
        self._write_registry()

        used = _used_ipv4_nets()
        for _ in range(200):
            third, block = random.randint(64, 250), random.randint(1, 62) * 4
            if (169, 254, third) not in used:
                break
        else:
            raise NetnsError("no free 169.254.X.0/24 for the test host")
        self.root_addr = f"169.254.{third}.{block + 1}"
        self.host = f"169.254.{third}.{block + 2}"

        _run(["ip", "netns", "add", self.ns])
        self.prefix = f"169.254.{third}.{block}/30"
        self._write_registry()
        # Guard route: with the root end down its connected route goes away and the root
        # namespace's default route would carry packets for the test host out of the machine.
        # An unreachable route (higher metric than the connected one) keeps them local: ENETUNREACH.
        _run(["ip", "route", "add", "unreachable", self.prefix, "metric", GUARD_METRIC])
        _run(["ip", "link", "add", self.veth_root, "type", "veth", "peer", "name", self.veth_ns])
        _run(["ip", "link", "set", self.veth_ns, "netns", self.ns])
        _run(["ip", "addr", "add", self.root_addr + "/30", "dev", self.veth_root])
        _run(["ip", "link", "set", self.veth_root, "up"])
        self.ns_ip(["addr", "add", self.host + "/30", "dev", self.veth_ns])
        self.ns_ip(["link", "set", "lo", "up"])
        self.ns_ip(["link", "set", self.veth_ns, "up"])

        j = os.path.join
        self.config_path = j(self.state_dir, "sshd_config")
        self.log_path = j(self.state_dir, "sshd.log")
        self.pid_path = j(self.state_dir, "sshd.pid")
        self.known_hosts_path = j(self.state_dir, "known_hosts")
        with open(hp["config_path"]) as f:
            base = f.read()
        # Own copy of the host key: the harness may be stopped (its state dir removed) while
        # this sshd still re-reads the key for every new connection.
        host_key = j(self.state_dir, "ssh_host_ed25519_key")
        shutil.copyfile(hp["host_key_path"], host_key)
        os.chmod(host_key, 0o600)
        keep = [
            ln
            for ln in base.splitlines()
            if not re.match(r"(?i)\s*(Port|ListenAddress|PidFile|HostKey|ClientAlive\w*)\s", ln)
        ]
        keep += [
            f"Port {self.port}",
            f"ListenAddress {self.host}",
            f"PidFile {self.pid_path}",
            f"HostKey {host_key}",
        ]
        if self.client_alive:
            interval, count = self.client_alive
            keep += [f"ClientAliveInterval {interval}", f"ClientAliveCountMax {count}"]
        with open(self.config_path, "w") as f:
            f.write("# generated by testkit/netns.py from {}\n".format(hp["config_path"]))
            f.write("\n".join(keep) + "\n")
        with open(self.known_hosts_path, "w") as f:
            f.write(self.known_hosts_line + "\n")
        os.chmod(self.known_hosts_path, 0o644)
        _run([SSHD, "-t", "-f", self.config_path])
        if not os.path.isdir("/run/sshd"):
            os.makedirs("/run/sshd", 0o755)
        _run(["ip", "netns", "exec", self.ns, SSHD, "-f", self.config_path, "-E", self.log_path])
        deadline = time.time() + 10
        while time.time() < deadline:
            if self._read_pid() and _port_open(self.host, self.port):
                break
            time.sleep(0.05)
        else:
            raise NetnsError(
                f"sshd in {self.ns} did not come up on {self.host}:{self.port}; log:\n{self._tail()}"
            )
        self.sshd_pid = self._read_pid()

    def _write_registry(self, owner_pid=None):
        owner = owner_pid or os.getpid()
        tmp = _registry_path(self.ns) + ".tmp"
        with open(tmp, "w") as f:
            json.dump(
                {
                    "ns": self.ns,
                    "owner_pid": owner,
                    "owner_start": _pid_start_time(owner),
                    "state_dir": self.state_dir,
                    "prefix": self.prefix,
                    "veth_root": self.veth_root,
                    "info": self.info() if self.sshd_pid else None,
                },
                f,
            )
        os.rename(tmp, _registry_path(self.ns))

    def teardown(self):
        """Remove the nft table, every process in the namespace, the veth pair, the namespace."""
        if self._torn_down or not self._started:
            return
        self._torn_down = True
        try:
            atexit.unregister(self.teardown)
        except Exception:
            pass
        destroy(self.ns, self.veth_root, self.state_dir, self.prefix)

    def leftovers(self):
        """What of this host still exists (empty list after a clean teardown)."""
        out = []
        if self.ns in list_namespaces():
            out.append("netns " + self.ns)
        if _run(["ip", "link", "show", "dev", self.veth_root], check=False).returncode == 0:
            out.append("veth " + self.veth_root)
        if self.sshd_pid and _pid_alive(self.sshd_pid) and self._pid_is_our_sshd(self.sshd_pid):
            out.append(f"sshd pid {self.sshd_pid}")
        if self.state_dir and os.path.exists(self.state_dir):
            out.append("state dir " + self.state_dir)
        return out

    # -- faults -------------------------------------------------------------------------------
    def cut(self, side="ns"):
        """Take the link down. side: "ns" (silent black hole), "root" (ENETUNREACH), "both"."""
        if side not in ("ns", "root", "both"):
            raise ValueError("side must be 'ns', 'root' or 'both'")
        if side in ("ns", "both"):
            self.ns_ip(["link", "set", self.veth_ns, "down"])
        if side in ("root", "both"):
            _run(["ip", "link", "set", self.veth_root, "down"])
        self.cut_side = side

    def restore(self):
        """Both ends up again (addresses and the connected routes come back with the links)."""
        _run(["ip", "link", "set", self.veth_root, "up"])
        self.ns_ip(["link", "set", self.veth_ns, "up"])
        self.cut_side = None
        deadline = time.time() + 5
        while time.time() < deadline and not _port_open(self.host, self.port, timeout=0.3):
            time.sleep(0.05)

    def drop_sessions(self):
        """Kill the namespace sshd's per-connection processes (not the listener, not the jobs).

        What a host whose sshd gave up on a silent client (ClientAlive*) or a rebooted middlebox
        does to established sessions: during a cut the client does not notice; once the link is
        back its next packet is answered with a TCP RST. Returns the pids killed.
        """
        killed = []
        for pid in _ns_pids(self.ns):
            if pid == self.sshd_pid:
                continue
            try:
                exe = os.readlink(f"/proc/{pid}/exe")
            except OSError:
                continue
            if os.path.basename(exe).startswith("sshd"):
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                except ProcessLookupError:
                    pass
        return killed

    def loss(self, percent):
        """Drop `percent` % of the packets crossing the veth, in each direction (nftables)."""
        percent = int(percent)
        if not 0 <= percent <= 100:
            raise ValueError("percent must be 0..100")
        ensure_nft()
        self.clear_loss()
        ruleset = f"""\
table inet {NFT_TABLE} {{
  chain input {{
    type filter hook input priority 0; policy accept;
    iifname "{self.veth_ns}" numgen random mod 100 < {percent} counter drop
  }}
  chain output {{
    type filter hook output priority 0; policy accept;
    oifname "{self.veth_ns}" numgen random mod 100 < {percent} counter drop
  }}
}}
"""
        _run(["ip", "netns", "exec", self.ns, "nft", "-f", "-"], input=ruleset)
        self.loss_percent = percent

    def clear_loss(self):
        if shutil.which("nft"):
            _run(["ip", "netns", "exec", self.ns, "nft", "delete", "table", "inet", NFT_TABLE], check=False)
        self.loss_percent = 0

    def loss_counters(self):
        """Packets dropped so far by the loss rules: {"input": n, "output": m}."""
        p = _run(["ip", "netns", "exec", self.ns, "nft", "list", "table", "inet", NFT_TABLE], check=False)
        out, chain = {}, None
        for line in (p.stdout or "").splitlines():
            m = re.match(r"\s*chain (\w+)", line)
            if m:
                chain = m.group(1)
            m = re.search(r"counter packets (\d+)", line)
            if m and chain:
                out[chain] = int(m.group(1))
        return out

    # -- helpers ------------------------------------------------------------------------------
    def ns_ip(self, args):
        return _run(["ip", "-n", self.ns, *list(args)])

    def ns_exec(self, argv, check=True, timeout=30):
        return _run(["ip", "netns", "exec", self.ns, *list(argv)], check=check, timeout=timeout)

    @property
    def known_hosts_line(self):
        hostspec = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
        return f"{hostspec} {self.host_public_key}"

    def ssh_argv(self, command=None):
        argv = [
            "ssh",
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "UserKnownHostsFile=" + self.known_hosts_path,
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "IdentityAgent=none",
            "-o",
            "ConnectTimeout=5",
            "-o",
            "LogLevel=ERROR",
            "-i",
            self.key_path,
            "-p",
            str(self.port),
            "-l",
            self.user,
            "-T",
            self.host,
        ]
        if command is not None:
            argv.append(command)
        return argv

    def conn_extra(self, conn_timeout=5, **more):
        extra = {
            "private_key": self.key_text,
            "host_key": self.host_public_key,
            "no_host_key_check": False,
            "conn_timeout": conn_timeout,
        }
        extra.update(more)
        return extra

    def conn_json(self, conn_timeout=5, **more):
        """An Airflow `ssh` connection (AIRFLOW_CONN_<ID> JSON form) to this host."""
        return json.dumps(
            {
                "conn_type": "ssh",
                "host": self.host,
                "port": self.port,
                "login": self.user,
                "extra": self.conn_extra(conn_timeout, **more),
            }
        )

    def info(self):
        return {
            "ns": self.ns,
            "veth_root": self.veth_root,
            "veth_ns": self.veth_ns,
            "root_addr": self.root_addr,
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "key_path": self.key_path,
            "host_public_key": self.host_public_key,
            "known_hosts_line": self.known_hosts_line,
            "known_hosts_path": self.known_hosts_path,
            "sshd_pid": self.sshd_pid,
            "log_path": self.log_path,
            "config_path": self.config_path,
            "state_dir": self.state_dir,
        }

    def _read_pid(self):
        try:
            with open(self.pid_path) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def _pid_is_our_sshd(self, pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return self.config_path.encode() in f.read()
        except OSError:
            return False

    def _tail(self, n=30):
        try:
            with open(self.log_path) as f:
                return "\n".join(f.read().splitlines()[-n:])
        except OSError:
            return "(no log)"


# ---------------------------------------------------------------- command line


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=["up", "down", "cut", "restore", "loss", "clear-loss", "list", "sweep"])
    ap.add_argument("name", nargs="?", help="namespace name (ojtest-...)")
    ap.add_argument("percent", nargs="?", type=int, help="for `loss`")
    ap.add_argument("--state-dir", default=None, help="the loopback sshd harness's state dir")
    ap.add_argument("--side", default="ns", choices=["ns", "root", "both"], help="for `cut`")
    ap.add_argument("--client-alive", default=None, help="INTERVAL:COUNT for the namespace sshd")
    a = ap.parse_args(argv)
    try:
        if a.action == "list":
            for ns in list_namespaces():
                print(ns)
            return 0
        if a.action == "sweep":
            print("\n".join(sweep()) or "nothing to sweep")
            return 0
        if a.action == "up":
            ca = tuple(int(x) for x in a.client_alive.split(":")) if a.client_alive else None
            h = NetnsHost(harness_state_dir=a.state_dir, client_alive=ca).start()
            atexit.unregister(h.teardown)
            # The CLI leaves the host up: the registry names a pid that stays alive (sshd).
            h._write_registry(owner_pid=h.sshd_pid)
            print(json.dumps(h.info(), indent=2, sort_keys=True))
            return 0
        if not a.name or not a.name.startswith(NS_PREFIX):
            ap.error(f"{a.action} needs a namespace name ({NS_PREFIX}...)")
        if a.action == "down":
            rec = {}
            try:
                rec = _load_record(a.name)
            except NetnsError:
                pass
            destroy(a.name, rec.get("veth_root"), rec.get("state_dir"), rec.get("prefix"))
            return 0
        rec = _load_record(a.name)
        h = NetnsHost(name=a.name[len(NS_PREFIX) :])
        h.state_dir = rec.get("state_dir")
        info = rec.get("info") or {}
        h.host, h.port = info.get("host"), int(info.get("port") or 22)
        if a.action == "cut":
            h.cut(a.side)
        elif a.action == "restore":
            h.restore()
        elif a.action == "loss":
            if a.percent is None:
                ap.error("loss needs PERCENT")
            h.loss(a.percent)
        elif a.action == "clear-loss":
            h.clear_loss()
    except NetnsError as e:
        log(f"ERROR: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

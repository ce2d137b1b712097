"""The host side of benchmarks/fanout_bench.py: loopback sshd "hosts" in a cgroup per contender,
and the two ways of launching the same jobs (ours through OrchesjobHook.start, the peer's
through the wrapper SSHRemoteJobOperator submits)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import tempfile
from pathlib import Path
from typing import Any


# ------------------------------------------------------------------------------- host side
class Group:
    """A cgroup around the sshd instances of one contender (v1 cpuacct+memory, else v2)."""

    def __init__(self, name: str) -> None:
        self.name = f"{name}-{os.getpid()}"
        v1 = Path("/sys/fs/cgroup/cpuacct")
        if v1.is_dir() and (Path("/sys/fs/cgroup/memory")).is_dir():
            self.dirs = [v1 / self.name, Path("/sys/fs/cgroup/memory") / self.name]
            self.v2 = False
        else:
            self.dirs = [Path("/sys/fs/cgroup") / self.name]
            self.v2 = True
        for d in self.dirs:
            d.mkdir(exist_ok=True)

    def add(self, pid: int) -> None:
        for d in self.dirs:
            (d / "cgroup.procs").write_text(str(pid))

    def cpu_seconds(self) -> float:
        if self.v2:
            stat = (self.dirs[0] / "cpu.stat").read_text()
            return int(re.search(r"usage_usec (\d+)", stat).group(1)) / 1e6  # type: ignore[union-attr]
        return int((self.dirs[0] / "cpuacct.usage").read_text()) / 1e9

    def memory(self) -> int:
        """Resident memory of the group's processes (page cache of logs excluded where known)."""
        if self.v2:
            stat = (self.dirs[0] / "memory.stat").read_text()
            return int(re.search(r"^anon (\d+)", stat, re.M).group(1))  # type: ignore[union-attr]
        stat = (self.dirs[1] / "memory.stat").read_text()
        return int(re.search(r"^total_rss (\d+)", stat, re.M).group(1))  # type: ignore[union-attr]

    def remove(self) -> None:
        for d in self.dirs:
            try:
                procs = (d / "cgroup.procs").read_text().split()
                parent = d.parent / "cgroup.procs"
                for pid in procs:
                    try:
                        parent.write_text(pid)
                    except OSError:
                        pass
                d.rmdir()
            except OSError:
                pass


class Host:
    def __init__(self, contender: str, index: int, group: Group) -> None:
        from testkit import sshd

        self.state = tempfile.mkdtemp(prefix=f"fanout-{contender}{index}-")
        self.info = sshd.start(self.state)
        self.conn_id = f"fanout_{contender}_{index}"
        extra = {"private_key": self.info["key_text"], "host_key": self.info["host_public_key"]}
        os.environ[f"AIRFLOW_CONN_{self.conn_id.upper()}"] = json.dumps(
            {
                "conn_type": "ssh",
                "host": self.info["host"],
                "port": self.info["port"],
                "login": self.info["user"],
                "extra": extra,
            }
        )
        group.add(int(self.info["pid"]))
        self.log = Path(self.info["log_path"])

    def log_mark(self) -> int:
        return self.log.stat().st_size

    def log_counts(self, mark: int) -> tuple[int, int]:
        with self.log.open("rb") as f:
            f.seek(mark)
            text = f.read().decode("utf-8", "replace")
        return text.count("Accepted publickey"), text.count("Starting session: command")

    def stop(self) -> None:
        from testkit import sshd

        try:
            sshd.stop(self.state)
        finally:
            shutil.rmtree(self.state, ignore_errors=True)


# ------------------------------------------------------------------------------- launching
def launch_ours(host: Host, jobs: list[dict[str, Any]], state_dir: str) -> None:
    """One hook for the host: its starts go in ``starts`` batches (up to 200 per exec)."""
    from orchesjob_provider.hooks.orchesjob import OrchesjobHook

    hook = OrchesjobHook(host.conn_id, state_dir=state_dir)
    starts = [{"argv": ["sh", "-c", j["cmd"]], "run_key": f"fanout/{j['tag']}"} for j in jobs]
    answers = hook.start_many(starts)
    for job, answer in zip(jobs, answers):
        if not isinstance(answer, tuple):
            raise SystemExit(f"start of {job['tag']} failed: {answer}")
        job["job_id"] = answer[1].job_id


def launch_peer(host: Host, jobs: list[dict[str, Any]], base_dir: str) -> None:
    from airflow.providers.ssh.utils.remote_job import RemoteJobPaths, build_posix_wrapper_command

    from orchesjob_provider.hooks.orchesjob import OrchesjobHook

    client = OrchesjobHook(host.conn_id).get_conn()  # a paramiko client: one exec per job
    for job in jobs:
        paths = RemoteJobPaths(job_id=job["tag"], remote_os="posix", base_dir=base_dir)
        # the same argv as ours (the wrapper appends its own redirections to the command)
        _, out, _ = client.exec_command(
            build_posix_wrapper_command(f"sh -c {shlex.quote(job['cmd'])}", paths)
        )
        out.read()
        job.update(
            job_id=job["tag"],
            job_dir=paths.job_dir,
            log_file=paths.log_file,
            exit_code_file=paths.exit_code_file,
        )

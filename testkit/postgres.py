"""A throwaway PostgreSQL cluster for a test stack (stdlib only; Linux; Debian's ``postgresql``).

``Postgres(data_dir)``: ``initdb`` into ``data_dir`` (a directory of the stack's home), one
superuser ``airflow`` with a random password (scram-sha-256 over TCP; no Unix socket), one
database ``airflow``, listening on 127.0.0.1 only, on a free port. Started, restarted and stopped
with ``pg_ctl`` (``-m fast``: open sessions are cut, as when a real server restarts).

PostgreSQL refuses to run as root: every server command runs as the ``postgres`` system user of
Debian's package (``setpriv`` to its uid/gid, so no login shell and no PAM are involved); the
data dir is owned by that user and its parents must be traversable (the caller makes the stack's
home 0711). When the tests run as a non-root user, the commands run as that user.

The settings favour speed over durability (fsync, full_page_writes and synchronous_commit off):
the cluster lives as long as one test run. Debian installs the binaries under
/usr/lib/postgresql/<major>/bin (not on PATH): ``bin_dir()`` finds the newest.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import subprocess
from typing import Dict, List, Optional

from testkit.procs import free_port, port_open, tail

#: the Debian system user the server runs as when we are root
SYSTEM_USER = "postgres"
DB_USER = "airflow"
DB_NAME = "airflow"


class PostgresError(RuntimeError):
    pass


def bin_dir() -> Optional[str]:
    """/usr/lib/postgresql/<newest major>/bin when Debian's server package is installed."""
    cands = [d for d in glob.glob("/usr/lib/postgresql/*/bin")
             if os.access(os.path.join(d, "initdb"), os.X_OK)]
    if not cands:
        return None
    return sorted(cands, key=lambda d: int(d.split("/")[-2]) if d.split("/")[-2].isdigit() else 0)[-1]


def require_bin_dir() -> str:
    d = bin_dir()
    if d is None:
        from testkit.prereqs import missing_message

        raise PostgresError(missing_message("postgresql"))
    return d


class Postgres:
    """One throwaway cluster in ``data_dir`` (see the module docstring). ``state`` (port,
    password) lets a later process (``stop`` from the command line) find a running cluster."""

    def __init__(self, data_dir: str, port: Optional[int] = None, password: Optional[str] = None) -> None:
        self.data_dir = os.path.abspath(data_dir)
        self.port = port or free_port()
        self.password = password or secrets.token_hex(16)

    # ---- identity
    @property
    def url(self) -> str:
        """The SQLAlchemy URL Airflow uses (psycopg2 driver)."""
        return f"postgresql+psycopg2://{DB_USER}:{self.password}@127.0.0.1:{self.port}/{DB_NAME}"

    def dsn(self) -> Dict[str, object]:
        return {"host": "127.0.0.1", "port": self.port, "user": DB_USER, "password": self.password,
                "dbname": DB_NAME}

    def state(self) -> Dict[str, object]:
        return {"data_dir": self.data_dir, "port": self.port, "password": self.password}

    @property
    def log_path(self) -> str:
        return self.data_dir + ".log"

    # ---- running commands as the server's user
    def _ids(self) -> Optional[pwd.struct_passwd]:
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            raise PostgresError(f"no {SYSTEM_USER!r} system user (Debian's postgresql package creates it): "
                                "run scripts/test.sh or apt-get install postgresql") from None

    def _run(self, args: List[str], timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        ids = self._ids()
        argv = list(args)
        if ids is not None:
            argv = ["setpriv", f"--reuid={ids.pw_uid}", f"--regid={ids.pw_gid}", "--init-groups", "--", *argv]
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
               "HOME": ids.pw_dir if ids else os.environ.get("HOME", "/")}
        p = subprocess.run(argv, env=env, cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise PostgresError(f"{' '.join(args)} exited {p.returncode}:\n{p.stdout[-3000:]}\n"
                                f"server log:\n{tail(self.log_path, 30)}")
        return p

    def _chown(self, path: str) -> None:
        ids = self._ids()
        if ids is not None:
            os.chown(path, ids.pw_uid, ids.pw_gid)

    # ---- life cycle
    def initdb(self) -> None:
        """Create the cluster (once: a data dir that already holds one is kept)."""
        bins = require_bin_dir()
        if os.path.exists(os.path.join(self.data_dir, "PG_VERSION")):
            return
        os.makedirs(self.data_dir, mode=0o700, exist_ok=True)
        self._chown(self.data_dir)
        pwfile = self.data_dir + ".pw"
        with open(os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(self.password + "\n")
        self._chown(pwfile)
        for path in (self.log_path,):
            open(path, "a").close()
            self._chown(path)
        try:
            self._run([os.path.join(bins, "initdb"), "-D", self.data_dir, "-U", DB_USER,
                       f"--pwfile={pwfile}", "--auth-host=scram-sha-256", "--auth-local=reject",
                       "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"], timeout=300)
        finally:
            os.unlink(pwfile)
        with open(os.path.join(self.data_dir, "postgresql.auto.conf"), "a") as f:
            f.write("\n".join([
                "listen_addresses = '127.0.0.1'",
                f"port = {self.port}",
                "unix_socket_directories = ''",
                "max_connections = 300",
                "shared_buffers = 32MB",
                "fsync = off", "full_page_writes = off", "synchronous_commit = off",
                "logging_collector = off",
                "log_line_prefix = '%m [%p] %u '",
                "",
            ]))

    def start(self, timeout: float = 60) -> None:
        bins = require_bin_dir()
        self._run([os.path.join(bins, "pg_ctl"), "-D", self.data_dir, "-l", self.log_path,
                   "-o", f"-p {self.port}", "-w", "-t", str(int(timeout)), "start"], timeout=timeout + 30)
        if not port_open(self.port):
            raise PostgresError(f"postgres is not listening on 127.0.0.1:{self.port}:\n"
                                + tail(self.log_path, 30))

    def create_database(self) -> None:
        """CREATE DATABASE airflow (idempotent), through psql as the superuser over TCP."""
        bins = require_bin_dir()
        env = {"PGPASSWORD": self.password, "PATH": "/usr/bin:/bin"}
        base = [os.path.join(bins, "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", DB_USER,
                "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-Atc"]
        have = subprocess.run([*base, f"SELECT 1 FROM pg_database WHERE datname = '{DB_NAME}'"], env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
        if have.returncode != 0:
            raise PostgresError(f"psql failed: {have.stderr}")
        if have.stdout.strip() != "1":
            p = subprocess.run([*base, f"CREATE DATABASE {DB_NAME}"], env=env, stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=60)
            if p.returncode != 0:
                raise PostgresError(f"CREATE DATABASE failed: {p.stderr}")

    def setup(self) -> None:
        """initdb (once), start, create the database."""
        self.initdb()
        if not self.running():
            self.start()
        self.create_database()

    def running(self) -> bool:
        bins = bin_dir()
        if bins is None or not os.path.exists(os.path.join(self.data_dir, "PG_VERSION")):
            return False
        return self._run([os.path.join(bins, "pg_ctl"), "-D", self.data_dir, "status"],
                         timeout=30, check=False).returncode == 0

    def stop(self, timeout: float = 60) -> None:
        """pg_ctl stop -m fast (idempotent; immediate mode when fast does not finish in time)."""
        bins = bin_dir()
        if bins is None or not self.running():
            return
        p = self._run([os.path.join(bins, "pg_ctl"), "-D", self.data_dir, "-m", "fast", "-w",
                       "-t", str(int(timeout)), "stop"], timeout=timeout + 30, check=False)
        if p.returncode != 0 and self.running():
            self._run([os.path.join(bins, "pg_ctl"), "-D", self.data_dir, "-m", "immediate", "-w", "stop"],
                      timeout=60, check=False)

    def restart(self, timeout: float = 60) -> None:
        """pg_ctl restart -m fast: every session is cut; the server is back when this returns."""
        bins = require_bin_dir()
        self._run([os.path.join(bins, "pg_ctl"), "-D", self.data_dir, "-l", self.log_path, "-m", "fast",
                   "-o", f"-p {self.port}", "-w", "-t", str(int(timeout)), "restart"], timeout=timeout + 30)

    def pid(self) -> Optional[int]:
        try:
            with open(os.path.join(self.data_dir, "postmaster.pid")) as f:
                return int(f.readline().strip())
        except (OSError, ValueError):
            return None

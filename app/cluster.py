"""A local PostGIS cluster for development and tests, run from a folder the project owns.

`initdb` and `pg_ctl` refuse to run as root, so when we are root they run as the `postgres`
system user on a data folder that user owns.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from hashlib import sha1
from pathlib import Path

from app.errors import ClusterError

APT_PACKAGE = "postgresql-{version}-postgis-3"


def _is_root() -> bool:
    return os.geteuid() == 0


def pg_bindir() -> Path:
    """The newest PostgreSQL server binaries on this machine."""
    candidates = sorted(
        (Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1]
    found = shutil.which("pg_config")
    if found:
        out = subprocess.run([found, "--bindir"], capture_output=True, text=True, check=False).stdout.strip()
        if out and (Path(out) / "initdb").exists():
            return Path(out)
    raise ClusterError(
        "PostgreSQL server binaries not found. Install them (Debian: apt-get install postgresql) "
        "or set DATABASE_URL to an existing PostGIS database."
    )


def pg_version(bindir: Path) -> str:
    """The major version of the server in `bindir`."""
    return bindir.parent.name if bindir.parent.name.isdigit() else "15"


def postgis_installed(bindir: Path) -> bool:
    """Whether the PostGIS extension is available to this server."""
    version = pg_version(bindir)
    return bool(glob.glob(f"/usr/share/postgresql/{version}/extension/postgis.control"))


def ensure_postgis(bindir: Path, allow_install: bool = True) -> None:
    """Install PostGIS with apt-get when it is missing and we may; else say what to install."""
    if postgis_installed(bindir):
        return
    package = APT_PACKAGE.format(version=pg_version(bindir))
    prefix: list[str] | None = None
    if allow_install and shutil.which("apt-get"):
        if _is_root():
            prefix = []
        elif (
            shutil.which("sudo")
            and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0
        ):
            prefix = ["sudo", "-n"]
    if prefix is None:
        raise ClusterError(
            f"PostGIS is not installed. Install it with: sudo apt-get install {package} "
            "(or set DATABASE_URL to an existing PostGIS database)."
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"Installing {package} with apt-get…", flush=True)
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", package]):
        proc = subprocess.run([*prefix, *cmd], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise ClusterError(f"`{' '.join(cmd)}` failed: {proc.stderr.strip()[-500:]}")
    if not postgis_installed(bindir):
        raise ClusterError(f"{package} was installed but PostGIS is still not found.")


def free_port() -> int:
    """A TCP port on the loopback that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _postgres_can_use(path: Path) -> bool:
    """Whether the postgres user can traverse every folder down to `path`."""
    proc = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(path)], capture_output=True)
    return proc.returncode == 0


@dataclass
class Cluster:
    """A PostgreSQL cluster in `root/pg`, listening on 127.0.0.1 only, trust auth for local use."""

    root: Path
    dbname: str = "raices"

    def __post_init__(self) -> None:
        self.root = self.root.resolve()
        self.bindir = pg_bindir()
        self.as_postgres = _is_root()
        self.state_file = self.root / "cluster.json"

    @property
    def datadir(self) -> Path:
        """The cluster's data folder (outside `root` when postgres cannot reach `root`)."""
        if self.state_file.exists():
            return Path(json.loads(self.state_file.read_text())["datadir"])
        return self._choose_datadir()

    def _choose_datadir(self) -> Path:
        inside = self.root / "pg"
        if not self.as_postgres or _postgres_can_use(self.root):
            return inside
        tag = sha1(str(self.root).encode()).hexdigest()[:10]
        return Path("/var/tmp") / f"raices-pg-{tag}"

    @property
    def port(self) -> int:
        return int(json.loads(self.state_file.read_text())["port"])

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{self.dbname}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd="/")
        if check and proc.returncode != 0:
            raise ClusterError(f"{args[0]} failed: {(proc.stderr or proc.stdout).strip()[-800:]}")
        return proc

    def initialised(self) -> bool:
        return self.state_file.exists() and (self.datadir / "PG_VERSION").exists()

    def init(self) -> None:
        """Create the cluster (once)."""
        if self.initialised():
            return
        datadir = self._choose_datadir()
        self.root.mkdir(parents=True, exist_ok=True)
        if datadir.exists():
            shutil.rmtree(datadir)
        datadir.mkdir(parents=True)
        if self.as_postgres:
            shutil.chown(datadir, "postgres", "postgres")
            datadir.chmod(0o700)
        self._run("initdb", "-D", str(datadir), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale")
        port = free_port()
        conf = (
            "\n# raices local cluster\n"
            f"port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n"
            "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            "logging_collector = off\n"
        )
        with (datadir / "postgresql.conf").open("a") as fh:
            fh.write(conf)
        self.state_file.write_text(json.dumps({"datadir": str(datadir), "port": port}))

    def running(self) -> bool:
        if not self.initialised():
            return False
        return self._run("pg_ctl", "status", "-D", str(self.datadir), check=False).returncode == 0

    def start(self) -> None:
        """Start the server (idempotent) and create the database."""
        self.init()
        if not self.running():
            log = self.datadir / "server.log"
            self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.datadir), "-l", str(log))
        self._wait_ready()
        self._create_database()
        (self.root / "database_url").write_text(self.url + "\n")
        self.state_file.write_text(
            json.dumps({"datadir": str(self.datadir), "port": self.port, "url": self.url})
        )

    def _wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.2)
        raise ClusterError(f"PostgreSQL did not accept connections on port {self.port}.")

    def _create_database(self) -> None:
        import psycopg

        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True
        ) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.dbname,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{self.dbname}"')

    def stop(self) -> bool:
        """Stop the server; True when one was running."""
        if not self.running():
            return False
        self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.datadir))
        return True

    def destroy(self) -> None:
        """Stop the server and delete its files."""
        try:
            self.stop()
        finally:
            datadir = self.datadir
            shutil.rmtree(datadir, ignore_errors=True)
            shutil.rmtree(self.root, ignore_errors=True)

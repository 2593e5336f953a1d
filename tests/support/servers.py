"""Servers the tests and the benchmarks make for themselves: PostgreSQL clusters and PgBouncer.

Everything runs on loopback, on free ports, in temporary directories; as root, as the
``postgres`` user (PostgreSQL and PgBouncer both refuse to run as root), otherwise as the
caller. Each server is started and stopped by whoever needs it and stopped by its own pid;
the shared server on 5432 is only ever a PgBouncer upstream, never restarted or signalled.

Waits are on states (a port that accepts, a query that answers), each bounded by a
deadline so a server that never comes up fails the test instead of hanging it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

SERVER_USER = "postgres"
START_TIMEOUT = 60.0  # seconds: a bound on a hung start, not a wait for time to pass
STOP_TIMEOUT = 30.0


def pg_bindir() -> Path:
    """Where the PostgreSQL server binaries are (``pg_config --bindir``)."""
    found = shutil.which("pg_config")
    if found is not None:
        out = subprocess.run([found, "--bindir"], capture_output=True, text=True, check=True)
        bindir = Path(out.stdout.strip())
        if (bindir / "initdb").exists():
            return bindir
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    return Path("/usr/lib/postgresql/bin")


def which(name: str) -> str | None:
    if name in ("initdb", "pg_ctl", "pg_basebackup", "postgres"):
        path = pg_bindir() / name
        return str(path) if path.exists() else None
    return shutil.which(name) or (
        f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(
    port: int, *, until: float, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Return once something accepts on 127.0.0.1:``port``; fail past ``until``."""
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            pass
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server on port {port} exited with {process.returncode}")
        if time.monotonic() > until:
            raise TimeoutError(f"nothing accepts on port {port}")
        time.sleep(0.02)


def _run_as() -> str | None:
    """Who runs the servers: the postgres user under root, else whoever runs this."""
    return SERVER_USER if os.geteuid() == 0 else None


def chown_to_server_user(path: Path) -> None:
    if os.geteuid() == 0:
        user = pwd.getpwnam(SERVER_USER)
        os.chown(path, user.pw_uid, user.pw_gid)


def server_dir(prefix: str) -> Path:
    """A fresh temporary directory the servers' user owns."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    chown_to_server_user(path)
    path.chmod(0o700)
    return path


def as_server_user(
    args: list[str], *, check: bool = True, timeout: float = START_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run a server tool as the servers' user, bounded in time."""
    return subprocess.run(
        args,
        user=_run_as(),
        capture_output=True,
        text=True,
        check=check,
        timeout=timeout,
        cwd="/",
    )


# -- PostgreSQL -----------------------------------------------------------------------------


@dataclass
class Cluster:
    """One PostgreSQL server of the tests' own: a data directory, a port, a pid."""

    name: str
    data: Path
    port: int
    options: dict[str, str] = field(default_factory=dict)
    """Settings given on the command line (``-c``), so a base backup does not copy them."""

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://{SERVER_USER}@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{SERVER_USER}@127.0.0.1:{self.port}/{database}"

    @property
    def pid(self) -> int | None:
        """The postmaster's pid, from its pid file; None when it is not running."""
        try:
            first = (self.data / "postmaster.pid").read_text().split("\n", 1)[0]
        except (FileNotFoundError, PermissionError):
            return None
        return int(first) if first.strip() else None

    def _pg_ctl(self, action: str, *args: str, check: bool = True) -> None:
        """``pg_ctl action`` on this data directory, waiting (bounded) for it to finish."""
        as_server_user(
            [
                str(pg_bindir() / "pg_ctl"),
                action,
                "--wait",
                f"--timeout={int(START_TIMEOUT)}",
                "-D",
                str(self.data),
                *args,
            ],
            check=check,
            timeout=START_TIMEOUT + 5,
        )

    def _server_options(self) -> list[str]:
        settings = {
            "port": str(self.port),
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.data),
            **self.options,
        }
        options = " ".join(f"-c {key}={value}" for key, value in settings.items())
        return ["-l", str(self.data / "server.log"), "-o", options]

    def start(self) -> None:
        self._pg_ctl("start", *self._server_options())
        wait_for_port(self.port, until=time.monotonic() + START_TIMEOUT)

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m mode``, which signals the pid in the data directory's pid file."""
        if self.pid is not None:
            self._pg_ctl("stop", "-m", mode, check=False)

    def restart(self, mode: str = "fast") -> None:
        """``pg_ctl restart -m mode``: the same server back on the same port."""
        self._pg_ctl("restart", "-m", mode, *self._server_options())

    def promote(self) -> None:
        """``pg_ctl promote``: a standby becomes a primary (returns once it accepts writes)."""
        self._pg_ctl("promote")

    def kill_leftover(self) -> None:
        """Last resort for a server a failed test left running: SIGQUIT to its pid."""
        pid = self.pid
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGQUIT)
        except ProcessLookupError:
            return

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join((self.data / "server.log").read_text().splitlines()[-lines:])
        except OSError:
            return ""


HBA = """\
local all all trust
host all all 127.0.0.1/32 trust
host replication all 127.0.0.1/32 trust
"""


def init_cluster(name: str, options: dict[str, str] | None = None) -> Cluster:
    """A new cluster (``initdb``) with trust on loopback, not started."""
    data = server_dir(f"tss-pg-{name}-") / "data"
    as_server_user(
        [str(pg_bindir() / "initdb"), "-D", str(data), "-U", SERVER_USER, "--auth=trust",
         "--no-sync", "--no-instructions", "-E", "UTF8", "--locale=C"]
    )  # fmt: skip
    hba = data / "pg_hba.conf"
    hba.write_text(HBA)
    chown_to_server_user(hba)
    return Cluster(name, data, free_port(), dict(options or {}))


def base_backup(primary: Cluster, name: str, application_name: str) -> Cluster:
    """A streaming standby of ``primary`` (``pg_basebackup -R``), not started."""
    data = server_dir(f"tss-pg-{name}-") / "data"
    source = f"host=127.0.0.1 port={primary.port} user={SERVER_USER}"
    as_server_user(
        [str(pg_bindir() / "pg_basebackup"), "-D", str(data),
         "-d", f"{source} application_name={application_name}",
         "--write-recovery-conf", "--checkpoint=fast", "--wal-method=stream", "--no-sync"]
    )  # fmt: skip
    return Cluster(name, data, free_port())


@contextmanager
def running(*clusters: Cluster) -> Iterator[None]:
    """Start the clusters; on the way out, stop each that still runs, then remove its files."""
    try:
        for cluster in clusters:
            cluster.start()
        yield
    finally:
        for cluster in clusters:
            cluster.stop("immediate")
            cluster.kill_leftover()
            shutil.rmtree(cluster.data.parent, ignore_errors=True)


# -- PgBouncer ------------------------------------------------------------------------------

PGBOUNCER_USER = "root"


@dataclass
class PgBouncer:
    """PgBouncer on a loopback port, in front of one PostgreSQL server."""

    directory: Path
    port: int
    pool_mode: str
    process: subprocess.Popen[bytes]

    def url(self, database: str = "test", driver: str = "asyncpg") -> str:
        return f"postgresql+{driver}://{PGBOUNCER_USER}@127.0.0.1:{self.port}/{database}"

    def admin(self, command: str) -> list[dict[str, str]]:
        """Run ``command`` on PgBouncer's admin console (simple query protocol, by psql)."""
        out = subprocess.run(
            [
                which("psql") or "psql",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                PGBOUNCER_USER,
                "-d",
                "pgbouncer",
                "--no-psqlrc",
                "-A",
                "-F",
                "\t",
                "-P",
                "footer=off",
                "-c",
                command,
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
        lines = out.stdout.splitlines()
        if not lines:
            return []
        header = lines[0].split("\t")
        return [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]

    def stats(self, database: str = "test") -> Counter[str]:
        """``SHOW STATS`` for ``database``: the totals, as integers (none yet: zeros)."""
        for row in self.admin("SHOW STATS"):
            if row["database"] == database:
                return Counter({k: int(v) for k, v in row.items() if k != "database"})
        return Counter()

    def log(self) -> str:
        try:
            return (self.directory / "pgbouncer.log").read_text()
        except OSError:
            return ""


@contextmanager
def pgbouncer(
    pool_mode: str,
    *,
    upstream_port: int = 5432,
    database: str = "test",
    pool_size: int = 4,
    extra: dict[str, str] | None = None,
) -> Iterator[PgBouncer]:
    """Debian's PgBouncer in ``pool_mode`` before 127.0.0.1:``upstream_port``; stopped by
    pid (SIGINT: its safe shutdown) when the block ends."""
    directory = server_dir("tss-pgbouncer-")
    port = free_port()
    settings = {
        "listen_addr": "127.0.0.1",
        "listen_port": str(port),
        "unix_socket_dir": "",
        "auth_type": "trust",
        "auth_file": str(directory / "users.txt"),
        "admin_users": PGBOUNCER_USER,
        "stats_users": PGBOUNCER_USER,
        "pool_mode": pool_mode,
        "default_pool_size": str(pool_size),
        "max_client_conn": "500",
        "logfile": str(directory / "pgbouncer.log"),
        "pidfile": str(directory / "pgbouncer.pid"),
        "server_tls_sslmode": "disable",
        "ignore_startup_parameters": "extra_float_digits",
        **(extra or {}),
    }
    config = directory / "pgbouncer.ini"
    config.write_text(
        "[databases]\n"
        f"{database} = host=127.0.0.1 port={upstream_port} dbname={database}\n"
        "[pgbouncer]\n" + "".join(f"{key} = {value}\n" for key, value in settings.items())
    )
    # trust still needs the user to exist in auth_file (the upstream server trusts it).
    (directory / "users.txt").write_text(f'"{PGBOUNCER_USER}" ""\n')
    for path in (config, directory / "users.txt"):
        chown_to_server_user(path)
    binary = which("pgbouncer")
    assert binary is not None
    process = subprocess.Popen(
        [binary, str(config)],
        user=_run_as(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd="/",
    )
    try:
        wait_for_port(port, until=time.monotonic() + START_TIMEOUT, process=process)
        yield PgBouncer(directory, port, pool_mode, process)
    finally:
        stop_process(process)
        shutil.rmtree(directory, ignore_errors=True)


def stop_process(process: subprocess.Popen[bytes], sig: int = signal.SIGINT) -> None:
    """Signal a process we started, by its pid; kill it if it outlives STOP_TIMEOUT."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)

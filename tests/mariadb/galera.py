"""A MariaDB Galera cluster of the tests' own: N nodes on loopback, started and stopped by pid.

Each node gets free loopback ports (client, group communication, IST, SST), a data
directory made by ``mariadb-install-db`` under one temporary directory, and its own option
file. As root, the servers run as the ``mysql`` user (``--user=mysql``): the joiner's rsync
state transfer fails with "Permission denied" when the server runs as root. Node 1
bootstraps the cluster (``--wsrep-new-cluster``); the others join it one at a time by rsync
SST (``mariabackup`` is not installed here).

Every wait is for a state (the node answers, its ``wsrep_local_state_comment`` is
``Synced``, ``wsrep_cluster_size`` is N) and bounded in time; nothing sleeps for a fixed
duration. The calls block: from async code under load, run them in a thread
(``await anyio.to_thread.run_sync(cluster.restart, 3)``).

Group-communication timeouts are shorter than Galera's defaults (a dead node is evicted
after about 3 s, not 15 s), so a test that kills a node stays short. The figures a test
measures around a kill depend on them; ``EVS_OPTIONS`` says what they are.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

WSREP_PROVIDER = "/usr/lib/galera/libgalera_smm.so"
SERVER = "mariadbd"
INSTALL_DB = "mariadb-install-db"
CLIENT = "mariadb"

# Shorter than the defaults (keepalive 1 s, suspect 5 s, inactive 15 s, install 7.5 s):
# a SIGKILLed node leaves the membership in about 3 s instead of 15.
EVS_OPTIONS = (
    "evs.keepalive_period=PT0.5S;evs.inactive_check_period=PT0.5S;"
    "evs.suspect_timeout=PT2S;evs.inactive_timeout=PT3S;evs.install_timeout=PT3S;"
    "evs.join_retrans_period=PT0.5S"
)

START_TIMEOUT = 90.0
"""Seconds a node may take to answer and reach ``Synced`` (an rsync SST included)."""
STOP_TIMEOUT = 30.0


class GaleraError(RuntimeError):
    """The cluster did not reach the state a test waited for; the message says which."""


def galera_available() -> str | None:
    """Why a cluster cannot be started here, or None if everything it needs is installed."""
    for program in (SERVER, INSTALL_DB, CLIENT, "rsync", "wsrep_sst_rsync"):
        if shutil.which(program) is None:
            return f"{program} is not installed"
    if not Path(WSREP_PROVIDER).exists():
        return f"no Galera provider at {WSREP_PROVIDER}"
    return None


def _free_ports(count: int) -> list[int]:
    """Ports the kernel says are free on 127.0.0.1 now (held open together, so distinct)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class GaleraNode:
    """One node: its ports, files and (while running) its server process."""

    number: int
    """1-based, as the node's name (``node1``) and the helpers' arguments spell it."""
    port: int
    gcomm_port: int
    ist_port: int
    sst_port: int
    home: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def datadir(self) -> Path:
        return self.home / "data"

    @property
    def socket_path(self) -> Path:
        return self.home / "mysqld.sock"

    @property
    def config(self) -> Path:
        return self.home / "my.cnf"

    @property
    def log(self) -> Path:
        return self.home / "error.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class GaleraCluster:
    """N Galera nodes on loopback; see the module docstring. Use :func:`galera_cluster`."""

    def __init__(self, root: Path, size: int = 3, *, cluster_name: str = "tss_test") -> None:
        if size < 1:
            raise ValueError("a cluster has at least one node")
        self.root = root
        self.cluster_name = cluster_name
        ports = _free_ports(4 * size)
        self.nodes = [
            GaleraNode(
                number=i + 1,
                port=ports[4 * i],
                gcomm_port=ports[4 * i + 1],
                ist_port=ports[4 * i + 2],
                sst_port=ports[4 * i + 3],
                home=root / f"node{i + 1}",
            )
            for i in range(size)
        ]
        self._as_mysql = os.geteuid() == 0

    # -- addresses ----------------------------------------------------------------------

    def node(self, number: int) -> GaleraNode:
        if not 1 <= number <= len(self.nodes):
            raise ValueError(f"no node {number} in a cluster of {len(self.nodes)}")
        return self.nodes[number - 1]

    def url(self, number: int, driver: str = "asyncmy", database: str = "test") -> str:
        """A SQLAlchemy URL for node ``number`` (root, no password, database ``test``)."""
        return f"mysql+{driver}://root@127.0.0.1:{self.node(number).port}/{database}"

    def urls(self, driver: str = "asyncmy") -> list[str]:
        return [self.url(node.number, driver) for node in self.nodes]

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Make every node's files, bootstrap node 1, then join the others one by one."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._chown(self.root)
        for node in self.nodes:
            self._prepare(node)
        self._launch(self.node(1), bootstrap=True)
        self._wait_synced(self.node(1))
        self.sql(1, "CREATE DATABASE IF NOT EXISTS test")
        for node in self.nodes[1:]:
            self._launch(node, bootstrap=False)
            self._wait_synced(node)
        self.wait_for_size(len(self.nodes))

    def kill(self, number: int) -> None:
        """SIGKILL node ``number`` (no shutdown, as a crash) and reap it."""
        node = self.node(number)
        if node.process is None:
            raise GaleraError(f"node{number} is not running")
        node.process.send_signal(signal.SIGKILL)
        node.process.wait(timeout=STOP_TIMEOUT)
        node.process = None

    def restart(self, number: int) -> None:
        """Start node ``number`` again and wait until it has rejoined and is Synced.

        After a SIGKILL its recorded position is unknown, so it rejoins by state transfer
        from a surviving node."""
        node = self.node(number)
        if node.running:
            raise GaleraError(f"node{number} is still running")
        self._launch(node, bootstrap=False)
        self._wait_synced(node)

    def stop(self) -> None:
        """SIGTERM every running node, SIGKILL any still there after ``STOP_TIMEOUT``."""
        for node in self.nodes:
            if node.running:
                assert node.process is not None
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            if node.process is not None:
                try:
                    node.process.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    node.process.kill()
                    node.process.wait(timeout=STOP_TIMEOUT)
                node.process = None

    # -- state --------------------------------------------------------------------------

    def sql(self, number: int, statement: str) -> list[list[str]]:
        """Run ``statement`` on node ``number`` through the command-line client (its unix
        socket, so no TCP user is needed); the rows as lists of strings."""
        node = self.node(number)
        done = subprocess.run(
            [
                CLIENT,
                "--no-defaults",
                "--protocol=socket",
                f"--socket={node.socket_path}",
                "--user=root",
                "--batch",
                "--skip-column-names",
                "--connect-timeout=2",
                "-e",
                statement,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            raise GaleraError(f"node{number}: {done.stderr.strip()}")
        return [line.split("\t") for line in done.stdout.splitlines()]

    def status(self, number: int) -> dict[str, str]:
        """Node ``number``'s ``wsrep_%`` status variables."""
        rows = self.sql(number, "SHOW GLOBAL STATUS LIKE 'wsrep%'")
        return {row[0]: row[1] if len(row) > 1 else "" for row in rows}

    def wait_for_size(self, size: int, timeout: float = START_TIMEOUT) -> None:
        """Wait until every running node reports ``wsrep_cluster_size`` = ``size``, is
        Synced and ready (so a node killed has been evicted, or one restarted counted)."""
        deadline = time.monotonic() + timeout
        seen: dict[int, str] = {}
        while True:
            running = [node for node in self.nodes if node.running]
            for node in running:
                try:
                    status = self.status(node.number)
                except GaleraError as error:
                    seen[node.number] = str(error)
                    continue
                seen[node.number] = (
                    f"size={status.get('wsrep_cluster_size')} "
                    f"state={status.get('wsrep_local_state_comment')} "
                    f"ready={status.get('wsrep_ready')}"
                )
            if running and all(
                seen.get(node.number) == f"size={size} state=Synced ready=ON" for node in running
            ):
                return
            if time.monotonic() > deadline:
                raise GaleraError(f"cluster size did not reach {size} in {timeout} s: {seen}")
            time.sleep(0.1)  # polling a state, not waiting for time to pass

    # -- internals ----------------------------------------------------------------------

    def _chown(self, path: Path) -> None:
        if self._as_mysql:
            shutil.chown(path, "mysql", "mysql")

    def _prepare(self, node: GaleraNode) -> None:
        node.home.mkdir(parents=True, exist_ok=True)
        self._chown(node.home)
        addresses = ",".join(f"127.0.0.1:{n.gcomm_port}" for n in self.nodes)
        provider_options = (
            f"gmcast.listen_addr=tcp://127.0.0.1:{node.gcomm_port};"
            f"ist.recv_addr=127.0.0.1:{node.ist_port};"
            f"gcache.size=16M;{EVS_OPTIONS}"
        )
        node.config.write_text(
            "[mariadbd]\n"
            f"datadir={node.datadir}\n"
            f"socket={node.socket_path}\n"
            f"pid-file={node.home / 'mariadbd.pid'}\n"
            f"log-error={node.log}\n"
            f"port={node.port}\n"
            "bind-address=127.0.0.1\n"
            "skip-name-resolve\n"
            "character-set-server=utf8mb4\n"
            "collation-server=utf8mb4_general_ci\n"
            "innodb_buffer_pool_size=32M\n"
            "innodb_log_file_size=16M\n"
            "max_connections=200\n"
            "binlog_format=ROW\n"
            "default_storage_engine=InnoDB\n"
            "innodb_autoinc_lock_mode=2\n"
            "wsrep_on=ON\n"
            f"wsrep_provider={WSREP_PROVIDER}\n"
            f"wsrep_cluster_name={self.cluster_name}\n"
            f"wsrep_cluster_address=gcomm://{addresses}\n"
            f"wsrep_node_name=node{node.number}\n"
            f"wsrep_node_address=127.0.0.1:{node.gcomm_port}\n"
            f'wsrep_provider_options="{provider_options}"\n'
            "wsrep_sst_method=rsync\n"
            f"wsrep_sst_receive_address=127.0.0.1:{node.sst_port}\n"
        )
        command = [
            INSTALL_DB,
            f"--defaults-file={node.config}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ]
        if self._as_mysql:
            command.append("--user=mysql")
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise GaleraError(f"{INSTALL_DB} failed for node{node.number}: {done.stderr[-2000:]}")

    def _launch(self, node: GaleraNode, *, bootstrap: bool) -> None:
        command = [SERVER, f"--defaults-file={node.config}"]
        if self._as_mysql:
            command.append("--user=mysql")
        if bootstrap:
            command.append("--wsrep-new-cluster")
        node.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )

    def _wait_synced(self, node: GaleraNode) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        last = "no answer yet"
        while True:
            if not node.running:
                raise GaleraError(f"node{node.number} exited:\n{node.log_tail()}")
            try:
                status = self.status(node.number)
                state = status.get("wsrep_local_state_comment")
                if state == "Synced" and status.get("wsrep_ready") == "ON":
                    return
                last = f"state={state}"
            except GaleraError as error:
                last = str(error)
            if time.monotonic() > deadline:
                raise GaleraError(
                    f"node{node.number} not Synced in {START_TIMEOUT} s ({last}):\n"
                    f"{node.log_tail()}"
                )
            time.sleep(0.1)  # polling a state, not waiting for time to pass


@contextmanager
def galera_cluster(size: int = 3) -> Iterator[GaleraCluster]:
    """A started cluster of ``size`` nodes, stopped and deleted afterwards (even if it
    failed to start)."""
    root = Path(tempfile.mkdtemp(prefix="tss-galera-"))
    cluster = GaleraCluster(root, size)
    try:
        cluster.start()
        yield cluster
    finally:
        try:
            cluster.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)

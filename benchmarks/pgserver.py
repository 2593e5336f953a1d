"""A PostgreSQL server of the benchmark's own: a fresh cluster in a temporary directory.

The contenders together hold more than 100 connections (16 per pooled store, twice for the
counting pass), more than a default server allows and more than a server shared with other
test runs should see; and a benchmark wants a server nothing else is loading. So the run
starts its own from the PostgreSQL binaries on this machine (``pg_config --bindir``), with
the packaged defaults except the connection limit and shared_buffers, durable as shipped
(fsync and synchronous_commit on). As root it runs as the ``postgres`` user. It listens on
a free loopback port, trusts local connections (user ``bench``), and is stopped (fast
shutdown, by its pid) and deleted on exit.
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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from wire import free_port

USER = "bench"
SETTINGS = {
    "max_connections": "300",
    "shared_buffers": "512MB",
    "listen_addresses": "127.0.0.1",
}


def bindir() -> Path | None:
    """Where initdb and postgres are, or None when PostgreSQL's server is not installed."""
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    path = Path(out.stdout.strip())
    return path if (path / "initdb").exists() and (path / "postgres").exists() else None


@contextmanager
def temporary_server() -> Iterator[tuple[str, int, str]]:
    """Start a cluster; yield (host, port, superuser); stop and remove it on exit."""
    binaries = bindir()
    if binaries is None:
        raise RuntimeError("PostgreSQL server binaries not found (pg_config --bindir)")
    run_as: dict[str, Any] = {}
    home = Path(tempfile.mkdtemp(prefix="tss-bench-pg-"))
    if os.geteuid() == 0:  # postgres refuses to run as root
        account = pwd.getpwnam("postgres")
        run_as = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        os.chown(home, account.pw_uid, account.pw_gid)
    data = home / "data"
    port = free_port()
    process: subprocess.Popen[bytes] | None = None
    log = open(home / "server.log", "wb")  # noqa: SIM115 (closed in finally)
    try:
        subprocess.run(
            [str(binaries / "initdb"), "-D", str(data), "-U", USER, "--auth=trust",
             "--encoding=UTF8", "--locale=C.UTF-8"],
            check=True, capture_output=True, **run_as,
        )  # fmt: skip
        options = [f"-c{name}={value}" for name, value in SETTINGS.items()]
        process = subprocess.Popen(
            [str(binaries / "postgres"), "-D", str(data), "-p", str(port),
             "-k", str(home), *options],
            stdout=log, stderr=log, **run_as,
        )  # fmt: skip
        _wait_until_accepting(process, binaries, port, home / "server.log")
        yield "127.0.0.1", port, USER
    finally:
        if process is not None:
            process.send_signal(signal.SIGINT)  # fast shutdown
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()
        shutil.rmtree(home, ignore_errors=True)


def _wait_until_accepting(
    process: subprocess.Popen[bytes], binaries: Path, port: int, log: Path
) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"postgres exited at start: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                pass
            ready = subprocess.run(
                [
                    str(binaries / "pg_isready"),
                    "-q",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-U",
                    USER,
                ],
                check=False,
            )
            if ready.returncode == 0:
                return
        except OSError:
            pass
        time.sleep(0.05)  # polling a state (the server accepting), bounded by the deadline
    raise RuntimeError("postgres did not accept connections within 60 s")

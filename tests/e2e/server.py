"""A real server process for end-to-end tests: started on a free port, its log kept.

The test waits for uvicorn's "Application startup complete" line, not for time to pass;
on leaving the block the server is stopped (SIGTERM, uvicorn's graceful shutdown) and its
whole log is in :attr:`Server.log`, so a line logged after the last response is read too.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

STARTUP_TIMEOUT = 60.0  # seconds: a bound on a hung start, not a wait for time to pass
REPOSITORY = Path(__file__).resolve().parent.parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    url: str
    log: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.log)


@contextmanager
def serve(
    command: Callable[[int], list[str]], *, cwd: Path, env: dict[str, str] | None = None
) -> Iterator[Server]:
    """Run ``command(port)`` (a server that logs to stderr) until the block ends."""
    port = free_port()
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY), **(env or {})}
    process = subprocess.Popen(
        command(port), cwd=cwd, env=environment, stderr=subprocess.PIPE, text=True
    )
    server = Server(f"http://127.0.0.1:{port}")
    watchdog = threading.Timer(STARTUP_TIMEOUT, process.kill)
    watchdog.start()
    assert process.stderr is not None
    for line in process.stderr:  # uvicorn says when it listens; no polling, no sleeping
        server.log.append(line)
        if "Application startup complete" in line:
            break
    watchdog.cancel()
    if process.poll() is not None:
        pytest.fail("the server did not start:\n" + server.text)
    drain = threading.Thread(target=lambda: server.log.extend(process.stderr or ()), daemon=True)
    drain.start()
    try:
        yield server
    finally:
        process.terminate()
        process.wait(timeout=30)
        drain.join(timeout=30)


def uvicorn(*arguments: str) -> Callable[[int], list[str]]:
    """``python -m uvicorn ARGUMENTS --port PORT`` with this interpreter."""
    return lambda port: [sys.executable, "-m", "uvicorn", *arguments, "--port", str(port)]

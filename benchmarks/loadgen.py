"""A small HTTP/1.1 load generator, for machines without wrk: same job, same JSON line.

    python benchmarks/loadgen.py URL METHOD COOKIE_NAME COOKIES_FILE CONNECTIONS SECONDS

Keep-alive connections send one request at a time each, cycling through the cookies so no
two requests in flight share a session. Prints one JSON object (the fields of wrk's
``done`` in web.py). It is slower than wrk and shares the CPUs with the server; results say
which generator ran.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from itertools import count
from pathlib import Path
from urllib.parse import urlsplit

from timing import percentile


async def main(
    url: str, method: str, name: str, cookies: list[str], connections: int, seconds: float
) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    turn = count()
    latencies: list[float] = []
    errors = [0, 0]  # socket errors, non-2xx statuses
    deadline = time.perf_counter() + seconds

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while (started := time.perf_counter()) < deadline:
                cookie = cookies[next(turn) % len(cookies)]
                body = b"" if method == "GET" else b"\r\nContent-Length: 0"
                writer.write(
                    f"{method} {parts.path} HTTP/1.1\r\nHost: {host}\r\n"
                    f"Cookie: {name}={cookie}".encode()
                    + body
                    + b"\r\n\r\n"
                )
                status_line = await reader.readline()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - started)
                if not status_line.split(b" ")[1].startswith(b"2"):
                    errors[1] += 1
        except (OSError, asyncio.IncompleteReadError):
            errors[0] += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    print(
        json.dumps(
            {
                "requests": len(latencies),
                "duration_us": int(elapsed * 1e6),
                "errors": errors[0],
                "status_errors": errors[1],
                "p50_us": percentile(latencies, 50) * 1e6,
                "p99_us": percentile(latencies, 99) * 1e6,
            }
        )
    )


if __name__ == "__main__":
    url, method, name, path, connections, seconds = sys.argv[1:7]
    cookies = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    asyncio.run(main(url, method, name, cookies, int(connections), float(seconds)))

"""Instructions per request of the in-process apps, counted by valgrind (callgrind): a
load-independent figure for the request path, where requests/s on a shared machine are
noise. For each app and route, in_process.py runs under ``valgrind --tool=callgrind
--instr-atstart=no``, one request at a time, and turns the counting on (callgrind_marks.c,
through ctypes) only for its ``--requests`` measured requests: start-up, imports and
warm-up are not counted. This process's instructions only: the database server's are not.

    python benchmarks/instructions.py --url postgresql+asyncpg://root@127.0.0.1/test \\
        [--cases store:read,byhand:read] [--requests 500]

Prints a Markdown table (benchmarks/results/profile.md has one). A case takes some 20 s.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CASES = "none:none,store:none,byhand:read,store:read,byhand:write,store:write"


def instructions(url: str, app: str, route: str, requests: int, table: str, marks: Path) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        command = [
            "valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
            sys.executable, str(HERE / "in_process.py"), "--url", url, "--app", app,
            "--route", route, "--requests", str(requests), "--warmup", "200",
            "--concurrency", "1", "--table", table, "--callgrind-marks", str(marks),
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        found = re.search(r"Collected : (\d+)", done.stderr)
        if found is None:
            raise RuntimeError(f"no callgrind total in: {done.stderr[-500:]}")
        return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--cases", default=CASES, help="app:route,...")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--table", default="tss_instructions")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        marks = Path(tmp) / "callgrind_marks.so"
        subprocess.run(
            ["cc", "-shared", "-fPIC", "-O2", "-o", str(marks), str(HERE / "callgrind_marks.c")],
            check=True,
        )
        # One table of seeded sessions for every run (in_process.py seeds 160 more each time).
        print("| app | route | instructions/request |")
        print("|---|---|---|")
        for case in args.cases.split(","):
            app, route = case.split(":")
            total = instructions(args.url, app, route, args.requests, args.table, marks)
            print(f"| {app} | /{route} | {total / args.requests:,.0f} |", flush=True)


if __name__ == "__main__":
    main()

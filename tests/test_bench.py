"""The benchmark harness runs end to end: `benchmarks/run.py --quick` in seconds.

It starts a PostgreSQL server of its own, times every contender installed here (the peers
are installed only by `nox -s bench`, so here they are reported absent; MariaDB's part runs
on the machine's server when one answers), serves the web app
under uvicorn, fills, measures and purges tables, renews a table's sessions for a simulated
day, and writes results.json and results.md. The figures
of a quick run mean nothing; what this test holds to is the harness working, and the round
trips it counts at the wire, which are exact: one per load, two per load+save.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.selection import unavailable

ROOT = Path(__file__).resolve().parent.parent


def test_quick_run_measures_everything_and_writes_the_results(tmp_path: Path) -> None:
    if shutil.which("pg_config") is None:
        unavailable(
            "the benchmark starts its own PostgreSQL server: pg_config --bindir not found",
            "POSTGRES",
        )
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--out", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
        # The harness imports tests.support (shared with the tests): importable from an
        # editable install by itself, from an unpacked sdist by this path.
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())

    contenders = results["operations"]["contenders"]
    for key in ("store", "store-app-engine", "asyncpg-pool", "asyncpg-conn", "store-sqlite"):
        wire = contenders[key]["wire"]
        assert wire["load"]["round_trips"] == 1, key
        assert wire["load+save"]["round_trips"] == 2, key
    cells = results["operations"]["results"]["postgres"]
    for cell in ("load c=1", "load c=16", "load+save c=1", "load+save c=16"):
        assert cells[cell]["store"]["ops_per_s"] > 0
        assert len(cells[cell]["store"]["ops_per_s_rounds"]) == results["meta"]["plan"]["rounds"]
        assert cells[cell]["asyncpg-pool"]["ratio"] == 1
    web = results["web"]["cells"]
    for app in ("none", "store", "byhand"):
        for route in ("none", "read", "write"):
            assert web[f"{app} {route}"]["requests_per_s"] > 0
            assert web[f"{app} {route}"]["errors"] == 0, f"{app} /{route}"
    for route in ("read", "write"):  # the session layer against the app written by hand
        assert web[f"store {route}"]["ratio_byhand"] > 0
    in_process = results["in_process"]["cells"]
    for app in ("none", "store", "byhand"):
        for route in ("none", "read", "write"):
            cell = in_process[f"{app} {route}"]
            assert cell["requests_per_s"] > 0
            assert cell["cpu_us_per_request"] > 0
    assert in_process["byhand read"]["ratio"] == 1
    purge = results["growth"]["purge"]
    assert purge["removed"] == purge["expired_rows"] == results["meta"]["plan"]["growth_sizes"][-1]
    paced = results["purge"]
    assert paced["targets"] == {"p99_ratio": 1.5, "idle_rows_per_s": 100_000}
    assert set(paced["p99_ratio"]) == {"paced", "unpaced"}
    assert len(paced["under_load"]["paced"]) == results["meta"]["plan"]["pacing_rounds"]
    removed = sum(
        phase["purge"]["removed"]
        for key in ("paced", "unpaced")
        for phase in paced["under_load"][key]
    ) + sum(idle["removed"] for idle in paced["idle"].values())
    # Topped up before each purge; each is cancelled when its phase ends.
    assert 0 < removed <= paced["filled_rows"]
    plan = results["meta"]["plan"]
    for size in plan["growth_sizes"]:  # every table's size, index by index, and its purge
        sizes = results["growth"]["bytes"][str(size)]
        assert min(sizes["table"], sizes["pkey"], sizes["expires_at"]) > 0
        assert sizes["total"] >= sizes["table"] + sizes["pkey"] + sizes["expires_at"]
        assert results["growth"]["purges"][str(size)]["removed"] == size
    # A day of renewals: each session renewed once a simulated 30 minutes; the store's own
    # touches counted in pg_stat_user_tables, none of them HOT (expires_at is indexed).
    renewals = plan["bloat_sessions"] * plan["bloat_minutes"] // 30
    for day in results["bloat"]["variants"].values():
        assert day["renewals"] == renewals
        assert day["store_touches"]["counted"] == day["store_touches"]["updated"] > 0
        assert day["hot_updates"] == day["store_touches"]["hot"] == 0

    # MariaDB: the machine's server (CI has one; elsewhere the run leaves it out).
    mariadb = results["operations"]["results"].get("mariadb")
    if os.environ.get("TYPED_SESSION_SQL_REQUIRE_MARIADB") == "1":
        assert mariadb is not None
    if mariadb is not None:
        for key in (
            "store-mariadb", "store-mariadb-sqlalchemy", "asyncmy-pool", "asyncmy-conn",
            "asyncmy-prepared",
        ):  # fmt: skip
            wire = contenders[key]["wire"]
            assert wire["load"]["round_trips"] == 1, key
            assert wire["load+save"]["round_trips"] == 2, key
        for cell in ("load c=1", "load c=16", "load+save c=1", "load+save c=16"):
            assert mariadb[cell]["store-mariadb"]["ops_per_s"] > 0
            assert mariadb[cell]["asyncmy-pool"]["ratio"] == 1

    report = (tmp_path / "results.md").read_text()
    if mariadb is not None:
        assert "## 3. MariaDB" in report
    for heading in (
        "## 1. Load", "## 2. SQLite", "## 4. Through a real server", "### In process",
        "## 5. Growth", "## 6. A day of renewals", "## 7. Purge pacing",
    ):  # fmt: skip
        assert heading in report
    if importlib.util.find_spec("matplotlib") is not None:
        for plot in ("operations.png", "web.png", "growth.png"):
            assert (tmp_path / plot).read_bytes().startswith(b"\x89PNG")

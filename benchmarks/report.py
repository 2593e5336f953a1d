"""Turns a run's results into results.json, results.md and PNG plots.

    python benchmarks/report.py [DIR]     # re-render DIR/results.json (default results/)

Medians over rounds; the spread is the lowest and highest round. Ratios are taken round by
round against the floor measured in the same round, then their median.
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from peers import DESIGNS

CELLS = ("load c=1", "load c=16", "load+save c=1", "load+save c=16")
ROUTES = ("none", "read", "write")
APPS = {
    "none": "no session middleware",
    "store": "typed-session-sql (PostgreSQL)",
    "byhand": "by hand: cookie, blake3, one SELECT on asyncpg's pool",
    "starsessions": "starsessions (Redis)",
}
PLOTS = ("operations.png", "web.png", "growth.png")
ORDER = (
    "store", "store-app-engine", "asyncpg-pool", "asyncpg-conn", "django", "flask-session",
    "advanced-alchemy", "starsessions-redis", "store-sqlite", "aiosqlite", "store-mariadb",
    "store-mariadb-sqlalchemy", "asyncmy-pool", "asyncmy-conn", "asyncmy-prepared",
)  # fmt: skip
GROUPS = ("sqlite", "mariadb")  # timed apart; every other server is timed with PostgreSQL


def _contenders(ops: dict[str, Any], server: str | None = None) -> list[tuple[str, Any]]:
    """The contenders in the order the tables list them (results.json keeps keys sorted),
    of one group ("sqlite", "mariadb", or "postgres": PostgreSQL and Redis)."""
    known = ops["contenders"]
    keys = [k for k in ORDER if k in known] + sorted(set(known) - set(ORDER))
    chosen = [(k, known[k]) for k in keys]
    if server is None:
        return chosen
    return [
        (k, c)
        for k, c in chosen
        if (c["server"] if c["server"] in GROUPS else "postgres") == server
    ]


QUICK = " (--quick: proves the harness works; the numbers mean nothing)"


README_BEGIN = "<!-- benchmark figures: written by benchmarks/run.py from results.json -->"
README_END = "<!-- end of benchmark figures -->"


def write(results: dict[str, Any], out: Path, readme: Path | None = None) -> None:
    """Write the results into ``out``; with ``readme``, also the figures between its
    markers (a full run into benchmarks/results/ keeps the README in step)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    plotted = plot(results, out)
    (out / "results.md").write_text(markdown(results, plotted))
    if readme is not None:
        text = readme.read_text()
        if README_BEGIN in text and README_END in text:
            before, rest = text.split(README_BEGIN, 1)
            after = rest.split(README_END, 1)[1]
            figures = readme_figures(results)
            readme.write_text(f"{before}{README_BEGIN}\n{figures}{README_END}{after}")


def readme_figures(results: dict[str, Any]) -> str:
    """The README's headline table, plot and one line of figures per part."""
    meta = results["meta"]
    ops = results["operations"]
    cells = ops["results"]["postgres"]
    load, save = cells["load c=16"], cells["load+save c=16"]
    peers = [k for k in ("django", "flask-session", "advanced-alchemy") if k in load]
    best = max(peers, key=lambda k: load[k]["ratio"] + save[k]["ratio"])
    web = results["web"]["cells"]
    growth = results["growth"]
    sizes = list(growth["latency"]["load c=16"])
    g_load, g_save = growth["latency"]["load c=16"], growth["latency"]["load+save c=16"]
    purge = growth["purge"]
    star = (
        f" ({_n(web['starsessions read']['requests_per_s'])} and "
        f"{_n(web['starsessions write']['requests_per_s'])} with starsessions on Redis)"
        if "starsessions read" in web
        else ""
    )
    paragraphs = [
        f"Measured {meta['date']} in one run of `nox -s bench` ({meta['wall_seconds'] / 60:.0f} "
        f"min) on {meta['machine']['cpus']} CPUs shared by PostgreSQL, Redis, the client and the "
        "load generator; ops/s are medians of alternated rounds, ratios (in brackets) are to "
        "raw asyncpg through its own pool in the same rounds.",
        f"- **Load and save**: at 16 concurrent the store on its own engine ran at "
        f"{load['store']['ratio']:.2f}x raw asyncpg's pool for loads and "
        f"{save['store']['ratio']:.2f}x for load+save, on an application's engine at "
        f"{load['store-app-engine']['ratio']:.2f}x / {save['store-app-engine']['ratio']:.2f}x; "
        f"the fastest SQL-backed peer, {ops['contenders'][best]['label']}, at "
        f"{load[best]['ratio']:.2f}x / {save[best]['ratio']:.2f}x.",
        f"- **Through uvicorn**: with the middleware, a request that does not touch the session "
        f"ran at {web['store none']['ratio']:.2f}x the requests/s of the same app without it; "
        "reading the session ran at "
        f"{_n(web['store read']['requests_per_s'])} requests/s and writing it at "
        f"{_n(web['store write']['requests_per_s'])}{star}.",
        f"- **Growth**: from {int(sizes[0]):,} to {int(sizes[-1]):,} rows, load p50 went from "
        f"{_ms(g_load[sizes[0]]['p50_ms'])} to {_ms(g_load[sizes[-1]]['p50_ms'])} ms and "
        f"load+save p50 from {_ms(g_save[sizes[0]]['p50_ms'])} to "
        f"{_ms(g_save[sizes[-1]]['p50_ms'])} ms (16 concurrent); a purge removed "
        f"{purge['removed']:,} expired rows at {_n(purge['rows_per_s'])} rows/s while the p99 "
        f"of concurrent loads went from {_ms(purge['loads']['before']['p99_ms'])} to "
        f"{_ms(purge['loads']['during']['p99_ms'])} ms.",
    ]
    mariadb = ops["results"].get("mariadb")
    if mariadb:
        m_load, m_save = mariadb["load c=16"], mariadb["load+save c=16"]
        paragraphs.insert(
            2,
            f"- **MariaDB**: at 16 concurrent the store ran at "
            f"{m_load['store-mariadb']['ratio']:.2f}x raw asyncmy's pool for loads and "
            f"{m_save['store-mariadb']['ratio']:.2f}x for load+save (at 1 concurrent "
            f"{mariadb['load c=1']['store-mariadb']['ratio']:.2f}x / "
            f"{mariadb['load+save c=1']['store-mariadb']['ratio']:.2f}x); through SQLAlchemy's "
            f"executor at {m_load['store-mariadb-sqlalchemy']['ratio']:.2f}x / "
            f"{m_save['store-mariadb-sqlalchemy']['ratio']:.2f}x.",
        )
    wrapped = [
        textwrap.fill(p, 95, subsequent_indent="  " if p.startswith("- ") else "")
        for p in paragraphs
    ]
    plot = "![operations/s of each store, 1 and 16 concurrent](benchmarks/results/operations.png)"
    return "\n".join([headline(results), plot, "", wrapped[0], "", *wrapped[1:], ""])


def _n(value: float) -> str:
    return f"{value:,.0f}"


def _ms(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def _spread(values: Iterable[float]) -> str:
    values = list(values)
    return f"{min(values):,.0f}-{max(values):,.0f}" if values else ""


def _rt(wire: dict[str, float]) -> str:
    return f"{round(wire['round_trips'], 1):g}"  # a reconnect in the pass shows as .0x


def headline(results: dict[str, Any]) -> str:
    """The table the README shows: ops/s at 16 concurrent, ratio to raw asyncpg's pool,
    round trips per operation, PostgreSQL contenders only."""
    ops = results["operations"]
    cells = ops["results"]["postgres"]
    lines = [
        "| store | load ops/s (c=16) | load+save ops/s (c=16) | round trips load / load+save |",
        "|---|---|---|---|",
    ]
    for key, info in _contenders(ops, "postgres"):
        load, save = cells["load c=16"][key], cells["load+save c=16"][key]
        wire = info["wire"]
        lines.append(
            f"| {info['label']} | {_n(load['ops_per_s'])} ({load['ratio']:.2f}x) "
            f"| {_n(save['ops_per_s'])} ({save['ratio']:.2f}x) "
            f"| {_rt(wire['load'])} / {_rt(wire['load+save'])} |"
        )
    return "\n".join(lines) + "\n"


def _operations_section(ops: dict[str, Any], server: str, floor_label: str) -> list[str]:
    cells = ops["results"][server]
    lines = [
        "| store | " + " | ".join(CELLS) + " | round trips load / load+save |",
        "|---|" + "---|" * (len(CELLS) + 1),
    ]
    for key, info in _contenders(ops, server):
        row = [info["label"]]
        for cell in CELLS:
            c = cells[cell][key]
            row.append(f"{_n(c['ops_per_s'])} ({c['ratio']:.2f}x)")
        row.append(f"{_rt(info['wire']['load'])} / {_rt(info['wire']['load+save'])}")
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        f"ops/s, median of the rounds (ratio to {floor_label}, median of per-round ratios).",
        "",
        "| store | cell | ops/s | rounds (min-max) | p50 ms | p99 ms | ratio rounds |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, info in _contenders(ops, server):
        for cell in CELLS:
            c = cells[cell][key]
            lines.append(
                f"| {info['label']} | {cell} | {_n(c['ops_per_s'])} "
                f"| {_spread(c['ops_per_s_rounds'])} | {_ms(c['p50_ms'])} | {_ms(c['p99_ms'])} "
                f"| {min(c['ratio_rounds']):.2f}-{max(c['ratio_rounds']):.2f} |"
            )
    return lines


def markdown(results: dict[str, Any], plotted: list[str]) -> str:
    meta = results["meta"]
    machine = meta["machine"]
    plan = meta["plan"]
    lines = [
        "# Benchmark results",
        "",
        f"Run {meta['date']}{QUICK if meta['quick'] else ''} by `nox -s bench` "
        f"(benchmarks/run.py) in {meta['wall_seconds']:.0f} s: {machine['cpus']} CPUs shared by "
        "the client, the servers and the load generator; "
        f"Python {machine['python']}, PostgreSQL {machine['postgresql']} (a server of the run's "
        f"own), SQLite {machine['sqlite']}, on {machine['platform']}. "
        f"Session payload: {meta['payload_json_bytes']} bytes of JSON.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(meta["versions"].items())) + ".",
        "",
        "Cells swing between rounds on a shared machine: read the spread, and compare ratios "
        "within this run, never absolute numbers across runs. Load average (1 min) before the "
        f"run {meta['load_average']['before']:.1f}, after {meta['load_average']['after']:.1f} "
        f"on {machine['cpus']} CPUs: above {machine['cpus']}, other processes were competing.",
        "",
    ]
    ops = results.get("operations")
    if ops:
        lines += [
            "## 1. Load and load+save on PostgreSQL",
            "",
            "load = read a session by its cookie and one field of it; load+save = load, add one "
            "to a counter, save. "
            f"Each cell: {plan['rounds']} rounds of {plan['seconds']:g} s per store, the order "
            f"rotating each round; {plan['sessions']:,} sessions per store, worker w of c using "
            "sessions w, w+c, ... so no two workers share one. Round trips per operation were "
            "counted on the wire by a PostgreSQL protocol proxy (ReadyForQuery messages; "
            "Redis: commands) in a separate pass.",
            "",
        ]
        if "operations.png" in plotted:
            lines += ["![ops/s by store](operations.png)", ""]
        lines += _operations_section(ops, "postgres", "raw asyncpg through its own pool")
        lines += ["", "### Where the designs differ", ""]
        lines += [
            "| store | durable | id at rest | concurrent writes | does a load write? |",
            "|---|---|---|---|---|",
        ]
        for key, design in DESIGNS.items():
            if key in ops["contenders"]:
                lines.append(
                    f"| {ops['contenders'][key]['label']} | {design['durable']} | "
                    f"{design['id at rest']} | {design['concurrent writes']} | "
                    f"{design['load writes']} |"
                )
        if ops["absent"]:
            lines += ["", f"Not installed in this run: {', '.join(ops['absent'])}."]
        lines += [
            "",
            "## 2. SQLite",
            "",
            "The same operations on a SQLite file (WAL), the store against raw aiosqlite with the "
            "store's pragmas; statements per operation counted by SQLite's trace callback.",
            "",
        ]
        lines += _operations_section(ops, "sqlite", "raw aiosqlite")
        if "mariadb" in ops["results"]:
            lines += [
                "",
                "## 3. MariaDB",
                "",
                f"The same operations on MariaDB {machine.get('mariadb')} (the machine's shared "
                "server, InnoDB, a table of the run's own), the store's driver executor (asyncmy) "
                "and SQLAlchemy's executor against raw asyncmy running the same two statements "
                "in autocommit, in its default text protocol, and with its prepared-statement "
                "cache (`stmt_cache_size`) as the store's engine turns it on. Round trips "
                "counted on the wire by a MySQL protocol proxy (commands the client sends). "
                "Settings: "
                + ", ".join(f"{k} {v}" for k, v in (machine.get("mariadb_settings") or {}).items())
                + ".",
                "",
            ]
            lines += _operations_section(ops, "mariadb", "raw asyncmy through its own pool")
    webr = results.get("web")
    if webr:
        lines += [
            "",
            "## 4. Through a real server",
            "",
            f"A Starlette app under uvicorn (its own process), loaded by {webr['generator']} "
            f"over {webr['connections']} keep-alive connections on loopback, every request "
            "carrying a seeded session's cookie. /none never touches the session, /read reads "
            f"one field, /write adds one to a counter. {plan['web_rounds']} rounds of "
            f"{plan['web_seconds']:g} s; in each round the three apps serve a route back to back "
            "(the order rotating), and the ratio is to the app without middleware in that round. "
            "Each app is one uvicorn process (one core at most).",
            "",
        ]
        if "web.png" in plotted:
            lines += ["![requests/s through uvicorn](web.png)", ""]
        lines += [
            "| app | route | requests/s | rounds (min-max) | p50 ms | p99 ms "
            "| vs no middleware (rounds) | vs by hand (rounds) | server CPU µs/request "
            "| errors |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for label, route, c in _app_cells(webr["cells"]):
            by_hand = (
                _ratio(c["ratio_byhand"], c["ratio_byhand_rounds"]) if "ratio_byhand" in c else "-"
            )
            cpu = c.get("cpu_us_per_request")
            lines.append(
                f"| {label} | /{route} | {_n(c['requests_per_s'])} "
                f"| {_spread(c['requests_per_s_rounds'])} | {_ms(c['p50_ms'])} "
                f"| {_ms(c['p99_ms'])} | {_ratio(c['ratio'], c['ratio_rounds'])} "
                f"| {by_hand} | {'-' if cpu is None else f'{cpu:.0f}'} | {c['errors']} |"
            )
    inproc = results.get("in_process")
    if inproc:
        lines += _in_process_section(inproc, plan)
    grow = results.get("growth")
    if grow:
        lines += _growth_section(grow, plan, "growth.png" in plotted)
    if results.get("bloat"):
        lines += _bloat_section(results["bloat"])
    paced = results.get("purge")
    if paced:
        lines += _purge_section(paced)
    return "\n".join(lines) + "\n"


def _app_cells(cells: dict[str, Any]) -> Iterable[tuple[str, str, dict[str, Any]]]:
    """(app's label, route, cell) of each app and route measured, in the tables' order."""
    for app, label in APPS.items():
        for route in ROUTES:
            cell = cells.get(f"{app} {route}")
            if cell is not None:
                yield label, route, cell


def _ratio(median: float, rounds: list[float]) -> str:
    return f"{median:.2f}x ({min(rounds):.2f}-{max(rounds):.2f})"


def _in_process_section(inproc: dict[str, Any], plan: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "### In process",
        "",
        f"The same apps called straight through ASGI in the harness's process, "
        f"{inproc['connections']} requests at a time (benchmarks/in_process.py): no server, "
        "no HTTP parsing, so the session layer's own cost stands out. "
        f"{plan['rounds']} rounds of {plan['seconds']:g} s per app and route, the apps "
        "back to back (the order rotating). /none is compared with the app without "
        "middleware, /read and /write with the by-hand app in the same round. CPU is the "
        "process's CPU time per request: all of the request path but the database "
        "server's. Instructions per request, counted by valgrind and so independent of the "
        "machine's load, are in profile.md.",
        "",
        "| app | route | requests/s | rounds (min-max) | vs reference (rounds) "
        "| CPU µs/request | CPU vs reference |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, route, c in _app_cells(inproc["cells"]):
        lines.append(
            f"| {label} | /{route} | {_n(c['requests_per_s'])} "
            f"| {_spread(c['requests_per_s_rounds'])} "
            f"| {_ratio(c['ratio'], c['ratio_rounds'])} vs {c['reference']} "
            f"| {c['cpu_us_per_request']:.0f} | {c['cpu_ratio']:.2f}x |"
        )
    return lines


def _purge_section(p: dict[str, Any]) -> list[str]:
    """Paced against unpaced purges (benchmarks/purge.py), beside the targets of issue 20."""
    targets, met = p["targets"], p["met"]
    ratio, idle = p["p99_ratio"], p["idle"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "**missed**"

    lines = [
        "",
        "## 7. Purge pacing",
        "",
        f"A table of {p['live_sessions']:,} live sessions and {p['expired_rows']:,} expired rows "
        "(topped up to that before each purge); "
        f"{p['rounds']} round(s) of three {p['seconds']:g} s phases: {p['concurrency']} tasks "
        "load live sessions with no purge, during an unpaced purge (1,000-row batches back to "
        "back, `pacing=None`) and during a paced one (the default, `typed_session_sql.pacing`); "
        "each purge is cancelled when its phase ends. Then a paced and an unpaced purge with "
        "nothing else running (idle).",
        "",
        "| | target | paced | unpaced |",
        "|---|---|---|---|",
        f"| load p99, during the purge / without (median of rounds) | at most "
        f"{targets['p99_ratio']:g}x | {ratio['paced']:.2f}x ({verdict(met['p99_ratio'])}) "
        f"| {ratio['unpaced']:.2f}x |",
        f"| rows/s on an idle database | at least {_n(targets['idle_rows_per_s'])} "
        f"| {_n(idle['paced']['rows_per_s'])} ({verdict(met['idle_rows_per_s'])}) "
        f"| {_n(idle['unpaced']['rows_per_s'])} |",
        "",
        "| round | loads without a purge: p50 / p99 ms | unpaced: p50 / p99 ms, rows/s "
        "| paced: p50 / p99 ms, rows/s, median batch |",
        "|---|---|---|---|",
    ]
    phases = p["under_load"]
    for n, (none, unpaced, paced) in enumerate(
        zip(phases["none"], phases["unpaced"], phases["paced"], strict=True), 1
    ):
        cells = [f"{_ms(none['loads']['p50_ms'])} / {_ms(none['loads']['p99_ms'])}"]
        for phase in (unpaced, paced):
            loads, purge = phase["loads"], phase["purge"]
            cells.append(
                f"{_ms(loads['p50_ms'])} / {_ms(loads['p99_ms'])}, {_n(purge['rows_per_s'])}"
            )
        cells[-1] += f", {purge['median_batch_rows']:,.0f} rows"
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return lines


def _growth_section(grow: dict[str, Any], plan: dict[str, Any], plotted: bool) -> list[str]:
    sizes = list(grow["latency"]["load c=1"])
    lines = [
        "",
        "## 5. Growth",
        "",
        f"Tables of {', '.join(f'{int(s):,}' for s in sizes)} rows ({grow['live_sessions']:,} "
        "live sessions each, the rest expired rows filled server-side), the sizes alternating "
        f"round by round ({plan['growth_rounds']} rounds of {plan['growth_seconds']:g} s).",
        "",
    ]
    if plotted:
        lines += ["![latency by table size, and during a purge](growth.png)", ""]
    lines += [
        "| rows | " + " | ".join(f"{cell} p50 / p99 ms" for cell in CELLS) + " |",
        "|---|" + "---|" * len(CELLS),
    ]
    for size in sizes:
        row = [f"{int(size):,}"]
        for cell in CELLS:
            c = grow["latency"][cell][size]
            row.append(f"{_ms(c['p50_ms'])} / {_ms(c['p99_ms'])}")
        lines.append("| " + " | ".join(row) + " |")
    p = grow["purge"]
    loads = p["loads"]
    lines += [
        "",
        f"Purge of {p['expired_rows']:,} expired rows, 1,000 per statement, while 16 tasks load "
        f"live sessions: {p['removed']:,} rows in {p['seconds']:.1f} s, "
        f"{_n(p['rows_per_s'])} rows/s, {p['batches']} batches (batch p50 "
        f"{_ms(p['batch_ms']['p50'])} ms, p99 {_ms(p['batch_ms']['p99'])} ms, longest "
        f"{_ms(p['batch_ms']['max'])} ms).",
        "",
        "| loads (16 concurrent) | ops/s | p50 ms | p99 ms |",
        "|---|---|---|---|",
    ]
    for when in ("before", "during", "after"):
        c = loads[when]
        lines.append(
            f"| {when} the purge | {_n(c['ops_per_s'])} | {_ms(c['p50_ms'])} | {_ms(c['p99_ms'])} |"
        )
    if "bytes" in grow:
        lines += _sizes_section(grow)
    return lines


def _mb(size: float) -> str:
    return f"{size / 1e6:,.0f}" if size >= 1e7 else f"{size / 1e6:,.1f}"


INDEXES = ("pkey", "expires_at", "principal")


def _sizes_section(grow: dict[str, Any]) -> list[str]:
    steps = grow["step_seconds"]
    lines = [
        "",
        "Sizes (MB) after the fill, and each table's purge of all its expired rows "
        "(`purge_pass`, 1,000 rows a batch, with 16 tasks loading meanwhile); the total after "
        "the purge is before any vacuum (deleted rows leave reusable space, not a smaller file).",
        "",
        "| rows | fill s | table | " + " | ".join(f"index {i}" for i in INDEXES)
        + " | total | purge rows/s | purge s | total after purge |",
        "|---|---|---|" + "---|" * len(INDEXES) + "---|---|---|---|",
    ]  # fmt: skip
    for size, sizes in grow["bytes"].items():
        purge = grow["purges"][size]
        lines.append(
            f"| {int(size):,} | {steps[f'fill {size}']:.1f} | {_mb(sizes['table'])} | "
            + " | ".join(_mb(sizes.get(i, 0)) for i in INDEXES)
            + f" | {_mb(sizes['total'])} | {_n(purge['rows_per_s'])} | {purge['seconds']:.1f}"
            f" | {_mb(purge['bytes_after']['total'])} |"
        )
    return lines


def _bloat_section(bloat: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## 6. A day of renewals",
        "",
        f"{bloat['live_sessions']:,} live sessions, each renewed "
        f"{bloat['renewals_per_session_per_day']} times over {bloat['simulated_minutes']:,} "
        "simulated minutes (the store's touch, an UPDATE of `expires_at`), autovacuum's "
        "trigger applied once a simulated minute (benchmarks/bloat.py). Sizes in MB.",
        "",
        "| settings | renewals | HOT | store touches HOT | vacuums | peak dead rows "
        "| table before / after | " + " | ".join(f"index {i} before / after" for i in INDEXES)
        + " | total before / after |",
        "|---|---|---|---|---|---|---|" + "---|" * len(INDEXES) + "---|",
    ]  # fmt: skip
    for variant, day in bloat["variants"].items():
        before, after = day["bytes_before"], day["bytes_after"]
        touches = day["store_touches"]
        lines.append(
            f"| {variant} | {day['renewals']:,} | {day['hot_updates']:,} "
            f"| {touches['hot']} of {touches['counted']} | {day['vacuums']} "
            f"| {day['dead_rows_peak']:,} | {_mb(before['table'])} / {_mb(after['table'])} | "
            + " | ".join(f"{_mb(before.get(i, 0))} / {_mb(after.get(i, 0))}" for i in INDEXES)
            + f" | {_mb(before['total'])} / {_mb(after['total'])} |"
        )
    return lines


def plot(results: dict[str, Any], out: Path) -> list[str]:
    """Draw the PNGs matplotlib can; returns their names (none without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    drawn = []
    if "operations" in results:
        _plot_operations(plt, results["operations"], out / "operations.png")
        drawn.append("operations.png")
    if "web" in results:
        _plot_web(plt, results["web"], out / "web.png")
        drawn.append("web.png")
    if "growth" in results:
        _plot_growth(plt, results["growth"], out / "growth.png")
        drawn.append("growth.png")
    return drawn


def _plot_operations(plt: Any, ops: dict[str, Any], path: Path) -> None:
    cells = ops["results"]["postgres"]
    keys = [k for k, _ in _contenders(ops, "postgres")]
    labels = [ops["contenders"][k]["label"].replace(" (`", "\n(`").replace("`", "") for k in keys]
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.55 * len(keys) + 1.8), sharey=True)
    for ax, operation in zip(axes, ("load", "load+save"), strict=True):
        for j, concurrency in enumerate((16, 1)):
            cell = cells[f"{operation} c={concurrency}"]
            medians = [cell[k]["ops_per_s"] for k in keys]
            lows = [
                m - min(cell[k]["ops_per_s_rounds"]) for m, k in zip(medians, keys, strict=True)
            ]
            highs = [
                max(cell[k]["ops_per_s_rounds"]) - m for m, k in zip(medians, keys, strict=True)
            ]
            ys = [i + (j - 0.5) * 0.38 for i in range(len(keys))]
            ax.barh(ys, medians, height=0.36, xerr=[lows, highs], capsize=2,
                    label=f"{concurrency} concurrent")  # fmt: skip
        ax.set_title(f"{operation}: operations/s (median, bars: min-max of rounds)")
        ax.grid(axis="x", alpha=0.3)
        ax.legend(loc="lower right")
    axes[0].set_yticks(range(len(keys)), labels, fontsize=8)
    axes[0].invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_web(plt: Any, webr: dict[str, Any], path: Path) -> None:
    cells = webr["cells"]
    apps = [a for a in APPS if f"{a} none" in cells]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(apps)
    for j, app in enumerate(apps):
        xs = [i + (j - (len(apps) - 1) / 2) * width for i in range(len(ROUTES))]
        ax.bar(xs, [cells[f"{app} {r}"]["requests_per_s"] for r in ROUTES], width, label=APPS[app])
    ax.set_xticks(range(len(ROUTES)), [f"/{r}" for r in ROUTES])
    ax.set_ylabel("requests/s (median of rounds)")
    ax.set_title(f"Starlette under uvicorn, {webr['connections']} connections")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_growth(plt: Any, grow: dict[str, Any], path: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    sizes = list(grow["latency"]["load c=1"])
    xs = [int(s) for s in sizes]
    for cell in ("load c=1", "load+save c=1", "load c=16", "load+save c=16"):
        for pct, style in (("p50_ms", "-o"), ("p99_ms", "--x")):
            ys = [grow["latency"][cell][s][pct] for s in sizes]
            left.plot(xs, ys, style, label=f"{cell} {pct[:3]}")
    left.set_xscale("log")
    left.set_xlabel("rows in the table")
    left.set_ylabel("ms")
    left.set_title("latency by table size")
    left.grid(alpha=0.3)
    left.legend(fontsize=7)
    loads = grow["purge"]["loads"]
    whens = ["before", "during", "after"]
    for j, pct in enumerate(("p50_ms", "p99_ms")):
        right.bar([i + (j - 0.5) * 0.4 for i in range(3)], [loads[w][pct] for w in whens], 0.4,
                  label=pct[:3])  # fmt: skip
    right.set_xticks(range(3), [f"{w} the purge" for w in whens])
    right.set_ylabel("load latency, ms (16 concurrent)")
    purge = grow["purge"]
    right.set_title(f"purge of {purge['expired_rows']:,} rows: {purge['rows_per_s']:,.0f} rows/s")
    right.grid(axis="y", alpha=0.3)
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    directory = Path(sys.argv[1]) if len(sys.argv) > 1 else here / "results"
    published = directory.resolve() == here / "results"
    readme = here.parent / "README.md" if published else None
    write(json.loads((directory / "results.json").read_text()), directory, readme)

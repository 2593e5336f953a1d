"""Store failures under the middleware: answered once, logged once, and the request ends.

The store reports a failure (an event, so one log line) where it happens; the middleware
answers it and logs nothing more. Once its error response is out, nothing is re-raised,
whether the middleware sits inside the framework's error handling or around the whole app:
no "Exception in ASGI application" in a real uvicorn's log, and an in-process client that
surfaces app exceptions sees the 503.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.asgi_apps import APP_FACTORIES, Cart
from tests.backends import OutageMemoryBackend
from tests.e2e.server import REPOSITORY, serve, uvicorn
from tests.sql_backends import postgres_sql_backend, require_postgres, unique_name
from tests.support.servers import free_port
from typed_session_sql import MemoryBackend, SessionStore, SqlBackend
from typed_session_sql.asgi import CookieSettings
from typed_session_sql.backend import Record
from typed_session_sql.errors import SessionTableMissingError
from typed_session_sql.ids import IdHasher, new_cookie_value

pytestmark = pytest.mark.anyio

PASSWORD = "s3cret-pw"


def dead_url() -> str:
    """A PostgreSQL URL with a password, where nothing listens: every connect is refused."""
    return f"postgresql+asyncpg://root:{PASSWORD}@127.0.0.1:{free_port()}/test"


@pytest.fixture(params=sorted(APP_FACTORIES))
def framework(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def dead_store() -> AsyncIterator[SessionStore[Cart]]:
    backend = SqlBackend.from_url(dead_url())
    try:
        yield SessionStore(Cart, backend)
    finally:
        await backend.dispose()


class StoreLog(logging.Handler):
    """The records of the ``typed_session_sql`` logger, however the app configured logging
    (Litestar replaces the root logger's handlers, pytest's capture among them)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def lines(self, level: int = logging.WARNING) -> list[str]:
        return [record.getMessage() for record in self.records if record.levelno >= level]

    @property
    def text(self) -> str:
        return "\n".join(self.lines(logging.DEBUG))


@pytest.fixture
def store_log() -> Iterator[StoreLog]:
    logger = logging.getLogger("typed_session_sql")
    handler, level = StoreLog(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def assert_no_secret(text: str, cookie: str | None) -> None:
    assert PASSWORD not in text
    if cookie is not None:
        assert cookie not in text
        assert IdHasher(None)(cookie).hex() not in text


@pytest.mark.parametrize("outside", [False, True], ids=["inside", "around-the-app"])
@pytest.mark.parametrize(
    ("method", "path", "cookie"),
    [("GET", "/show", new_cookie_value()), ("POST", "/add", None)],
    ids=["load", "save"],
)
async def test_a_store_failure_is_a_503_logged_once_and_never_re_raised(
    framework: str,
    outside: bool,
    dead_store: SessionStore[Cart],
    store_log: StoreLog,
    method: str,
    path: str,
    cookie: str | None,
) -> None:
    app = APP_FACTORIES[framework](dead_store, CookieSettings(), outside=outside)
    transport = httpx.ASGITransport(app=app)  # raises whatever the app lets out
    headers = {} if cookie is None else {"cookie": f"__Host-id={cookie}"}
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        response = await client.request(method, path, headers=headers)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    (line,) = store_log.lines()  # one line per failing request: the store's
    assert line == (
        "session store_unavailable: StoreUnavailableError: session store unavailable: "
        "ConnectionRefusedError: [Errno 111] Connect call failed "
        f"('127.0.0.1', {line.rsplit(', ', 1)[1]}"
    )
    assert_no_secret(store_log.text + response.text, cookie)


def test_a_real_uvicorn_logs_each_failing_request_once_and_no_traceback(framework: str) -> None:
    # Around the whole app, where a framework's error middleware sits inside ours and
    # re-raises after its 500 (which we replace with our 503): the case that used to leak.
    env = {"TSS_APP_URL": dead_url(), "TSS_APP_FRAMEWORK": framework, "TSS_APP_OUTSIDE": "1"}
    command = uvicorn("--factory", "tests.asgi_apps:served_app")
    cookie = new_cookie_value()
    with serve(command, cwd=REPOSITORY, env=env) as server, httpx.Client() as client:
        statuses = [
            client.get(f"{server.url}/show", headers={"cookie": f"__Host-id={cookie}"}).status_code,
            client.post(f"{server.url}/add").status_code,
            client.get(f"{server.url}/untouched").status_code,  # needs no store: fine
        ]
    assert statuses == [503, 503, 200]
    assert "Exception in ASGI application" not in server.text
    assert "Traceback" not in server.text
    lines = [line for line in server.log if "session store_unavailable: " in line]
    assert len(lines) == 2, server.text
    assert all("ConnectionRefusedError: [Errno 111]" in line for line in lines)
    assert_no_secret(server.text, cookie)


# -- the session table is missing ---------------------------------------------------------


async def test_a_backend_that_lets_its_drivers_error_out_still_gives_a_503(
    framework: str, store_log: StoreLog
) -> None:
    # A backend written by someone else, forgetting to translate its driver's connection
    # error: the store's boundary does it (it used to escape the middleware: a 500).
    backend = OutageMemoryBackend()
    backend.failure, backend.down = ConnectionRefusedError("[Errno 111] Connect call failed"), True
    app = APP_FACTORIES[framework](SessionStore(Cart, backend), CookieSettings())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        response = await client.get("/show", headers={"cookie": f"__Host-id={new_cookie_value()}"})
    assert response.status_code == 503
    (line,) = store_log.lines()
    assert line == (
        "session store_unavailable: StoreUnavailableError: the session backend failed: "
        "ConnectionRefusedError: [Errno 111] Connect call failed"
    )


class UnmigratedBackend(MemoryBackend):
    """Answers as a SQL backend on a database nobody migrated."""

    def _missing(self) -> SessionTableMissingError:
        return SessionTableMissingError(
            'the session table "typed_sessions" does not exist: '
            "run typed-session-sql migrate upgrade head"
        )

    async def read(self, id_hash: bytes) -> Record | None:
        raise self._missing()

    async def create(self, id_hash: bytes, record: Record) -> bool:
        raise self._missing()


async def test_a_missing_table_is_a_500_without_retry_logged_once_at_error(
    framework: str, store_log: StoreLog
) -> None:
    # Not transient, so not a 503: a client or a load balancer retrying in five seconds
    # finds the same missing table, until someone migrates.
    app = APP_FACTORIES[framework](SessionStore(Cart, UnmigratedBackend()), CookieSettings())
    transport = httpx.ASGITransport(app=app)
    cookie = {"cookie": f"__Host-id={new_cookie_value()}"}
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        loading = await client.get("/show", headers=cookie)
        saving = await client.post("/add")
    for response in (loading, saving):
        assert response.status_code == 500
        assert "retry-after" not in response.headers
        assert response.text == "Sessions are not available on this server.\n"
    errors = store_log.lines()
    assert store_log.lines(logging.ERROR) == errors  # the store's, at ERROR; nothing else
    assert len(errors) == 2
    assert all(
        line.startswith("session table_missing: SessionTableMissingError: ")
        and "typed-session-sql migrate upgrade head" in line
        for line in errors
    )


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
async def test_an_unmigrated_database_names_the_table_in_one_log_line(
    database: str, tmp_path: Path, store_log: StoreLog
) -> None:
    table = unique_name("never_migrated")
    if database == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    else:
        url = require_postgres()
    backend = SqlBackend.from_url(url, table_name=table)
    app = APP_FACTORIES["starlette"](SessionStore(Cart, backend), CookieSettings())
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="https://t") as client:
            response = await client.post("/add")
    finally:
        await backend.dispose()
    assert response.status_code == 500  # not transient: no Retry-After either
    assert "retry-after" not in response.headers
    (line,) = store_log.lines()
    assert line.startswith("session table_missing: SessionTableMissingError: "), line
    assert re.search(rf"\b{table}\b", line), line
    assert "typed-session-sql migrate upgrade head" in line


async def test_a_session_the_store_refuses_is_a_500_logged_with_its_cause(
    store_log: StoreLog,
) -> None:
    async with postgres_sql_backend() as backend:
        store = SessionStore(Cart, backend, max_data_bytes=10)
        app = APP_FACTORIES["starlette"](store, CookieSettings())
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://t") as client:
            response = await client.post("/add")
    assert response.status_code == 500
    assert "set-cookie" not in response.headers
    (line,) = store_log.lines()
    assert line == (
        "session error answered with a 500: SessionTooLargeError: "
        "encoded session data is 31 bytes, the limit is 10"
    )

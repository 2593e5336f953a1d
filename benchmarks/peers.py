"""The peers, on the same servers, doing the same work as the store (see contenders.py).

Each peer runs through its own public API with its defaults, as an application would use it:

- Django's database session backend (``django.contrib.sessions.backends.db``) with psycopg
  3, persistent connections, sync in threads (Django's sessions are sync at heart; its async
  methods wrap the same code in a thread);
- Flask-Session's SQLAlchemy backend (Flask-SQLAlchemy, psycopg 3), sync in threads, inside
  a Flask request context as its interface expects;
- advanced-alchemy's session backend for Litestar (``SQLAlchemyAsyncSessionBackend``) on
  asyncpg;
- starsessions' ``RedisStore`` with its JSON serializer, on Redis.

They are installed only in the ``bench`` nox session's virtualenv, never as dependencies of
the package. Where one is missing, the run records it as absent (``--require-all`` makes
that an error, as ``nox -s bench`` does).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from contenders import CONCURRENCY_MAX, Contender, Endpoints, Shared, visitor_dict

# Per design, in plain words: what each one keeps durable, how the id is stored, and what a
# concurrent write does. Rendered under the peer table in results.md.
DESIGNS: dict[str, dict[str, str]] = {
    "store": {
        "durable": "yes: each write is a committed statement",
        "id at rest": "blake3 hash of the cookie",
        "concurrent writes": "version check: a lost race is replayed (`modify`) or refused;"
        " a deleted session is never written back",
        "load writes": "no (expiry renewal at most once per `renew_after`)",
    },
    "django": {
        "durable": "yes",
        "id at rest": "the cookie value itself",
        "concurrent writes": "last write wins; a save after a concurrent delete raises",
        "load writes": "no",
    },
    "flask-session": {
        "durable": "yes",
        "id at rest": "the cookie value itself",
        "concurrent writes": "last write wins; an upsert brings a deleted session back",
        "load writes": "no, but its default (`SESSION_REFRESH_EACH_REQUEST` with permanent"
        " sessions) saves on every request that opened the session",
    },
    "advanced-alchemy": {
        "durable": "yes",
        "id at rest": "the cookie value itself (cut to 255 characters)",
        "concurrent writes": "last write wins; an upsert brings a deleted session back",
        "load writes": "yes: every load writes the new expiry, in a transaction",
    },
    "starsessions-redis": {
        "durable": "as durable as the Redis server (this one keeps nothing on disk)",
        "id at rest": "the cookie value itself",
        "concurrent writes": "last write wins; a SET brings a deleted session back",
        "load writes": "no, but its middleware saves every session a request loaded",
    },
}

_route = threading.local()  # which Django database alias this thread's queries use


class _DjangoRouter:
    """Sends a counted contender's queries to the alias that goes through the proxy."""

    def db_for_read(self, model: Any, **hints: Any) -> str:
        return getattr(_route, "alias", "default")

    db_for_write = db_for_read

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        return True


_django_configured: dict[bool, Endpoints] = {}


def configure_django(direct: Endpoints, counted: Endpoints) -> None:
    """Django's settings, once per process: "default" straight to PostgreSQL, "counted"
    through the counting proxy, both the same database."""
    import django  # type: ignore[import-untyped]
    from django.conf import settings  # type: ignore[import-untyped]

    def database(at: Endpoints) -> dict[str, Any]:
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": at.pg_database,
            "USER": at.pg_user,
            "HOST": at.pg_host,
            "PORT": str(at.pg_port),
            "CONN_MAX_AGE": None,  # persistent, one per thread
        }

    settings.configure(
        DATABASES={"default": database(direct), "counted": database(counted)},
        DATABASE_ROUTERS=[_DjangoRouter()],
        INSTALLED_APPS=["django.contrib.sessions"],
        USE_TZ=True,
        SECRET_KEY=secrets.token_hex(32),
    )
    django.setup()


class DjangoDb(Contender):
    key = "django"
    label = "Django, database backend (sync, threads)"
    threaded = True

    async def open(self, at: Endpoints, shared: Shared) -> None:
        from django.contrib.sessions.backends.db import (  # type: ignore[import-untyped]
            SessionStore,
        )

        self.alias = "counted" if at.counted else "default"
        self.SessionStore = SessionStore
        self.pool = ThreadPoolExecutor(CONCURRENCY_MAX, thread_name_prefix="django")
        self.keys = shared.sessions
        self.session_keys = shared.keys.setdefault(self.key, [])

    async def seed(self, shared: Shared) -> None:
        from django.core.management import call_command  # type: ignore[import-untyped]

        await self.threads(lambda: call_command("migrate", "sessions", verbosity=0))

        def create(i: int) -> str:
            _route.alias = self.alias
            session = self.SessionStore()
            session.update(visitor_dict(i))
            session.create()
            key: str = session.session_key
            return key

        keys = await asyncio.gather(*(self.threads(create, i) for i in range(shared.sessions)))
        self.session_keys[:] = keys

    def load(self, w: int, k: int) -> None:
        _route.alias = self.alias
        session = self.SessionStore(self.session_keys[k])
        assert session["counter"] >= 0

    def modify(self, w: int, k: int) -> None:
        _route.alias = self.alias
        session = self.SessionStore(self.session_keys[k])
        session["counter"] += 1
        session.save()

    async def close(self) -> None:
        from django.db import connections  # type: ignore[import-untyped]

        def close_mine() -> None:
            connections.close_all()

        assert self.pool is not None
        for _ in range(CONCURRENCY_MAX):  # each thread holds its own connections
            await self.threads(close_mine)
        self.pool.shutdown()


class FlaskSession(Contender):
    key = "flask-session"
    label = "Flask-Session, SQLAlchemy backend (sync, threads)"
    threaded = True

    async def open(self, at: Endpoints, shared: Shared) -> None:
        from flask import Flask
        from flask_session import Session  # type: ignore[import-untyped]
        from flask_sqlalchemy import SQLAlchemy

        app = Flask(f"bench_{'counted' if at.counted else 'direct'}")
        app.config.update(
            SQLALCHEMY_DATABASE_URI=at.pg_url("psycopg"),
            SQLALCHEMY_ENGINE_OPTIONS={"pool_size": CONCURRENCY_MAX},
            SESSION_TYPE="sqlalchemy",
            SESSION_SQLALCHEMY_TABLE="flask_sessions",
            PERMANENT_SESSION_LIFETIME=timedelta(hours=1),
        )
        db = SQLAlchemy(app)
        app.config["SESSION_SQLALCHEMY"] = db
        self.pool = ThreadPoolExecutor(CONCURRENCY_MAX, thread_name_prefix="flask")
        # Flask-Session creates its table when it is set up.
        await self.threads(Session, app)
        self.app, self.db = app, db
        self.keys = shared.sessions
        self.sids = shared.keys.setdefault(self.key, [])

    async def seed(self, shared: Shared) -> None:
        def create(i: int) -> str:
            with self.app.test_request_context("/"):
                from flask import request

                interface = self.app.session_interface
                session = interface.open_session(self.app, request)
                assert session is not None
                session.update(visitor_dict(i))
                interface.save_session(self.app, session, self.app.response_class())
                sid: str = session.sid  # type: ignore[attr-defined]
                return sid

        self.sids[:] = await asyncio.gather(
            *(self.threads(create, i) for i in range(shared.sessions))
        )

    def _open(self, k: int) -> Any:
        from flask import request

        session = self.app.session_interface.open_session(self.app, request)
        assert session is not None
        return session

    def load(self, w: int, k: int) -> None:
        headers = {"Cookie": f"session={self.sids[k]}"}
        with self.app.test_request_context("/", headers=headers):
            assert self._open(k)["counter"] >= 0

    def modify(self, w: int, k: int) -> None:
        headers = {"Cookie": f"session={self.sids[k]}"}
        with self.app.test_request_context("/", headers=headers):
            session = self._open(k)
            session["counter"] += 1
            self.app.session_interface.save_session(self.app, session, self.app.response_class())

    async def close(self) -> None:
        def dispose() -> None:
            with self.app.app_context():
                self.db.engine.dispose()

        await self.threads(dispose)
        assert self.pool is not None
        self.pool.shutdown()


class AdvancedAlchemy(Contender):
    key = "advanced-alchemy"
    label = "advanced-alchemy session backend (Litestar)"

    async def open(self, at: Endpoints, shared: Shared) -> None:
        from advanced_alchemy.extensions.litestar import EngineConfig, SQLAlchemyAsyncConfig
        from advanced_alchemy.extensions.litestar.session import SQLAlchemyAsyncSessionBackend
        from litestar.middleware.session.server_side import ServerSideSessionConfig

        self.config = SQLAlchemyAsyncConfig(
            connection_string=at.pg_url(),
            engine_config=EngineConfig(pool_size=CONCURRENCY_MAX),
            create_all=False,
        )
        self.backend = SQLAlchemyAsyncSessionBackend(
            config=ServerSideSessionConfig(max_age=3600),
            alchemy_config=self.config,
            model=_aa_model(),
        )
        self.keys = shared.sessions
        self.sids = shared.keys.setdefault(self.key, [])

    async def seed(self, shared: Shared) -> None:
        model = _aa_model()
        async with self.config.get_engine().begin() as conn:
            await conn.run_sync(model.metadata.create_all, tables=[model.__table__])
        sids = [secrets.token_hex(16) for _ in range(shared.sessions)]

        async def saver(w: int) -> None:
            for i in range(w, len(sids), CONCURRENCY_MAX):
                data = self.backend.serialize_data(visitor_dict(i))
                await self.backend.set(sids[i], data, None)  # type: ignore[arg-type]

        await asyncio.gather(*(saver(w) for w in range(CONCURRENCY_MAX)))
        self.sids[:] = sids

    async def load(self, w: int, k: int) -> None:
        raw = await self.backend.get(self.sids[k], None)  # type: ignore[arg-type]
        assert self.backend.deserialize_data(raw)["counter"] >= 0

    async def modify(self, w: int, k: int) -> None:
        sid = self.sids[k]
        data = self.backend.deserialize_data(await self.backend.get(sid, None))  # type: ignore[arg-type]
        data["counter"] += 1
        await self.backend.set(sid, self.backend.serialize_data(data), None)  # type: ignore[arg-type]

    async def close(self) -> None:
        await self.config.get_engine().dispose()


_AA_MODEL: list[Any] = []


def _aa_model() -> Any:
    """The session table's model, defined once per process (SQLAlchemy allows one)."""
    if not _AA_MODEL:
        from advanced_alchemy.extensions.litestar.session import SessionModelMixin

        class BenchSession(SessionModelMixin):
            __tablename__ = "aa_sessions"

        _AA_MODEL.append(BenchSession)
    return _AA_MODEL[0]


class Starsessions(Contender):
    key = "starsessions-redis"
    label = "starsessions, RedisStore (not SQL)"
    server = "redis"
    LIFETIME = 3600

    async def open(self, at: Endpoints, shared: Shared) -> None:
        from redis.asyncio import Redis
        from starsessions.serializers import JsonSerializer
        from starsessions.stores.redis import RedisStore

        self.redis = Redis(
            host=at.redis_host, port=at.redis_port, max_connections=CONCURRENCY_MAX * 2
        )
        if not shared.redis_prefix:
            shared.redis_prefix = f"tss-bench-{secrets.token_hex(4)}:"
        self.prefix = shared.redis_prefix
        self.store = RedisStore(connection=self.redis, prefix=self.prefix)
        self.serializer = JsonSerializer()
        self.keys = shared.sessions
        self.sids = shared.keys.setdefault(self.key, [])

    async def seed(self, shared: Shared) -> None:
        sids = [secrets.token_hex(16) for _ in range(shared.sessions)]
        for i, sid in enumerate(sids):
            data = self.serializer.serialize(visitor_dict(i))
            await self.store.write(sid, data, self.LIFETIME, self.LIFETIME)
        self.sids[:] = sids

    async def load(self, w: int, k: int) -> None:
        data = self.serializer.deserialize(await self.store.read(self.sids[k], self.LIFETIME))
        assert data["counter"] >= 0

    async def modify(self, w: int, k: int) -> None:
        sid = self.sids[k]
        data = self.serializer.deserialize(await self.store.read(sid, self.LIFETIME))
        data["counter"] += 1
        await self.store.write(sid, self.serializer.serialize(data), self.LIFETIME, self.LIFETIME)

    async def close(self) -> None:
        await self.redis.aclose()


async def delete_redis_keys(at: Endpoints, prefix: str) -> None:
    """Remove the keys this run wrote (and only those) from the shared Redis."""
    from redis.asyncio import Redis

    redis = Redis(host=at.redis_host, port=at.redis_port)
    try:
        batch: list[bytes] = []
        async for key in redis.scan_iter(match=f"{prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                await redis.delete(*batch)
                batch.clear()
        if batch:
            await redis.delete(*batch)
    finally:
        await redis.aclose()


PEERS: dict[str, tuple[type[Contender], tuple[str, ...]]] = {
    # key: (contender, the modules it needs)
    "django": (DjangoDb, ("django", "psycopg")),
    "flask-session": (FlaskSession, ("flask_session", "flask_sqlalchemy", "psycopg")),
    "advanced-alchemy": (AdvancedAlchemy, ("advanced_alchemy", "litestar")),
    "starsessions-redis": (Starsessions, ("starsessions", "redis")),
}


def json_size(i: int = 0) -> int:
    """The payload's size as compact JSON, for the report."""
    return len(json.dumps(visitor_dict(i), separators=(",", ":")))

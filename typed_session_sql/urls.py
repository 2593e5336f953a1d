"""Database URLs as users write them, made into the async URLs the engine needs.

The library runs on SQLAlchemy's asyncio engine, so a URL must name an async driver. The
URLs platforms and habits hand out name the database and a sync driver, or none:
``postgres://`` (Heroku, Render, Fly), ``postgresql://``, ``postgresql+psycopg2://``,
``mysql://``, ``sqlite:///file.db``. Each names the database without doubt, and for each the
library has one default async driver, so :func:`async_url` maps it there instead of failing
on a driver that is not installed or cannot run under asyncio:

- ``postgres://``, ``postgresql://``, ``postgresql+psycopg2://`` -> ``postgresql+asyncpg://``
  (a ``sslmode`` query option becomes asyncpg's ``ssl``, which takes the same values);
- ``mysql://``, ``mysql+pymysql://``, ``mysql+mysqldb://`` -> ``mysql+asyncmy://``, and
  the same with ``mariadb`` -> ``mariadb+asyncmy://`` (the URL's query options are the
  same for both drivers: ``charset``, ``ssl_ca`` and the like);
- ``sqlite://``, ``sqlite+pysqlite://`` -> ``sqlite+aiosqlite://``.

Anything else is left as written: an async URL passes through untouched (so
``postgresql+psycopg://`` picks psycopg 3, the other PostgreSQL driver the library runs on),
and a URL no installed driver takes fails where the engine is made.
"""

from __future__ import annotations

import re

# scheme (group 1), then everything after "://" (group 2).
_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://(.*)", re.DOTALL)

_ASYNC_SCHEMES = {
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+psycopg2": "postgresql+asyncpg",
    **{
        f"{family}{driver}": f"{family}+asyncmy"
        for family in ("mysql", "mariadb")
        for driver in ("", "+pymysql", "+mysqldb")
    },
    "sqlite": "sqlite+aiosqlite",
    "sqlite+pysqlite": "sqlite+aiosqlite",
}

# The extra that installs each async driver, for error messages.
DRIVER_EXTRAS = {"asyncpg": "postgres", "psycopg": "psycopg", "asyncmy": "mysql", "aiosqlite": ""}


def async_url(url: str) -> str:
    """``url`` with the async driver this library supports for its database, if it named a
    sync driver or none (see the module docstring); any other URL unchanged."""
    match = _URL.fullmatch(url)
    if match is None:
        return url
    scheme, rest = match[1], match[2]
    mapped = _ASYNC_SCHEMES.get(scheme.lower())
    if mapped is None:
        return url
    if mapped == "postgresql+asyncpg":
        # libpq's sslmode is asyncpg's ssl (disable, prefer, require, verify-ca, verify-full).
        rest = re.sub(r"([?&])sslmode=", r"\1ssl=", rest)
    return f"{mapped}://{rest}"

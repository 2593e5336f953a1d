"""Database URLs as users write them, made into the async URLs the engine needs.

The library runs on SQLAlchemy's asyncio engine, so a URL must name an async driver. The
URLs platforms and habits hand out name the database and a sync driver, or none:
``postgres://`` (Heroku, Render, Fly), ``postgresql://``, ``postgresql+psycopg2://``,
``sqlite:///file.db``. Each names the database without doubt, and for each there is
exactly one async driver this library supports, so :func:`async_url` maps it there instead
of failing on a driver that is not installed or cannot run under asyncio:

- ``postgres://``, ``postgresql://``, ``postgresql+psycopg2://`` -> ``postgresql+asyncpg://``
  (a ``sslmode`` query option becomes asyncpg's ``ssl``, which takes the same values);
- ``sqlite://``, ``sqlite+pysqlite://`` -> ``sqlite+aiosqlite://``.

Anything else is left as written: an async URL passes through untouched, and a URL no
installed driver takes fails where the engine is made.
"""

from __future__ import annotations

import re

# scheme (group 1), then everything after "://" (group 2).
_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://(.*)", re.DOTALL)

_ASYNC_SCHEMES = {
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+psycopg2": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+pysqlite": "sqlite+aiosqlite",
}

# The extra that installs each async driver, for error messages.
DRIVER_EXTRAS = {"asyncpg": "postgres", "aiosqlite": ""}


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

"""Database URLs as users write them, made into the async URLs the engine needs.

The library runs on SQLAlchemy's asyncio engine, so a URL must name an async driver. The
URLs platforms and habits hand out name the database and a sync driver, or none:
``postgres://`` (Heroku, Render, Fly), ``postgresql://``, ``postgresql+psycopg2://``,
``mysql://``, ``sqlite:///file.db``. Each names the database without doubt, and for each the
library has one default async driver, so `async_url` maps it there instead of failing
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


# Query options that carry a secret: asyncpg, psycopg and asyncmy all take ?password=.
_SECRET_OPTION = re.compile(r"([?&;][^=&;]*(?:password|passwd|pwd|secret)[^=&;]*=)[^&;]*", re.I)


def mask_password(url: str) -> str:
    """``url`` as written, with every part of a password replaced by ``***``: the one
    between the user name and the host (up to the *last* ``@``, so an unencoded ``@`` in
    the password hides all of it) and any ``?password=`` query option.

    Text that is not ``scheme://...`` becomes ``(a URL that cannot be parsed)``: it may
    still hold a password. Masking errs on the side of hiding: an ``@`` in a query option
    may hide a little more than the password.
    """
    match = _URL.fullmatch(url)
    if match is None:
        return "(a URL that cannot be parsed)"
    scheme, rest = match[1], match[2]
    userinfo, at, host = rest.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        rest = f"{user}:***@{host}" if colon else rest
    return f"{scheme}://" + _SECRET_OPTION.sub(r"\1***", rest)


def mask_passwords_in(text: str, *urls: str) -> str:
    """``text`` with each of ``urls`` (as given on a command line, in an environment
    variable...) replaced by its masked form, every URL-shaped word masked too, and any
    other trace of their passwords (a driver's message quoting a host that a password with
    an unencoded ``@`` ran into, say) replaced by ``***``."""
    # From where the scheme starts: an argument like --url=postgresql://... keeps its name.
    urls = tuple(url[start.start() :] for url in urls if (start := _SCHEME.search(url)))
    for url in sorted(urls, key=len, reverse=True):
        text = text.replace(url, mask_password(url))
    text = _URL_IN_TEXT.sub(lambda m: mask_password(m[0]), text)
    for secret in sorted({s for url in urls for s in _secrets(url)}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _secrets(url: str) -> list[str]:
    """The password parts of ``url`` long enough to tell apart from ordinary words: the
    password, each piece of it between unencoded ``@``, and ``?password=`` values."""
    match = _URL.fullmatch(url)
    if match is None:
        return []
    userinfo, at, _ = match[2].rpartition("@")
    password = userinfo.partition(":")[2] if at else ""
    found = [password, *password.split("@")]
    found += [m[0].partition("=")[2] for m in _SECRET_OPTION.finditer(match[2])]
    return [secret for secret in found if len(secret) >= _MIN_SECRET]


# Shorter fragments are not searched for in text: "***" everywhere a 2-letter password
# happens to appear would garble messages while hiding nothing (URLs are masked anyway).
_MIN_SECRET = 4


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# A URL inside other text: up to the next blank or quote.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]*")

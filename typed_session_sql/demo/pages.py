"""The demo's HTML: one small layout and a function per page. Every value is escaped."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from html import escape
from typing import NamedTuple

_STYLE = """
:root { color-scheme: light dark; --accent: #1d4ed8; --muted: #555; --line: #d4d4d8; }
@media (prefers-color-scheme: dark) { :root { --accent: #93c5fd; --muted: #aaa; --line: #3f3f46; } }
* { box-sizing: border-box; }
body { font: 1rem/1.5 system-ui, sans-serif; max-width: 36rem; margin: 2rem auto; padding: 0 1rem; }
header { display: flex; justify-content: space-between; align-items: baseline;
         border-bottom: 1px solid var(--line); margin-bottom: 1.5rem; }
header a { font-weight: 600; text-decoration: none; color: inherit; }
nav a { margin-left: 1rem; color: var(--accent); }
nav a[aria-current] { text-decoration: none; font-weight: 600; }
h1 { font-size: 1.5rem; margin: 0 0 1rem; }
form { display: flex; flex-wrap: wrap; gap: .5rem; align-items: end; margin: 1rem 0; }
label { display: flex; flex-direction: column; font-size: .9rem; color: var(--muted); }
input, select, button { font: inherit; padding: .4rem .6rem; border: 1px solid var(--line);
                        border-radius: .4rem; }
button { background: var(--accent); color: Canvas; border-color: var(--accent); cursor: pointer; }
button.quiet { background: none; color: var(--accent); }
:focus-visible { outline: 3px solid var(--accent); outline-offset: 2px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .4rem; border-bottom: 1px solid var(--line); }
td.num, th.num { text-align: right; }
caption { text-align: left; padding: .4rem 0; }
.error { color: #b91c1c; font-weight: 600; }
.muted { color: var(--muted); }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .3rem 1rem; }
dt { font-weight: 600; }
"""

STYLE_HASH = "sha256-" + base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
"""The stylesheet's hash, for the Content-Security-Policy: the one inline style allowed."""


def _nav_link(path: str, label: str, current: str) -> str:
    marker = ' aria-current="page"' if path == current else ""
    return f'<a href="{path}"{marker}>{label}</a>'


def _layout(title: str, body: str, current: str = "/") -> str:
    links = _nav_link("/", "Cart", current) + _nav_link("/session", "Session", current)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{escape(title)} · typed-session-sql demo</title>
<style>{_STYLE}</style>
</head>
<body>
<header><a href="/">typed-session-sql shop</a>
<nav aria-label="Main">{links}</nav></header>
<main>
{body}
</main>
</body>
</html>
"""


def _csrf(token: str) -> str:
    return f'<input type="hidden" name="csrf_token" value="{escape(token)}">'


def sign_in_page(csrf_token: str, error: str | None = None) -> str:
    message = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    return _layout(
        "Sign in",
        f"""<h1>Sign in</h1>
<p>No password: this demo only shows how the session follows you.</p>
{message}
<form method="post" action="/sign-in">
{_csrf(csrf_token)}
<label for="name">Your name
<input id="name" name="name" required maxlength="40" autocomplete="username"></label>
<button type="submit">Sign in</button>
</form>""",
    )


def cart_page(
    user: str,
    rows: Sequence[tuple[str, int]],
    products: Mapping[str, str],
    csrf_token: str,
    error: str | None = None,
) -> str:
    message = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    if rows:
        lines = "\n".join(
            f'<tr><td>{escape(name)}</td><td class="num">{quantity}</td></tr>'
            for name, quantity in rows
        )
        cart = f"""<table>
<caption class="muted">Your cart</caption>
<thead><tr><th scope="col">Product</th><th scope="col" class="num">Quantity</th></tr></thead>
<tbody>
{lines}
</tbody>
</table>"""
    else:
        cart = '<p class="muted">Your cart is empty.</p>'
    options = "".join(
        f'<option value="{escape(key)}">{escape(label)}</option>' for key, label in products.items()
    )
    return _layout(
        "Cart",
        f"""<h1>Hello, {escape(user)}</h1>
{cart}
{message}
<form method="post" action="/cart">
{_csrf(csrf_token)}
<label for="product">Product <select id="product" name="product">{options}</select></label>
<label for="quantity">Quantity
<input id="quantity" name="quantity" type="number" min="1" max="99" value="1" required></label>
<button type="submit">Add to cart</button>
</form>
<form method="post" action="/sign-out">
{_csrf(csrf_token)}
<button type="submit" class="quiet">Sign out</button>
</form>""",
    )


def _moment(value: datetime | None) -> str:
    if value is None:
        return "never"
    text = value.strftime("%Y-%m-%d %H:%M:%S UTC")
    return f'<time datetime="{value.isoformat()}">{text}</time>'


class SessionRow(NamedTuple):
    """One of the user's sessions, as the session page lists it."""

    created_at: datetime
    signed_in_at: datetime | None
    current: bool


def _sessions(rows: Sequence[SessionRow], csrf_token: str) -> str:
    if not rows:
        return ""
    lines = "\n".join(
        f"<tr><td>{_moment(row.signed_in_at)}</td><td>{_moment(row.created_at)}</td>"
        f"<td>{'this one' if row.current else ''}</td></tr>"
        for row in rows
    )
    button = ""
    if any(not row.current for row in rows):
        button = f"""<form method="post" action="/sign-out-others">
{_csrf(csrf_token)}
<button type="submit" class="quiet">Sign out other sessions</button>
</form>"""
    return f"""<h2>Your sessions</h2>
<table>
<caption class="muted">Every browser signed in with your name</caption>
<thead><tr><th scope="col">Signed in</th><th scope="col">Began</th>
<th scope="col">Current</th></tr></thead>
<tbody>
{lines}
</tbody>
</table>
{button}"""


def session_page(
    *,
    user: str | None,
    stored: bool,
    created_at: datetime,
    expires_at: datetime | None,
    version: int | None,
    sessions: Sequence[SessionRow] = (),
    csrf_token: str = "",
) -> str:
    if not stored:
        details = '<p class="muted">You have no stored session yet.</p>'
    else:
        details = f"""<dl>
<dt>Signed in as</dt><dd>{escape(user) if user else "nobody"}</dd>
<dt>Created</dt><dd>{_moment(created_at)}</dd>
<dt>Expires</dt><dd>{_moment(expires_at)}</dd>
<dt>Version</dt><dd>{version}</dd>
</dl>
<p class="muted">The expiry moves forward as you use the site (30 minutes idle), but never
past 12 hours after the session began. The version counts the writes. The session id
itself is never shown: it lives only in an HttpOnly cookie, and the database keeps just
its hash.</p>
{_sessions(sessions, csrf_token)}"""
    return _layout("Session", f"<h1>Your session</h1>\n{details}", current="/session")


def forbidden_page() -> str:
    return _layout(
        "Form expired",
        """<h1>This form has expired</h1>
<p>Your session ended or the form came from elsewhere. <a href="/">Back to the shop</a>.</p>""",
    )


def refused_page(reason: str) -> str:
    return _layout(
        "Form refused",
        f"""<h1>This form was refused</h1>
<p>{escape(reason.capitalize())}. <a href="/">Back to the shop</a>.</p>""",
    )

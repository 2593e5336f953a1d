"""The demo: a small Starlette shop that shows typed sessions end to end.

Run it with ``typed-session-sql demo`` (needs the ``demo`` extra: starlette and uvicorn).
:mod:`~typed_session_sql.demo.app` is the part to read and copy; :mod:`.pages` only
renders HTML.
"""

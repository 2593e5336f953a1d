"""The demo: a small Starlette shop that shows typed sessions end to end.

Run it with ``typed-session-sql demo`` (needs the ``demo`` extra: starlette and uvicorn).
`app` is the part to read and copy; `.pages` only
renders HTML.
"""

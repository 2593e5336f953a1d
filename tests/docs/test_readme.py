"""The README's example runs as written."""

from __future__ import annotations

import runpy
from pathlib import Path

import httpx
import pytest

from tests import markdown
from tests.e2e.server import fresh_postgres_database, serve, uvicorn

README = Path(__file__).resolve().parents[2] / "README.md"


def test_first_example_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    examples = markdown.blocks(README.read_text())
    assert examples, "README has no python example"
    script = tmp_path / "example.py"
    script.write_text(examples[0])
    runpy.run_path(str(script), run_name="__main__")
    assert "ada Cart(items=[1, 2])" in capsys.readouterr().out


def web_example() -> str:
    """The "In a web app" example, exactly as README.md has it."""
    (block,) = markdown.blocks(markdown.section(README.read_text(), "In a web app"))
    return block


def post_twice_sharing_the_session(url: str) -> list[object]:
    """What ``curl -c jar -b jar -X POST URL/cart`` twice does: the cookie of the first
    answer goes back with the second (curl and browsers send Secure cookies to localhost)."""
    with httpx.Client(base_url=url) as client:
        first = client.post("/cart")
        cookie = first.headers["set-cookie"].split(";")[0]
        assert cookie.startswith("__Host-id=")
        client.cookies.clear()
        second = client.post("/cart", headers={"cookie": cookie})
    return [first.json(), second.json()]


def test_the_web_example_runs_as_a_reader_runs_it(tmp_path: Path) -> None:
    # A fresh directory, main.py as written, `uvicorn main:app`: the lifespan migrates the
    # new SQLite file, and two requests share a session.
    (tmp_path / "main.py").write_text(web_example())
    with serve(uvicorn("main:app"), cwd=tmp_path) as server:
        assert post_twice_sharing_the_session(server.url) == [{"items": 1}, {"items": 2}]
    assert (tmp_path / "sessions.db").exists()
    assert "Traceback" not in server.text
    assert "WARNING" not in server.text


def test_the_web_example_runs_on_a_fresh_postgresql_database(tmp_path: Path) -> None:
    example = web_example()
    assert '"sqlite+aiosqlite:///sessions.db"' in example
    with fresh_postgres_database() as url:
        (tmp_path / "main.py").write_text(example.replace("sqlite+aiosqlite:///sessions.db", url))
        with serve(uvicorn("main:app"), cwd=tmp_path) as server:
            assert post_twice_sharing_the_session(server.url) == [{"items": 1}, {"items": 2}]
    assert "Traceback" not in server.text


def test_cleanup_examples_call_purge_with_valid_options() -> None:
    import shlex

    import yaml

    from typed_session_sql.cli import build_parser

    text = README.read_text()
    (cron,) = markdown.blocks(text, "cron")
    words = shlex.split(cron.strip())[5:]  # after the five schedule fields
    program = words.index("typed-session-sql")
    assert words[0].startswith("TYPED_SESSION_SQL_URL=")
    (yaml_block,) = markdown.blocks(text, "yaml")
    manifest = yaml.safe_load(yaml_block)
    (container,) = manifest["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    for args in (words[program + 1 :], container["command"][1:]):
        assert build_parser().parse_args(args).handler.__name__ == "run_purge"

"""The README's example runs as written."""

from __future__ import annotations

import re
import runpy
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.anyio

README = Path(__file__).parent.parent / "README.md"


def test_first_example_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks, "README has no python example"
    script = tmp_path / "example.py"
    script.write_text(blocks[0])
    runpy.run_path(str(script), run_name="__main__")
    assert "ada Cart(items=[1, 2])" in capsys.readouterr().out


async def test_web_app_example_serves_a_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx

    monkeypatch.setenv("TYPED_SESSION_SQL_URL", f"sqlite+aiosqlite:///{tmp_path / 's.db'}")
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    (snippet,) = [block for block in blocks if "FastAPI()" in block]
    script = tmp_path / "web_example.py"
    script.write_text(snippet)
    namespace: dict[str, Any] = runpy.run_path(str(script))
    backend = namespace["store"].backend
    await backend.create_schema()
    transport = httpx.ASGITransport(app=namespace["app"])
    # https: the default cookie is __Host- (Secure); httpx keeps it only for a secure origin.
    async with httpx.AsyncClient(transport=transport, base_url="https://app.test") as client:
        assert (await client.post("/cart")).json() == {"items": 1}
        assert (await client.post("/cart")).json() == {"items": 2}
    await backend.dispose()


def test_cleanup_examples_call_purge_with_valid_options() -> None:
    import shlex

    import yaml

    from typed_session_sql.cli import build_parser

    text = README.read_text()
    (cron,) = re.findall(r"```cron\n(.*?)```", text, flags=re.DOTALL)
    words = shlex.split(cron.strip())[5:]  # after the five schedule fields
    program = words.index("typed-session-sql")
    assert words[0].startswith("TYPED_SESSION_SQL_URL=")
    (yaml_block,) = re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)
    manifest = yaml.safe_load(yaml_block)
    (container,) = manifest["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    for args in (words[program + 1 :], container["command"][1:]):
        assert build_parser().parse_args(args).handler.__name__ == "run_purge"

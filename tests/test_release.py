"""What a release needs besides the code: the licence it declares, a changelog that knows the
version, one project address everywhere, and an sdist that carries its own tests.

`nox -s release` does the rest: builds the sdist and the wheel, checks them with twine, and
runs this suite from the unpacked sdist.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def project() -> dict[str, Any]:
    table: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return table


def repository() -> str:
    url: str = project()["urls"]["Repository"]
    return url


def test_the_licence_file_is_the_mit_licence_pyproject_declares() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert project()["license"] == "MIT"
    assert text.startswith("MIT License\n")
    assert re.search(r"^Copyright \(c\) \d{4} the typed-session-sql authors$", text, re.M)
    assert 'THE SOFTWARE IS PROVIDED "AS IS"' in text


def test_the_changelog_has_an_unreleased_section_and_the_current_version() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    headings = re.findall(r"^## \[([^\]]+)\](?: - (\d{4}-\d{2}-\d{2}))?$", text, re.M)
    assert headings[0] == ("Unreleased", "")
    versions = [version for version, date in headings[1:] if date]
    assert project()["version"] in versions, "add the version being released to CHANGELOG.md"
    for version, _ in headings:  # every heading has its link at the bottom
        assert re.search(rf"^\[{re.escape(version)}\]: {re.escape(repository())}/", text, re.M)


def test_one_project_address_everywhere() -> None:
    repo = repository()
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", repo)
    for name, url in project()["urls"].items():
        assert url.startswith(repo) or name == "Documentation", name
    site = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert site["repo_url"] == repo
    assert site["site_url"].rstrip("/") == project()["urls"]["Documentation"].rstrip("/")
    assert f"{repo}/security/advisories/new" in (ROOT / "SECURITY.md").read_text()


def test_the_security_policy_says_how_to_report_and_what_is_in_scope() -> None:
    text = (ROOT / "SECURITY.md").read_text()
    assert "private vulnerability reporting" in text
    assert "## What is in scope" in text
    for topic in ("Fixation", "Resurrection", "Secrets in logs", "Session ids"):
        assert topic in text, topic
    assert not re.search(r"(?i)\b(todo|tbd|fill in|example\.com)\b", text), "no placeholder contact"


@pytest.mark.wheel
def test_the_sdist_carries_what_its_tests_need(tmp_path: Path) -> None:
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    assert uv is not None, "uv (test dependency group) builds the sdist"
    subprocess.run(
        [uv, "build", "--sdist", "-q", "-o", str(tmp_path), str(ROOT)],
        check=True, capture_output=True,
    )  # fmt: skip
    (sdist,) = tmp_path.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for needed in (
        "pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md", "SECURITY.md",
        "CONTRIBUTING.md", "alembic.ini", "mkdocs.yml", "noxfile.py", "tests/conftest.py",
        "tests/test_release.py", "docs/index.md", "docs/reference/package.md",
        "typed_session_sql/migrations/env.py", "typed_session_sql/py.typed", "benchmarks/run.py",
    ):  # fmt: skip
        assert needed in names, needed
    assert not any(name.startswith(("benchmarks/results/", ".venv/", ".nox/")) for name in names)

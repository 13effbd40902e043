"""The README and the docs cannot drift: every shell and Python block runs here, in order, in a
sandbox of the project (its files linked, `local_data/` empty), or says why it cannot
(`<!-- not-run: reason -->` above it). A block under `<!-- docs-test: background URL -->` is a
server: it is started, waited for until URL answers, and stopped at the end of its page. A
`# -> ...` line that shows `"anomaly": false` is checked against what the block printed."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SHELL = {"bash", "sh", "shell", "console"}
PYTHON = {"python", "py"}
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
DIRECTIVE = re.compile(r"^\s*<!-- (not-run|docs-test): ?(.*?) -->\s*$")
# Not linked into the sandbox: its own data, and what only this checkout has.
PRIVATE = {"local_data", ".git", "site", ".pytest_cache", ".ruff_cache", ".hypothesis"}


@dataclass(frozen=True)
class Block:
    """One fenced block of a page: where it is, its language and code, and its directive."""

    page: Path
    line: int
    language: str
    code: str
    directive: str = ""
    argument: str = ""

    @property
    def runnable(self) -> bool:
        return self.language in SHELL | PYTHON

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def pages() -> list[Path]:
    """The README, then the docs in the site's order."""
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    return [ROOT / "README.md", *(ROOT / "docs" / next(iter(entry.values())) for entry in nav)]


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of `page`, with the directive on the line above each (if any)."""
    found, lines, number = [], page.read_text().splitlines(), 0
    while number < len(lines):
        opening = FENCE.match(lines[number])
        if not opening:
            number += 1
            continue
        indent, language = opening.groups()
        end = next(i for i in range(number + 1, len(lines)) if lines[i].strip() == "```")
        code = "\n".join(line[len(indent) :] for line in lines[number + 1 : end])
        above = DIRECTIVE.match(lines[number - 1]) if number else None
        directive, argument = above.groups() if above else ("", "")
        found.append(Block(page, number + 1, language, code, directive, argument))
        number = end + 1
    return found


ALL = [block for page in pages() for block in blocks(page)]


def test_the_readme_is_short_and_every_block_is_labelled() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 220
    for block in ALL:
        assert block.language, f"{block}: say what the block is (```bash, ```python, ```text...)"
        if block.directive == "not-run":
            assert block.argument.strip(), f"{block}: a block that does not run says why"
        if block.directive:
            assert block.runnable, f"{block}: a directive on a block that would not run anyway"
    assert sum(block.runnable and block.directive != "not-run" for block in ALL) >= 8


def _sandbox(folder: Path) -> Path:
    """The project with every file linked, except an empty `local_data/`."""
    for entry in ROOT.iterdir():
        if entry.name not in PRIVATE:
            (folder / entry.name).symlink_to(entry)
    (folder / "local_data").mkdir()
    return folder


def _checked(block: Block, output: str) -> None:
    """A `# -> ...` answer of the block that shows an anomaly flag is what the block printed."""
    for expected in re.findall(r"# -> .*", block.code):
        for flag in re.findall(r'"anomaly": (true|false)\b', expected):
            compact = output.replace(" ", "")
            assert f'"anomaly":{flag}' in compact, f"{block}: expected {expected!r}, got {output[-2000:]}"


def _wait(url: str, server: subprocess.Popen, block: Block, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert server.poll() is None, f"{block}: the server exited with {server.returncode}"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{block}: {url} did not answer within {timeout_s} s")


def _stop(server: subprocess.Popen) -> None:
    with_group = os.getpgid(server.pid)
    os.killpg(with_group, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(with_group, signal.SIGKILL)
        server.wait()


def _tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


@pytest.mark.skipif(shutil.which("poetry") is None, reason="the docs' commands start with `poetry run`")
def test_every_runnable_block_runs(tmp_path: Path) -> None:
    (tmp_path / "project").mkdir()
    sandbox = _sandbox(tmp_path / "project")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ECLSS_", "PYTEST_", "VIRTUAL_ENV"))}
    env["PYTHONUNBUFFERED"] = "1"
    served: str | None = None
    ran = 0
    for page in pages():
        servers: list[subprocess.Popen] = []
        try:
            for block in blocks(page):
                if not block.runnable or block.directive == "not-run":
                    continue
                command = ["bash", "-euo", "pipefail", "-c", block.code]
                if block.language in PYTHON:
                    command = [sys.executable, "-c", block.code]
                if block.directive == "docs-test" and block.argument.startswith("background"):
                    log = open(tmp_path / f"server-{len(servers)}.log", "w")  # noqa: SIM115 - the server outlives this block
                    server = subprocess.Popen(
                        command, cwd=sandbox, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                    )
                    servers.append(server)
                    _wait(block.argument.split()[1], server, block)
                else:
                    done = subprocess.run(
                        command, cwd=sandbox, env=env, capture_output=True, text=True, timeout=900, check=False
                    )
                    assert done.returncode == 0, (
                        f"{block} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
                    )
                    _checked(block, done.stdout)
                ran += 1
                if served is None and (sandbox / "local_data" / "served_model").is_dir():
                    served = _tree_digest(sandbox / "local_data" / "served_model")
        finally:
            for server in servers:
                _stop(server)
    assert ran >= 8 and served is not None
    # The own-data example ran the pipeline on another data root: the default model is untouched.
    assert (sandbox / "local_data" / "pump" / "served_model").is_dir()
    assert _tree_digest(sandbox / "local_data" / "served_model") == served


def test_the_site_builds_strict_with_every_command_and_setting(tmp_path: Path) -> None:
    import dataclasses

    import typer

    from container_component_src.config import ENV_PREFIX, Settings, load_settings
    from container_component_src.main import app

    site = tmp_path / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    cli = (site / "cli" / "index.html").read_text()
    for name in typer.main.get_command(app).commands:
        assert f"<code>{name}</code>" in cli, f"the CLI reference lacks {name}"
    configuration = (site / "configuration" / "index.html").read_text()
    settings = load_settings(environ={}, dotenv=False)
    for section in dataclasses.fields(Settings):
        for field in dataclasses.fields(getattr(settings, section.name)):
            assert f"{ENV_PREFIX}{section.name}__{field.name}".upper() in configuration

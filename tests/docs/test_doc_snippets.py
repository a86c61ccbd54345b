"""Every code block in README.md and docs/*.md works as written.

A newcomer copies these. So each fenced block is checked by its language:

- ``sh``: every command runs (bash, ``set -e``) from the checkout against a running
  pushgate (``pushgate.toml``, the one ``make run`` uses);
- ``python`` and ``js``: the program runs to completion (Python in the venv, JavaScript
  with Node from ``tests/``, where the npm clients are). A program that needs a connection
  token takes it as its first argument, as its comment says;
- ``toml``: loads as a pushgate configuration; ``json``: parses.

The server runs on a free port, so ``127.0.0.1:8000`` in a block is read as that port,
and commands see it as ``PUSHGATE_SERVER_PORT``. A block may say what it is in an HTML
comment on the line before it: ``<!-- snippet: fragment -->`` (a piece of a larger
program: its syntax is checked, it is not run) or ``<!-- snippet: skip: reason -->`` (a
command this suite cannot run here, like ``make run`` itself). Languages that are not
programs (``text``, ``nginx``, ``html``, ``yaml``, ``xml``) are read, not run.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from pushgate.auth import mint_connection_token
from pushgate.config import load_config
from tests.centrifuge_helpers import NodeProcess

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w+)\s*$")
MARKER = re.compile(r"^<!--\s*snippet:\s*(fragment|skip)(?::\s*(.+?))?\s*-->\s*$")
NOT_PROGRAMS = {"text", "nginx", "html", "yaml", "xml"}
NODE = shutil.which("node")
TIMEOUT = 60


@dataclass(frozen=True)
class Snippet:
    path: Path
    line: int
    language: str
    code: str
    marker: str  # "", "fragment" or "skip"
    reason: str

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def snippets() -> list[Snippet]:
    found = []
    for path in DOCS:
        lines = path.read_text().splitlines()
        index = 0
        while index < len(lines):
            fence = FENCE.match(lines[index])
            if not fence:
                index += 1
                continue
            start = index
            body = []
            index += 1
            while index < len(lines) and not lines[index].startswith("```"):
                body.append(lines[index])
                index += 1
            marker = MARKER.match(lines[start - 1]) if start else None
            found.append(
                Snippet(
                    path,
                    start + 1,
                    fence.group(1),
                    "\n".join(body) + "\n",
                    marker.group(1) if marker else "",
                    (marker.group(2) or "") if marker else "",
                )
            )
            index += 1
    return found


ALL = snippets()
#: the blocks checked here: a skipped one is left out (CI lets no test skip)
SNIPPETS = [s for s in ALL if s.marker != "skip"]


def test_a_block_left_unrun_says_why():
    skipped = [s for s in ALL if s.marker == "skip"]
    assert all(s.reason for s in skipped), [s.id for s in skipped if not s.reason]
    assert len(skipped) < len(ALL) / 4, "most blocks run"


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> NodeProcess:
    """``pushgate serve --config pushgate.toml`` on a free port (memory engine)."""
    import asyncio

    tmp = tmp_path_factory.mktemp("docs")
    node = NodeProcess(ROOT / "pushgate.toml", tmp / "node.log")
    asyncio.run(node.start())
    yield node
    node.stop()


def on_port(code: str, port: int) -> str:
    return code.replace("127.0.0.1:8000", f"127.0.0.1:{port}")


def run(args: list[str], served: NodeProcess, cwd: Path) -> None:
    env = {**os.environ, "PUSHGATE_SERVER_PORT": str(served.port)}
    env.pop("PUSHGATE_CONFIG", None)
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, (
        f"exit {result.returncode}\n--- stdout\n{result.stdout[-3000:]}\n"
        f"--- stderr\n{result.stderr[-3000:]}\n--- server\n{served.log()[-1500:]}"
    )


def token() -> str:
    secret = load_config(str(ROOT / "pushgate.toml"), env={}).token.hmac_secret
    return mint_connection_token(secret, "alice", ttl=600)


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[s.id for s in SNIPPETS])
def test_snippet_works_as_written(snippet: Snippet, request, tmp_path):
    language, code = snippet.language, snippet.code
    if language == "toml":
        path = tmp_path / "snippet.toml"
        path.write_text(code)
        load_config(str(path), env={})
        return
    if language == "json":
        orjson.loads(code)
        return
    if language in NOT_PROGRAMS:
        assert code.strip(), f"{snippet.id}: an empty block"
        return
    fragment = snippet.marker == "fragment"
    if language == "python":
        if fragment:
            compile(code, snippet.id, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            return
        served = request.getfixturevalue("served")
        path = tmp_path / "snippet.py"
        path.write_text(on_port(code, served.port))
        run([sys.executable, str(path), token()], served, ROOT)
        return
    if language == "js":
        assert NODE, "node is needed (make test installs the npm clients)"
        # ESM resolves packages from the file's folder: the npm clients are in tests/
        path = TESTS / f".snippet-{uuid.uuid4().hex}.mjs"
        try:
            if fragment:
                path.write_text(code)
                check = subprocess.run([NODE, "--check", str(path)], capture_output=True, text=True)
                assert check.returncode == 0, check.stderr
                return
            served = request.getfixturevalue("served")
            path.write_text(on_port(code, served.port))
            run([NODE, str(path), token()], served, TESTS)
        finally:
            path.unlink(missing_ok=True)
        return
    if language == "sh":
        # `make run` serves forever, `make test` is this suite, `make bench` takes the
        # machine: a block with make in it says what it is rather than being run blindly
        assert fragment or not re.search(r"(^|[;&|]\s*)make\b", code, re.M), (
            f"{snippet.id}: a block of make commands needs a fragment or skip marker"
        )
        if fragment:
            check = subprocess.run(["bash", "-n"], input=code, capture_output=True, text=True)
            assert check.returncode == 0, check.stderr
            return
        served = request.getfixturevalue("served")
        path = tmp_path / "snippet.sh"
        path.write_text("set -euo pipefail\n" + on_port(code, served.port))
        run(["bash", str(path)], served, ROOT)
        return
    pytest.fail(f"{snippet.id}: no rule for ```{language} blocks (add one, or mark the block)")

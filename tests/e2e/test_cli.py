"""The `pushgate` command as a user runs it: a real server process, tokens, publish."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import jwt
import pytest
from centrifuge import Client, PublicationContext, SubscriptionEventHandler

from tests.conftest import API_KEY, BASE_CONFIG, SECRET, free_port

PUSHGATE = [sys.executable, "-m", "pushgate"]


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*PUSHGATE, *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "pushgate.toml"
    path.write_text(BASE_CONFIG)
    return path


def test_token_mints_connection_and_subscription_jwts(config_file):
    result = run("token", "alice", "--ttl", "60", "--config", str(config_file))
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice" and claims["exp"] - claims.get("iat", claims["exp"] - 60) == 60
    result = run("token", "alice", "--channel", "private:1", "--config", str(config_file))
    claims = jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"])
    assert (claims["sub"], claims["channel"]) == ("alice", "private:1")


def test_token_without_secret_says_what_is_missing(tmp_path):
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    result = run("token", "alice", "--config", str(empty), env={"PUSHGATE_TOKEN_HMAC_SECRET": ""})
    assert result.returncode == 2
    assert "hmac_secret" in result.stderr


def test_unknown_config_key_is_refused_at_start(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nprot = 8000\n[engine]\ntype = "memory"\n')
    result = run("serve", "--config", str(bad))
    assert result.returncode == 2
    assert "server.prot" in result.stderr


def test_env_overrides_file_and_flag_overrides_env(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(BASE_CONFIG + "[server]\nport = 8001\n")

    def effective_port(*flags: str, env: dict | None = None) -> int:
        result = run("check-config", str(path), *flags, env=env)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["server"]["port"]

    assert effective_port() == 8001
    assert effective_port(env={"PUSHGATE_SERVER_PORT": "8002"}) == 8002
    assert effective_port("-o", "server.port=8003", env={"PUSHGATE_SERVER_PORT": "8002"}) == 8003
    secret = run(
        "token", "bob", "--config", str(path), env={"PUSHGATE_TOKEN_HMAC_SECRET": "e" * 32}
    )
    assert jwt.decode(secret.stdout.strip(), "e" * 32, algorithms=["HS256"])["sub"] == "bob"


def test_workers_with_memory_engine_are_refused(config_file):
    result = run("serve", "--config", str(config_file), "--workers", "2")
    assert result.returncode == 2
    assert "memory engine" in result.stderr and "redis" in result.stderr


async def test_serve_then_publish_reaches_a_subscriber(config_file):
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        *PUSHGATE,
        "serve",
        "--config",
        str(config_file),
        "--port",
        str(port),
        "--api-key",
        "flag-key",  # flags win over the file's key
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(15):
            while b"started" not in await server.stderr.readline():
                pass
        received: asyncio.Queue = asyncio.Queue()

        class Handler(SubscriptionEventHandler):
            async def on_publication(self, ctx: PublicationContext) -> None:
                await received.put(ctx.pub.data)

        token = run("token", "alice", "--config", str(config_file)).stdout.strip()
        client = Client(f"ws://127.0.0.1:{port}/connection/websocket", token=token)
        sub = client.new_subscription("board:1", events=Handler())
        await client.connect()
        await sub.subscribe()
        await sub.ready(timeout=5)
        url = f"http://127.0.0.1:{port}"
        refused = await asyncio.to_thread(
            run, "publish", "board:1", '{"text": "hi"}', "--url", url, "--api-key", API_KEY
        )
        assert refused.returncode != 0 and "401" in refused.stderr
        published = await asyncio.to_thread(
            run, "publish", "board:1", '{"text": "hi"}', "--url", url, "--api-key", "flag-key"
        )
        assert published.returncode == 0, published.stderr
        assert json.loads(published.stdout)["offset"] == 1
        assert await asyncio.wait_for(received.get(), 5) == {"text": "hi"}
        await client.disconnect()
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 15)


@pytest.fixture
def busy_port():
    """A port another process (here: this one) is listening on."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize(
    "command",
    [
        [*PUSHGATE, "serve"],
        [*PUSHGATE, "serve", "--workers", "2", "--engine", "redis"],
        [sys.executable, "-m", "demo"],
    ],
    ids=["serve", "serve-workers", "make-run"],
)
def test_a_busy_port_is_one_line_saying_how_to_pick_another(config_file, busy_port, command):
    result = subprocess.run(
        [*command, "--config", str(config_file), "--port", str(busy_port)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=Path(__file__).parents[2],
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"cannot listen on 127.0.0.1:{busy_port}" in lines[0]
    assert "--port" in lines[0] and "PUSHGATE_SERVER_PORT" in lines[0]


def test_token_info_that_is_not_json_is_an_error_not_a_traceback(config_file):
    result = run("token", "alice", "--info", "{bad", "--config", str(config_file))
    assert result.returncode == 2
    assert result.stderr.startswith("pushgate: --info is not JSON")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("how", [["--config"], ["-c"], []])
def test_check_config_takes_the_file_like_every_command(config_file, how):
    result = run("check-config", *how, str(config_file))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["token"]["hmac_secret"] == "***"


def test_check_config_names_a_namespace_by_its_name(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[namespace]]\nname = "board"\nhistory_size = 5\nhistory_ttl = "abc"\n')
    result = run("check-config", "--config", str(bad))
    assert result.returncode == 2
    assert '[[namespace]] "board" history_ttl: invalid duration' in result.stderr


def test_every_option_of_every_command_has_help():
    from pushgate.cli import build_parser

    parser = build_parser()
    (commands,) = [a for a in parser._actions if a.dest == "command"]
    missing = [
        f"{name} {'/'.join(action.option_strings) or action.dest}"
        for name, sub in commands.choices.items()
        for action in sub._actions
        if action.dest != "help" and action.help is None
    ]
    assert not missing, missing


def test_bench_help_names_the_command_typed():
    result = run("bench", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: pushgate bench")

"""A real ``pushgate serve`` process: TLS with a certificate the test makes, and a
graceful shutdown on SIGTERM that loses no publication the API accepted."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import aiohttp
import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pushgate.auth import mint_connection_token
from pushgate.config import ConfigError, load_config
from tests.conftest import API_KEY, BASE_CONFIG, SECRET, free_port

ROOT = Path(__file__).resolve().parents[2]


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class Node:
    def __init__(self, tmp_path: Path, extra: str = "", scheme: str = "http") -> None:
        self.port = free_port()
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        config = tmp_path / "node.toml"
        config.write_text(extra + BASE_CONFIG)
        self.log = (tmp_path / "node.log").open("wb")
        port = ("--port", str(self.port))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pushgate", "serve", "--config", str(config), *port],
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.log_path = tmp_path / "node.log"

    async def wait_ready(self, session: aiohttp.ClientSession, **kw) -> None:
        async with asyncio.timeout(15):
            while True:
                assert self.process.poll() is None, self.log_path.read_text()[-3000:]
                try:
                    async with session.get(self.url + "/ready", **kw) as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.log.close()


async def test_tls_serves_https_and_wss(tmp_path):
    cert, key = self_signed(tmp_path)
    node = Node(tmp_path, f'[server]\ntls_cert = "{cert}"\ntls_key = "{key}"\n', "https")
    trust = ssl.create_default_context(cafile=str(cert))
    try:
        async with aiohttp.ClientSession() as session:
            await node.wait_ready(session, ssl=trust)
            ws = await session.ws_connect(
                node.url.replace("https", "wss") + "/connection/websocket", ssl=trust
            )
            token = mint_connection_token(SECRET, "alice")
            await ws.send_str(orjson.dumps({"id": 1, "connect": {"token": token}}).decode())
            reply = orjson.loads((await ws.receive(timeout=5)).data)
            assert "connect" in reply, reply
            await ws.close()
            async with session.post(node.url + "/api/info", json={}, ssl=trust) as response:
                assert response.status == 401  # no key, even over TLS
            async with session.post(
                node.url + "/api/info", json={}, ssl=trust, headers={"X-API-Key": API_KEY}
            ) as response:
                assert response.status == 200
            with pytest.raises(aiohttp.ClientError):  # plain HTTP is not spoken there
                async with session.get(f"http://127.0.0.1:{node.port}/health") as response:
                    await response.read()
            with pytest.raises(aiohttp.ClientConnectorCertificateError):  # untrusted
                async with session.get(node.url + "/health") as response:
                    await response.read()
    finally:
        node.stop()


def test_tls_files_are_checked_with_the_configuration(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text(f'[server]\ntls_cert = "{tmp_path}/missing.pem"\n' + BASE_CONFIG)
    with pytest.raises(ConfigError) as caught:
        load_config(str(config), env={})
    assert any(
        "server.tls_key: required when server.tls_cert is set" in e for e in caught.value.errors
    )
    cert, _key = self_signed(tmp_path)
    config.write_text(f'[server]\ntls_cert = "{cert}"\ntls_key = "{tmp_path}/no.pem"\n')
    with pytest.raises(ConfigError, match=r"server\.tls_key: no such file"):
        load_config(str(config), env={})


async def test_sigterm_drains_and_loses_no_accepted_publication(tmp_path):
    node = Node(tmp_path, '[server]\nshutdown_timeout = "3s"\n')
    try:
        async with aiohttp.ClientSession() as session:
            await node.wait_ready(session)
            clients = []
            for user in ("alice", "bob", "carol"):
                ws = await session.ws_connect(
                    node.url.replace("http", "ws") + "/connection/websocket"
                )
                token = mint_connection_token(SECRET, user)
                await ws.send_str(
                    orjson.dumps({"id": 1, "connect": {"token": token}}).decode()
                    + "\n"
                    + orjson.dumps({"id": 2, "subscribe": {"channel": "board:1"}}).decode()
                )
                clients.append(ws)
            received: list[list[int]] = [[] for _ in clients]
            close_codes: list[int | None] = [None] * len(clients)

            async def read(i: int, ws: aiohttp.ClientWebSocketResponse) -> None:
                async for message in ws:
                    if message.type != aiohttp.WSMsgType.TEXT:
                        break
                    for line in message.data.split("\n"):
                        push = orjson.loads(line).get("push", {}) if line else {}
                        if "pub" in push:
                            received[i].append(push["pub"]["offset"])
                close_codes[i] = ws.close_code

            readers = [asyncio.create_task(read(i, ws)) for i, ws in enumerate(clients)]
            await asyncio.sleep(0.3)  # subscribed
            accepted: list[int] = []
            stop = asyncio.Event()

            async def publish() -> None:
                n = 0
                while not stop.is_set():
                    n += 1
                    try:
                        async with session.post(
                            node.url + "/api/publish",
                            json={"channel": "board:1", "data": {"n": n}},
                            headers={"X-API-Key": API_KEY},
                        ) as response:
                            body = await response.json(content_type=None)
                    except aiohttp.ClientError:
                        return  # the node stopped taking requests
                    if "result" in body:
                        accepted.append(body["result"]["offset"])
                    else:  # refused while draining (503): not accepted, the caller retries
                        assert response.status == 503, body

            publisher = asyncio.create_task(publish())
            await asyncio.sleep(0.5)
            node.process.send_signal(signal.SIGTERM)
            started = asyncio.get_running_loop().time()
            async with asyncio.timeout(10):
                await asyncio.gather(*readers)
            stop.set()
            await publisher
            returncode = await asyncio.to_thread(node.process.wait, 10)
            elapsed = asyncio.get_running_loop().time() - started
    finally:
        node.stop()
    assert returncode == 0, node.log_path.read_text()[-3000:]
    assert elapsed < 3 + 5, elapsed  # within the drain deadline (plus start-up slack)
    assert close_codes == [3001] * len(clients), close_codes  # shutdown: reconnect
    assert len(accepted) > 10
    for offsets in received:
        assert set(accepted) <= set(offsets), sorted(set(accepted) - set(offsets))
        assert offsets == sorted(offsets)

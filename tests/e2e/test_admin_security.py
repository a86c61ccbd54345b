"""The admin page and the operator's endpoints, attacked the way an outsider would.

- login throttling: a burst of wrong passwords reaches the password check only a few
  times, the right password is refused too while backing off, and works after it; the
  same across addresses (``127.0.0.x`` source addresses are real, distinct peers);
- sessions live server side: logout makes a copy of the old cookie worthless, and a
  session made on one node works on another (redis engine);
- the cookie: HttpOnly, SameSite=Strict, and ``Secure`` under TLS (a real TLS listener);
- every admin POST needs the page's own Origin and a JSON body (403 / 415);
- ``server.internal_port``: the operator's paths answer 404 on the public port and are
  served on the internal one, in process and with ``pushgate serve --workers 2``;
- a user named like the admin page's identity, holding a valid token from the configured
  secret (centrifuge-python, and over STOMP), cannot subscribe to, publish into or read
  the admin channel, and no token the backend can mint opens it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from http.cookies import SimpleCookie
from pathlib import Path

import aiohttp
import jwt
import orjson
import pytest
from aiohttp import web
from centrifuge import Client, ReplyError

from pushgate.auth import mint_connection_token
from pushgate.config import Config, load_config
from pushgate.hub import internal
from pushgate.metrics import LIMIT_HITS
from pushgate.server import create_app, make_ssl_context
from pushgate.web.admin import ADMIN_CHANNEL, ADMIN_USER, COOKIE
from tests.centrifuge_helpers import Recorder, clients_fixture, wait_until  # noqa: F401
from tests.conftest import API_KEY, BASE_CONFIG, REDIS_URL, SECRET, free_port
from tests.e2e.test_process_lifecycle import self_signed
from tests.stomp_client import RawStomp

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "admin-pass"
ADMIN = f"""
[admin]
password = "{PASSWORD}"
stats_interval = "0.2s"
login_attempts = 3
login_attempts_global = 1000
"""


def refusals() -> float:
    return LIMIT_HITS.labels("admin_login")._value.get()


async def login(
    session: aiohttp.ClientSession,
    url: str,
    password: str,
    *,
    origin: str | None = "",
    **kwargs,
) -> tuple[int, dict, SimpleCookie]:
    """POST /admin/login as the page does: JSON, Origin = the page's own (by default)."""
    headers = kwargs.pop("headers", {})
    if origin is not None:
        headers["Origin"] = origin or url
    async with session.post(
        url + "/admin/login", json={"password": password}, headers=headers, **kwargs
    ) as response:
        await response.read()
        cookies = SimpleCookie()
        for header in response.headers.getall("Set-Cookie", []):
            cookies.load(header)
        return response.status, dict(response.headers), cookies


async def logged_in(session: aiohttp.ClientSession, url: str, **kwargs) -> str:
    status, _, cookies = await login(session, url, PASSWORD, **kwargs)
    assert status == 200 and COOKIE in cookies, status
    return cookies[COOKIE].value


async def overview(session: aiohttp.ClientSession, url: str, session_id: str, **kw) -> int:
    headers = {"Cookie": f"{COOKIE}={session_id}"}
    async with session.get(url + "/admin/api/overview", headers=headers, **kw) as response:
        await response.read()
        return response.status


@pytest.fixture(params=["memory", "redis"])
def any_engine(request, server_config) -> Callable[..., Config]:
    """``server_config`` for the memory engine, ``redis_config`` for the redis one."""
    if request.param == "redis":
        return request.getfixturevalue("redis_config")
    return server_config


# --- login throttling ---------------------------------------------------------------------
async def test_wrong_passwords_are_throttled_and_the_right_one_waits_too(
    make_server, any_engine, caplog
):
    server = await make_server(any_engine(ADMIN))
    before = refusals()
    caplog.set_level(logging.WARNING, logger="pushgate.admin")
    answers = await asyncio.gather(*(login(server.session, server.url, "guess") for _ in range(40)))
    statuses = [status for status, _, _ in answers]
    # 3 free attempts and the one that claimed the first back-off reached the password
    assert statuses.count(401) == 4, statuses
    assert statuses.count(429) == 36, statuses
    waits = [int(headers["Retry-After"]) for status, headers, _ in answers if status == 429]
    assert set(waits) == {1}  # the first turn: 1 s, however many requests raced for it
    assert refusals() - before == 36
    throttled = [r for r in caplog.records if "too many failed logins" in r.getMessage()]
    assert len(throttled) == 36 and all(r.remote == "127.0.0.1" for r in throttled)

    # while backing off, the right password is refused without being looked at
    status, headers, cookies = await login(server.session, server.url, PASSWORD)
    assert status == 429 and COOKIE not in cookies
    assert int(headers["Retry-After"]) >= 1

    async def right_password_accepted() -> bool:
        status, _, _ = await login(server.session, server.url, PASSWORD)
        assert status in (200, 429)
        return status == 200

    # the back-off is about time: the first turn holds the next attempt off for 1 s
    waited = await wait_until(right_password_accepted, 5, "login allowed after the back-off")
    assert waited <= 3
    # a success clears the address: the next wrong password is checked again (401)
    status, _, _ = await login(server.session, server.url, "typo")
    assert status == 401


async def test_the_global_limit_holds_against_rotating_addresses(make_server, any_engine):
    config = any_engine(ADMIN.replace("login_attempts_global = 1000", "login_attempts_global = 3"))
    config.admin.login_attempts = 100
    server = await make_server(config)

    async def attempt(source: str, password: str) -> int:
        connector = aiohttp.TCPConnector(local_addr=(source, 0))
        async with aiohttp.ClientSession(connector=connector) as session:
            status, _, _ = await login(session, server.url, password)
            return status

    statuses = [await attempt(f"127.0.0.{n}", "guess") for n in range(2, 10)]
    assert statuses == [401] * 4 + [429] * 4, statuses
    assert await attempt("127.0.0.20", PASSWORD) == 429  # a fresh address, right password


async def test_successful_logins_never_add_up_to_a_back_off(make_server, any_engine):
    server = await make_server(
        any_engine(ADMIN.replace("login_attempts_global = 1000", "login_attempts_global = 3"))
    )
    for _ in range(8):  # operators and scripts logging in often
        status, _, _ = await login(server.session, server.url, PASSWORD)
        assert status == 200
    for _ in range(3):  # the global allowance of failures is all still there
        status, _, _ = await login(server.session, server.url, "typo")
        assert status == 401


# --- sessions -------------------------------------------------------------------------------
async def logout(session: aiohttp.ClientSession, url: str, session_id: str) -> int:
    headers = {"Origin": url, "Cookie": f"{COOKIE}={session_id}"}
    async with session.post(url + "/admin/logout", json={}, headers=headers) as response:
        await response.read()
        return response.status


async def test_logout_revokes_the_session(make_server, server_config):
    server = await make_server(server_config(ADMIN))
    session_id = await logged_in(server.session, server.url)
    assert await overview(server.session, server.url, session_id) == 200
    assert await logout(server.session, server.url, session_id) == 200
    # the browser forgets the cookie; a copy of it kept elsewhere no longer works
    assert await overview(server.session, server.url, session_id) == 401
    headers = {"Cookie": f"{COOKIE}={session_id}"}
    async with server.session.get(server.url + "/admin", headers=headers) as response:
        assert 'name="password"' in await response.text()  # the login, not the page


async def test_a_session_works_on_every_node_and_logout_ends_it_everywhere(
    make_server, redis_config
):
    config = redis_config(ADMIN)
    first, second = await make_server(config), await make_server(config)
    session_id = await logged_in(first.session, first.url)
    assert await overview(second.session, second.url, session_id) == 200
    assert await logout(second.session, second.url, session_id) == 200
    assert await overview(first.session, first.url, session_id) == 401


async def test_the_cookie_is_httponly_strict_and_secure_only_over_https(make_server, server_config):
    server = await make_server(server_config(ADMIN))
    _, _, cookies = await login(server.session, server.url, PASSWORD)
    cookie = cookies[COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/admin"
    assert not cookie["secure"]  # plain HTTP: a Secure cookie would never come back
    # TLS ended at a proxy in front, which says so
    _, _, cookies = await login(
        server.session, server.url, PASSWORD, headers={"X-Forwarded-Proto": "https"}
    )
    assert cookies[COOKIE]["secure"]


@pytest.fixture
async def tls_server(tmp_path: Path) -> AsyncIterator[tuple[str, ssl.SSLContext]]:
    cert, key = self_signed(tmp_path)
    path = tmp_path / "tls.toml"
    path.write_text(f'[server]\ntls_cert = "{cert}"\ntls_key = "{key}"\n' + BASE_CONFIG + ADMIN)
    config = load_config(str(path), env={})
    runner = web.AppRunner(create_app(config), handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=make_ssl_context(config))
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"https://127.0.0.1:{port}", ssl.create_default_context(cafile=str(cert))
    await runner.cleanup()


async def test_the_cookie_is_secure_under_tls(tls_server):
    url, trust = tls_server
    async with aiohttp.ClientSession() as session:
        status, _, cookies = await login(session, url, PASSWORD, ssl=trust)
        assert status == 200
        cookie = cookies[COOKIE]
        assert cookie["secure"] and cookie["httponly"] and cookie["samesite"] == "Strict"
        assert await overview(session, url, cookie.value, ssl=trust) == 200


# --- Origin and Content-Type ----------------------------------------------------------------
async def test_admin_posts_need_the_pages_origin_and_json(make_server, server_config, caplog):
    server = await make_server(server_config(ADMIN))
    caplog.set_level(logging.WARNING, logger="pushgate.admin")
    for origin in (None, "https://evil.example", "null", server.url + ".evil.example"):
        status, _, cookies = await login(server.session, server.url, PASSWORD, origin=origin)
        assert status == 403 and COOKIE not in cookies, origin
    assert any("'https://evil.example'" in r.getMessage() for r in caplog.records)
    async with server.session.post(
        server.url + "/admin/login",
        data={"password": PASSWORD},  # what a plain HTML form sends
        headers={"Origin": server.url},
    ) as response:
        assert response.status == 415
        assert "application/json" in (await response.json())["error"]

    session_id = await logged_in(server.session, server.url)
    cookie = {"Cookie": f"{COOKIE}={session_id}"}
    bodies = {
        "/admin/api/publish": {"channel": "board:x", "data": "{}"},
        "/admin/api/disconnect": {"user": "alice"},
        "/admin/logout": {},
    }
    for path, body in bodies.items():
        for headers, expected in (
            ({}, 403),
            ({"Origin": "https://evil.example"}, 403),
            ({"Origin": server.url, "Content-Type": "text/plain"}, 415),
        ):
            async with server.session.post(
                server.url + path, data=orjson.dumps(body), headers={**cookie, **headers}
            ) as response:
                assert response.status == expected, (path, headers)
                assert "error" in await response.json()
    assert await overview(server.session, server.url, session_id) == 200  # not logged out
    async with server.session.post(
        server.url + "/admin/api/publish",
        json=bodies["/admin/api/publish"],
        headers={**cookie, "Origin": server.url},
    ) as response:
        assert response.status == 200


# --- the internal listener ------------------------------------------------------------------
OPERATOR_GETS = ("/metrics", "/ready", "/admin", "/admin/api/overview")


async def operator_statuses(session: aiohttp.ClientSession, url: str) -> dict[str, int]:
    statuses = {}
    for path in OPERATOR_GETS:
        async with session.get(url + path) as response:
            statuses[path] = response.status
    async with session.post(url + "/api/info", json={}, headers={"X-API-Key": API_KEY}) as r:
        statuses["/api/info"] = r.status
    async with session.post(
        url + "/admin/login", json={"password": PASSWORD}, headers={"Origin": url}
    ) as response:
        statuses["/admin/login"] = response.status
    return statuses


ON_INTERNAL = {
    "/metrics": 200,
    "/ready": 200,
    "/admin": 200,
    "/admin/api/overview": 401,
    "/api/info": 200,
    "/admin/login": 200,
}


async def test_internal_listener_serves_the_operator_paths_and_the_public_one_hides_them(
    server_config,
):
    internal_port = free_port()
    config = server_config(ADMIN, server__internal_port=str(internal_port))
    app = create_app(config)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    public = web.TCPSite(runner, "127.0.0.1", 0)
    internal = web.TCPSite(runner, config.server.internal_host, internal_port)
    await public.start()
    await internal.start()
    public_url = f"http://127.0.0.1:{public._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    internal_url = f"http://127.0.0.1:{internal_port}"
    try:
        async with aiohttp.ClientSession() as session:
            assert await operator_statuses(session, public_url) == dict.fromkeys(ON_INTERNAL, 404)
            assert await operator_statuses(session, internal_url) == ON_INTERNAL
            async with session.get(public_url + "/health") as response:
                assert response.status == 200
            # clients still connect on the public port
            client = Client(
                public_url.replace("http", "ws") + "/connection/websocket",
                token=mint_connection_token(SECRET, "alice"),
            )
            await client.connect()
            await client.ready(timeout=5)
            await client.disconnect()
    finally:
        await runner.cleanup()


def workers_config(tmp_path: Path, prefix: str, internal_port: int) -> Path:
    engine = (
        "[engine]\n"
        'type = "redis"\n'
        f'redis_url = "{REDIS_URL}"\n'
        f'redis_prefix = "{prefix}"\n'
        'node_heartbeat = "0.5s"\n'
        'node_ttl = "2s"\n'
    )
    text = BASE_CONFIG.replace('[engine]\ntype = "memory"\n', engine)
    path = tmp_path / "internal.toml"
    path.write_text(f"[server]\ninternal_port = {internal_port}\n" + text + ADMIN)
    return path


async def test_internal_listener_with_two_workers(tmp_path, redis_prefix):
    internal_port, port = free_port(), free_port()
    config = workers_config(tmp_path, redis_prefix, internal_port)
    log = (tmp_path / "workers.log").open("wb")
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "pushgate", "serve", "--config", str(config)),
            *("--port", str(port), "--workers", "2"),
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    public_url, internal_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{internal_port}"

    def output() -> str:
        log.flush()
        return (tmp_path / "workers.log").read_text(errors="replace")[-3000:]

    try:
        # a new connection per request: the kernel spreads them over both workers
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def two_nodes() -> bool:
                assert process.poll() is None, output()
                try:
                    async with session.post(
                        internal_url + "/api/info", json={}, headers={"X-API-Key": API_KEY}
                    ) as response:
                        if response.status != 200:
                            return False
                        return len((await response.json())["result"]["nodes"]) == 2
                except aiohttp.ClientError:
                    return False

            await wait_until(two_nodes, 30, "two workers serve the internal port")
            for _ in range(4):
                assert await operator_statuses(session, public_url) == dict.fromkeys(
                    ON_INTERNAL, 404
                ), output()
                assert await operator_statuses(session, internal_url) == ON_INTERNAL
            # one login, then the session on whichever worker takes each connection
            session_id = await logged_in(session, internal_url)
            for _ in range(12):
                assert await overview(session, internal_url, session_id) == 200
            assert await logout(session, internal_url, session_id) == 200
            for _ in range(12):
                assert await overview(session, internal_url, session_id) == 401
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()
    assert process.returncode == 0, output()


# --- the admin page's identity --------------------------------------------------------------
async def test_a_user_named_like_the_admin_identity_gains_nothing(make_server, server_config):
    server = await make_server(server_config(ADMIN))
    # the real page's connection: its token comes from /admin/api/connect after login
    session_id = await logged_in(server.session, server.url)
    async with server.session.get(
        server.url + "/admin/api/connect", headers={"Cookie": f"{COOKIE}={session_id}"}
    ) as response:
        info = await response.json()
    assert info["channel"] == ADMIN_CHANNEL
    page_events = Recorder()
    page = Client(server.ws_url, token=info["token"], events=page_events)

    # the impersonator: a valid token from the configured secret, user "pushgate-admin",
    # even asking for the admin channel as a server-side subscription
    events = Recorder()
    impostor = Client(
        server.ws_url,
        token=server.token(ADMIN_USER, channels=[ADMIN_CHANNEL], subs={ADMIN_CHANNEL: {}}),
        events=events,
    )
    try:
        await page.connect()
        await impostor.connect()
        await impostor.ready(timeout=5)
        assert events.of("subscribed") == []  # no server-side subscription was granted
        sub_events = Recorder()
        sub = impostor.new_subscription(ADMIN_CHANNEL, events=sub_events)
        await sub.subscribe()
        refused = await sub_events.wait_for("unsubscribed")
        assert refused.code == 103
        impostor.remove_subscription(sub)
        for call in (
            lambda: impostor.publish(ADMIN_CHANNEL, {"num_clients": 10**6}),
            lambda: impostor.presence(ADMIN_CHANNEL),
            lambda: impostor.history(ADMIN_CHANNEL),
        ):
            with pytest.raises(ReplyError) as caught:
                await call()
            assert caught.value.code == 103

        # the page gets the numbers every node publishes; the impostor none of them
        def three_seen(_: object) -> bool:
            return len(page_events.of("publication")) >= 3

        await page_events.wait_for("publication", three_seen)
        assert events.of("publication") == []
        assert all("num_clients" in c.pub.data for c in page_events.of("publication"))
    finally:
        await page.disconnect()
        await impostor.disconnect()

    # nor can the backend's API write into the channel or add a user to it
    for method, params in (
        ("publish", {"channel": ADMIN_CHANNEL, "data": {}}),
        ("subscribe", {"user": ADMIN_USER, "channel": ADMIN_CHANNEL}),
        ("history", {"channel": ADMIN_CHANNEL}),
    ):
        reply = await server.api(method, params)
        assert reply.get("error", {}).get("code") == 103, (method, reply)


async def test_an_internal_looking_token_from_the_shared_secret_is_refused(
    make_server, server_config
):
    server = await make_server(server_config(ADMIN))
    # whoever holds token.hmac_secret may sign anything, headers included
    forged = jwt.encode(
        {"sub": ADMIN_USER, "channels": [ADMIN_CHANNEL], "exp": 2**31},
        SECRET,
        algorithm="HS256",
        headers={"kid": "pushgate-internal"},
    )
    events = Recorder()
    client = Client(server.ws_url, token=forged, events=events)
    try:
        await client.connect()
        gone = await events.wait_for("disconnected")
        assert gone.code == 3500  # invalid token
    finally:
        await client.disconnect()


async def test_nor_over_stomp(make_server, server_config):
    server = await make_server(server_config(ADMIN))
    for command in ("SUBSCRIBE", "SEND"):
        client = await RawStomp.websocket(server.url.replace("http", "ws") + "/stomp")
        try:
            await client.connect(server.token(ADMIN_USER, channels=[ADMIN_CHANNEL]))
            headers = {"id": "1", "destination": f"/topic/{ADMIN_CHANNEL}", "receipt": "r"}
            await client.send(command, headers, b"{}")
            error = await client.expect("ERROR")
            assert error.headers["message"] == "permission denied", command
        finally:
            await client.close()


async def test_the_pages_connection_refreshes_only_with_internal_tokens(make_server, server_config):
    server = await make_server(server_config(ADMIN))
    engine = server.hub.engine
    asked: list[str] = []

    async def internal_token() -> str:
        asked.append("internal")
        return await internal.mint(engine, ADMIN_USER, [ADMIN_CHANNEL], ttl=2)

    events = Recorder()
    page = Client(
        server.ws_url, token=await internal_token(), get_token=internal_token, events=events
    )
    try:
        await page.connect()
        await events.wait_for("connected")

        # two refreshes with internal tokens: still connected, still subscribed
        async def refreshed_twice() -> bool:  # the refreshes come with the tokens' expiry
            return len(asked) >= 3

        await wait_until(refreshed_twice, 10, "two token refreshes")
        seen = len(events.of("publication"))
        await events.wait_for("publication", lambda _: len(events.of("publication")) > seen)
        assert events.of("disconnected") == []
        assert [c for c in events.of("connecting") if c.code] == []  # no reconnect
    finally:
        await page.disconnect()

    async def ordinary_token() -> str:  # right user, right secret, but not internal
        return server.token(ADMIN_USER, ttl=3600)

    events = Recorder()
    page = Client(
        server.ws_url,
        token=await internal.mint(engine, ADMIN_USER, [ADMIN_CHANNEL], ttl=2),
        get_token=ordinary_token,
        events=events,
    )
    try:
        await page.connect()
        gone = await events.wait_for("disconnected", timeout=10)
        assert gone.code == 3500  # invalid token
    finally:
        await page.disconnect()

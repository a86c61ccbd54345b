"""A product backend for pushgate's proxies, written from Centrifugo's proxy documentation.

It knows nothing of pushgate: an aiohttp app with one endpoint per proxy event
(``POST /centrifugo/<event>``), reading Centrifugo's JSON requests and answering
``{"result": …}``, ``{"error": {code, message}}`` or ``{"disconnect": {code, reason}}``.
Users sign in with a session cookie (``session=<id>``) that the connect proxy receives
through ``http_headers = ["Cookie"]``; a STOMP passcode or XMPP password can stand in
for it (``data: {"login", "passcode"|"password"}``).

What it decides:
- connect: the session's user (info ``{"name"}``, data ``{"greeting"}``, meta
  ``{"session"}``, and ``expire_at`` when ``connect_ttl`` is set); no session: disconnect
  4501 "unauthorized";
- refresh / sub_refresh: prolonged by ``refresh_ttl`` unless the session was revoked;
- subscribe ``proj:<id>``: members of the project only (error 403 otherwise);
- publish ``chat:<id>``: text with "spam" refused (error 1001), other text rewritten to
  ``{"text", "by", "checked": true}``;
- rpc: ``whoami``, ``echo`` (data back, base64 in and out when binary), ``fail`` (error
  1002), ``bye`` (disconnect 4502);
- send: kept.

Tests steer it: ``gate`` (calls wait for it to be set: a slow backend), ``status`` (any
other answer than 200), and read ``calls`` (every request, with its headers) or await
``wait_for_call``.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

PASSWORD_SUFFIX = "-password"


@dataclass
class Call:
    kind: str
    headers: dict[str, str]
    body: dict[str, Any]


class ProxyBackend:
    def __init__(self) -> None:
        self.sessions: dict[str, str] = {}
        self.members: dict[str, set[str]] = {"proj:1": {"alice", "bob"}, "proj:2": {"bob"}}
        self.calls: list[Call] = []
        self.connect_ttl = 0.0
        self.refresh_ttl = 0.0
        self.sub_ttl = 0.0
        self.gate: asyncio.Event | None = None
        self.status = 200
        self.waiting = 0
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # --- for tests ----------------------------------------------------------------
    def login(self, user: str) -> str:
        """A new session of ``user``: the cookie value a browser would hold."""
        session = secrets.token_hex(8)
        self.sessions[session] = user
        return session

    def cookie(self, user: str) -> str:
        return f"session={self.login(user)}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def of(self, kind: str) -> list[Call]:
        return [call for call in self.calls if call.kind == kind]

    async def wait_for_call(
        self, kind: str, predicate: Callable[[Call], bool] = lambda _: True, timeout: float = 5
    ) -> Call:
        async with asyncio.timeout(timeout):
            while True:
                for call in self.calls:
                    if call.kind == kind and predicate(call):
                        return call
                self._changed.clear()
                await self._changed.wait()

    async def wait_for_waiting(self, count: int, timeout: float = 5) -> None:
        """Until ``count`` calls are held at the gate."""
        async with asyncio.timeout(timeout):
            while self.waiting < count:
                self._changed.clear()
                await self._changed.wait()

    def toml(
        self,
        *,
        rpc: bool = True,
        subscribe: tuple[str, ...] = ("proj",),
        publish: tuple[str, ...] = ("chat",),
        sub_refresh: tuple[str, ...] = (),
        proxy_options: str = 'timeout = "2s"',
    ) -> str:
        """pushgate configuration: one ``[[proxies]]`` entry per event, ``[rpc]``, and the
        namespaces whose channels the backend decides (``[client]``'s switches are
        ``overrides``)."""
        kinds = ["connect", "refresh", "rpc", "send", "subscribe", "publish", "sub_refresh"]
        out = []
        for kind in kinds:
            out.append(
                f'[[proxies]]\nname = "{kind}"\nendpoint = "{self.url}/centrifugo/{kind}"\n'
                f'http_headers = ["Cookie", "X-Trace"]\n{proxy_options}\n'
            )
        out.append(f"[rpc]\nproxy_enabled = {str(rpc).lower()}\n")
        for name in sorted({*subscribe, *publish, *sub_refresh}):
            out.append(
                f'[[namespace]]\nname = "{name}"\npresence = true\n'
                "allow_presence_for_subscriber = true\n"
                f"subscribe_proxy_enabled = {str(name in subscribe).lower()}\n"
                f"publish_proxy_enabled = {str(name in publish).lower()}\n"
                f"sub_refresh_proxy_enabled = {str(name in sub_refresh).lower()}\n"
                f"allow_subscribe_for_client = {str(name not in subscribe).lower()}\n"
            )
        return "\n".join(out)

    @staticmethod
    def overrides(
        *, connect: bool = True, refresh: bool = False, send: bool = False
    ) -> dict[str, object]:
        """``[client]``'s proxy switches, as ``make_config`` overrides."""
        return {
            "client__connect_proxy_enabled": connect,
            "client__refresh_proxy_enabled": refresh,
            "client__send_proxy_enabled": send,
        }

    # --- the app ------------------------------------------------------------------
    async def start(self, port: int = 0) -> str:
        app = web.Application()
        app.router.add_post("/centrifugo/{kind}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port, reuse_address=True)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        body = await request.json()
        self.calls.append(Call(kind, dict(request.headers), body))
        self._changed.set()
        if self.gate is not None and not self.gate.is_set():
            self.waiting += 1
            self._changed.set()
            try:
                await self.gate.wait()
            finally:
                self.waiting -= 1
        if self.status != 200:
            return web.Response(status=self.status, text="backend trouble")
        answer = getattr(self, f"_{kind}")(request, body)
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    def _session_user(self, request: web.Request) -> str | None:
        return self.sessions.get(request.cookies.get("session", ""))

    def _connect(self, request: web.Request, body: dict) -> dict:
        user = self._session_user(request)
        given = body.get("data") if isinstance(body.get("data"), dict) else {}
        login = given.get("login", "")
        secret = given.get("passcode") or given.get("password") or ""
        if user is None and login and secret == login.partition("@")[0] + PASSWORD_SUFFIX:
            user = login.partition("@")[0]
        if user is None:
            return {"disconnect": {"code": 4501, "reason": "unauthorized"}}
        result: dict[str, Any] = {
            "user": user,
            "info": {"name": user.title()},
            "data": {"greeting": f"hello {user}"},
            "meta": {"session": request.cookies.get("session", "")},
        }
        if self.connect_ttl:
            result["expire_at"] = int(time.time() + self.connect_ttl)
        return {"result": result}

    def _refresh(self, request: web.Request, body: dict) -> dict:
        meta = body.get("meta") or {}
        if meta.get("session") not in self.sessions:
            return {"result": {"expired": True}}
        return {"result": {"expire_at": int(time.time() + self.refresh_ttl)}}

    def _subscribe(self, request: web.Request, body: dict) -> dict:
        channel, user = body["channel"], body["user"]
        if user not in self.members.get(channel, set()):
            return {"error": {"code": 403, "message": "not a member of the project"}}
        result: dict[str, Any] = {"info": {"role": "member"}, "data": {"welcome": channel}}
        if self.sub_ttl:
            result["expire_at"] = int(time.time() + self.sub_ttl)
        return {"result": result}

    def _sub_refresh(self, request: web.Request, body: dict) -> dict:
        if body["user"] not in self.members.get(body["channel"], set()):
            return {"result": {"expired": True}}
        return {"result": {"expire_at": int(time.time() + self.sub_ttl)}}

    def _publish(self, request: web.Request, body: dict) -> dict:
        text = str((body.get("data") or {}).get("text", ""))
        if "spam" in text:
            return {"error": {"code": 1001, "message": "spam is not welcome"}}
        return {"result": {"data": {"text": text.strip(), "by": body["user"], "checked": True}}}

    def _rpc(self, request: web.Request, body: dict) -> dict:
        method = body["method"]
        if method == "whoami":
            cookie = "session" in request.cookies
            return {"result": {"data": {"user": body["user"], "cookie": cookie}}}
        if method == "echo":
            if "b64data" in body:
                raw = base64.b64decode(body["b64data"])
                return {"result": {"b64data": base64.b64encode(raw[::-1]).decode()}}
            return {"result": {"data": body.get("data")}}
        if method == "fail":
            return {"error": {"code": 1002, "message": "that went wrong"}}
        if method == "bye":
            return {"disconnect": {"code": 4502, "reason": "goodbye"}}
        return {"error": {"code": 104, "message": f"no method {method}"}}

    def _send(self, request: web.Request, body: dict) -> dict:
        return {"result": {}}

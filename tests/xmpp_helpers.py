"""An XMPP client for tests, spoken over BOSH (XEP-0124/0206) with explicit rids and
raw bodies: what tests/e2e/test_bosh.py and the XMPP chat-policy tests drive pushgate with."""

from __future__ import annotations

import asyncio
import base64
import random

import orjson

from pushgate.protocol.xmpp.xml import Element, parse

HTTPBIND = "http://jabber.org/protocol/httpbind"
DOMAIN = "pushgate.test"


def xml(data: bytes) -> Element:
    return parse(data, max_bytes=1 << 22, max_depth=64)


class Bosh:
    """A minimal BOSH client: explicit rids, raw bodies. Every stanza any answer carried
    is kept in ``inbox``; ``terminated`` is the condition of a terminate answer."""

    def __init__(self, server, path: str = "/http-bind") -> None:
        self.server = server
        self.url = server.url + path
        self.rid = random.randrange(1 << 30, 1 << 40)
        self.sid = ""
        self.inbox: list[Element] = []
        self.terminated: str | None = None

    async def raw(self, data: bytes | str) -> bytes:
        async with self.server.session.post(
            self.url, data=data, headers={"Content-Type": "text/xml; charset=utf-8"}
        ) as response:
            assert response.status == 200, response.status
            return await response.read()

    def body(self, inner: str = "", rid: int | None = None, **attrs: str) -> str:
        if rid is None:
            self.rid += 1
            rid = self.rid
        extra = "".join(f' {k.replace("__", ":")}="{v}"' for k, v in attrs.items())
        sid = f' sid="{self.sid}"' if self.sid else ""
        return (
            f'<body xmlns="{HTTPBIND}" xmlns:xmpp="urn:xmpp:xbosh" rid="{rid}"{sid}{extra}>'
            f"{inner}</body>"
        )

    async def send(self, inner: str = "", rid: int | None = None, **attrs: str) -> Element:
        answer = xml(await self.raw(self.body(inner, rid, **attrs)))
        self.inbox.extend(answer.children)
        if answer.get("type") == "terminate":
            self.terminated = answer.get("condition")
        return answer

    async def create(self, to: str = DOMAIN, **attrs: str) -> Element:
        attrs = {"to": to, "wait": "60", "hold": "1", "ver": "1.6", "xmpp__version": "1.0", **attrs}
        answer = await self.send(**attrs)
        self.sid = answer.get("sid")
        return answer

    async def login(self, token: str, user: str, resource: str = "r1") -> str:
        features = await self.create()
        assert features.find("features") is not None
        creds = base64.b64encode(f"\0{user}\0{token}".encode()).decode()
        answer = await self.send(
            f'<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="PLAIN">{creds}</auth>'
        )
        assert answer.children[0].name == "success", answer
        answer = await self.send(xmpp__restart="true", to=DOMAIN)
        assert answer.find("features").find("bind") is not None
        answer = await self.send(
            '<iq xmlns="jabber:client" type="set" id="b1"><bind '
            f'xmlns="urn:ietf:params:xml:ns:xmpp-bind"><resource>{resource}</resource>'
            "</bind></iq>"
        )
        jid = answer.children[0].find("bind").find_text("jid")
        assert jid == f"{user}@{DOMAIN}/{resource}"
        await self.send(
            '<iq xmlns="jabber:client" type="set" id="s1">'
            '<session xmlns="urn:ietf:params:xml:ns:xmpp-session"/></iq>'
        )
        return jid

    async def collect(self, predicate, timeout: float = 5.0) -> list[Element]:
        """Long-poll until a stanza matching ``predicate`` arrives; every stanza seen."""
        seen: list[Element] = []
        async with asyncio.timeout(timeout):
            while True:
                answer = await self.send()
                seen.extend(answer.children)
                if any(predicate(child) for child in answer.children):
                    return seen

    async def available(self) -> None:
        """Initial presence: the connection becomes an available resource."""
        await self.send('<presence xmlns="jabber:client"/>')

    async def wait_for(self, predicate, timeout: float = 5.0) -> Element:
        """The first stanza received so far that matches, long-polling for more."""
        async with asyncio.timeout(timeout):
            while True:
                for stanza in self.inbox:
                    if predicate(stanza):
                        return stanza
                await self.send()

    def received(self, predicate) -> list[Element]:
        return [stanza for stanza in self.inbox if predicate(stanza)]


def message(to: str, body: str, type_: str = "chat", id_: str = "") -> str:
    msg_id = f' id="{id_}"' if id_ else ""
    return (
        f'<message xmlns="jabber:client" to="{to}" type="{type_}"{msg_id}>'
        f"<body>{body}</body></message>"
    )


def chat_from(sender: str, body: str | None = None):
    """A predicate: a chat or normal message from ``sender`` (with that body)."""
    return lambda s: (
        s.name == "message"
        and s.get("type") in ("chat", "normal")
        and s.get("from") == sender
        and (body is None or s.find_text("body") == body)
    )


def error_of(stanza: Element) -> tuple[str, str] | None:
    """(error type, condition) of an error stanza, else None."""
    if stanza.get("type") != "error" or stanza.find("error") is None:
        return None
    error = stanza.find("error")
    conditions = [c.name for c in error.children if c.name != "text"]
    return error.get("type"), conditions[0] if conditions else ""


def headlines(stanzas: list[Element]) -> list[tuple[str, str, object]]:
    out = []
    for stanza in stanzas:
        if stanza.name == "message" and stanza.get("type") == "headline":
            items = stanza.find("event").find("items")
            item = items.find("item")
            out.append((items.get("node"), item.get("id"), orjson.loads(item.find("json").text)))
    return out

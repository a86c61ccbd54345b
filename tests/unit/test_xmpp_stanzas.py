"""The XMPP stanza layer without a browser: the hardened XML codec (fuzzed, and
attacked with a billion-laughs document, entities, DTDs, deep and oversized input),
JIDs, stanza builders, the sans-I/O BOSH state machine, and RFC 7395 over a raw
WebSocket, where every refused input ends the stream with a stream error."""

from __future__ import annotations

import base64
import contextlib

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from pushgate.protocol.xmpp import stanzas as st
from pushgate.protocol.xmpp.bosh import (
    ITEM_NOT_FOUND,
    BoshError,
    BoshState,
    Duplicate,
    Queued,
    Replay,
)
from pushgate.protocol.xmpp.stanzas import Jid
from pushgate.protocol.xmpp.xml import Element, XmlError, parse

DOMAIN = "pushgate.test"
LIMIT = 65536

BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    + "".join(
        f' <!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">\n'
        for i in range(1, 10)
    )
    + "]>\n<message>&lol9;</message>"
)


def parse_ok(data: bytes | str) -> Element:
    return parse(data, max_bytes=LIMIT, max_depth=32)


# --- the XML codec ----------------------------------------------------------------------
def test_parse_namespaces_attributes_text():
    el = parse_ok(
        "<message xmlns='jabber:client' to='bob@x' xml:lang='en'>"
        "<body>a &amp; b &lt;3</body><x xmlns='urn:other'/></message>"
    )
    assert (el.ns, el.name, el.get("to")) == ("jabber:client", "message", "bob@x")
    assert el.attrs["http://www.w3.org/XML/1998/namespace lang"] == "en"
    assert el.find_text("body") == "a & b <3"
    assert el.find("x").ns == "urn:other"


@pytest.mark.parametrize(
    ("document", "condition"),
    [
        (BILLION_LAUGHS, "restricted-xml"),
        ('<!DOCTYPE x SYSTEM "file:///etc/passwd"><x/>', "restricted-xml"),
        ('<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>', "restricted-xml"),
        ("<x>&undefined;</x>", "not-well-formed"),
        ("<x><!-- comment --></x>", "restricted-xml"),
        ("<?php evil ?><x/>", "restricted-xml"),
        ("<x>" * 40 + "</x>" * 40, "policy-violation"),
        ("<x>" + "a" * (LIMIT + 1) + "</x>", "policy-violation"),
        ("<x><y></x>", "not-well-formed"),
        ("<x/><y/>", "not-well-formed"),
        ("", "not-well-formed"),
        ("<p:x/>", "not-well-formed"),
    ],
)
def test_refused_documents(document, condition):
    with pytest.raises(XmlError) as caught:
        parse_ok(document)
    assert caught.value.condition == condition


@settings(max_examples=300, deadline=None)
@given(hs.binary(max_size=300) | hs.text(max_size=300).map(str.encode))
def test_fuzz_arbitrary_bytes_never_crash(data):
    with contextlib.suppress(XmlError):
        parse_ok(data)


_tag = hs.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True)
_text = hs.text(
    hs.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff")
    | hs.sampled_from("\t\n"),
    max_size=30,
)


def _elements(depth: int):
    children = hs.lists(_elements(depth - 1), max_size=3) if depth > 0 else hs.just([])
    return hs.builds(
        lambda name, ns, attrs, text, kids: Element(name, ns, attrs, kids, text),
        _tag,
        hs.sampled_from(["", "jabber:client", "urn:x:y"]),
        hs.dictionaries(_tag, _text, max_size=3),
        _text.filter(lambda t: t.strip() == t),
        children,
    )


@settings(max_examples=200, deadline=None)
@given(_elements(3))
def test_fuzz_roundtrip(element):
    # the parser sees \r\n as \n and \r as \n in text; keep to what XML preserves
    def clean(el: Element) -> None:
        el.text = el.text.replace("\r", "")
        el.attrs = {
            k: v.replace("\r", "").replace("\n", " ").replace("\t", " ")
            for k, v in el.attrs.items()
        }
        for child in el.children:
            clean(child)

    clean(element)
    assert parse_ok(element.to_bytes()) == element


def test_builders_are_well_formed_and_escaped():
    stanza = st.headline(DOMAIN, "board:1", "7", '{"t":"<b>&\'"}')
    el = parse_ok(stanza)
    item = el.find("event").find("items").find("item")
    assert item.get("id") == "7" and item.find("json").text == '{"t":"<b>&\'"}'
    assert "to" not in el.attrs and el.ns == st.NS_CLIENT
    chat = parse_ok(st.chat_message("a@x/r", "x < y & z", msg_id="1"))
    assert chat.find_text("body") == "x < y & z"
    for data in (
        st.features_sasl(),
        st.features_bind(),
        st.stream_error("policy-violation", "too <big>"),
        st.stanza_error("iq", "5", "service-unavailable"),
        st.roster_result("r", ["b@x", "a@x"]),
        st.presence("a@x/r", show="away", status="at <lunch>"),
        st.ws_open(DOMAIN, "id1"),
    ):
        parse_ok(data)


def test_jids():
    assert Jid.parse("alice@Pushgate.Test/web") == Jid("alice", "pushgate.test", "web")
    assert Jid.parse("room@conference.x").bare == "room@conference.x"
    assert str(Jid.parse("x.org")) == "x.org"
    for bad in ("", "@x", "a@x/", "a@"):
        assert Jid.parse(bad) is None


# --- the BOSH state machine -------------------------------------------------------------
def make_state(**kw) -> BoshState:
    options = dict(wait=60, hold=1, requests=2, inactivity=30, polling=2, ack=False, now=0.0)
    options.update(kw)
    return BoshState("sid", 100, **options)


def test_bosh_rid_order_hold_and_replay():
    state = make_state()
    assert isinstance(state.receive(102, "b", 1.0), Queued)
    assert state.ready() == []  # 101 missing
    assert isinstance(state.receive(101, "a", 1.0), Queued)
    assert state.ready() == [(101, "a"), (102, "b")]
    # two parked, hold 1: the oldest is answered (empty), the newer waits
    answered = state.flush()
    assert [rid for rid, _ in answered] == [101]
    state.queue(b"<message/>")
    answered = state.flush()
    assert answered[0][0] == 102 and b"<message/>" in answered[0][1]
    # a repeated rid gets the very same bytes
    assert state.receive(102, "b", 2.0) == Replay(answered[0][1])
    with pytest.raises(BoshError) as caught:
        state.receive(99, "", 2.0)
    assert caught.value.condition == ITEM_NOT_FOUND
    with pytest.raises(BoshError):
        state.receive(105, "", 2.0)  # beyond the window of 2


def test_bosh_duplicate_of_parked_and_inactivity():
    state = make_state()
    state.receive(101, "a", 1.0)
    state.ready()
    assert state.receive(101, "a", 1.5) == Duplicate(101)
    assert state.expire(101)[0][0] == 101
    state.finished(2.0)
    state.finished(2.0)
    assert not state.inactive(31.0)
    assert state.inactive(32.5)


def test_bosh_ack_and_terminate():
    state = make_state(ack=True)
    state.receive(101, "a", 1.0)
    state.receive(102, "b", 1.0)
    state.ready()
    ((rid, body),) = state.flush()
    assert rid == 101 and b'ack="102"' in body
    state.receive(103, "c", 1.0, ack=101)
    assert 101 not in state.responses
    state.ready()
    state.terminate("system-shutdown")
    answers = state.flush()
    assert [rid for rid, _ in answers] == [102, 103]
    assert all(b'condition="system-shutdown"' in body for _, body in answers)


def test_bosh_polling_too_fast_is_a_policy_violation():
    state = make_state(hold=0)
    state.receive(101, "", 1.0, empty=True)
    state.ready()
    state.flush()
    with pytest.raises(BoshError) as caught:
        state.receive(102, "", 1.5, empty=True)
    assert caught.value.condition == "policy-violation"


# --- RFC 7395 over a raw WebSocket -------------------------------------------------------
XMPP_CONFIG = f"""
[xmpp]
domain = "{DOMAIN}"
max_stanza_bytes = 4096
"""
OPEN = f"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='{DOMAIN}' version='1.0'/>"


async def ws_connect(server) -> aiohttp.ClientWebSocketResponse:
    url = server.url.replace("http://", "ws://") + "/xmpp-websocket"
    ws = await server.session.ws_connect(url, protocols=("xmpp",))
    assert ws.protocol == "xmpp"
    return ws


async def receive(ws) -> Element:
    message = await ws.receive(timeout=5)
    assert message.type == aiohttp.WSMsgType.TEXT, message
    return parse_ok(message.data)


async def ws_login(ws, server, user: str) -> None:
    await ws.send_str(OPEN)
    assert (await receive(ws)).name == "open"
    assert (await receive(ws)).find("mechanisms") is not None
    creds = base64.b64encode(f"\0{user}\0{server.token(user)}".encode()).decode()
    await ws.send_str(f"<auth xmlns='{st.NS_SASL}' mechanism='PLAIN'>{creds}</auth>")
    assert (await receive(ws)).name == "success"
    await ws.send_str(OPEN)
    assert (await receive(ws)).name == "open"
    assert (await receive(ws)).find("bind") is not None
    await ws.send_str(
        f"<iq xmlns='jabber:client' type='set' id='b'><bind xmlns='{st.NS_BIND}'/></iq>"
    )
    jid = (await receive(ws)).find("bind").find_text("jid")
    assert jid.startswith(f"{user}@{DOMAIN}/")


async def expect_stream_error(ws, condition: str) -> None:
    error = await receive(ws)
    assert error.name == "error" and error.ns == st.NS_STREAM, error
    assert error.children[0].name == condition
    assert (await receive(ws)).name == "close"
    message = await ws.receive(timeout=5)
    assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


@pytest.fixture
async def xserver(make_server, server_config):
    return await make_server(server_config(XMPP_CONFIG))


@pytest.mark.parametrize(
    ("attack", "condition"),
    [
        (BILLION_LAUGHS, "restricted-xml"),
        (
            "<message xmlns='jabber:client'><body>" + "x" * 5000 + "</body></message>",
            "policy-violation",
        ),
        ("<message>" * 100, "policy-violation"),
        ("<message xmlns='jabber:client'><body>&xxe;</body></message>", "not-well-formed"),
    ],
)
async def test_websocket_attacks_end_the_stream(xserver, attack, condition):
    ws = await ws_connect(xserver)
    await ws_login(ws, xserver, "alice")
    await ws.send_str(attack)
    await expect_stream_error(ws, condition)
    # unharmed: another client logs in and is served
    other = await ws_connect(xserver)
    await ws_login(other, xserver, "bob")
    await other.send_str(
        "<iq xmlns='jabber:client' type='get' id='v'><query xmlns='jabber:iq:version'/></iq>"
    )
    error = await receive(other)
    assert error.get("type") == "error" and error.find("error").find("service-unavailable")
    await other.close()


async def test_websocket_wrong_host_and_stanza_before_auth(xserver):
    ws = await ws_connect(xserver)
    await ws.send_str("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='else.where'/>")
    await expect_stream_error(ws, "host-unknown")
    ws = await ws_connect(xserver)
    await ws.send_str(OPEN)
    await receive(ws)
    await receive(ws)
    await ws.send_str(
        "<message xmlns='jabber:client' to='bob@pushgate.test'><body>x</body></message>"
    )
    await expect_stream_error(ws, "not-authorized")


async def test_websocket_headline_encoded_once_for_every_recipient(xserver):
    sockets = []
    for user in ("alice", "bob", "carol"):
        ws = await ws_connect(xserver)
        creds_user = user
        await ws.send_str(OPEN)
        await receive(ws)
        await receive(ws)
        token = xserver.token(creds_user, channels=["notifications:all"])
        creds = base64.b64encode(f"\0{user}\0{token}".encode()).decode()
        await ws.send_str(f"<auth xmlns='{st.NS_SASL}' mechanism='PLAIN'>{creds}</auth>")
        await receive(ws)
        await ws.send_str(OPEN)
        await receive(ws)
        await receive(ws)
        await ws.send_str(
            f"<iq xmlns='jabber:client' type='set' id='b'><bind xmlns='{st.NS_BIND}'/></iq>"
        )
        await receive(ws)
        sockets.append(ws)
    await xserver.publish("notifications:all", {"hello": "all"})
    raw = set()
    for ws in sockets:
        message = await ws.receive(timeout=5)
        raw.add(message.data)
    assert len(raw) == 1  # the very same bytes for everyone: no per-recipient "to"
    el = parse_ok(raw.pop())
    assert el.get("type") == "headline" and "to" not in el.attrs
    for ws in sockets:
        await ws.send_str("<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>")
        assert (await receive(ws)).name == "close"

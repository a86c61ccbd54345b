"""XMPP over BOSH (XEP-0124/0206) spoken directly over HTTP: session creation, SASL with
a JWT, the rid rules (repeated, out of order, outside the window), hold overflow,
inactivity, terminate conditions, and publications as headline messages."""

from __future__ import annotations

import asyncio
import base64

import pytest

from tests.xmpp_helpers import DOMAIN, HTTPBIND, Bosh, headlines, xml

XMPP_CONFIG = f"""
[[namespace]]
name = "team"
presence = true
join_leave = true
[[namespace]]
name = "room"
allow_subscribe_for_client = true
allow_publish_for_subscriber = true
history_size = 100
history_ttl = "600s"
force_recovery = true
[xmpp]
domain = "{DOMAIN}"
bosh_wait = "1s"
max_stanza_bytes = 8192
"""
SHORT_INACTIVITY = XMPP_CONFIG + 'bosh_inactivity = "2s"\n'


@pytest.fixture
async def xserver(make_server, server_config):
    return await make_server(server_config(XMPP_CONFIG))


async def test_session_creation_attributes(xserver):
    bosh = Bosh(xserver)
    answer = await bosh.create(wait="60", hold="3")
    assert answer.ns == HTTPBIND and len(answer.get("sid")) >= 32
    attrs = answer.attrs
    assert attrs["wait"] == "1"  # the server's bosh_wait is shorter than the client's
    assert attrs["hold"] == "1" and attrs["requests"] == "2"
    assert attrs["inactivity"] == "30" and attrs["polling"] == "2"
    assert attrs["ver"] == "1.6" and attrs["from"] == DOMAIN
    assert attrs["urn:xmpp:xbosh version"] == "1.0"
    assert attrs["urn:xmpp:xbosh restartlogic"] == "true"
    mechanisms = answer.find("features").find("mechanisms")
    assert [m.text for m in mechanisms.children] == ["PLAIN"]
    # also at /bosh
    other = await Bosh(xserver, "/bosh").create()
    assert other.get("sid") and other.get("sid") != answer.get("sid")


async def test_terminate_conditions(xserver):
    answer = await Bosh(xserver).create(to="elsewhere.example")
    assert (answer.get("type"), answer.get("condition")) == ("terminate", "host-unknown")
    bosh = Bosh(xserver)
    bosh.sid = "no-such-session"
    answer = await bosh.send()
    assert (answer.get("type"), answer.get("condition")) == ("terminate", "item-not-found")
    answer = xml(await Bosh(xserver).raw("<body xmlns='http://jabber.org/protocol/httpbind'/>"))
    assert answer.get("condition") == "bad-request"  # no rid
    answer = xml(await Bosh(xserver).raw("<nobody/>"))
    assert answer.get("condition") == "bad-request"
    answer = xml(await Bosh(xserver).raw("<body xmlns='http://jabber.org/protocol/httpbind'"))
    assert answer.get("condition") == "bad-request"


async def test_login_presence_and_headlines_in_order(xserver):
    bosh = Bosh(xserver)
    token = xserver.token("alice", channels=["notifications:alice"])
    await bosh.login(token, "alice")
    answer = await bosh.send('<presence xmlns="jabber:client"><show>away</show></presence>')
    echo = answer.find("presence")
    assert echo.get("from") == f"alice@{DOMAIN}/r1" and echo.find_text("show") == "away"
    for n in range(1, 6):
        await xserver.publish("notifications:alice", {"n": n})
    seen = await bosh.collect(lambda s: s.name == "message" and "5" in s.to_str())
    got = headlines(seen)
    assert [(node, item_id, data["n"]) for node, item_id, data in got] == [
        ("notifications:alice", str(n), n) for n in range(1, 6)
    ]
    first = next(s for s in seen if s.name == "message")
    assert first.get("from") == DOMAIN and "to" not in first.attrs
    status = await xserver.api("info")
    assert status["_status"] == 200


async def test_bad_token_is_a_sasl_failure(xserver):
    bosh = Bosh(xserver)
    await bosh.create()
    creds = base64.b64encode(b"\0alice\0not-a-jwt").decode()
    answer = await bosh.send(
        f'<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="PLAIN">{creds}</auth>'
    )
    failure = answer.find("failure")
    assert failure is not None and failure.find("not-authorized") is not None
    # a token for another user than the one named
    token = xserver.token("bob")
    creds = base64.b64encode(f"\0alice\0{token}".encode()).decode()
    answer = await bosh.send(
        f'<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="PLAIN">{creds}</auth>'
    )
    assert answer.find("failure") is not None or answer.get("type") == "terminate"


async def test_unsupported_iq_gets_service_unavailable(xserver):
    bosh = Bosh(xserver)
    await bosh.login(xserver.token("alice"), "alice")
    answer = await bosh.send(
        '<iq xmlns="jabber:client" type="get" id="v1"><query xmlns="jabber:iq:version"/></iq>'
    )
    iq = answer.find("iq")
    assert (iq.get("type"), iq.get("id")) == ("error", "v1")
    assert iq.find("error").find("service-unavailable") is not None
    answer = await bosh.send(
        '<iq xmlns="jabber:client" type="get" id="p1"><ping xmlns="urn:xmpp:ping"/></iq>'
    )
    assert answer.find("iq").get("type") == "result"


async def test_repeated_rid_gets_the_same_response(xserver):
    bosh = Bosh(xserver)
    await bosh.create()
    creds = base64.b64encode(f"\0alice\0{xserver.token('alice')}".encode()).decode()
    auth = f'<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="PLAIN">{creds}</auth>'
    first = await bosh.raw(bosh.body(auth))
    again = await bosh.raw(bosh.body(auth, rid=bosh.rid))
    assert first == again and b"success" in first
    # the session creation's own answer is still there too
    created = await bosh.raw(bosh.body(rid=bosh.rid - 1))
    assert b"mechanisms" in created
    # a rid older than the window is fatal
    for _ in range(3):
        await bosh.send(
            '<iq xmlns="jabber:client" type="get" id="x"><ping xmlns="urn:xmpp:ping"/></iq>'
        )
    answer = await bosh.send(rid=bosh.rid - 5)
    assert answer.get("condition") == "item-not-found"


async def test_out_of_order_rids_are_processed_in_order(xserver):
    bosh = Bosh(xserver)
    await bosh.login(xserver.token("alice"), "alice")
    base = bosh.rid
    second = asyncio.create_task(
        bosh.send(
            '<iq xmlns="jabber:client" type="get" id="second"><ping xmlns="urn:xmpp:ping"/></iq>',
            rid=base + 2,
        )
    )
    await asyncio.sleep(0.3)
    assert not second.done()  # rid base+1 is missing: base+2 waits for it
    first = await bosh.send(
        '<iq xmlns="jabber:client" type="get" id="first"><ping xmlns="urn:xmpp:ping"/></iq>',
        rid=base + 1,
    )
    later = await second
    ids = [s.get("id") for s in first.children + later.children]
    assert ids == ["first", "second"]
    bosh.rid = base + 2
    # beyond the window (requests = 2): fatal
    answer = await bosh.send(rid=base + 5)
    assert answer.get("condition") == "item-not-found"
    answer = await bosh.send()
    assert answer.get("type") == "terminate"


async def test_hold_overflow_answers_the_oldest_empty(xserver):
    bosh = Bosh(xserver)
    await bosh.login(xserver.token("alice", channels=["notifications:alice"]), "alice")
    parked = asyncio.create_task(bosh.send())
    await asyncio.sleep(0.2)
    assert not parked.done()
    newer = asyncio.create_task(bosh.send())
    oldest = await asyncio.wait_for(parked, 1.0)  # hold = 1: answered at once, empty
    assert oldest.children == []
    assert not newer.done()
    await xserver.publish("notifications:alice", "hello")
    answer = await asyncio.wait_for(newer, 2.0)
    assert headlines(answer.children) == [("notifications:alice", "1", "hello")]


async def test_wait_expiry_answers_empty(xserver):
    bosh = Bosh(xserver)
    await bosh.login(xserver.token("alice"), "alice")
    loop = asyncio.get_running_loop()
    started = loop.time()
    answer = await bosh.send()
    assert answer.children == [] and 0.8 < loop.time() - started < 2.5


async def test_inactivity_ends_the_session_and_its_presence(make_server, server_config):
    xserver = await make_server(server_config(SHORT_INACTIVITY))
    bosh = Bosh(xserver)
    await bosh.login(xserver.token("alice"), "alice")
    assert "alice" in xserver.hub.users
    await asyncio.sleep(3.5)  # inactivity 2 s, swept every second
    assert "alice" not in xserver.hub.users
    answer = await bosh.send()
    assert answer.get("condition") == "item-not-found"


async def test_reconnect_within_inactivity_misses_nothing(xserver):
    bosh = Bosh(xserver)
    token = xserver.token("alice", channels=["notifications:alice"])
    await bosh.login(token, "alice")
    # no request held: the network is down
    for n in range(1, 4):
        await xserver.publish("notifications:alice", n)
    await asyncio.sleep(1.0)
    answer = await bosh.send()
    assert [d for _, _, d in headlines(answer.children)] == [1, 2, 3]


async def test_login_after_expiry_resumes_from_history(xserver):
    token = xserver.token("alice", channels=["notifications:alice"])
    bosh = Bosh(xserver)
    await bosh.login(token, "alice")
    await xserver.publish("notifications:alice", 1)
    answer = await bosh.send()
    assert [d for _, _, d in headlines(answer.children)] == [1]
    await bosh.send(type="terminate")
    for n in range(2, 5):
        await xserver.publish("notifications:alice", n)
    again = Bosh(xserver)
    await again.create()
    creds = base64.b64encode(f"\0alice\0{token}".encode()).decode()
    await again.send(
        f'<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="PLAIN">{creds}</auth>'
    )
    await again.send(xmpp__restart="true", to=DOMAIN)
    answer = await again.send(
        '<iq xmlns="jabber:client" type="set" id="b">'
        '<bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"/></iq>'
    )
    assert [d for _, _, d in headlines(answer.children)] == [2, 3, 4]


async def test_client_terminate(xserver):
    bosh = Bosh(xserver)
    await bosh.login(xserver.token("alice"), "alice")
    answer = await bosh.send(
        '<presence xmlns="jabber:client" type="unavailable"/>', type="terminate"
    )
    assert answer.get("type") == "terminate" and answer.get("condition") == ""
    await asyncio.sleep(0.1)
    assert "alice" not in xserver.hub.users
    answer = await bosh.send()
    assert answer.get("condition") == "item-not-found"


async def test_hostile_bodies_are_refused_and_the_server_carries_on(xserver):
    bosh = Bosh(xserver)
    await bosh.login(xserver.token("alice"), "alice")
    laughs = (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        + "".join(f'<!ENTITY lol{i} "{("&lol%s;" % (i - 1 or "")) * 10}">' for i in range(1, 10))
        + f']><body xmlns="{HTTPBIND}" rid="{bosh.rid + 1}" sid="{bosh.sid}">&lol9;</body>'
    )
    answer = xml(await bosh.raw(laughs))
    assert answer.get("condition") == "bad-request"
    big = bosh.body(
        "<message xmlns='jabber:client' to='bob@pushgate.test'><body>"
        + "x" * 10000
        + "</body></message>",
        rid=bosh.rid + 1,
    )
    answer = xml(await bosh.raw(big))
    assert answer.get("condition") == "policy-violation"
    deep = bosh.body("<a>" * 50 + "</a>" * 50, rid=bosh.rid + 1)
    answer = xml(await bosh.raw(deep))
    assert answer.get("condition") == "policy-violation"
    # the server is unharmed: the session goes on, and new ones start
    await Bosh(xserver).login(xserver.token("bob"), "bob")
    answer = await bosh.send(
        '<iq xmlns="jabber:client" type="get" id="p"><ping xmlns="urn:xmpp:ping"/></iq>'
    )
    assert answer.find("iq").get("type") == "result"


async def test_chat_and_contacts_presence_between_two_users(xserver):
    alice, bob = Bosh(xserver), Bosh(xserver)
    await alice.login(xserver.token("alice", channels=["team:7"]), "alice")
    await alice.send('<presence xmlns="jabber:client"/>')
    await bob.login(xserver.token("bob", channels=["team:7"]), "bob", resource="phone")
    answer = await bob.send('<presence xmlns="jabber:client"><show>dnd</show></presence>')
    seen = (
        answer.children
        + await bob.collect(
            lambda s: s.name == "presence" and s.get("from", "").startswith("alice@"), timeout=3
        )
        if not any(s.get("from", "").startswith("alice@") for s in answer.children)
        else answer.children
    )
    assert any(s.get("from") == f"alice@{DOMAIN}/r1" for s in seen if s.name == "presence")
    seen = await alice.collect(lambda s: s.name == "presence" and s.find_text("show") == "dnd")
    assert any(s.get("from") == f"bob@{DOMAIN}/phone" for s in seen)
    roster = await alice.send(
        '<iq xmlns="jabber:client" type="get" id="r"><query xmlns="jabber:iq:roster"/></iq>'
    )
    items = roster.find("iq").find("query").children
    assert [i.get("jid") for i in items] == [f"bob@{DOMAIN}"]
    # chat both ways
    await alice.send(
        f'<message xmlns="jabber:client" to="bob@{DOMAIN}" type="chat" id="m1">'
        "<body>hi bob</body></message>"
    )
    seen = await bob.collect(lambda s: s.name == "message")
    msg = next(s for s in seen if s.name == "message")
    assert (msg.get("from"), msg.get("type"), msg.find_text("body")) == (
        f"alice@{DOMAIN}/r1",
        "chat",
        "hi bob",
    )
    await bob.send(
        f'<message xmlns="jabber:client" to="alice@{DOMAIN}" type="chat">'
        "<body>hi alice &amp; co</body></message>"
    )
    seen = await alice.collect(lambda s: s.name == "message")
    assert next(s for s in seen if s.name == "message").find_text("body") == "hi alice & co"
    # bob leaves: alice sees him unavailable
    await bob.send('<presence xmlns="jabber:client" type="unavailable"/>', type="terminate")
    seen = await alice.collect(lambda s: s.name == "presence" and s.get("type") == "unavailable")
    assert any(
        s.get("from") == f"bob@{DOMAIN}/phone" for s in seen if s.get("type") == "unavailable"
    )


async def test_groupchat_publishes_to_the_room_channel(xserver):
    alice = Bosh(xserver)
    await alice.login(xserver.token("alice"), "alice")
    answer = await alice.send(
        f'<presence xmlns="jabber:client" to="board1@conference.{DOMAIN}/alice">'
        '<x xmlns="http://jabber.org/protocol/muc"/></presence>'
    )
    assert answer.find("presence").get("from") == f"board1@conference.{DOMAIN}/alice"
    sent = await alice.send(
        f'<message xmlns="jabber:client" to="board1@conference.{DOMAIN}" type="groupchat">'
        "<body>card moved</body></message>"
    )
    history = await xserver.api("history", {"channel": "room:board1", "limit": 10})
    pubs = history["result"]["publications"]
    assert pubs[0]["data"]["body"] == "card moved"
    seen = sent.children or await alice.collect(lambda s: s.name == "message")
    msg = next(s for s in seen if s.name == "message")
    assert msg.get("type") == "groupchat" and msg.find_text("body") == "card moved"
    assert msg.get("from") == f"board1@conference.{DOMAIN}/alice"


async def test_stanzas_waiting_for_a_request_show_in_the_write_queue_gauge(xserver):
    from tests.e2e.test_operations import scrape, value

    bosh = Bosh(xserver)
    await bosh.login(xserver.token("alice", channels=["notifications:alice"]), "alice")
    # no request held: the headlines wait in the session's outbox
    for n in range(1, 4):
        await xserver.publish("notifications:alice", n)
    waiting = await scrape(xserver)
    assert value(waiting, "pushgate_connections", transport="bosh", dialect="xmpp") == 1
    assert value(waiting, "pushgate_write_queue_bytes") > 0
    answer = await bosh.send()
    assert [d for _, _, d in headlines(answer.children)] == [1, 2, 3]
    assert value(await scrape(xserver), "pushgate_write_queue_bytes") == 0

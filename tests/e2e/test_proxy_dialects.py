"""The proxies from STOMP and XMPP clients (docs/proxy.md): the real @stomp/stompjs with a
session cookie on its WebSocket upgrade, or a login and passcode; an XMPP client (BOSH)
whose SASL PLAIN password the connect proxy checks; RPC as a STOMP SEND to ``/rpc/<method>``
answered on ``reply-to``, and as an XMPP ``<rpc xmlns='urn:pushgate:rpc'/>`` iq."""

from __future__ import annotations

import base64
import json

import pytest

from tests.e2e.test_centrifuge_js import NODE, TESTS
from tests.e2e.test_stompjs import StompJsClient, stomp_message
from tests.e2e.test_stompjs import stompjs as stompjs
from tests.proxy_backend import PASSWORD_SUFFIX, ProxyBackend
from tests.xmpp_helpers import DOMAIN, Bosh, error_of


@pytest.fixture
async def backend():
    backend = ProxyBackend()
    await backend.start()
    yield backend
    await backend.stop()


@pytest.fixture
async def server(make_server, server_config, backend):
    xmpp = f'[xmpp]\ndomain = "{DOMAIN}"\nbosh_wait = "1s"\n'
    return await make_server(server_config(backend.toml() + xmpp, **ProxyBackend.overrides()))


def stomp_url(server) -> str:
    return server.url.replace("http://", "ws://") + "/stomp"


needs_stompjs = pytest.mark.skipif(
    NODE is None or not (TESTS / "node_modules" / "@stomp" / "stompjs").is_dir(),
    reason="needs node and tests/node_modules (run `cd tests && npm install`)",
)


@needs_stompjs
async def test_stompjs_with_a_cookie_makes_rpcs_and_publishes_through_the_backend(
    server, backend, stompjs
):
    client: StompJsClient = await stompjs()
    cookie = backend.cookie("alice")
    connected = await client.stomp_connect(stomp_url(server), "", wsHeaders={"Cookie": cookie})
    assert connected["event"] == "connected", connected
    assert connected["headers"]["user-name"] == "alice"
    call = await backend.wait_for_call("connect")
    assert call.headers["Cookie"] == cookie
    assert (call.body["transport"], call.body["protocol"]) == ("stomp_websocket", "stomp")

    # an RPC: SEND to /rpc/<method>, the answer to reply-to with the correlation-id
    mark = len(client.events)
    rpc_headers = {"reply-to": "/temp-queue/rpc", "correlation-id": "c-1"}
    await client.ok("publish", destination="/rpc/whoami", body="{}", headers=rpc_headers)
    answer = await client.wait(lambda e: e["event"] == "unhandled_message", start=mark)
    assert answer["headers"]["destination"] == "/temp-queue/rpc"
    assert answer["headers"]["correlation-id"] == "c-1"
    assert json.loads(answer["body"]) == {"user": "alice", "cookie": True}

    mark = len(client.events)
    failing = {"reply-to": "/temp-queue/rpc", "correlation-id": "c-2"}
    await client.ok("publish", destination="/rpc/fail", body="{}", headers=failing)
    error = await client.wait(lambda e: e["event"] == "unhandled_message", start=mark)
    assert error["headers"]["correlation-id"] == "c-2"
    assert error["headers"]["x-pushgate-error-code"] == "1002"
    assert error["headers"]["x-pushgate-error-message"] == "that went wrong"

    # a publication the backend rewrites; the connection is still up after the error
    await client.stomp_subscribe("/topic/chat:1", "s1")
    body = json.dumps({"text": " hi from stomp "})
    await client.ok("publish", destination="/topic/chat:1", body=body)
    expected = {"text": "hi from stomp", "by": "alice", "checked": True}
    await client.wait(stomp_message(expected, "s1"))
    assert not client.matching(lambda e: e["event"] in ("stomp_error", "ws_close"))


@needs_stompjs
async def test_stompjs_login_and_passcode_go_to_the_connect_proxy(server, backend, stompjs):
    client: StompJsClient = await stompjs()
    connected = await client.stomp_connect(
        stomp_url(server), "alice" + PASSWORD_SUFFIX, headers={"login": "alice"}
    )
    assert connected["event"] == "connected", connected
    call = await backend.wait_for_call("connect")
    assert call.body["data"] == {"login": "alice", "passcode": "alice" + PASSWORD_SUFFIX}

    refused: StompJsClient = await stompjs("refused")
    answer = await refused.stomp_connect(stomp_url(server), "guess", headers={"login": "alice"})
    assert answer["event"] == "stomp_error"
    assert answer["headers"]["message"] == "unauthorized"


async def test_xmpp_password_login_and_rpc_iq(server, backend):
    bosh = Bosh(server)
    # SASL PLAIN with a password, not a token: the connect proxy checks it
    jid = await bosh.login("alice" + PASSWORD_SUFFIX, "alice")
    assert jid.startswith("alice@")
    call = await backend.wait_for_call("connect")
    assert (call.body["transport"], call.body["protocol"]) == ("bosh", "xmpp")
    assert call.body["data"]["login"] == "alice"

    answer = await bosh.send(
        '<iq xmlns="jabber:client" type="set" id="r1">'
        '<rpc xmlns="urn:pushgate:rpc" method="echo">{"card": 7}</rpc></iq>'
    )
    [result] = answer.children
    assert (result.name, result.get("type"), result.get("id")) == ("iq", "result", "r1")
    assert json.loads(result.find("rpc").text) == {"card": 7}

    answer = await bosh.send(
        '<iq xmlns="jabber:client" type="set" id="r2">'
        '<rpc xmlns="urn:pushgate:rpc" method="fail">{}</rpc></iq>'
    )
    [failed] = answer.children
    assert error_of(failed) == ("cancel", "undefined-condition")
    detail = failed.find("error")
    assert detail.find_text("text") == "that went wrong"
    assert detail.find("rpc-error").get("code") == "1002"


async def test_xmpp_wrong_password_is_not_authorized(server):
    bosh = Bosh(server)
    await bosh.create()
    creds = base64.b64encode(b"\0alice\0wrong").decode()
    answer = await bosh.send(
        f'<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="PLAIN">{creds}</auth>'
    )
    [failure] = answer.children
    assert failure.name == "failure"
    assert failure.children[0].name == "not-authorized"

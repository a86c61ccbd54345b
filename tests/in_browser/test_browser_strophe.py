"""strophe.js 5 (npm ``strophe.js``) in chromium against pushgate, over BOSH and over
WebSocket, as a page built for ejabberd would use it: log in with a JWT as the SASL
PLAIN password, see a teammate come online and go offline, chat both ways (while a user
sharing no team gets service-unavailable), and receive the backend's publications in
order as headline messages with XEP-0060 items.
"""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("browser")
pytest_plugins = ["browser"]

from browser import html_page, js  # noqa: E402

DOMAIN = "pushgate.test"

XMPP_CONFIG = f"""
[[namespace]]
name = "team"
presence = true
join_leave = true
[xmpp]
domain = "{DOMAIN}"
"""

SCRIPT = """
const S = globalThis.Strophe;
const conns = {};
function text(el, name) {
  const found = el.getElementsByTagName(name)[0];
  return found ? found.textContent : null;
}
window.login = (who, token, resource) => {
  const conn = new S.Connection(SERVICE, {mechanisms: [S.SASLPlain]});
  conns[who] = conn;
  conn.addHandler(p => {
    report("presence", {who, from: p.getAttribute("from"), ptype: p.getAttribute("type"),
                        show: text(p, "show")});
    return true;
  }, null, "presence");
  conn.addHandler(m => {
    const mtype = m.getAttribute("type");
    if (mtype === "headline") {
      const items = m.getElementsByTagName("items")[0];
      const item = items.getElementsByTagName("item")[0];
      report("headline", {who, node: items.getAttribute("node"), id: item.getAttribute("id"),
                          data: JSON.parse(text(item, "json"))});
    } else if (mtype === "error") {
      const error = m.getElementsByTagName("error")[0];
      const condition = error.firstElementChild ? error.firstElementChild.localName : null;
      report("message_error", {who, from: m.getAttribute("from"),
                               etype: error.getAttribute("type"), condition});
    } else {
      report("message", {who, from: m.getAttribute("from"), mtype, body: text(m, "body")});
    }
    return true;
  }, null, "message");
  conn.connect(`${who}@${DOMAIN}/${resource}`, token, (status, condition) => {
    const name = Object.keys(S.Status).find(k => S.Status[k] === status);
    report("status", {who, status: name, condition: condition || null, jid: conn.jid});
    if (status === S.Status.CONNECTED) {
      conn.send(globalThis.$pres().c("show").t(who === "bob" ? "dnd" : "chat"));
    }
  });
};
window.say = (who, to, body) => {
  conns[who].send(globalThis.$msg({to, type: "chat"}).c("body").t(body));
};
window.logout = who => conns[who].disconnect("bye");
"""


@pytest.mark.parametrize("transport", ["bosh", "websocket"])
async def test_strophe_login_presence_chat_and_headlines(
    make_server, server_config, pages, page, transport
):
    server = await make_server(
        server_config(f"[server]\nallowed_origins = [{js(pages.origin)}]\n" + XMPP_CONFIG)
    )
    if transport == "bosh":
        service = server.url + "/http-bind"
    else:
        service = server.url.replace("http://", "ws://") + "/xmpp-websocket"
    consts = f"const SERVICE = {js(service)};\nconst DOMAIN = {js(DOMAIN)};\n"
    pages.add("/strophe.html", html_page(consts + SCRIPT, scripts=["/strophe.js"]))
    await page.goto(pages.url("/strophe.html"))

    alice_token = server.token("alice", channels=["team:7", "notifications:alice"])
    bob_token = server.token("bob", channels=["team:7"])
    await page.evaluate(f"window.login('alice', {js(alice_token)}, 'web')")
    connected = await page.wait_for_report(
        "status", where=lambda e: e["who"] == "alice" and e["status"] == "CONNECTED"
    )
    assert connected["jid"] == f"alice@{DOMAIN}/web"
    # alice's own presence comes back to her
    await page.wait_for_report(
        "presence", where=lambda e: e["who"] == "alice" and e["from"] == f"alice@{DOMAIN}/web"
    )

    # a teammate comes online: alice sees him, with his show
    await page.evaluate(f"window.login('bob', {js(bob_token)}, 'phone')")
    online = await page.wait_for_report(
        "presence",
        where=lambda e: (
            e["who"] == "alice" and e["from"] == f"bob@{DOMAIN}/phone" and e["show"] == "dnd"
        ),
    )
    assert online["ptype"] is None
    # and bob sees alice, who was there first
    await page.wait_for_report(
        "presence", where=lambda e: e["who"] == "bob" and e["from"] == f"alice@{DOMAIN}/web"
    )

    # chat both ways, bare JIDs
    await page.evaluate(f"window.say('alice', 'bob@{DOMAIN}', 'hello bob')")
    got = await page.wait_for_report("message", where=lambda e: e["who"] == "bob")
    assert (got["from"], got["mtype"], got["body"]) == (f"alice@{DOMAIN}/web", "chat", "hello bob")
    # someone outside alice's team cannot reach her
    mallory_token = server.token("mallory", channels=["team:9"])
    await page.evaluate(f"window.login('mallory', {js(mallory_token)}, 'web')")
    await page.wait_for_report(
        "status", where=lambda e: e["who"] == "mallory" and e["status"] == "CONNECTED"
    )
    await page.evaluate(f"window.say('mallory', 'alice@{DOMAIN}', 'buy now')")
    refused = await page.wait_for_report("message_error", where=lambda e: e["who"] == "mallory")
    assert (refused["from"], refused["etype"], refused["condition"]) == (
        f"alice@{DOMAIN}",
        "cancel",
        "service-unavailable",
    )
    await page.evaluate(f"window.say('bob', 'alice@{DOMAIN}', 'hi alice <3')")
    got = await page.wait_for_report("message", where=lambda e: e["who"] == "alice")
    assert (got["from"], got["body"]) == (f"bob@{DOMAIN}/phone", "hi alice <3")

    # the backend's publications, in order
    offsets = [
        (await server.publish("notifications:alice", {"n": n}))["offset"] for n in range(1, 11)
    ]
    heads = await page.wait_for_reports("headline", 10, where=lambda e: e["who"] == "alice")
    assert [h["data"] for h in heads] == [{"n": n} for n in range(1, 11)]
    assert [int(h["id"]) for h in heads] == offsets
    assert {h["node"] for h in heads} == {"notifications:alice"}

    # the teammate goes offline
    await page.evaluate("window.logout('bob')")
    await page.wait_for_report(
        "presence",
        where=lambda e: (
            e["who"] == "alice"
            and e["from"] == f"bob@{DOMAIN}/phone"
            and e["ptype"] == "unavailable"
        ),
    )
    await page.wait_for_report(
        "status", where=lambda e: e["who"] == "bob" and e["status"] == "DISCONNECTED"
    )
    status = await server.api("info")
    assert status["_status"] == 200

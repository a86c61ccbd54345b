"""Two pushgate nodes joined by the real Redis on 127.0.0.1:6379: one big node."""

from __future__ import annotations

from tests.test_centrifuge_python import (  # noqa: F401
    Recorder,
    clients,
    subscribed,
)


async def test_publication_on_node_a_reaches_subscriber_on_node_b(
    make_server,
    redis_config,
    clients,  # noqa: F811
):
    node_a = await make_server(redis_config())
    node_b = await make_server(redis_config())
    client, _ = clients(node_b, "alice")
    await client.connect()
    _, events = await subscribed(client, "board:x")
    for n in range(50):
        await node_a.publish("board:x", n)
    await events.wait_for("publication", lambda c: c.pub.data == 49)
    assert [c.pub.data for c in events.of("publication")] == list(range(50))
    assert [c.pub.offset for c in events.of("publication")] == list(range(1, 51))
    info = await node_a.api("info", {})
    assert {n["uid"] for n in info["result"]["nodes"]} == {node_a.hub.node_id, node_b.hub.node_id}
    presence = await node_a.api("presence", {"channel": "board:x"})
    assert [c["user"] for c in presence["result"]["presence"].values()] == ["alice"]
    status = await node_a.api("user_status", {"users": ["alice"]})
    assert status["result"]["statuses"][0]["online"] is True
    await node_a.api("disconnect", {"user": "alice", "disconnect": {"code": 4000, "reason": "x"}})
    await events.wait_for("subscribed", lambda c: c.was_recovering and c.recovered)

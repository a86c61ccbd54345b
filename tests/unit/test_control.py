"""Control messages (hub/control.py): the wire form nodes of every version read, and
what a receiving node does with a bad one."""

from __future__ import annotations

import logging

import pytest

from pushgate.engine.base import StreamPosition
from pushgate.hub import control

# The objects pushgate has always sent: a node of this version must write these
# exactly (an older node reads them) and read them back to the same message.
WIRE = [
    (
        control.DisconnectUser("alice", 3503, "force disconnect", None, "s1", ["c9"]),
        {
            "op": "disconnect",
            "user": "alice",
            "client": None,
            "session": "s1",
            "whitelist": ["c9"],
            "code": 3503,
            "reason": "force disconnect",
        },
    ),
    (
        control.SubscribeUser(
            "alice",
            "board:1",
            "c1",
            None,
            '{"a":1}',
            None,
            StreamPosition(5, "ep"),
            1999999999,
            {"presence": True},
        ),
        {
            "op": "subscribe",
            "user": "alice",
            "channel": "board:1",
            "client": "c1",
            "session": None,
            "info": '{"a":1}',
            "data": None,
            "recover_since": {"offset": 5, "epoch": "ep"},
            "expire_at": 1999999999,
            "override": {"presence": True},
        },
    ),
    (
        control.UnsubscribeUser("alice", "board:1"),
        {
            "op": "unsubscribe",
            "user": "alice",
            "channel": "board:1",
            "client": None,
            "session": None,
        },
    ),
    (
        control.RefreshUser("alice", expire_at=1999999999, info='{"x":1}'),
        {
            "op": "refresh",
            "user": "alice",
            "client": None,
            "session": None,
            "expired": False,
            "expire_at": 1999999999,
            "info": '{"x":1}',
        },
    ),
    (control.MessageUser("alice", '"hi"'), {"op": "message", "user": "alice", "data": '"hi"'}),
    (
        control.MessageUser("alice", '"hi"', ["xmpp"]),
        {"op": "message", "user": "alice", "data": '"hi"', "dialects": ["xmpp"]},
    ),
    (
        control.EmulationCommand("n1", "sess", '{"id":1}'),
        {"op": "emulation", "node": "n1", "session": "sess", "data": '{"id":1}'},
    ),
    (
        control.EmulationCommand("n1", "sess", b"\x00\xff"),
        {"op": "emulation", "node": "n1", "session": "sess", "data_b64": "AP8="},
    ),
    (
        control.Survey("channels", "r:1", "n2", pattern="board:*"),
        {
            "question": "channels",
            "pattern": "board:*",
            "op": "survey",
            "reply_to": "r:1",
            "from": "n2",
        },
    ),
    (
        control.Survey("connections", "r:2", "n2", user="alice"),
        {
            "question": "connections",
            "user": "alice",
            "op": "survey",
            "reply_to": "r:2",
            "from": "n2",
        },
    ),
]


@pytest.mark.parametrize(("message", "wire"), WIRE, ids=lambda v: getattr(v, "op", ""))
def test_the_wire_form_is_the_one_every_version_reads(message, wire):
    assert message.encode() == wire
    assert control.decode(wire) == message


class Recorder:
    node_id = "n1"

    def __init__(self) -> None:
        self.got: list[object] = []

    def __getattr__(self, name: str):
        if not name.startswith("on_"):
            raise AttributeError(name)
        return self.got.append


def test_each_kind_reaches_its_handler_method():
    handler = Recorder()
    for message, wire in WIRE:
        control.dispatch(wire, handler)
        assert handler.got.pop() == message


def test_a_command_for_another_node_is_not_even_decoded():
    handler = Recorder()
    control.dispatch({"op": "emulation", "node": "n2", "session": "s", "data_b64": "!!"}, handler)
    assert handler.got == []


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        ({"op": "nope", "user": "alice"}, "unknown op 'nope'"),
        ({"op": "subscribe", "user": "alice"}, "bad subscribe message"),
        ({"op": "emulation", "node": "n1", "session": "s", "data_b64": "!!"}, "not base64"),
        (["op"], "not an object"),
    ],
)
def test_a_bad_message_is_logged_and_dropped(raw, said, caplog):
    handler = Recorder()
    with caplog.at_level(logging.WARNING, "pushgate.hub"):
        control.dispatch(raw, handler)
    assert handler.got == []
    assert said in caplog.text

"""The proxies' pure parts: the circuit breaker's states, and reading the backend's
answers (Centrifugo's proxy JSON) into what the hub uses, refusing wrong shapes."""

from __future__ import annotations

import pytest

from pushgate.engine.base import BinaryData
from pushgate.proxy import ProxyDisconnect, ProxyError, ProxyUnavailable
from pushgate.proxy import messages as m
from pushgate.proxy.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from pushgate.proxy.caller import _envelope


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_breaker_opens_after_failures_in_a_row_and_tries_one_call_later():
    clock = Clock()
    breaker = CircuitBreaker(3, 5.0, clock)
    assert not breaker.failure() and not breaker.failure()
    breaker.success()  # a success in between: the count starts again
    assert not breaker.failure() and not breaker.failure()
    assert breaker.failure() is True  # the third in a row opens it
    assert breaker.state == OPEN and not breaker.allow()
    clock.now += 5.0
    assert breaker.state == HALF_OPEN
    assert breaker.allow() is True  # the trial call
    assert breaker.allow() is False  # only one at a time
    assert breaker.failure() is True  # the trial failed: open again
    assert not breaker.allow()
    clock.now += 5.0
    assert breaker.allow()
    assert breaker.success() is True and breaker.state == CLOSED and breaker.allow()


def test_a_cancelled_trial_lets_the_next_call_try():
    clock = Clock()
    breaker = CircuitBreaker(1, 1.0, clock)
    breaker.failure()
    clock.now += 1.0
    assert breaker.allow()
    breaker.release()
    assert breaker.allow()


def test_a_breaker_with_no_failures_limit_never_opens():
    breaker = CircuitBreaker(0, 1.0)
    for _ in range(100):
        assert not breaker.failure()
    assert breaker.allow()


def test_answers_are_results_errors_or_disconnects():
    assert _envelope({"result": {"user": "a"}}) == {"user": "a"}
    assert _envelope({}) is None
    with pytest.raises(ProxyError) as error:
        _envelope({"error": {"code": 1000, "message": "no", "temporary": True}})
    assert (error.value.code, error.value.message, error.value.temporary) == (1000, "no", True)
    with pytest.raises(ProxyDisconnect) as disconnect:
        _envelope({"disconnect": {"code": 4501, "reason": "bye"}})
    assert (disconnect.value.code, disconnect.value.reason) == (4501, "bye")


@pytest.mark.parametrize(
    "answer",
    [
        [],
        "ok",
        {"result": []},
        {"error": {"code": "1000"}},
        {"error": {"code": -1}},
        {"error": {"code": 1, "temporary": "yes"}},
        {"disconnect": "4501"},
    ],
)
def test_malformed_answers_are_failures(answer):
    with pytest.raises(ProxyUnavailable):
        _envelope(answer)


def test_a_connect_result_reads_as_centrifugo_writes_it():
    reply = m.connect_reply(
        {
            "user": "alice",
            "expire_at": "1700000000",  # proto3 JSON may quote 64-bit integers
            "b64info": "eyJuYW1lIjoiQWxpY2UifQ==",  # {"name":"Alice"}
            "b64data": "AP8=",  # not JSON: for Protobuf clients only
            "channels": ["team:1"],
            "subs": {
                "board:1": {"info": {"role": "owner"}, "override": {"presence": {"value": False}}}
            },
            "meta": {"tenant": 7},
        }
    )
    assert (reply.user, reply.expire_at) == ("alice", 1700000000)
    assert reply.info == b'{"name":"Alice"}'
    assert type(reply.data) is BinaryData and reply.data == b"\x00\xff"
    assert reply.subs["board:1"].info == b'{"role":"owner"}'
    assert reply.subs["board:1"].override == {"presence": False}
    assert reply.meta == b'{"tenant":7}'


@pytest.mark.parametrize(
    "result",
    [
        {"user": 7},
        {"user": "a", "channels": "team:1"},
        {"user": "a", "b64info": "AP8="},  # info must be JSON: every dialect shows it
        {"user": "a", "b64data": "%%%"},
        {"user": "a", "meta": [1]},
    ],
)
def test_a_connect_result_of_the_wrong_shape_is_refused(result):
    with pytest.raises(ProxyUnavailable):
        m.connect_reply(result)


def test_payloads_go_as_json_or_base64():
    caller = m.Caller("c1", "websocket", "json", "alice")
    body = m.base_request(caller, False)
    m.put_data(body, b'{"a":1}', False)
    assert body["encoding"] == "json" and "b64data" not in body
    binary = m.base_request(caller, False)
    m.put_data(binary, BinaryData(b"\x00"), False)
    assert (binary["encoding"], binary["b64data"]) == ("binary", "AA==")
    checked = m.base_request(caller, False)
    m.put_data(checked, b"\x00\x01", False, checked=False)  # a Protobuf client's bytes
    assert checked["b64data"] == "AAE="
    forced = m.base_request(caller, True)
    m.put_data(forced, b'{"a":1}', True)
    assert forced["b64data"] == "eyJhIjoxfQ=="

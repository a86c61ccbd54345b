"""BOSH (XEP-0124, with XEP-0206 for XMPP) as a sans-I/O state machine.

One ``BoshState`` per BOSH session keeps the bookkeeping that makes HTTP long polling
reliable; the transport owns the HTTP requests and the timers and asks it what to do:

* ``receive(rid, payload)`` classifies a request: a repeated ``rid`` whose answer was
  sent gets the very same bytes again (``Replay``), a ``rid`` already waiting for its
  answer takes over that wait (``Duplicate``), anything outside the window of
  ``requests`` rids is fatal (``item-not-found``); the rest is queued in rid order.
* ``ready()`` hands out the queued payloads whose turn has come, strictly in rid order;
  each is then *parked*: it waits for something to answer with.
* ``queue(stanza)`` adds an outgoing stanza; ``flush()`` answers the oldest parked
  requests: the first one takes every queued stanza, and while more than ``hold`` are
  parked the oldest is answered empty. Answers go out in rid order and are remembered
  (the last ``requests`` of them) for replay; a client's ``ack`` forgets older ones.
* ``expire(rid)`` answers a request that waited ``wait`` seconds; ``inactive(now)`` says
  the client held no request for ``inactivity`` seconds and the session is over.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Generic, TypeVar

from pushgate.protocol.xmpp.stanzas import NS_STREAM
from pushgate.protocol.xmpp.xml import escape_attr

#: what a request carries, to be processed in rid order (the transport's parsed body)
P = TypeVar("P")

NS_HTTPBIND = "http://jabber.org/protocol/httpbind"
NS_XBOSH = "urn:xmpp:xbosh"
BOSH_VERSION = (1, 11)
#: the largest rid a client may use (XEP-0124 §5: below 2^53)
MAX_RID = (1 << 53) - 1

#: terminate conditions of XEP-0124 §17 pushgate uses
BAD_REQUEST = "bad-request"
HOST_UNKNOWN = "host-unknown"
ITEM_NOT_FOUND = "item-not-found"
POLICY_VIOLATION = "policy-violation"
REMOTE_STREAM_ERROR = "remote-stream-error"
SYSTEM_SHUTDOWN = "system-shutdown"
UNDEFINED_CONDITION = "undefined-condition"


class BoshError(Exception):
    """End the session (or refuse the request) with a terminate ``condition``."""

    def __init__(self, condition: str, message: str = "") -> None:
        super().__init__(message or condition)
        self.condition = condition


@dataclass(frozen=True, slots=True)
class Replay:
    body: bytes


@dataclass(frozen=True, slots=True)
class Duplicate:
    """The rid is already queued or parked: this request takes over its wait."""

    rid: int


@dataclass(frozen=True, slots=True)
class Queued:
    rid: int


def parse_version(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    try:
        return int(major), int(minor or 0)
    except ValueError:
        return BOSH_VERSION


def body_bytes(stanzas: list[bytes], **attrs: str | int | None) -> bytes:
    """A response ``<body/>`` wrapping ``stanzas``; ``xmpp__version`` → ``xmpp:version``."""
    head = [f'<body xmlns="{NS_HTTPBIND}" xmlns:stream="{NS_STREAM}"']
    if any(key.startswith("xmpp__") for key in attrs):
        head.append(f' xmlns:xmpp="{NS_XBOSH}"')
    for key, value in attrs.items():
        if value is None:
            continue
        head.append(f' {key.replace("__", ":")}="{escape_attr(str(value))}"')
    if not stanzas:
        head.append("/>")
        return "".join(head).encode()
    head.append(">")
    return b"".join((("".join(head)).encode(), *stanzas, b"</body>"))


def terminate_body(condition: str | None = None, stanzas: list[bytes] | None = None) -> bytes:
    return body_bytes(stanzas or [], type="terminate", condition=condition)


class BoshState(Generic[P]):
    __slots__ = (
        "ack",
        "early",
        "hold",
        "idle_since",
        "in_flight",
        "inactivity",
        "last_empty",
        "last_rid",
        "parked",
        "pending",
        "polling",
        "requests",
        "responses",
        "sid",
        "terminated",
        "wait",
    )

    def __init__(
        self,
        sid: str,
        rid: int,
        *,
        wait: float,
        hold: int,
        requests: int,
        inactivity: float,
        polling: float,
        ack: bool,
        now: float,
    ) -> None:
        self.sid = sid
        #: highest rid taken in order (the session creation request's rid at first)
        self.last_rid = rid
        self.wait = wait
        self.hold = hold
        self.requests = requests
        self.inactivity = inactivity
        self.polling = polling
        self.ack = ack
        self.responses: OrderedDict[int, bytes] = OrderedDict()
        self.parked: deque[int] = deque()
        self.early: dict[int, P] = {}
        self.pending: list[bytes] = []
        #: the condition the session ended with ("" = ended by the client), or None
        self.terminated: str | None = None
        self.in_flight = 0
        self.idle_since = now
        self.last_empty = -1e18

    # --- requests -----------------------------------------------------------------
    def remember(self, rid: int, body: bytes) -> None:
        responses = self.responses
        responses[rid] = body
        while len(responses) > self.requests + 1:
            responses.popitem(last=False)

    def receive(
        self, rid: int, payload: P, now: float, *, ack: int | None = None, empty: bool = False
    ) -> Replay | Duplicate | Queued:
        """Classify a request; raises BoshError(item-not-found) outside the rid window."""
        cached = self.responses.get(rid)
        if cached is not None:
            return Replay(cached)
        if rid in self.parked or rid in self.early:
            if rid in self.early:
                self.early[rid] = payload
            self.in_flight += 1
            return Duplicate(rid)
        if rid <= self.last_rid:
            raise BoshError(ITEM_NOT_FOUND, f"rid {rid} is too old")
        if rid > self.last_rid + self.requests:
            raise BoshError(ITEM_NOT_FOUND, f"rid {rid} is beyond the window")
        if self.terminated is not None:
            raise BoshError(self.terminated or ITEM_NOT_FOUND, "the session is over")
        if (
            empty
            and self.hold == 0
            and not self.parked
            and self.polling
            and now - self.last_empty < self.polling
        ):
            raise BoshError(POLICY_VIOLATION, "polling too often")
        if empty:
            self.last_empty = now
        if ack is not None:
            for old in [r for r in self.responses if r <= ack]:
                del self.responses[old]
        self.early[rid] = payload
        self.in_flight += 1
        return Queued(rid)

    def ready(self) -> list[tuple[int, P]]:
        """Queued payloads whose turn has come, in rid order; each is parked."""
        out: list[tuple[int, P]] = []
        while self.last_rid + 1 in self.early:
            self.last_rid += 1
            out.append((self.last_rid, self.early.pop(self.last_rid)))
            self.parked.append(self.last_rid)
        return out

    def finished(self, now: float) -> None:
        """An HTTP request has been answered (or abandoned)."""
        self.in_flight = max(0, self.in_flight - 1)
        if self.in_flight == 0:
            self.idle_since = now

    # --- answers ------------------------------------------------------------------
    def queue(self, stanza: bytes) -> None:
        self.pending.append(stanza)

    def _answer(self, rid: int, terminate: bool) -> bytes:
        stanzas, self.pending = self.pending, []
        ack = self.last_rid if self.ack and rid != self.last_rid else None
        if terminate:
            body = body_bytes(stanzas, type="terminate", condition=self.terminated or None, ack=ack)
        else:
            body = body_bytes(stanzas, ack=ack)
        self.remember(rid, body)
        return body

    def flush(self) -> list[tuple[int, bytes]]:
        """Answer what can be answered now, oldest first."""
        out = []
        parked = self.parked
        ending = self.terminated is not None
        while parked and (self.pending or len(parked) > self.hold or ending):
            rid = parked.popleft()
            out.append((rid, self._answer(rid, ending)))
        return out

    def expire(self, rid: int) -> list[tuple[int, bytes]]:
        """``rid`` waited ``wait`` seconds: answer it (and any older one) now."""
        out = []
        parked = self.parked
        while parked and parked[0] <= rid:
            oldest = parked.popleft()
            out.append((oldest, self._answer(oldest, self.terminated is not None)))
        return out

    def answer_terminate(self, rid: int) -> bytes:
        """The client ended the session with this request: its answer."""
        if rid in self.parked:
            self.parked.remove(rid)
        body = terminate_body(None, self.pending)
        self.pending = []
        self.remember(rid, body)
        return body

    def terminate(self, condition: str) -> None:
        if self.terminated is None:
            self.terminated = condition

    def inactive(self, now: float) -> bool:
        return self.in_flight == 0 and not self.parked and now - self.idle_since > self.inactivity

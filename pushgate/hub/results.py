"""Results of client commands, as the hub hands them to a dialect to encode."""

from __future__ import annotations

from dataclasses import dataclass, field

from pushgate.engine.base import Publication


@dataclass(slots=True)
class SubscribeResult:
    expires: bool = False
    ttl: int = 0
    recoverable: bool = False
    positioned: bool = False
    epoch: str = ""
    offset: int = 0
    publications: list[Publication] = field(default_factory=list)
    recovered: bool = False
    was_recovering: bool = False
    data: bytes | None = None
    #: fossil delta compression negotiated for this subscription
    delta: bool = False


@dataclass(slots=True)
class ConnectResult:
    client: str
    version: str
    node: str
    ping: int
    pong: bool
    expires: bool = False
    ttl: int = 0
    data: bytes | None = None
    subs: dict[str, SubscribeResult] = field(default_factory=dict)
    #: id of an emulation or polling session, which later requests name
    session: str = ""


@dataclass(slots=True)
class RefreshResult:
    client: str
    version: str
    expires: bool = False
    ttl: int = 0

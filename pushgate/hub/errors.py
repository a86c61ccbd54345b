"""Errors and disconnects the hub speaks in.

The hub's vocabulary is Centrifugo's (the model pushgate follows), so these codes go
to centrifuge-js unchanged; other dialects (STOMP, XMPP) map them onto their own.
"""

from __future__ import annotations

from dataclasses import dataclass


class HubError(Exception):
    """A command failed; the connection stays open."""

    __slots__ = ("code", "message", "temporary")

    def __init__(self, code: int, message: str, temporary: bool = False) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.temporary = temporary

    def with_message(self, message: str) -> HubError:
        return HubError(self.code, message, self.temporary)


def _error(code: int, message: str, temporary: bool = False) -> HubError:
    return HubError(code, message, temporary)


ERROR_INTERNAL = _error(100, "internal server error", temporary=True)
ERROR_UNAUTHORIZED = _error(101, "unauthorized")
ERROR_UNKNOWN_CHANNEL = _error(102, "unknown channel")
ERROR_PERMISSION_DENIED = _error(103, "permission denied")
ERROR_METHOD_NOT_FOUND = _error(104, "method not found")
ERROR_ALREADY_SUBSCRIBED = _error(105, "already subscribed")
ERROR_LIMIT_EXCEEDED = _error(106, "limit exceeded")
ERROR_BAD_REQUEST = _error(107, "bad request")
ERROR_NOT_AVAILABLE = _error(108, "not available")
ERROR_TOKEN_EXPIRED = _error(109, "token expired")
ERROR_EXPIRED = _error(110, "expired")
ERROR_TOO_MANY_REQUESTS = _error(111, "too many requests", temporary=True)
ERROR_UNRECOVERABLE_POSITION = _error(112, "unrecoverable position")


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Why a connection is closed. Codes 3000-3499 and 4000-4499 ask to reconnect."""

    code: int
    reason: str

    @property
    def reconnect(self) -> bool:
        return not (3500 <= self.code < 4000 or 4500 <= self.code < 5000)


DISCONNECT_CONNECTION_CLOSED = Disconnect(3000, "connection closed")
DISCONNECT_SHUTDOWN = Disconnect(3001, "shutdown")
DISCONNECT_SERVER_ERROR = Disconnect(3004, "internal server error")
DISCONNECT_EXPIRED = Disconnect(3005, "connection expired")
DISCONNECT_SUB_EXPIRED = Disconnect(3006, "subscription expired")
DISCONNECT_SLOW = Disconnect(3008, "slow")
DISCONNECT_WRITE_ERROR = Disconnect(3009, "write error")
DISCONNECT_INSUFFICIENT_STATE = Disconnect(3010, "insufficient state")
DISCONNECT_FORCE_RECONNECT = Disconnect(3011, "force reconnect")
DISCONNECT_NO_PONG = Disconnect(3012, "no pong")
DISCONNECT_TOO_MANY_REQUESTS = Disconnect(3013, "too many requests")
#: the cluster found this node dead (it stopped beating) and announced its connections
#: gone: they reconnect, to be announced again (pushgate's own code, in the reconnect range)
DISCONNECT_NODE_LOST = Disconnect(3020, "node lost")
DISCONNECT_INVALID_TOKEN = Disconnect(3500, "invalid token")
DISCONNECT_BAD_REQUEST = Disconnect(3501, "bad request")
DISCONNECT_STALE = Disconnect(3502, "stale")
DISCONNECT_FORCE_NO_RECONNECT = Disconnect(3503, "force disconnect")
DISCONNECT_CONNECTION_LIMIT = Disconnect(3504, "connection limit")
DISCONNECT_CHANNEL_LIMIT = Disconnect(3505, "channel limit")
#: the connection's encoding cannot carry the channel's data (binary data, JSON client)
DISCONNECT_INAPPROPRIATE_PROTOCOL = Disconnect(3506, "inappropriate protocol")
DISCONNECT_PERMISSION_DENIED = Disconnect(3507, "permission denied")
DISCONNECT_NOT_AVAILABLE = Disconnect(3508, "not available")
DISCONNECT_TOO_MANY_ERRORS = Disconnect(3509, "too many errors")

# Unsubscribe push codes: below 2500 the client stays unsubscribed, from 2500 it
# resubscribes (with recovery when the channel allows it).
UNSUBSCRIBE_SERVER = (2000, "server unsubscribe")
UNSUBSCRIBE_INSUFFICIENT_STATE = (2500, "insufficient state")
UNSUBSCRIBE_EXPIRED = (2501, "subscription expired")

"""Errors and disconnects the hub speaks in.

The hub's vocabulary is Centrifugo's (the model pushgate follows), so these codes go
to centrifuge-js unchanged; other dialects (STOMP, XMPP) map them onto their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


class HubError(Exception):
    """A command failed; the connection stays open."""

    __slots__ = ("code", "message", "temporary")

    def __init__(self, code: int, message: str, temporary: bool = False) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.temporary = temporary


class NamedError(HubError):
    """A HubError of one of Centrifugo's codes. Raise the class (``raise
    ErrorPermissionDenied``) or an instance with a more precise message; either way
    each raise makes its own exception, so no traceback outlives its request."""

    __slots__ = ()
    CODE: ClassVar[int]
    MESSAGE: ClassVar[str]
    TEMPORARY: ClassVar[bool] = False

    def __init__(self, message: str | None = None) -> None:
        super().__init__(self.CODE, message or self.MESSAGE, self.TEMPORARY)


class ErrorInternal(NamedError):
    __slots__ = ()
    CODE = 100
    MESSAGE = "internal server error"
    TEMPORARY = True


class ErrorUnauthorized(NamedError):
    __slots__ = ()
    CODE = 101
    MESSAGE = "unauthorized"


class ErrorUnknownChannel(NamedError):
    __slots__ = ()
    CODE = 102
    MESSAGE = "unknown channel"


class ErrorPermissionDenied(NamedError):
    __slots__ = ()
    CODE = 103
    MESSAGE = "permission denied"


class ErrorMethodNotFound(NamedError):
    __slots__ = ()
    CODE = 104
    MESSAGE = "method not found"


class ErrorAlreadySubscribed(NamedError):
    __slots__ = ()
    CODE = 105
    MESSAGE = "already subscribed"


class ErrorLimitExceeded(NamedError):
    __slots__ = ()
    CODE = 106
    MESSAGE = "limit exceeded"


class ErrorBadRequest(NamedError):
    __slots__ = ()
    CODE = 107
    MESSAGE = "bad request"


class ErrorNotAvailable(NamedError):
    __slots__ = ()
    CODE = 108
    MESSAGE = "not available"


class ErrorTokenExpired(NamedError):
    __slots__ = ()
    CODE = 109
    MESSAGE = "token expired"


class ErrorExpired(NamedError):
    __slots__ = ()
    CODE = 110
    MESSAGE = "expired"


class ErrorTooManyRequests(NamedError):
    __slots__ = ()
    CODE = 111
    MESSAGE = "too many requests"
    TEMPORARY = True


class ErrorUnrecoverablePosition(NamedError):
    __slots__ = ()
    CODE = 112
    MESSAGE = "unrecoverable position"


class DisconnectError(Exception):
    """A command whose answer is closing the connection."""

    def __init__(self, disconnect: Disconnect) -> None:
        super().__init__(disconnect.reason)
        self.disconnect = disconnect


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

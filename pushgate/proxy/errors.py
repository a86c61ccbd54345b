"""What a proxy call ends with when it does not end with a result.

``ProxyError`` and ``ProxyDisconnect`` are the backend's own answers (``{"error": …}``,
``{"disconnect": …}``): the client gets them as they are. ``ProxyUnavailable`` means
pushgate got no usable answer (timeout, refused connection, HTTP status, not JSON, too
many calls in flight, circuit open): the client gets a temporary error and retries.
"""

from __future__ import annotations

#: ``ProxyUnavailable.result`` values: the ``result`` label of pushgate_proxy_calls_total
TIMEOUT = "timeout"
FAILED = "failed"
OVERLOADED = "overloaded"
CIRCUIT_OPEN = "circuit_open"


class ProxyError(Exception):
    """The backend answered with an error for the client."""

    def __init__(self, code: int, message: str, temporary: bool = False) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.temporary = temporary


class ProxyDisconnect(Exception):
    """The backend asked to close the client's connection."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


class ProxyUnavailable(Exception):
    """No usable answer from the backend; ``result`` says why, for the metric."""

    def __init__(self, reason: str, result: str = FAILED) -> None:
        super().__init__(reason)
        self.reason = reason
        self.result = result

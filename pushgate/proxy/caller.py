"""One ``[[proxies]]`` entry as a caller: POST a JSON request, get the backend's answer.

Every call is an asynchronous HTTP request on a pooled aiohttp ``ClientSession`` (one per
proxy, made on first use): a slow or dead backend holds its own calls and never the event
loop or other clients. Bounded: at most ``max_concurrency`` calls in flight, past which a
call fails at once; a ``timeout`` per call; a circuit breaker (breaker.py) that stops
calling a backend that keeps failing. The answer's envelope is checked here —
``{"result": …}``, ``{"error": {code, message, temporary}}`` or ``{"disconnect":
{code, reason}}`` — so the metric says which it was, and anything else (HTTP status
other than 200, not JSON, not that shape) is a failure like a timeout.

Request headers: ``Content-Type: application/json``, the proxy's ``static_headers``,
then the client's HTTP headers named in ``http_headers`` (from the request that opened
the connection) and, for names in ``emulated_headers`` not already set, those the client
sent in its connect command.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping

import aiohttp
import orjson

from pushgate.config import ProxyConfig
from pushgate.proxy.breaker import CircuitBreaker
from pushgate.proxy.errors import (
    CIRCUIT_OPEN,
    OVERLOADED,
    TIMEOUT,
    ProxyDisconnect,
    ProxyError,
    ProxyUnavailable,
)
from pushgate.proxy.metrics import CALLS, DURATION

log = logging.getLogger("pushgate.proxy")

#: a larger answer is refused (as a failure): it would be a backend bug, and a client's
#: reply has to fit its frame anyway
MAX_ANSWER_BYTES = 4 * 1024 * 1024


class HttpProxy:
    __slots__ = (
        "_session",
        "breaker",
        "config",
        "emulated_headers",
        "endpoint",
        "http_headers",
        "in_flight",
        "name",
        "static_headers",
        "timeout",
    )

    def __init__(self, config: ProxyConfig) -> None:
        self.config = config
        self.name = config.name
        self.endpoint = config.endpoint
        self.timeout = aiohttp.ClientTimeout(total=config.timeout)
        self.static_headers: dict[str, str] = {}
        for header in config.static_headers:
            key, _, value = header.partition(":")
            self.static_headers[key.strip()] = value.strip()
        self.http_headers = frozenset(h.lower() for h in config.http_headers)
        self.emulated_headers = frozenset(h.lower() for h in config.emulated_headers)
        self.breaker = CircuitBreaker(config.circuit_failures, config.circuit_open)
        self.in_flight = 0
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"<HttpProxy {self.name} {self.endpoint}>"

    @property
    def binary(self) -> bool:
        return self.config.binary_encoding

    @property
    def include_meta(self) -> bool:
        return self.config.include_connection_meta

    def request_headers(
        self, transport: Iterable[tuple[str, str]], emulated: Mapping[str, str] | None
    ) -> dict[str, str]:
        headers = dict(self.static_headers)
        seen = set()
        for key, value in transport:
            lowered = key.lower()
            if lowered in self.http_headers:
                headers[key] = value
                seen.add(lowered)
        if emulated and self.emulated_headers:
            for key, value in emulated.items():
                lowered = key.lower()
                if lowered in self.emulated_headers and lowered not in seen:
                    headers[key] = value
        headers["Content-Type"] = "application/json"
        return headers

    async def call(
        self,
        kind: str,
        body: dict,
        transport_headers: Iterable[tuple[str, str]] = (),
        emulated: Mapping[str, str] | None = None,
    ) -> dict | None:
        """The ``result`` object of the backend's answer (None when it has none); raises
        ProxyError / ProxyDisconnect for those answers, ProxyUnavailable for no answer."""
        name = self.name
        if self.in_flight >= self.config.max_concurrency:
            CALLS.labels(name, kind, OVERLOADED).inc()
            raise ProxyUnavailable(
                f"proxy {name}: {self.in_flight} calls in flight already", OVERLOADED
            )
        if not self.breaker.allow():
            CALLS.labels(name, kind, CIRCUIT_OPEN).inc()
            raise ProxyUnavailable(f"proxy {name}: circuit open, backend failing", CIRCUIT_OPEN)
        payload = orjson.dumps(body)
        headers = self.request_headers(transport_headers, emulated)
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.in_flight += 1
        try:
            answer = await self._post(payload, headers)
            result = _envelope(answer)
        except ProxyUnavailable as exc:
            CALLS.labels(name, kind, exc.result).inc()
            if self.breaker.failure():
                log.warning(
                    "proxy %s: circuit open for %gs after %d failures in a row (last: %s)",
                    name,
                    self.breaker.open_for,
                    self.breaker.failures,
                    exc.reason,
                )
            raise
        except (ProxyError, ProxyDisconnect) as exc:
            self._answered()
            CALLS.labels(name, kind, "error" if isinstance(exc, ProxyError) else "disconnect").inc()
            raise
        except BaseException:
            self.breaker.release()  # cancelled: the call says nothing of the backend
            raise
        finally:
            self.in_flight -= 1
            DURATION.labels(name, kind).observe(loop.time() - started)
        self._answered()
        CALLS.labels(name, kind, "ok").inc()
        return result

    def _answered(self) -> None:
        if self.breaker.success():
            log.warning("proxy %s: the backend answers again, circuit closed", self.name)

    async def _post(self, payload: bytes, headers: dict[str, str]) -> object:
        session = self._session
        if session is None or session.closed:
            session = self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.config.max_concurrency),
                timeout=self.timeout,
                raise_for_status=False,
            )
        try:
            async with session.post(self.endpoint, data=payload, headers=headers) as response:
                if response.status != 200:
                    raise ProxyUnavailable(f"proxy {self.name}: HTTP {response.status}")
                if (response.content_length or 0) > MAX_ANSWER_BYTES:
                    raise ProxyUnavailable(f"proxy {self.name}: answer over {MAX_ANSWER_BYTES}")
                raw = bytearray()
                async for chunk in response.content.iter_any():
                    raw += chunk
                    if len(raw) > MAX_ANSWER_BYTES:
                        raise ProxyUnavailable(
                            f"proxy {self.name}: answer over {MAX_ANSWER_BYTES} bytes"
                        )
        except TimeoutError:
            raise ProxyUnavailable(
                f"proxy {self.name}: no answer within {self.config.timeout:g}s", TIMEOUT
            ) from None
        except aiohttp.ClientError as exc:
            raise ProxyUnavailable(f"proxy {self.name}: {exc or type(exc).__name__}") from None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ProxyUnavailable(f"proxy {self.name}: the answer is not JSON") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _envelope(answer: object) -> dict | None:
    """The result of a well-formed answer; raises for an error, a disconnect or a
    malformed answer (ProxyUnavailable, which counts as the backend failing)."""
    if not isinstance(answer, dict):
        raise ProxyUnavailable("the answer is not a JSON object")
    disconnect = answer.get("disconnect")
    if disconnect is not None:
        code, text = _code_and_text(disconnect, "reason")
        raise ProxyDisconnect(code, text)
    error = answer.get("error")
    if error is not None:
        code, text = _code_and_text(error, "message")
        temporary = error.get("temporary", False)
        if not isinstance(temporary, bool):
            raise ProxyUnavailable("error.temporary is not a boolean")
        raise ProxyError(code, text, temporary)
    result = answer.get("result")
    if result is not None and not isinstance(result, dict):
        raise ProxyUnavailable("result is not an object")
    return result


def _code_and_text(value: object, text_key: str) -> tuple[int, str]:
    if not isinstance(value, dict):
        raise ProxyUnavailable("error/disconnect is not an object")
    code = value.get("code")
    text = value.get(text_key, "")
    if type(code) is not int or not 0 <= code < 2**32:
        raise ProxyUnavailable(f"code is not a 32-bit unsigned integer: {code!r}")
    if not isinstance(text, str):
        raise ProxyUnavailable(f"{text_key} is not a string")
    return code, text[:256]

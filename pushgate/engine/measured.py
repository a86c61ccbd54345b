"""An engine wrapper that times every operation and counts failures for /metrics."""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Callable
from typing import Any

from pushgate.engine.base import (
    Engine,
    Publication,
    PublishOptions,
    PublishResult,
    StreamPosition,
)
from pushgate.metrics import ENGINE_DURATION, ENGINE_ERRORS

MEASURED = {
    "publish_join",
    "publish_leave",
    "publish_control",
    "subscribe",
    "unsubscribe",
    "history",
    "remove_history",
    "add_presence",
    "remove_presence",
    "presence",
    "presence_stats",
    "member_add",
    "member_joined",
    "member_update",
    "member_remove",
    "connection_opened",
    "connection_state",
    "connection_closed",
    "user_statuses",
    "handoff_add",
    "handoff_ack",
    "read_mark",
    "nodes",
    "survey",
}

#: every operation of the interface, forwarded to the wrapped engine
_OPERATIONS = [
    name for name, value in vars(Engine).items() if callable(value) and not name.startswith("_")
]


class MeasuredEngine(Engine):
    """``engine`` with its operations timed: an Engine whose every operation is the
    wrapped engine's own bound method (or its timed wrapper, for those in MEASURED and
    ``publish``), set on the instance once, so a call costs no extra lookup. What is
    not part of the interface (an engine's own attributes) is read from ``engine``."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.name = engine.name
        self.multi_node = engine.multi_node
        for name in _OPERATIONS:
            attr = getattr(engine, name)
            if name == "publish":
                attr = _timed_publish(attr)
            elif name in MEASURED and inspect.iscoroutinefunction(attr):
                attr = _timed(name, attr)
            setattr(self, name, attr)

    def __getattr__(self, name: str) -> Any:
        if name == "_engine":
            raise AttributeError(name)
        return getattr(self._engine, name)

    @property
    def event_shards(self) -> int:
        return self._engine.event_shards


# every operation is forwarded per instance (above): none is left abstract
MeasuredEngine.__abstractmethods__ = frozenset()


def _timed(name: str, operation: Callable[..., Any]) -> Callable[..., Any]:
    histogram = ENGINE_DURATION.labels(name)
    errors = ENGINE_ERRORS.labels(name)

    @functools.wraps(operation)
    async def measured(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await operation(*args, **kwargs)
        except Exception:
            errors.inc()
            raise
        finally:
            histogram.observe(time.perf_counter() - started)

    return measured


def _timed_publish(
    publish: Callable[[str, Publication, PublishOptions], PublishResult],
) -> Callable[[str, Publication, PublishOptions], PublishResult]:
    """``publish`` timed until its position is known: at once, or when its future is done."""
    histogram = ENGINE_DURATION.labels("publish")
    errors = ENGINE_ERRORS.labels("publish")

    def measured(channel: str, pub: Publication, opts: PublishOptions) -> PublishResult:
        started = time.perf_counter()
        try:
            position = publish(channel, pub, opts)
        except Exception:
            errors.inc()
            histogram.observe(time.perf_counter() - started)
            raise
        if not isinstance(position, asyncio.Future):
            histogram.observe(time.perf_counter() - started)
            return position

        def done(future: asyncio.Future[StreamPosition]) -> None:
            histogram.observe(time.perf_counter() - started)
            if not future.cancelled() and future.exception() is not None:
                errors.inc()

        position.add_done_callback(done)
        return position

    return measured

"""An engine wrapper that times every operation and counts failures for /metrics."""

from __future__ import annotations

import functools
import inspect
import time
from typing import Any

from pushgate.metrics import ENGINE_DURATION, ENGINE_ERRORS

MEASURED = {
    "publish",
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


#: operations that return a future rather than a coroutine → the operation timed
MEASURED_SOON = {"publish_soon": "publish"}


class MeasuredEngine:
    """Forwards everything to ``engine``; its coroutine operations are timed."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._engine, name)
        if name in MEASURED_SOON:
            return self._measure_soon(name, attr)
        if name not in MEASURED or not inspect.iscoroutinefunction(attr):
            return attr
        histogram = ENGINE_DURATION.labels(name)
        errors = ENGINE_ERRORS.labels(name)

        @functools.wraps(attr)
        async def measured(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await attr(*args, **kwargs)
            except Exception:
                errors.inc()
                raise
            finally:
                histogram.observe(time.perf_counter() - started)

        setattr(self, name, measured)  # built once per operation
        return measured

    def _measure_soon(self, name: str, attr: Any) -> Any:
        histogram = ENGINE_DURATION.labels(MEASURED_SOON[name])
        errors = ENGINE_ERRORS.labels(MEASURED_SOON[name])

        @functools.wraps(attr)
        def measured(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            future = attr(*args, **kwargs)

            def done(future: Any) -> None:
                histogram.observe(time.perf_counter() - started)
                if not future.cancelled() and future.exception() is not None:
                    errors.inc()

            future.add_done_callback(done)
            return future

        setattr(self, name, measured)
        return measured

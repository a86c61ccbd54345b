"""Engines: broker, history, presence and user status behind one interface."""

from pushgate.engine.base import (
    ClientInfo,
    Engine,
    EngineHandler,
    HistoryResult,
    Publication,
    StreamPosition,
    UnrecoverablePosition,
)

__all__ = [
    "ClientInfo",
    "Engine",
    "EngineHandler",
    "HistoryResult",
    "Publication",
    "StreamPosition",
    "UnrecoverablePosition",
]

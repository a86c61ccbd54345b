"""Per-subscription options a backend may give a server-side subscription or a token.

Centrifugo's ``subs`` claim of a connection token, its subscription token and its
``subscribe`` API carry, for one subscription: ``info`` (or ``b64info``), ``data`` (or
``b64data``, sent to the client in the subscribe result) and ``override``, which replaces
some of the namespace's options for that subscription alone:
``{"presence": {"value": true}, "join_leave": …, "force_push_join_leave": …,
"force_recovery": …, "force_positioning": …}``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import orjson

from pushgate import b64json

#: the channel options an ``override`` may set
OVERRIDABLE = (
    "presence",
    "join_leave",
    "force_push_join_leave",
    "force_recovery",
    "force_positioning",
)

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

#: a channel options dataclass
T = TypeVar("T", bound="DataclassInstance")


@dataclass(frozen=True, slots=True)
class SubscribeOptions:
    info: bytes | None = None
    data: bytes | None = None
    override: dict[str, bool] = field(default_factory=dict)


def parse_override(value: object) -> dict[str, bool]:
    """``{option: {"value": bool}}`` → ``{option: bool}``; ValueError for another shape.
    Options that cannot be overridden are ignored, as Centrifugo does."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("override must be an object")
    out: dict[str, bool] = {}
    for name in OVERRIDABLE:
        wrapped = value.get(name)
        if wrapped is None:
            continue
        if not isinstance(wrapped, dict) or not isinstance(wrapped.get("value", False), bool):
            raise ValueError(f'override.{name} must be an object {{"value": true|false}}')
        out[name] = wrapped.get("value", False)
    return out


def parse(params: object) -> SubscribeOptions:
    """One subscription's options from a JSON object; ValueError saying what is wrong."""
    if params is None:
        return SubscribeOptions()
    if not isinstance(params, dict):
        raise ValueError("subscription options must be an object")
    try:
        info = b64json.field(params, "info", "b64info")
        data = b64json.field(params, "data", "b64data")
    except orjson.JSONEncodeError as exc:
        raise ValueError(f"cannot be encoded: {exc}") from None
    return SubscribeOptions(info, data, parse_override(params.get("override")))


def apply(options: T, override: dict[str, bool]) -> T:
    """``options`` (channel options) with ``override`` applied: a copy, or the same object
    when there is nothing to change."""
    if not override:
        return options
    return dataclasses.replace(options, **override)

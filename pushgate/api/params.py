"""Validation of server API parameters: clear errors instead of tracebacks."""

from __future__ import annotations

from typing import Any

import orjson

from pushgate import b64json, subscribe_options
from pushgate.durations import parse_duration
from pushgate.hub.errors import ErrorBadRequest, HubError


def bad_request(message: str) -> HubError:
    return ErrorBadRequest(f"bad request: {message}")


def json_bytes(value: object, name: str) -> bytes:
    """``value`` as JSON; error 107 for what cannot be encoded (nested deeper than
    orjson's 254 levels: the body parsed, but its data cannot travel on)."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        raise bad_request(f"{name} cannot be encoded: {exc}") from None


def optional_json_text(params: dict, key: str) -> str | None:
    """An optional JSON value of ``params`` (or its base64 form ``b64<key>``) as text for a
    control message, or None."""
    value = json_or_b64(params, key)
    return None if value is None else value.decode()


def json_or_b64(params: dict, key: str) -> bytes | None:
    """``params[key]`` as JSON bytes, or the JSON in ``params["b64" + key]`` (which wins,
    as in Centrifugo); None when neither is given; error 107 for what is not JSON."""
    try:
        return b64json.field(params, key, "b64" + key)
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    except orjson.JSONEncodeError as exc:
        raise bad_request(f"{key} cannot be encoded: {exc}") from None


def override(params: dict, key: str = "override") -> dict[str, bool] | None:
    """Centrifugo's ``override`` object as ``{option: bool}``; error 107 for another shape."""
    try:
        return subscribe_options.parse_override(params.get(key)) or None
    except ValueError as exc:
        raise bad_request(str(exc)) from None


def require_str(params: dict, key: str) -> str:
    value = params.get(key)
    if not isinstance(value, str) or not value:
        raise bad_request(f"{key} must be a non-empty string")
    return value


def optional_str(params: dict, key: str) -> str | None:
    value = params.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise bad_request(f"{key} must be a string")
    return value


def optional_bool(params: dict, key: str) -> bool:
    value = params.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad_request(f"{key} must be a boolean")
    return value


def optional_int(params: dict, key: str, default: int | None = None) -> int | None:
    value = params.get(key)
    if value is None:
        return default
    if type(value) is not int:
        raise bad_request(f"{key} must be an integer")
    return value


def str_list(params: dict, key: str, *, required: bool = False) -> list[str]:
    value = params.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise bad_request(f"{key} must be a list of non-empty strings")
    if required and not value:
        raise bad_request(f"{key} must not be empty")
    return value


def str_dict(params: dict, key: str) -> dict[str, str] | None:
    value = params.get(key)
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise bad_request(f"{key} must be an object of strings")
    return value


def position(params: dict, key: str) -> tuple[int, str] | None:
    value: Any = params.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise bad_request(f"{key} must be an object with offset and epoch")
    offset = optional_int(value, "offset", 0) or 0
    epoch = value.get("epoch", "")
    if not isinstance(epoch, str) or offset < 0:
        raise bad_request(f"{key} must be an object with offset and epoch")
    return offset, epoch


def duration(params: dict, key: str) -> float:
    """A number of seconds, or a duration string ("30s", "2m"); error 107 otherwise."""
    value = params.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError:
            pass
    raise bad_request(f"{key} must be a number of seconds or a duration like '30s'")

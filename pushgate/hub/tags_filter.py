"""Publication tags filters: a subscriber's predicate over each publication's ``tags``.

A client subscribes with ``tf``, a tree of ``FilterNode`` objects (client.proto): a leaf
compares one tag (``{"key", "cmp", "val"|"vals"}``), a branch combines its ``nodes``
with ``op`` ``and``, ``or`` or ``not``. ``compile_filter`` checks the tree once, with
Centrifugo's rules, and turns it into a plain function of the tags, so delivering a
publication to a filtered subscriber costs one call and no encoding: the subscriber
simply does not get the bytes every other subscriber shares.

Comparisons: ``eq``, ``neq``, ``in``, ``nin`` (``vals``), ``ex``, ``nex`` (no value),
``sw``/``ew``/``ct`` (starts with, ends with, contains), ``gt``/``gte``/``lt``/``lte``
(decimal numbers; a tag that is missing or not a number never matches). Unlike
Centrifugo, the size of a tree is bounded (``client.tags_filter_max_nodes``): every
subscriber's filter runs for every publication of its channel.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from decimal import Decimal

from pushgate.hub.errors import ErrorBadRequest, ErrorLimitExceeded, HubError
from pushgate.json_types import JsonObject

Tags = Mapping[str, str]
Predicate = Callable[[Tags], bool]
#: a compiled ``tf`` tree: a publication without tags has none to match
TagsFilter = Callable[[Tags | None], bool]

_VALUE_CMPS = frozenset({"eq", "neq", "sw", "ew", "ct", "gt", "gte", "lt", "lte"})
_SET_CMPS = frozenset({"in", "nin"})
_EXIST_CMPS = frozenset({"ex", "nex"})
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)")
_NO_TAGS: Tags = {}


def _bad(message: str) -> HubError:
    return ErrorBadRequest(f"bad request: tags filter: {message}")


def _number(text: str) -> Decimal | None:
    return Decimal(text) if _NUMBER.fullmatch(text) else None


def compile_filter(node: object, max_nodes: int) -> TagsFilter:
    """The predicate of a ``tf`` tree; HubError 107 for a malformed tree, 106 for one of
    more than ``max_nodes`` nodes."""
    budget = [max_nodes]
    predicate = _compile(node, budget)

    def matches(tags: Tags | None) -> bool:
        return predicate(tags or _NO_TAGS)

    return matches


def _compile(node: object, budget: list[int]) -> Predicate:
    budget[0] -= 1
    if budget[0] < 0:
        raise ErrorLimitExceeded("limit exceeded: tags filter has too many nodes")
    if not isinstance(node, dict):
        raise _bad("a node must be an object")
    op = _text(node, "op")
    if op == "":
        return _leaf(node)
    children = node.get("nodes") or []
    if not isinstance(children, list):
        raise _bad("nodes must be a list")
    if op in ("and", "or"):
        if not children:
            raise _bad(f"{op} needs at least one node")
        compiled = [_compile(child, budget) for child in children]
        if op == "and":
            return lambda tags: all(p(tags) for p in compiled)
        return lambda tags: any(p(tags) for p in compiled)
    if op == "not":
        if len(children) != 1:
            raise _bad("not needs exactly one node")
        inner = _compile(children[0], budget)
        return lambda tags: not inner(tags)
    raise _bad(f"unknown op {op[:32]!r}")


def _text(node: JsonObject, key: str) -> str:
    value = node.get(key) or ""
    if not isinstance(value, str):
        raise _bad(f"{key} must be a string")
    return value


def _leaf(node: JsonObject) -> Predicate:
    key, cmp, val = _text(node, "key"), _text(node, "cmp"), _text(node, "val")
    vals = node.get("vals") or []
    if not isinstance(vals, list) or not all(isinstance(v, str) for v in vals):
        raise _bad("vals must be a list of strings")
    if not cmp:
        raise _bad("a comparison needs cmp")
    if cmp in _VALUE_CMPS:
        if not val or vals:
            raise _bad(f"{cmp} needs val and no vals")
    elif cmp in _SET_CMPS:
        if not vals or val:
            raise _bad(f"{cmp} needs vals and no val")
    elif cmp in _EXIST_CMPS:
        if val or vals:
            raise _bad(f"{cmp} takes neither val nor vals")
    else:
        raise _bad(f"unknown cmp {cmp[:32]!r}")
    if not key and cmp not in _EXIST_CMPS:
        raise _bad(f"{cmp} needs key")
    return _comparison(key, cmp, val, frozenset(vals))


def _comparison(key: str, cmp: str, val: str, vals: frozenset[str]) -> Predicate:
    if cmp == "eq":
        return lambda tags: tags.get(key) == val
    if cmp == "neq":
        return lambda tags: tags.get(key) != val
    if cmp == "in":
        return lambda tags: tags.get(key, "") in vals
    if cmp == "nin":
        return lambda tags: tags.get(key, "") not in vals
    if cmp == "ex":
        return lambda tags: key in tags
    if cmp == "nex":
        return lambda tags: key not in tags
    if cmp == "sw":
        return lambda tags: tags.get(key, "").startswith(val) and key in tags
    if cmp == "ew":
        return lambda tags: tags.get(key, "").endswith(val) and key in tags
    if cmp == "ct":
        return lambda tags: val in tags.get(key, "") and key in tags
    bound = _number(val)
    if bound is None:
        return lambda tags: False

    def numeric(tags: Tags) -> bool:
        text = tags.get(key)
        number = _number(text) if text is not None else None
        if number is None:
            return False
        if cmp == "gt":
            return number > bound
        if cmp == "gte":
            return number >= bound
        if cmp == "lt":
            return number < bound
        return number <= bound

    return numeric

"""Server API methods of read positions and the event log (pushgate's own).

- ``mark_read {user, channel, offset, epoch}`` / ``read_state {user}``: the read positions
  ``pushgate.mark_read`` keeps (hub/notifications.py), from the backend's side;
- ``events {since?, limit?, shard?}``: events from the log after an event id (the oldest
  kept without ``since``), for a backend that pulls instead of being called;
- ``events_replay {sink, since}``: deliver again to ``webhook`` or ``amqp`` everything
  after ``since`` (an event id; ``"<shard>:0-0"`` = all that is kept);
- ``events_status``: per configured sink and log, its cursor and whether it caught up.
"""

from __future__ import annotations

import orjson

from pushgate.api.params import bad_request, optional_int, optional_str, require_str
from pushgate.engine.tracking import ReadPosition, parse_cursor
from pushgate.events.sinks import SINK_NAMES, configured
from pushgate.hub import notifications
from pushgate.hub.errors import ErrorNotAvailable
from pushgate.hub.hub import Hub

#: most events one ``events`` call returns
EVENTS_LIMIT_MAX = 1000


def _check_events(hub: Hub) -> None:
    if not hub.config.events.enabled:
        raise ErrorNotAvailable("not available: events.enabled is off")


def _cursor(params: dict, key: str) -> tuple[int, str]:
    value = require_str(params, key)
    try:
        shard, entry = parse_cursor(value)
    except ValueError:
        raise bad_request(f"{key} must be an event id like '0:1712345678901-0'") from None
    return shard, entry


async def mark_read(hub: Hub, params: dict) -> dict:
    user = require_str(params, "user")
    channel = require_str(params, "channel")
    offset = optional_int(params, "offset")
    if offset is None or offset < 0:
        raise bad_request("offset must be an integer >= 0")
    epoch = optional_str(params, "epoch") or ""
    changed = await notifications.set_read(hub, user, channel, ReadPosition(offset, epoch))
    return {"changed": changed}


async def read_state(hub: Hub, params: dict) -> dict:
    user = require_str(params, "user")
    positions = await hub.engine.read_positions(user)
    return {"read": {channel: pos.to_dict() for channel, pos in positions.items()}}


async def events(hub: Hub, params: dict) -> dict:
    _check_events(hub)
    limit = optional_int(params, "limit", 100) or 100
    if not 0 < limit <= EVENTS_LIMIT_MAX:
        raise bad_request(f"limit must be between 1 and {EVENTS_LIMIT_MAX}")
    if params.get("since") is not None:
        shard, after = _cursor(params, "since")
    else:
        shard, after = optional_int(params, "shard", 0) or 0, "0-0"
    if not 0 <= shard < hub.engine.event_shards:
        raise bad_request(f"no event log {shard} (there are {hub.engine.event_shards})")
    found = await hub.engine.events_read(shard, after, limit)
    return {
        "events": [orjson.Fragment(event.to_json(shard)) for event in found],
        "last": f"{shard}:{found[-1].id}" if found else f"{shard}:{after}",
    }


async def events_replay(hub: Hub, params: dict) -> dict:
    _check_events(hub)
    sink = require_str(params, "sink")
    if sink not in SINK_NAMES:
        raise bad_request(f"sink must be one of {', '.join(SINK_NAMES)}")
    shard, after = _cursor(params, "since")
    if not 0 <= shard < hub.engine.event_shards:
        raise bad_request(f"no event log {shard} (there are {hub.engine.event_shards})")
    first, _ = await hub.engine.events_bounds(shard)
    await hub.engine.events_rewind(shard, sink, after)
    return {"oldest_kept": f"{shard}:{first}" if first else None}


async def events_status(hub: Hub, params: dict) -> dict:
    _check_events(hub)
    out = []
    for shard in range(hub.engine.event_shards):
        first, last = await hub.engine.events_bounds(shard)
        for sink in configured(hub.config.events):
            cursor = await hub.engine.events_cursor(shard, sink)
            out.append(
                {
                    "sink": sink,
                    "shard": shard,
                    "cursor": f"{shard}:{cursor}" if cursor else None,
                    "oldest_kept": f"{shard}:{first}" if first else None,
                    "newest": f"{shard}:{last}" if last else None,
                    "caught_up": last is None or cursor == last,
                }
            )
    return {"logs": out}


METHODS = {
    "mark_read": mark_read,
    "read_state": read_state,
    "events": events,
    "events_replay": events_replay,
    "events_status": events_status,
}

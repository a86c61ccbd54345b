"""The stream position and missed publications a new subscription's reply carries.

A positioned subscription (``force_positioning``, or asked for with ``positioned`` where
allowed) is told the stream's epoch and top offset. A recoverable one (``force_recovery``,
or ``recoverable`` where allowed; recovery implies positioning) that comes back with a
position gets what it missed, in one of two modes (``force_recovery_mode``):

- ``stream``: every publication after the position (``recovered: true``), or none and
  ``recovered: false`` when the stream cannot fill the gap whole (another epoch, trimmed,
  more than ``client.history_max_publications``). An empty epoch stands for the current
  one. With the subscribe flag *reject unrecovered* (bit 2, what the SDKs' ``getState``
  sets) that case is error 112 instead, so the SDK reloads the app's state.
- ``cache``: only the latest publication (``recovered: true``), unless the client
  already has it; ``auto_cache_recover`` does this without the client asking.

With a tags filter, only publications it accepts are handed back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pushgate.engine.base import Publication, StreamPosition, UnrecoverablePosition
from pushgate.hub.errors import ErrorUnrecoverablePosition

if TYPE_CHECKING:
    from pushgate.config import ChannelOptions
    from pushgate.hub.client import ClientHub
    from pushgate.hub.results import SubscribeResult
    from pushgate.hub.subscription import Subscription
    from pushgate.hub.tags_filter import TagsFilter

#: SubscribeRequest.flag bits (client.proto): numeric channel ids (not used by pushgate)
#: and "answer 112 rather than recovered: false"
FLAG_CHANNEL_COMPACTION = 1
FLAG_REJECT_UNRECOVERED = 2


def has_history(options: ChannelOptions) -> bool:
    """The channel keeps a stream (both history_size and history_ttl are set)."""
    return options.history_size > 0 and options.history_ttl > 0


async def fill(
    hub: ClientHub,
    sub: Subscription,
    result: SubscribeResult,
    since: StreamPosition | None,
    *,
    reject_unrecovered: bool = False,
) -> None:
    """Set ``result``'s position fields (and ``sub.offset``) for a new subscription;
    HubError 112 when ``reject_unrecovered`` and the stream cannot be recovered."""
    options = sub.options
    if not (sub.positioned and has_history(options)):
        return
    result.positioned = True
    result.recoverable = sub.recoverable
    cache = options.force_recovery_mode == "cache"
    auto = cache and options.auto_cache_recover
    if sub.recoverable and (since is not None or auto):
        result.was_recovering = True
        if cache:
            position = await _latest(hub, sub, result, since or StreamPosition(0, ""))
        else:
            assert since is not None
            position = await _missed(hub, sub, result, since, reject_unrecovered)
        hub.count_recovery(result.recovered)
    else:
        position = (await hub.engine.history(sub.channel, limit=0)).position
    result.epoch = position.epoch
    result.offset = position.offset
    sub.offset = position.offset
    hub.note_position(sub.channel, position)


async def _missed(
    hub: ClientHub,
    sub: Subscription,
    result: SubscribeResult,
    since: StreamPosition,
    reject_unrecovered: bool,
) -> StreamPosition:
    engine = hub.engine
    try:
        history = await engine.history(
            sub.channel, since=since, limit=hub.config.client.history_max_publications
        )
    except UnrecoverablePosition:
        if reject_unrecovered:
            raise ErrorUnrecoverablePosition from None
        return (await engine.history(sub.channel, limit=0)).position
    pubs = history.publications
    if pubs and pubs[-1].offset < history.position.offset:
        # more were missed than one reply may carry: not recovered, never a partial list
        if reject_unrecovered:
            raise ErrorUnrecoverablePosition
        return history.position
    result.recovered = True
    accepts = sub.tags_filter
    result.publications = pubs if accepts is None else [p for p in pubs if accepts(p.tags)]
    return history.position


async def _latest(
    hub: ClientHub, sub: Subscription, result: SubscribeResult, since: StreamPosition
) -> StreamPosition:
    accepts = sub.tags_filter
    window = 1 if accepts is None else hub.config.client.history_max_publications
    history = await hub.engine.history(sub.channel, limit=window, reverse=True)
    position = history.position
    pubs = history.publications
    up_to_date = since.offset > 0 and since.offset == position.offset
    up_to_date = up_to_date and since.epoch == position.epoch
    if not pubs or pubs[0].offset != position.offset:
        # nothing kept (expired, removed, or a new stream): only a client that already
        # holds the top of this very stream is up to date
        result.recovered = up_to_date
        return position
    chosen = pubs[0] if accepts is None else _first_accepted(pubs, accepts)
    if chosen is None and len(pubs) >= window:
        # the filter accepts none of the window read: an older one may be the latest
        return position
    result.recovered = True
    if chosen is not None and not up_to_date:
        result.publications = [chosen]
    return position


def _first_accepted(pubs: list[Publication], accepts: TagsFilter) -> Publication | None:
    return next((p for p in pubs if accepts(p.tags)), None)

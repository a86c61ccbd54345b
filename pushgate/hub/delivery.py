"""Delivery: who is subscribed to what on this node, and what reaches them.

Channels map to their subscribers here (``channels: {channel: {Client: Subscription}}``);
the engine is subscribed for a channel's first local subscriber and unsubscribed
after its last, and memberships with presence or join/leave are told to the engine.
The engine's deliveries arrive in ``handle_publication`` / ``handle_join`` /
``handle_leave``: a gap check on the channel's offsets, then one synchronous push per
subscriber (the dialect encodes once per publication and framing: Publication.cache).
This loop is the node's hot path: no allocation, await or task per subscriber.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from pushgate.engine.base import ClientInfo, Engine, Publication, StreamPosition
from pushgate.hub.errors import (
    DISCONNECT_INSUFFICIENT_STATE,
    DISCONNECT_SERVER_ERROR,
    UNSUBSCRIBE_INSUFFICIENT_STATE,
)
from pushgate.hub.sink import JoinCache

if TYPE_CHECKING:
    from pushgate.hub.client import Client
    from pushgate.hub.subscription import Subscription

log = logging.getLogger("pushgate.hub")


class Delivery:
    def __init__(
        self,
        engine: Engine,
        presence_ttl: float,
        spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]],
    ) -> None:
        self.engine = engine
        self.presence_ttl = presence_ttl
        self.spawn = spawn
        self.channels: dict[str, dict[Client, Subscription]] = {}
        #: how many entries ``channels`` holds in all (kept as they change: a scrape or
        #: heartbeat reads it without walking every channel)
        self.subscription_count = 0
        #: a channel's engine subscription while it is being made (its later
        #: subscribers wait for it)
        self._engine_ready: dict[str, asyncio.Future[None]] = {}
        #: the last (offset, epoch) delivered or told per channel: gap detection
        self.positions: dict[str, StreamPosition] = {}
        #: channels with delta subscribers → how many; and their last publication here,
        #: the base the next one's delta is made against (protocol/centrifugo/fossil.py)
        self._delta_subscribers: Counter[str] = Counter()
        self._last_publications: dict[str, Publication] = {}
        #: deliveries written by this node (admin page rates)
        self.delivered = 0

    # --- subscriptions ------------------------------------------------------------
    async def add_subscription(self, sub: Subscription) -> None:
        channel = sub.channel
        subs = self.channels.get(channel)
        ready: asyncio.Future[None] | None
        if subs is None:
            subs = self.channels[channel] = {}
            ready = self._engine_ready[channel] = asyncio.get_running_loop().create_future()
            subs[sub.client] = sub
            self.subscription_count += 1
            try:
                await self.engine.subscribe(channel)
            except BaseException as exc:
                ready.set_exception(exc)
                ready.exception()  # mark retrieved
                del self._engine_ready[channel]
                raise
            ready.set_result(None)
        else:
            if sub.client not in subs:
                self.subscription_count += 1
            subs[sub.client] = sub
            ready = self._engine_ready.get(channel)
            if ready is not None and not ready.done():
                await asyncio.shield(ready)
        if sub.delta:
            self._delta_subscribers[channel] += 1
        if sub.options.presence or sub.options.join_leave:
            await self.engine.member_add(
                channel,
                sub.client.chan_info_for(channel),
                presence=sub.options.presence,
                ttl=self.presence_ttl,
            )

    def after_activate(self, sub: Subscription) -> None:
        """The subscriber is live: announce it to the channel."""
        if sub.options.join_leave:
            self.spawn(
                self.engine.member_joined(sub.channel, sub.client.chan_info_for(sub.channel))
            )

    async def announce_presence(self, sub: Subscription, present: bool) -> None:
        """Re-announce a live subscriber whose ``chan_info`` changed, or say it left while
        staying subscribed (XMPP presence: a change of show, or unavailable)."""
        channel = sub.channel
        info = sub.client.chan_info_for(channel)
        sub.present = present  # the heartbeat's presence refresh follows it
        options = sub.options
        if not (options.presence or options.join_leave):
            return
        if not present:
            await self.engine.member_remove(channel, sub.client.id, announce=sub.active)
            return
        ttl = self.presence_ttl
        await self.engine.member_add(channel, info, presence=options.presence, ttl=ttl)
        if sub.active and options.join_leave:
            await self.engine.member_joined(channel, info)

    async def refresh_presence(self, sub: Subscription) -> None:
        """Rewrite a present subscriber's presence entry after its ``chan_info`` changed,
        without a join (XMPP learns the resource after login subscribed the channels)."""
        if sub.options.presence and sub.present and sub.client.subs.get(sub.channel) is sub:
            info = sub.client.chan_info_for(sub.channel)
            await self.engine.member_update(sub.channel, info, self.presence_ttl)

    async def remove_subscription(self, sub: Subscription, *, announce: bool) -> None:
        channel = sub.channel
        subs = self.channels.get(channel)
        if subs is not None and subs.get(sub.client) is sub:
            del subs[sub.client]
            self.subscription_count -= 1
            if sub.delta:
                self._delta_subscribers[channel] -= 1
                if self._delta_subscribers[channel] <= 0:
                    del self._delta_subscribers[channel]
                    self._last_publications.pop(channel, None)
            if not subs:
                del self.channels[channel]
                self._engine_ready.pop(channel, None)
                self.positions.pop(channel, None)
                await self.engine.unsubscribe(channel)
        # The local state is already gone; what follows tells the cluster, and an engine
        # outage must not abort the caller's cleanup (a closing connection would stay
        # registered forever). The engine says it again later (redis: at its heartbeats).
        if not (sub.options.presence or sub.options.join_leave):
            return
        try:
            await self.engine.member_remove(
                channel, sub.client.id, announce=announce and sub.active
            )
        except Exception as exc:
            log.warning("cannot tell the engine %s left %s: %s", sub.client.id, channel, exc)

    # --- the engine's deliveries ---------------------------------------------------
    def handle_publication(self, channel: str, pub: Publication, epoch: str) -> None:
        subs = self.channels.get(channel)
        if not subs:
            return
        if pub.offset:
            last = self.positions.get(channel)
            if last is None or last.epoch != epoch or pub.offset > last.offset:
                self.positions[channel] = StreamPosition(pub.offset, epoch)
            if last is not None and (last.epoch != epoch or pub.offset > last.offset + 1):
                log.warning(
                    "gap in %s: %d/%s after %d/%s; positioned subscribers resubscribe",
                    channel,
                    pub.offset,
                    epoch,
                    last.offset,
                    last.epoch,
                )
                # positioned subscribers start again from their position (recovering
                # where they may); the others take publications as they come
                self._resubscribe_all(channel)
                subs = self.channels.get(channel)
                if not subs:
                    return
        if channel in self._delta_subscribers:
            self._chain(channel, pub, epoch)
        for sub in subs.values():
            try:
                sub.deliver(pub)
            except Exception:
                # one broken connection must not cost the channel's other subscribers
                # their copy: it is dropped, and the loop goes on
                self._delivery_failed(sub.client, channel)
        self.delivered += len(subs)

    def _chain(self, channel: str, pub: Publication, epoch: str) -> None:
        """Give ``pub`` the channel's publication before it as its delta base, when its
        publisher asked for delta and it directly follows that one; keep no chain."""
        last = self._last_publications.get(channel)
        if last is not None:
            follows = not pub.offset or (pub.offset == last.offset + 1 and last.epoch == epoch)
            if pub.use_delta and follows:
                pub.prev = last
            last.prev = None
        self._last_publications[channel] = pub

    def _delivery_failed(self, client: Client, channel: str) -> None:
        log.exception("delivery to client=%s in %s failed; disconnecting it", client.id, channel)
        try:
            client.disconnect(DISCONNECT_SERVER_ERROR)
        except Exception:
            log.exception("cannot disconnect client=%s", client.id)

    def _resubscribe_all(self, channel: str) -> None:
        """Positioned subscribers may have missed publications: make them recover.

        As in Centrifugo, only subscriptions that track their position (positioned or
        recoverable) are concerned; the others take publications at most once. A
        client-side subscription gets the "insufficient state" unsubscribe (the client
        resubscribes with its position); a server-side one cannot be resubscribed by the
        client, so that connection reconnects instead (and recovers on connect).
        """
        code, reason = UNSUBSCRIBE_INSUFFICIENT_STATE
        self.positions.pop(channel, None)
        for sub in list(self.channels.get(channel, {}).values()):
            if not sub.positioned:
                continue
            client = sub.client
            sub.retire()
            if sub.server_side or not client.sink.wants_pong:
                client.disconnect(DISCONNECT_INSUFFICIENT_STATE)
            else:
                client.sink.push_unsubscribe(channel, code, reason)
                self.spawn(client.unsubscribe(channel))

    async def check_positions(self) -> None:
        """After an engine outage: any channel whose stream moved on without us (or was
        lost) has its subscribers recover; the others carry on untouched."""
        for channel in list(self.channels):
            known = self.positions.get(channel)
            if known is None:
                continue  # no position was handed out: nobody can recover anyway
            try:
                current = (await self.engine.history(channel, limit=0)).position
            except Exception as exc:
                log.warning("cannot check %s after an engine outage: %s", channel, exc)
                self._resubscribe_all(channel)
                continue
            if current != known:
                log.warning(
                    "%s moved from %s to %s unseen: subscribers recover", channel, known, current
                )
                self._resubscribe_all(channel)

    def note_position(self, channel: str, position: StreamPosition) -> None:
        """A subscriber was told ``position``: what later publications must follow."""
        if channel in self.channels:
            known = self.positions.get(channel)
            if known is None or known.epoch != position.epoch or position.offset > known.offset:
                self.positions[channel] = position

    def handle_join(self, channel: str, info: ClientInfo) -> None:
        subs = self.channels.get(channel)
        if not subs:
            return
        cache: JoinCache = {}
        for sub in subs.values():
            if sub.active and sub.join_leave:
                try:
                    sub.client.sink.push_join(channel, info, cache)
                except Exception:
                    self._delivery_failed(sub.client, channel)

    def handle_leave(self, channel: str, info: ClientInfo) -> None:
        subs = self.channels.get(channel)
        if not subs:
            return
        cache: JoinCache = {}
        for sub in subs.values():
            if sub.active and sub.join_leave:
                try:
                    sub.client.sink.push_leave(channel, info, cache)
                except Exception:
                    self._delivery_failed(sub.client, channel)

    def channel_counts(self, pattern: str | None = None) -> dict[str, int]:
        return {
            channel: len(subs)
            for channel, subs in self.channels.items()
            if not pattern or fnmatch.fnmatchcase(channel, pattern)
        }

    def present(self) -> list[tuple[str, ClientInfo]]:
        """Every (channel, info) of a present subscriber here (presence channels)."""
        return [
            (channel, sub.client.chan_info_for(channel))
            for channel, subs in self.channels.items()
            for sub in subs.values()
            if sub.options.presence and sub.present
        ]

    def members(self) -> list[tuple[str, ClientInfo, bool, bool]]:
        """Every membership here: (channel, info, presence, joined announced)."""
        return [
            (
                channel,
                sub.client.chan_info_for(channel),
                sub.options.presence,
                sub.active and sub.options.join_leave,
            )
            for channel, subs in self.channels.items()
            for sub in subs.values()
            if (sub.options.presence or sub.options.join_leave) and sub.present
        ]

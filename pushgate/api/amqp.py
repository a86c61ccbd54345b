"""AMQP ingress: publications consumed from a RabbitMQ queue (aio-pika).

pushgate declares a durable queue, binds it to the configured exchange and consumes it
with a bounded prefetch. Each message's routing key maps to a channel by the same
exchange mappings STOMP ``/exchange/`` destinations use; the body becomes the
publication's data (JSON as it is, other UTF-8 text as a JSON string). A message is
acknowledged only after the engine accepted the publication, so delivery is
at-least-once; the AMQP ``message_id`` is the publication's idempotency key, so a
message redelivered after a lost acknowledgement is not published twice.

Messages are published one at a time in the order RabbitMQ delivers them, so a
channel's order is the queue's. The connection is ``connect_robust``: after RabbitMQ
restarts or the connection is cut it reconnects, and the queue (durable, not
auto-deleted) has kept whatever arrived meanwhile. A message whose routing key maps to
no channel, whose body is not text, or that the hub refuses (unknown namespace, bad
name) is rejected without requeue (dead-lettered when the queue has a dead-letter
exchange) and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from yarl import URL

from pushgate.hub.errors import HubError
from pushgate.protocol.stomp.session import json_body

if TYPE_CHECKING:
    from pushgate.config import AmqpConfig
    from pushgate.hub.hub import Hub
    from pushgate.protocol.stomp.destinations import Destinations

log = logging.getLogger("pushgate.amqp")

MAX_BACKOFF = 30.0


class AmqpIngress:
    def __init__(self, hub: Hub, config: AmqpConfig, destinations: Destinations) -> None:
        self.hub = hub
        self.config = config
        self.destinations = destinations
        #: set once the queue is being consumed
        self.ready = asyncio.Event()
        self.published = 0
        self.rejected = 0
        self._inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Connect and consume in the background; startup does not wait for RabbitMQ."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="pushgate-amqp-ingress")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
            self._connection = None

    async def _run(self) -> None:
        await self._connect()
        while True:
            message = await self._inbox.get()
            try:
                await self._process(message)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("AMQP message %s could not be handled", message.message_id)

    async def _connect(self) -> None:
        config = self.config
        delay = max(config.reconnect_delay, 0.1)
        while True:
            connection = None
            try:
                # the connection is named after the node (RabbitMQ shows it)
                url = URL(config.url).update_query(name=f"pushgate {self.hub.node_name}")
                connection = await aio_pika.connect_robust(url, reconnect_interval=delay)
                channel = await connection.channel()
                await channel.set_qos(prefetch_count=config.prefetch)
                if config.exchange.startswith("amq."):
                    exchange = await channel.get_exchange(config.exchange, ensure=True)
                else:
                    exchange = await channel.declare_exchange(
                        config.exchange, config.exchange_type, durable=True
                    )
                queue = await channel.declare_queue(config.queue, durable=True)
                for key in config.bindings:
                    await queue.bind(exchange, routing_key=key)
                await queue.consume(self._on_message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "AMQP: cannot consume %s (%s); retrying in %.1fs", config.queue, exc, delay
                )
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await connection.close()
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
                continue
            self._connection = connection
            connection.reconnect_callbacks.add(self._reconnected)
            log.info("AMQP: consuming queue %s bound to %s", config.queue, config.exchange)
            self.ready.set()
            return

    def _reconnected(self, *_: object) -> None:
        log.info("AMQP: reconnected, consuming %s again", self.config.queue)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        # handed to the one worker, in delivery order: a channel's order is the queue's
        self._inbox.put_nowait(message)

    async def _process(self, message: AbstractIncomingMessage) -> None:
        if _stale(message):
            return  # its channel is gone: RabbitMQ delivers it again
        key = message.routing_key or ""
        channel = self.destinations.channel_for_routing_key(message.exchange or "", key)
        if channel is None and message.exchange != self.config.exchange:
            channel = self.destinations.channel_for_routing_key(self.config.exchange, key)
        if channel is None:
            await self._reject(message, f"routing key {key!r} maps to no channel")
            return
        data = json_body(message.body, message.content_type or "")
        if data is None:
            await self._reject(message, "body is neither JSON nor UTF-8 text")
            return
        delay = 0.1
        while True:
            try:
                await self.hub.publish(channel, data, idempotency_key=message.message_id or None)
                break
            except HubError as error:
                await self._reject(message, f"channel {channel!r}: {error.message}")
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # the engine is down: keep the message (unacknowledged) and try again
                log.warning("AMQP: publish to %s failed (%s); retrying", channel, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
                if _stale(message):
                    return
        self.published += 1
        try:
            await message.ack()
        except Exception as exc:
            # the channel closed after the publish: the redelivery is deduplicated
            log.info("AMQP: ack of %s lost (%s)", message.message_id, exc)

    async def _reject(self, message: AbstractIncomingMessage, why: str) -> None:
        self.rejected += 1
        log.warning("AMQP: message %s rejected: %s", message.message_id, why)
        with contextlib.suppress(Exception):
            await message.reject(requeue=False)


def _stale(message: AbstractIncomingMessage) -> bool:
    try:
        return message.channel.is_closed
    except Exception:
        return True

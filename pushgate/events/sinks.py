"""Where events go: an HTTP webhook, RabbitMQ. Each takes a batch in order, or fails.

- webhook: ``POST <events.webhook_url>`` with ``{"events": [ … ]}`` (the batch, oldest
  first), ``Content-Type: application/json``, signed (events/signing.py). Any 2xx
  answer takes the whole batch; anything else (or no answer within
  ``events.webhook_timeout``) fails it, and the same batch is sent again later.
- amqp: each event is a persistent message to the durable topic exchange
  ``events.amqp_exchange``, routing key = the event type, ``message_id`` = the event id,
  with publisher confirms: the batch is taken once the broker confirmed every message.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import aiohttp

from pushgate.events import signing

if TYPE_CHECKING:
    from pushgate.config import EventsConfig

log = logging.getLogger("pushgate.events")

WEBHOOK = "webhook"
AMQP = "amqp"
SINK_NAMES = (WEBHOOK, AMQP)


@dataclass(slots=True, frozen=True)
class OutEvent:
    """An event ready to go: its id, type and JSON."""

    id: str
    type: str
    body: bytes


class DeliveryFailed(Exception):
    """The sink did not take the batch; it will be sent again."""


class Sink(Protocol):
    name: str

    async def deliver(self, batch: list[OutEvent]) -> None:
        """Deliver the whole batch, in order, or raise DeliveryFailed."""

    async def close(self) -> None: ...


def configured(config: EventsConfig) -> list[str]:
    """Names of the sinks ``config`` asks for."""
    names = []
    if config.webhook_url:
        names.append(WEBHOOK)
    if config.amqp_url:
        names.append(AMQP)
    return names


def build(config: EventsConfig) -> list[Sink]:
    sinks: list[Sink] = []
    if config.webhook_url:
        sinks.append(WebhookSink(config.webhook_url, config.webhook_secret, config.webhook_timeout))
    if config.amqp_url:
        sinks.append(AmqpSink(config.amqp_url, config.amqp_exchange))
    return sinks


class WebhookSink:
    name = WEBHOOK

    def __init__(self, url: str, secret: str, timeout: float) -> None:
        self.url = url
        self.secret = secret
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def deliver(self, batch: list[OutEvent]) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        body = b'{"events":[' + b",".join(event.body for event in batch) + b"]}"
        headers = {"Content-Type": "application/json", **signing.headers(self.secret, body)}
        try:
            async with self._session.post(self.url, data=body, headers=headers) as response:
                await response.read()
                if not 200 <= response.status < 300:
                    raise DeliveryFailed(f"HTTP {response.status} from {self.url}")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise DeliveryFailed(f"{self.url}: {exc!r}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class AmqpSink:
    name = AMQP

    def __init__(self, url: str, exchange: str) -> None:
        self.url = url
        self.exchange_name = exchange
        self._connection = None
        self._channel = None
        self._exchange = None

    async def _exchange_ready(self):
        import aio_pika

        if self._exchange is None:
            if self._connection is None:
                self._connection = await aio_pika.connect_robust(self.url)
            self._channel = await self._connection.channel(publisher_confirms=True)
            self._exchange = await self._channel.declare_exchange(
                self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
            )
        return self._exchange

    async def deliver(self, batch: list[OutEvent]) -> None:
        import aio_pika

        try:
            exchange = await self._exchange_ready()
            for event in batch:
                await exchange.publish(
                    aio_pika.Message(
                        event.body,
                        content_type="application/json",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        message_id=event.id,
                        type=event.type,
                    ),
                    routing_key=event.type,
                )
        except Exception as exc:
            # the channel is made again on the next attempt (the connection reconnects
            # by itself)
            self._exchange = None
            channel, self._channel = self._channel, None
            if channel is not None:
                with contextlib.suppress(Exception):
                    await channel.close()
            raise DeliveryFailed(f"AMQP: {exc!r}") from None

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None
            self._exchange = None

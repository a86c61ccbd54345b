"""Who an XMPP user may chat with, how fast, and what a chat carries to the recipient.

* Contacts: a chat goes only to a user present in one of the sender's channels of the
  contacts namespace: one the session has seen join (no lookup), else one found in the
  engine's presence of those channels (every node). An offline contact and a
  non-contact are told apart by nothing: both get ``service-unavailable``.
* Rate: a token bucket per connection (``xmpp.chat_per_second``, ``xmpp.chat_burst``)
  over chat and groupchat; ``STRIKES`` refusals in a row are a flood that ends the stream.
* The payload names the sender from the session (full JID and user), never from
  anything the client wrote.
"""

from __future__ import annotations

import asyncio
from enum import Enum
from typing import TYPE_CHECKING

import orjson

from pushgate.hub.client import TokenBucket, count_limit

if TYPE_CHECKING:
    from pushgate.engine.base import ClientInfo
    from pushgate.hub.hub import Hub

#: chat messages refused in a row by the rate limit before the stream ends
STRIKES = 10
#: the ``pushgate_limit_hits_total`` label of a refused chat
LIMIT = "xmpp_chat"


class Verdict(Enum):
    SEND = "send"
    REFUSE = "refuse"  # resource-constraint (wait): try again later
    FLOOD = "flood"  # policy-violation: the stream ends


class ChatRate:
    """The chat rate of one connection: a token bucket and a count of refusals in a row."""

    __slots__ = ("bucket", "strikes")

    def __init__(self, per_second: int, burst: int) -> None:
        self.bucket = TokenBucket(per_second, burst) if per_second else None
        self.strikes = 0

    def take(self) -> Verdict:
        if self.bucket is None or self.bucket.take():
            self.strikes = 0
            return Verdict.SEND
        self.strikes += 1
        count_limit(LIMIT)
        return Verdict.FLOOD if self.strikes >= STRIKES else Verdict.REFUSE


def xmpp_resource(info: ClientInfo) -> str | None:
    """The XMPP resource of a presence entry an XMPP connection made; None for a
    connection of another protocol (or an XMPP one that has not sent presence)."""
    if not info.chan_info:
        return None
    try:
        extra = orjson.loads(info.chan_info)
    except orjson.JSONDecodeError:
        return None
    xmpp = extra.get("xmpp") if isinstance(extra, dict) else None
    return xmpp if isinstance(xmpp, str) else None


async def present_contact(hub: Hub, channels: list[str], user: str) -> list[ClientInfo]:
    """``user``'s connections present in any of ``channels`` (the sender's contacts
    channels), cluster-wide: empty when ``user`` is no contact or not online."""
    found = await asyncio.gather(*(hub.user_presence(channel, user) for channel in channels))
    by_client: dict[str, ClientInfo] = {}
    for infos in found:
        for info in infos:
            by_client.setdefault(info.client, info)
    return list(by_client.values())


def chat_payload(
    sender_jid: str, sender: str, mtype: str, body: str, msg_id: str, thread: str, resource: str
) -> str:
    """The JSON of a chat as the hub's ``message`` order carries it: what an XMPP
    recipient renders as a ``<message/>``, and what another protocol's connection gets
    as a message push when ``xmpp.chat_to_other_dialects`` is on."""
    data: dict[str, str] = {
        "xmpp": "chat",
        "type": mtype,
        "from": sender_jid,
        "user": sender,
        "body": body,
    }
    if msg_id:
        data["id"] = msg_id
    if thread:
        data["thread"] = thread
    if resource:
        data["resource"] = resource
    return orjson.dumps(data).decode()

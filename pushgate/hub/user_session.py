"""UserSession: one online user on this node, the source document's per-uid process.

It owns the user's connections here, so an order addressed to a user (disconnect,
subscribe, unsubscribe, refresh, a direct message) reaches every one of them, and it
knows when the user came online and when their last connection left.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pushgate.hub.client import Client


class UserSession:
    __slots__ = ("clients", "online_since", "user")

    def __init__(self, user: str) -> None:
        self.user = user
        self.clients: dict[str, Client] = {}
        self.online_since = time.time()

    def __len__(self) -> int:
        return len(self.clients)

    def add(self, client: Client) -> None:
        self.clients[client.id] = client

    def remove(self, client: Client) -> None:
        self.clients.pop(client.id, None)

    def select(
        self,
        client_id: str | None = None,
        session: str | None = None,
        whitelist: list[str] | None = None,
    ) -> list[Client]:
        """The user's connections an order applies to."""
        chosen = []
        for client in self.clients.values():
            if client_id and client.id != client_id:
                continue
            if session and client.session != session:
                continue
            if whitelist and client.id in whitelist:
                continue
            chosen.append(client)
        return chosen

    def message(self, data: bytes) -> None:
        """Deliver a direct message to every connection of the user."""
        for client in self.clients.values():
            client.sink.push_message(data)

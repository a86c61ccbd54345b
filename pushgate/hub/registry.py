"""The registry: this node's connections and its online users.

A connection is *pending* from the moment it opens until its connect succeeds (the
timer closes it if that takes longer than ``client.connect_timeout``), then
*registered*: listed by id, and under its user's UserSession, through which orders
addressed to a user reach each of that user's connections here.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING

from pushgate.hub.user_session import UserSession
from pushgate.json_types import JsonObject

if TYPE_CHECKING:
    from pushgate.hub.client import Client


class Registry:
    __slots__ = ("clients", "kinds", "pending", "registered", "users")

    def __init__(self) -> None:
        #: registered connections by id
        self.clients: dict[str, Client] = {}
        #: online users (with a registered connection here) → their session
        self.users: dict[str, UserSession] = {}
        #: connections that have not sent connect yet → when they opened (monotonic)
        self.pending: dict[Client, float] = {}
        #: connections registered since the node started (gc_freeze.py)
        self.registered = 0
        #: registered connections by (transport, dialect), kept as they come and go: the
        #: ``pushgate_connections`` gauge without walking every connection at a scrape
        self.kinds: Counter[tuple[str, str]] = Counter()

    def open(self, client: Client) -> None:
        self.pending[client] = time.monotonic()

    def forget_pending(self, client: Client) -> None:
        self.pending.pop(client, None)

    def add(self, client: Client) -> None:
        """``client`` connected: registered, and under its user's session."""
        self.pending.pop(client, None)
        previous = self.clients.get(client.id)
        if previous is not client:
            if previous is not None:
                self._uncount(previous)
            self.kinds[(client.transport, client.sink.dialect)] += 1
        self.clients[client.id] = client
        self.registered += 1
        if not client.user:
            return
        session = self.users.get(client.user)
        if session is None:
            session = self.users[client.user] = UserSession(client.user)
        session.add(client)

    def remove(self, client: Client) -> bool:
        """``client`` is gone; whether it was one of a user's connections."""
        if self.clients.get(client.id) is client:
            del self.clients[client.id]
            self._uncount(client)
        session = self.users.get(client.user)
        if session is None:
            return False
        session.remove(client)
        if not session:
            del self.users[client.user]
        return True

    def _uncount(self, client: Client) -> None:
        kind = (client.transport, client.sink.dialect)
        self.kinds[kind] -= 1
        if not self.kinds[kind]:
            del self.kinds[kind]

    def everyone(self) -> list[Client]:
        """Every connection, registered or still pending."""
        return [*self.clients.values(), *self.pending]

    def user_connection_count(self, user: str) -> int:
        session = self.users.get(user)
        return len(session) if session else 0

    def targets(
        self,
        user: str,
        client: str | None = None,
        session: str | None = None,
        whitelist: list[str] | None = None,
    ) -> list[Client]:
        """The connections here an order addressed to ``user`` applies to."""
        user_session = self.users.get(user)
        if user_session is None:
            return []
        return user_session.select(client, session, whitelist)

    def user_connections(self, user: str, node: str) -> list[JsonObject]:
        """This node's connections of ``user``: what the admin page lists."""
        session = self.users.get(user)
        if session is None:
            return []
        return [
            {
                "client": client.id,
                "transport": client.transport,
                "node": node,
                "channels": sorted(client.subs),
            }
            for client in session.clients.values()
        ]

    def product_users(self) -> list[str]:
        """This node's online users, less the server's own identities (the admin page)."""
        return [
            user
            for user, session in self.users.items()
            if not all(client.internal for client in session.clients.values())
        ]

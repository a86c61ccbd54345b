"""Admin sessions, kept server side in the engine so that logging out ends them.

A login makes a random session id (``secrets.token_urlsafe``); the cookie carries it and
the engine keeps its SHA-256 under ``admin-session:…`` for ``admin.session_ttl``. Each
admin request looks it up; logout deletes it, so a copy of the old cookie is refused from
then on. Stored in the engine, a session works on every worker and node: the redis
engine's key is seen by all of them; the memory engine serves one process only. The
engine holds hashes only, so reading Redis does not give a usable cookie. The stored
value is a fingerprint of ``admin.password``: changing the password ends every session.
"""

from __future__ import annotations

import hashlib
import secrets

from pushgate.engine.base import Engine

KEY_PREFIX = "admin-session:"
#: longer cookies are not ours: refused without asking the engine
MAX_ID_LENGTH = 128


def _key(session_id: str) -> str:
    return KEY_PREFIX + hashlib.sha256(session_id.encode()).hexdigest()


def _fingerprint(password: str) -> bytes:
    return hashlib.sha256(b"pushgate-admin-password:" + password.encode()).hexdigest().encode()


class AdminSessions:
    """Create, check and revoke admin sessions of the cluster."""

    def __init__(self, engine: Engine, password: str, ttl: float) -> None:
        self.engine = engine
        self.ttl = ttl
        self._fingerprint = _fingerprint(password)

    async def create(self) -> str:
        """A new session; its id goes into the cookie."""
        session_id = secrets.token_urlsafe(32)
        await self.engine.kv_set(_key(session_id), self._fingerprint, self.ttl)
        return session_id

    async def valid(self, session_id: str | None) -> bool:
        if not session_id or len(session_id) > MAX_ID_LENGTH:
            return False
        stored = await self.engine.kv_get(_key(session_id))
        return stored is not None and secrets.compare_digest(stored, self._fingerprint)

    async def revoke(self, session_id: str | None) -> None:
        if session_id and len(session_id) <= MAX_ID_LENGTH:
            await self.engine.kv_delete(_key(session_id))

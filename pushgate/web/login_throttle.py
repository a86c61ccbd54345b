"""Login throttling for the admin page: exponential back-off per address and overall.

Each login attempt that reaches the password check is counted first, per remote address
(an IPv6 address by its /64, which one machine usually holds whole) and for all
addresses together; counts are forgotten ``admin.login_window`` after the last attempt.
Past ``admin.login_attempts`` (``login_attempts_global`` overall), an attempt must
first claim a turn: a lock of 1 s, then 2, 4, … up to ``admin.login_max_backoff`` (the
length set by the turns taken so far, not by how many requests raced for one); while a
lock stands every login of that address (or every login) is refused with its remaining
time without looking at the password. Claiming is an engine "set if absent", so
parallel requests cannot slip through together, and the state is the engine's: the same
for every worker and node. A successful login clears its address and is taken back from the
global count, so the logins of operators never add up to a back-off.
"""

from __future__ import annotations

import ipaddress
import math
import time

from pushgate.config import AdminConfig
from pushgate.engine.base import Engine

KEY_PREFIX = "admin-login:"
GLOBAL = "*"
#: 2**30 s is far past any login_max_backoff: keeps the power finite
MAX_DOUBLINGS = 30


def address_scope(remote: str | None) -> str:
    """What one attacker's addresses have in common: an IPv4 address, an IPv6 /64."""
    try:
        address = ipaddress.ip_address(remote or "")
    except ValueError:
        return "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class LoginThrottle:
    def __init__(self, engine: Engine, config: AdminConfig) -> None:
        self.engine = engine
        self.config = config

    async def admit(self, remote: str | None) -> int:
        """0 when this attempt may check the password; otherwise the seconds to wait."""
        config = self.config
        scopes = (
            (address_scope(remote), config.login_attempts),
            (GLOBAL, config.login_attempts_global),
        )
        for scope, _ in scopes:
            wait = await self._locked(scope)
            if wait:
                return wait
        for scope, free in scopes:
            tries = await self.engine.kv_incr(f"{KEY_PREFIX}tries:{scope}", config.login_window)
            if tries > free and not await self._take_turn(scope):
                return await self._locked(scope) or 1  # a parallel attempt took this turn
        return 0

    async def _take_turn(self, scope: str) -> bool:
        """Past the free attempts: claim the next turn, which holds off the attempt after
        it 1 s, 2 s, 4 s, … (the n-th turn 2**(n-1) s, at most login_max_backoff)."""
        config = self.config
        turns = int(await self.engine.kv_get(f"{KEY_PREFIX}turns:{scope}") or 0)
        delay = min(config.login_max_backoff, 2.0 ** min(turns, MAX_DOUBLINGS))
        until = time.time() + delay
        claimed = await self.engine.kv_set(
            f"{KEY_PREFIX}lock:{scope}", repr(until).encode(), delay, only_new=True
        )
        if claimed:
            await self.engine.kv_incr(f"{KEY_PREFIX}turns:{scope}", config.login_window)
        return claimed

    async def succeeded(self, remote: str | None) -> None:
        """A right password: its address starts afresh, and the attempt is taken back
        from the global count (only failures may add up there)."""
        scope = address_scope(remote)
        for kind in ("tries", "turns", "lock"):
            await self.engine.kv_delete(f"{KEY_PREFIX}{kind}:{scope}")
        await self.engine.kv_incr(f"{KEY_PREFIX}tries:{GLOBAL}", self.config.login_window, -1)

    async def _locked(self, scope: str) -> int:
        value = await self.engine.kv_get(f"{KEY_PREFIX}lock:{scope}")
        if value is None:
            return 0
        try:
            left = float(value) - time.time()
        except ValueError:
            return 1
        return max(1, math.ceil(left)) if left > 0 else 0

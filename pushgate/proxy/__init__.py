"""Proxies: the product's backend decides, over HTTP, what pushgate does for a client.

Centrifugo's proxy feature, with its JSON and option names: pushgate asks the backend
(``[[proxies]]`` endpoints) on connect (no token needed), refresh, subscribe, publish,
sub_refresh, client RPC and send, and the answer — a result, an error or a disconnect —
is what the client gets. ``registry.Proxies`` is built once from the configuration;
``events`` has one coroutine per event; ``caller.HttpProxy`` makes the bounded,
timed, circuit-broken HTTP calls. A leaf beside the hub: it imports nothing above it.
"""

from pushgate.proxy.errors import ProxyDisconnect, ProxyError, ProxyUnavailable
from pushgate.proxy.messages import Caller
from pushgate.proxy.registry import DISABLED, UNKNOWN, Proxies

__all__ = [
    "DISABLED",
    "UNKNOWN",
    "Caller",
    "Proxies",
    "ProxyDisconnect",
    "ProxyError",
    "ProxyUnavailable",
]

"""The configured proxies, by what they answer: the node's one ``Proxies``.

Built once from the configuration (which checked that every enabled proxy names a
``[[proxies]]`` entry): ``connect``, ``refresh`` and ``send`` are the proxies of
``[client]`` (None when off); ``channel(options, kind)`` the subscribe, publish or
sub_refresh proxy of a channel's options; ``rpc(method)`` the proxy of an RPC method's
namespace (``[rpc]`` or ``[[rpc_namespace]]``). ``pick_headers`` keeps, from the HTTP
request that opens a connection, only the headers some proxy forwards.
"""

from __future__ import annotations

from collections.abc import Iterable

from pushgate.config import ChannelOptions, Config, RpcOptions
from pushgate.proxy.caller import HttpProxy

#: rpc(method) when the method's namespace is not configured
UNKNOWN = "unknown"
#: rpc(method) when its namespace has no proxy enabled
DISABLED = "disabled"


class Proxies:
    def __init__(self, config: Config) -> None:
        self.by_name = {entry.name: HttpProxy(entry) for entry in config.proxies}
        client = config.client
        self.connect = self._named(client.connect_proxy_enabled, client.connect_proxy_name)
        self.refresh = self._named(client.refresh_proxy_enabled, client.refresh_proxy_name)
        self.send = self._named(client.send_proxy_enabled, client.send_proxy_name)
        self.rpc_boundary = config.rpc.namespace_boundary
        self._rpc_default: RpcOptions = config.rpc
        self._rpc_namespaces: dict[str, RpcOptions] = {ns.name: ns for ns in config.rpc_namespaces}
        self.header_names = frozenset(
            name.lower() for entry in config.proxies for name in entry.http_headers
        )
        #: some proxy forwards headers of the client's connect command
        self.wants_emulated = any(entry.emulated_headers for entry in config.proxies)

    def _named(self, enabled: bool, name: str) -> HttpProxy | None:
        return self.by_name[name] if enabled else None

    def channel(self, options: ChannelOptions, kind: str) -> HttpProxy | None:
        """The ``subscribe``, ``publish`` or ``sub_refresh`` proxy of a channel, or None."""
        if kind == "subscribe":
            enabled, name = options.subscribe_proxy_enabled, options.subscribe_proxy_name
        elif kind == "publish":
            enabled, name = options.publish_proxy_enabled, options.publish_proxy_name
        else:
            enabled, name = options.sub_refresh_proxy_enabled, options.sub_refresh_proxy_name
        return self.by_name.get(name) if enabled else None

    def rpc(self, method: str) -> HttpProxy | str:
        """The proxy answering ``method``, or why there is none (UNKNOWN, DISABLED)."""
        namespace, boundary, _ = method.partition(self.rpc_boundary)
        options = self._rpc_namespaces.get(namespace) if boundary else self._rpc_default
        if options is None:
            return UNKNOWN
        if not options.proxy_enabled:
            return DISABLED
        return self.by_name[options.proxy_name]

    def pick_headers(self, headers: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
        """The (name, value) pairs of ``headers`` (e.g. an aiohttp request's
        ``headers.items()``) that some proxy forwards; () when none does."""
        names = self.header_names
        if not names:
            return ()
        return tuple((key, value) for key, value in headers if key.lower() in names)

    async def close(self) -> None:
        for proxy in self.by_name.values():
            await proxy.close()

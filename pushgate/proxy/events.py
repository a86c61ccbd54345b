"""The proxy events, one coroutine each: build the request, call, read the result.

Each raises what ``HttpProxy.call`` raises (ProxyError, ProxyDisconnect for the
backend's refusals; ProxyUnavailable when there is no usable answer, including a result
of the wrong shape). The hub decides what each outcome means for the client.
"""

from __future__ import annotations

from pushgate.proxy import messages as m
from pushgate.proxy.caller import HttpProxy
from pushgate.proxy.messages import Caller


async def _call(proxy: HttpProxy, kind: str, caller: Caller, body: dict) -> dict | None:
    return await proxy.call(kind, body, caller.headers, caller.emulated)


async def connect(
    proxy: HttpProxy,
    caller: Caller,
    *,
    name: str = "",
    version: str = "",
    data: bytes | None = None,
    channels: list[str] | None = None,
) -> m.ConnectReply | None:
    """Who the connection is (None: the backend gave no result, so no user)."""
    body = m.base_request(caller, proxy.binary, with_user=False)
    if name:
        body["name"] = name
    if version:
        body["version"] = version
    m.put_data(body, data, proxy.binary, checked=caller.protocol != "protobuf")
    if channels:
        body["channels"] = channels
    result = await _call(proxy, "connect", caller, body)
    return None if result is None else m.connect_reply(result)


async def refresh(proxy: HttpProxy, caller: Caller) -> m.RefreshReply:
    body = m.base_request(caller, proxy.binary)
    m.put_meta(body, caller, proxy.include_meta)
    result = await _call(proxy, "refresh", caller, body)
    # no result: the backend lets the connection expire (as Centrifugo reads it)
    return m.RefreshReply(expired=True) if result is None else m.refresh_reply(result)


async def subscribe(
    proxy: HttpProxy, caller: Caller, channel: str, *, token: str = "", data: bytes | None = None
) -> m.SubscribeReply:
    body = m.base_request(caller, proxy.binary)
    body["channel"] = channel
    if token:
        body["token"] = token
    m.put_meta(body, caller, proxy.include_meta)
    m.put_data(body, data, proxy.binary, checked=caller.protocol != "protobuf")
    return m.subscribe_reply(await _call(proxy, "subscribe", caller, body))


async def publish(proxy: HttpProxy, caller: Caller, channel: str, data: bytes) -> m.PublishReply:
    body = m.base_request(caller, proxy.binary)
    body["channel"] = channel
    m.put_data(body, data, proxy.binary)  # publication data is marked BinaryData if not JSON
    m.put_meta(body, caller, proxy.include_meta)
    return m.publish_reply(await _call(proxy, "publish", caller, body))


async def rpc(proxy: HttpProxy, caller: Caller, method: str, data: bytes | None) -> bytes | None:
    """The RPC result's data (None: the backend's result carries none)."""
    body = m.base_request(caller, proxy.binary)
    body["method"] = method
    m.put_data(body, data, proxy.binary, checked=caller.protocol != "protobuf")
    m.put_meta(body, caller, proxy.include_meta)
    return m.rpc_reply(await _call(proxy, "rpc", caller, body))


async def send(proxy: HttpProxy, caller: Caller, data: bytes | None) -> None:
    """A client's send (no reply): the RPC request's fields without ``method``."""
    body = m.base_request(caller, proxy.binary)
    m.put_data(body, data, proxy.binary, checked=caller.protocol != "protobuf")
    m.put_meta(body, caller, proxy.include_meta)
    await _call(proxy, "send", caller, body)


async def sub_refresh(proxy: HttpProxy, caller: Caller, channel: str) -> m.SubRefreshReply:
    body = m.base_request(caller, proxy.binary)
    body["channel"] = channel
    m.put_meta(body, caller, proxy.include_meta)
    result = await _call(proxy, "sub_refresh", caller, body)
    return m.SubRefreshReply(expired=True) if result is None else m.sub_refresh_reply(result)

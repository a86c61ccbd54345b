"""The product's end of pushgate's events: ``POST /demo/hooks/pushgate``.

pushgate delivers its event log here (``[events]`` in pushgate.toml: the launcher points
``webhook_url`` at this address), in order and at least once, each request signed:
``X-Pushgate-Signature: sha256=<hex>`` = HMAC-SHA256(``events.webhook_secret``,
``"<X-Pushgate-Timestamp>." + body``). A request that is not signed, or signed more than
five minutes ago, is refused (401) — pushgate sends it again later, so nothing is lost.

``notification_handoff``: a notification nobody saw within its hand-off TTL (no tab of the
user displayed it). A real product e-mails it or sends a mobile push; the demo logs it and
keeps it (table ``handoffs``) once per event id, since an event may be delivered twice.
The other events are logged only.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time

from aiohttp import web

log = logging.getLogger("demo.hooks")

#: how far from now a request's timestamp may be (seconds): older ones are replays
TOLERANCE = 300


def signed(secret: str, body: bytes, timestamp: str, signature: str) -> bool:
    if not secret or not timestamp.isdigit() or abs(time.time() - int(timestamp)) > TOLERANCE:
        return False
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest("sha256=" + mac.hexdigest(), signature)


def hook(secret: str, store_key: web.AppKey):
    async def pushgate_events(request: web.Request) -> web.Response:
        body = await request.read()
        if not signed(
            secret,
            body,
            request.headers.get("X-Pushgate-Timestamp", ""),
            request.headers.get("X-Pushgate-Signature", ""),
        ):
            log.warning("refused an unsigned or stale event request")
            return web.Response(status=401)
        store = request.app[store_key]
        for event in json.loads(body)["events"]:
            if event["type"] != "notification_handoff":
                log.debug("pushgate event %s", event)
                continue
            notification = (event.get("data") or {}).get("notification") or {}
            fresh = await asyncio.to_thread(
                store.record_handoff,
                event["id"],
                event["user"],
                notification.get("id"),
                notification.get("text", ""),
            )
            if fresh:
                # where a product would send the e-mail or the mobile push
                log.info(
                    "hand-off: %s did not see “%s” within %ss: would e-mail it",
                    event["user"],
                    notification.get("text", ""),
                    event.get("ttl"),
                )
        return web.Response(status=204)

    return pushgate_events

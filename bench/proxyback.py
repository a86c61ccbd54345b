"""A product backend for the ``proxy`` bench: answers pushgate's proxy calls at once.

Run as its own process by the scenario (``python -m bench.proxyback --port P``), on
uvloop: ``POST /connect`` answers the user named by the ``session`` cookie (any cookie
works: the bench measures pushgate, not a session store); ``/rpc`` echoes the data;
``/publish`` lets the publication through as it is. Nothing else.
"""

from __future__ import annotations

import argparse

import orjson
from aiohttp import web

CONNECT_REFUSED = orjson.dumps({"disconnect": {"code": 4501, "reason": "unauthorized"}})
PUBLISH_OK = orjson.dumps({"result": {}})


async def connect(request: web.Request) -> web.Response:
    await request.read()
    user = request.cookies.get("session")
    if not user:
        return web.Response(body=CONNECT_REFUSED, content_type="application/json")
    body = orjson.dumps({"result": {"user": user}})
    return web.Response(body=body, content_type="application/json")


async def rpc(request: web.Request) -> web.Response:
    call = orjson.loads(await request.read())
    body = orjson.dumps({"result": {"data": call.get("data")}})
    return web.Response(body=body, content_type="application/json")


async def publish(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=PUBLISH_OK, content_type="application/json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    app = web.Application()
    app.add_routes(
        [web.post("/connect", connect), web.post("/rpc", rpc), web.post("/publish", publish)]
    )
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()

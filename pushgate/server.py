"""Assembles the aiohttp application: hub, engine, dialects, API; and runs it.

The dialects (pushgate/dialects/: Centrifugo, STOMP, XMPP) bring their own routes and
start and stop with the node; the server adds what is everyone's: the CORS middleware,
``/static``, the server API, the admin, health, readiness and metrics.

With ``server.internal_port`` set, one application listens on two sockets: the public
one (``server.port``) and the internal one (``server.internal_host``, default
127.0.0.1). The internal one serves everything; on the public one the operator's paths —
``/api``, ``/admin``, ``/metrics``, ``/ready`` — answer 404 as if they did not exist.
``/health`` (liveness, says nothing) stays on both.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import resource
import socket
import ssl
import time
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry

from pushgate import loop_lag, metrics
from pushgate.api.http import api_handler
from pushgate.auth import TokenVerifier
from pushgate.config import Config, ConfigError
from pushgate.dialects import DIALECTS
from pushgate.engine.base import Engine
from pushgate.engine.measured import MeasuredEngine
from pushgate.engine.memory import MemoryEngine
from pushgate.events.dispatcher import Dispatcher
from pushgate.events.sinks import build as build_sinks
from pushgate.gc_freeze import Freezer
from pushgate.hub.hub import Hub
from pushgate.hub.metrics_collector import HubCollector
from pushgate.listening import BACKLOG, bind_socket
from pushgate.transport.app_keys import HUB, OPEN_SOCKETS
from pushgate.transport.cors import add_cors_headers, cors_middleware
from pushgate.transport.ws_connection import OpenSockets
from pushgate.web import admin
from pushgate.worker_metrics import WorkerMetrics

log = logging.getLogger("pushgate.server")

METRICS = web.AppKey("metrics", CollectorRegistry)
WORKER_METRICS = web.AppKey("worker_metrics", WorkerMetrics)


#: served only on the internal listener when there is one (route paths beginning so)
INTERNAL_PATHS = ("/api/", "/admin", "/metrics", "/ready")


def make_engine(config: Config) -> Engine:
    if config.engine.type == "memory":
        return MemoryEngine(history_meta_ttl=config.engine.history_meta_ttl)
    if config.engine.type == "redis":
        from pushgate.engine.redis_engine import RedisEngine

        return RedisEngine(config.engine)
    raise ConfigError(f"engine.type: unknown engine {config.engine.type!r}")


STATIC = Path(__file__).parent / "static"


def events_dispatcher(hub: Hub) -> Dispatcher | None:
    """The event dispatcher, when events are on and a sink is configured."""
    config = hub.config.events
    if not config.enabled:
        return None
    sinks = build_sinks(config)
    if not sinks:
        log.info("events.enabled without a sink: events are only kept (API method events)")
        return None
    return Dispatcher(hub.engine, config, hub.node_id, sinks)


async def health(request: web.Request) -> web.Response:
    """Alive: the process answers. For liveness probes."""
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    """Ready for traffic: the engine answers and the node is not shutting down."""
    hub = request.app[HUB]
    if hub.draining:
        return web.json_response({"status": "draining"}, status=503)
    try:
        await hub.engine.ping()
    except Exception as exc:
        return web.json_response({"status": "engine unreachable", "error": str(exc)}, status=503)
    return web.json_response({"status": "ready", "engine": hub.engine.name})


async def metrics_handler(request: web.Request) -> web.Response:
    """This node's exposition: with several workers, every worker's (worker_metrics.py)."""
    body, content_type = metrics.render(request.app[METRICS])
    workers = request.app.get(WORKER_METRICS)
    if workers is not None:
        body = await workers.exposition(body.decode())
    return web.Response(body=body, headers={"Content-Type": content_type})


def arrived_internally(request: web.Request) -> bool:
    """True when the request came in on the internal listener (server.internal_port)."""
    transport = request.transport
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    if not isinstance(sockname, tuple) or len(sockname) < 2:
        return False
    return sockname[1] == request.config_dict[HUB].config.server.internal_port


@web.middleware
async def internal_only_middleware(request: web.Request, handler) -> web.StreamResponse:
    """With an internal listener, the operator's paths are not found on the public one.
    The matched route decides (not the raw path): no spelling of a URL gets around it."""
    resource = request.match_info.route.resource
    canonical = resource.canonical if resource is not None else request.path
    if canonical.startswith(INTERNAL_PATHS) and not arrived_internally(request):
        raise web.HTTPNotFound()
    return await handler(request)


def create_app(config: Config, engine: Engine | None = None) -> web.Application:
    measured = MeasuredEngine(engine or make_engine(config))  # type: ignore[abstract]  # operations set per instance
    hub = Hub(config, measured, TokenVerifier(config.token))
    app = web.Application(
        client_max_size=max(config.client.max_frame_bytes, 4 * 1024 * 1024),
        # no internal listener, no middleware: nothing more per request than before
        middlewares=[
            *([internal_only_middleware] if config.server.internal_port else []),
            cors_middleware,
        ],
    )
    app[HUB] = hub
    app[OPEN_SOCKETS] = OpenSockets(hub.backlog, hub.departures)
    app.on_response_prepare.append(add_cors_headers)
    routes = app.router
    dialects = [dialect(app, hub) for dialect in DIALECTS if dialect.enabled(config)]
    for dialect in dialects:
        dialect.add_routes(routes)
    dispatcher = events_dispatcher(hub)
    routes.add_static("/static/", STATIC, show_index=False)
    routes.add_post("/api/{method}", api_handler)
    admin.add_routes(app)
    stats = admin.StatsPublisher(hub)
    routes.add_get("/health", health)
    routes.add_get("/ready", ready)
    routes.add_get("/metrics", metrics_handler)
    app[METRICS] = metrics.registry_for(HubCollector(hub))

    async def start_hub(app: web.Application) -> None:
        if not config.api.key and not config.api.insecure:
            log.warning("api.key is not set: the server API refuses every request")
        if not hub.tokens.configured and not config.client.anonymous:
            log.warning("no token key configured: every connection will be refused")
        await hub.start()
        stats.start()
        for dialect in dialects:
            await dialect.start()
        if dispatcher is not None:
            dispatcher.start()
        log.info(
            "pushgate %s node %s started (engine %s)", hub.version, hub.node_name, hub.engine.name
        )

    async def stop_hub(app: web.Application) -> None:
        for dialect in dialects:
            await dialect.stop_accepting()  # listeners and ingress: nothing new comes in
        if dispatcher is not None:
            await dispatcher.stop()  # the lease goes: another node delivers at once
        # disconnect everyone first (3001): waiting polling requests answer with it
        await stats.stop()
        await hub.shutdown()
        # the close frames reach the clients before the loop stops
        await app[OPEN_SOCKETS].wait_closed(config.server.shutdown_timeout)
        for dialect in dialects:
            await dialect.stop()

    app.on_startup.append(start_hub)
    app.on_shutdown.append(stop_hub)
    watch_the_loop(app)
    return app


def watch_the_loop(app: web.Application) -> None:
    """Measure how long the event loop is blocked while the app runs (loop_lag.py)."""
    watcher: list[asyncio.Task] = []

    async def start(_: web.Application) -> None:
        watcher.append(asyncio.create_task(loop_lag.watch(), name="pushgate-loop-lag"))

    async def stop(_: web.Application) -> None:
        for task in watcher:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app.on_startup.append(start)
    app.on_cleanup.append(stop)


def install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def raise_open_files_limit() -> None:
    """Every connection is a file: use all the descriptors the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


#: young-generation threshold of the cyclic GC (CPython's default is 700)
GC_YOUNG_THRESHOLD = 50_000


def tune_gc() -> None:
    """Fewer objects reach the old generation, so full collections are rare.

    A node holds ~50 GC-tracked objects per connection that live for hours. With
    CPython's defaults, short-lived objects of the publish path (requests, futures,
    frames in flight) are collected young every 700 allocations, survive that because
    they are still in use, get promoted, and each 25% growth of promoted objects
    triggers a full collection that walks every connection's objects: at 17k
    connections a pause of 0.3 s or more (seen as p99 latency in the c100k benchmark).
    Collecting the young generation every 50,000 allocations lets those objects die
    by reference count first. The startup objects (modules, config, app) are frozen:
    no collection walks them again.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


#: a full collection (generation 2) longer than this is logged at WARNING
SLOW_FULL_COLLECTION = 0.1


class GcPauseTimer:
    """A ``gc.callbacks`` callback: each collection's pause into ``pushgate_gc_pause_seconds``.

    It runs inside the collection, so it does little: time, count, and for a slow full
    collection a warning that is logged from the event loop just after (not from
    inside the collection, which may have begun in the middle of writing a log line).
    """

    __slots__ = ("started",)

    def __init__(self) -> None:
        self.started = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self.started = time.perf_counter()
            return
        if not self.started:
            return
        seconds = time.perf_counter() - self.started
        self.started = 0.0
        generation = info["generation"]
        metrics.GC_PAUSES.observe(generation, seconds)
        if generation == 2 and seconds > SLOW_FULL_COLLECTION:
            warn_soon(
                "full garbage collection paused the node %.3f s (%d objects collected)",
                seconds,
                info["collected"],
            )


def warn_soon(message: str, *args: object) -> None:
    """A warning logged by the running event loop's next iteration (now without one)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        log.warning(message, *args)
    else:
        loop.call_soon(functools.partial(log.warning, message, *args))


def watch_gc() -> GcPauseTimer:
    """Time every collection of this process from now on (once, however often called)."""
    for callback in gc.callbacks:
        if isinstance(callback, GcPauseTimer):
            return callback
    timer = GcPauseTimer()
    gc.callbacks.append(timer)
    return timer


def make_ssl_context(config: Config) -> ssl.SSLContext | None:
    """The server's TLS context from ``server.tls_cert``/``tls_key``, or None (plain)."""
    server = config.server
    if not server.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(server.tls_cert, server.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"server.tls_cert/tls_key: cannot load: {exc}") from None
    return context


def freeze_as_connections_open(app: web.Application) -> None:
    """Run the node's GC freeze policy (gc_freeze.py) while the app runs. Only for a
    served node: an app made in a test process must not freeze that process's objects."""
    hub: Hub = app[HUB]
    freezer = Freezer(lambda: len(hub.clients), lambda: hub.registered)
    task: asyncio.Task | None = None

    async def start(app: web.Application) -> None:
        nonlocal task
        task = asyncio.create_task(freezer.run(), name="gc-freeze")

    async def stop(app: web.Application) -> None:
        if task is not None:
            task.cancel()

    app.on_startup.append(start)
    app.on_shutdown.append(stop)


def serve_worker_metrics(app: web.Application, worker: WorkerMetrics) -> None:
    """A worker of several: /metrics answers for all of them (worker_metrics.py)."""
    app[WORKER_METRICS] = worker

    async def own(request: web.Request) -> web.Response:
        body, content_type = metrics.render(app[METRICS])
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def start(_: web.Application) -> None:
        await worker.start(own)

    async def stop(_: web.Application) -> None:
        await worker.stop()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)


def serve(
    config: Config,
    sock: socket.socket | None = None,
    internal: socket.socket | None = None,
    worker: WorkerMetrics | None = None,
) -> None:
    """Run one node until interrupted (SIGTERM/SIGINT: graceful shutdown). ``sock`` and
    ``internal`` are the listening sockets when the caller bound them (workers)."""
    install_uvloop()
    raise_open_files_limit()
    ssl_context = make_ssl_context(config)
    app = create_app(config)
    if worker is not None:
        serve_worker_metrics(app, worker)
    tune_gc()
    watch_gc()
    if config.server.gc_freeze:
        freeze_as_connections_open(app)
    if sock is None:
        sock = bind_socket(config.server.host, config.server.port)
    if internal is None and config.server.internal_port:
        internal = bind_socket(config.server.internal_host, config.server.internal_port)
    scheme = "https" if ssl_context else "http"
    host, port = sock.getsockname()[:2]
    log.info("listening on %s://%s:%d", scheme, host, port)
    sockets = [sock]
    if internal is not None:
        sockets.append(internal)
        host, port = internal.getsockname()[:2]
        log.info(
            "internal listener on %s://%s:%d (/api, /admin, /metrics, /ready)", scheme, host, port
        )
    web.run_app(
        app,
        sock=sockets,
        ssl_context=ssl_context,
        backlog=BACKLOG,
        shutdown_timeout=config.server.shutdown_timeout,
        print=None,
        access_log=None,
        handle_signals=True,
    )

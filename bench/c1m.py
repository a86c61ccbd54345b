"""Scenario ``c1m``: a million WebSocket connections on one machine, as the source
document says an Erlang server holds them.

The c100k machinery (bench/c100k.py) in another shape: N connections
(``--c1m-connections``, 1,000,000) on ``pushgate serve --workers W`` with Redis (W by
default enough for ≤ 18,000 connections each: a process may hold 20,000 open files here),
from ⌈N / 15,000⌉ native load processes on their own loopback source addresses. Each
connection subscribes to its personal channel and to a team channel of 50
(``bench:g<i/50>``); the default ping interval (25 s) runs throughout. After the ramp, a
quiet spell (``--c1m-idle-seconds``, 60) measures what pings alone cost; then for
``--c1m-duration`` seconds (600) the API publishes once per connection per 5 minutes to
its personal channel and once per team per minute (20,000 deliveries/s at 1M), and every
delivery is verified (order, loss, duplicates). Reported besides c100k's figures: memory
per connection (workers' RSS, the kernel's slab and TCP buffers for both ends of each
connection, Redis), worker CPU per connection at the ramp (JWT verification included)
and per connection-second idle, and each worker's longest event-loop block (target
≤ 100 ms) read from the workers' own metrics sockets. ``--c1m-protobuf``: the load speaks
the Protobuf protocol. Results: bench/results/c1m.json, c1m.png, c1m-timeline.png.

Smaller runs of the same shape (``--c1m-connections 250000``, …) show how it scales.
"""

from __future__ import annotations

import argparse
import copy
import math

TEAM = 50


def run_c1m(args: argparse.Namespace) -> None:
    # bench.c100k imports bench.run: loaded only when the scenario runs
    from bench.c100k import PER_PROCESS, PER_WORKER_LIMIT, Shape, run

    connections = args.c1m_connections
    shaped = copy.copy(args)
    shaped.c100k_connections = connections
    shaped.c100k_workers = args.c1m_workers or math.ceil(connections / (PER_WORKER_LIMIT - 500))
    shaped.c100k_load_processes = math.ceil(connections / PER_PROCESS)
    shaped.c100k_duration = args.c1m_duration
    shaped.c100k_ramp_rate = args.c1m_ramp_rate
    shaped.c100k_idle_seconds = args.c1m_idle_seconds
    shape = Shape(
        name="c1m",
        group_size=TEAM,
        personal_cycle=args.c1m_personal_cycle,
        group_cycle=args.c1m_team_cycle,
        target_p99_ms=1000.0,
        protobuf=args.c1m_protobuf,
        load_nice=args.c1m_load_nice,
    )
    run(shaped, shape)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("c1m (also uses --redis-url, --c100k-client)")
    group.add_argument("--c1m-connections", type=int, default=1_000_000)
    group.add_argument(
        "--c1m-workers", type=int, default=0, help="default: ≤ 17,500 connections each"
    )
    group.add_argument("--c1m-duration", type=int, default=600, help="seconds of publishing")
    group.add_argument("--c1m-personal-cycle", type=float, default=300.0)
    group.add_argument("--c1m-team-cycle", type=float, default=60.0)
    group.add_argument("--c1m-ramp-rate", type=float, default=2500.0, help="connections/s")
    group.add_argument("--c1m-idle-seconds", type=float, default=60.0)
    group.add_argument("--c1m-protobuf", action="store_true")
    group.add_argument(
        "--c1m-load-nice",
        type=int,
        choices=range(-20, 20),
        metavar="N",
        default=0,
        help="niceness of the load processes (-5: they get more of the cores than the "
        "workers, as clients with machines of their own; needs root)",
    )

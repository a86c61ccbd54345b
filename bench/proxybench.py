"""The ``proxy`` scenario: the backend's proxies under load.

A small backend (bench/proxyback.py) runs in its own process; pushgate's connect and rpc
proxies point at it. Each round: C connections connect with a cookie and no token (every
connect is a connect proxy call), then call an RPC one at a time each for S seconds
(bench/rpcload.py) — alone, then together with the ``api`` scenario's load
(bench/apiload.py posting ``/api/publish``), next to that load alone. Figures: RPCs
answered per second and per server CPU-second, latency p50/p99, errors, connects per
second through the connect proxy, and publications accepted per second with and without
the RPC load. pushgate is pinned to CPU 0; the backend and the load clients share CPU 1.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp

from bench.common import ROOT, Progress, medians, save
from bench.run import API_KEY, CONFIG, FAILURES, Server, free_port, pin, proc_cpu


def config_for(backend_port: int) -> str:
    base = f"http://127.0.0.1:{backend_port}"
    proxies = f"""
[[proxies]]
name = "connect"
endpoint = "{base}/connect"
http_headers = ["Cookie"]
[[proxies]]
name = "rpc"
endpoint = "{base}/rpc"
[rpc]
proxy_enabled = true
"""
    return CONFIG.replace("[client]\n", "[client]\nconnect_proxy_enabled = true\n") + proxies


def rpc_command(port: int, args) -> list[str]:
    return [
        *pin(1),
        sys.executable,
        "-m",
        "bench.rpcload",
        "--port",
        str(port),
        "--connections",
        str(args.proxy_connections),
        "--seconds",
        str(args.proxy_seconds),
    ]


def api_command(port: int, args) -> list[str]:
    return [
        *pin(1),
        sys.executable,
        "-m",
        "bench.apiload",
        "--port",
        str(port),
        "--key",
        API_KEY,
        "--mode",
        "publish",
        "--seconds",
        str(args.proxy_seconds),
    ]


async def run_loads(commands: list[list[str]], timeout: float) -> list[dict]:
    """The load processes at once; each one's JSON line."""
    procs = [
        await asyncio.create_subprocess_exec(
            *command, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        for command in commands
    ]
    outputs = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in procs)), timeout)
    reports = []
    for proc, (out, err) in zip(procs, outputs, strict=True):
        if proc.returncode != 0:
            raise RuntimeError(f"load failed: {err.decode()[-2000:]}")
        reports.append(json.loads(out.decode().strip().splitlines()[-1]))
    return reports


async def round_(server: Server, backend: subprocess.Popen, args) -> dict:
    timeout = args.proxy_seconds + 90
    out: dict = {}
    for name, commands in (
        ("rpc", [rpc_command(server.port, args)]),
        ("api", [api_command(server.port, args)]),
        ("rpc_with_api", [rpc_command(server.port, args), api_command(server.port, args)]),
    ):
        cpu0, back0 = proc_cpu(server.pid), proc_cpu(backend.pid)
        reports = await run_loads(commands, timeout)
        cpu, back = proc_cpu(server.pid) - cpu0, proc_cpu(backend.pid) - back0
        figures: dict = {"server_cpu_seconds": cpu, "backend_cpu_seconds": back}
        for report in reports:
            if "calls" in report:
                figures.update(
                    rpc_per_second=report["calls"] / report["seconds"],
                    rpc_per_server_cpu_second=report["calls"] / max(cpu, 1e-9),
                    rpc_p50_ms=report["p50_ms"],
                    rpc_p99_ms=report["p99_ms"],
                    rpc_errors=report["errors"],
                    connects_per_second=report["connections"] / report["connect_seconds"],
                )
                if report["errors"]:
                    FAILURES.setdefault("proxy", []).append(f"{name}: {report['errors']} errors")
            else:
                figures.update(
                    api_publications_per_second=report["accepted"] / report["seconds"],
                    api_failed=report["failed"],
                )
                if report["failed"]:
                    FAILURES.setdefault("proxy", []).append(f"{name}: {report['failed']} failed")
        out[name] = figures
    return out


async def proxy_run(args, progress: Progress) -> dict:
    rounds = []
    backend_port = free_port()
    backend = subprocess.Popen(
        [*pin(1), sys.executable, "-m", "bench.proxyback", "--port", str(backend_port)], cwd=ROOT
    )
    try:
        async with aiohttp.ClientSession() as session:
            with tempfile.TemporaryDirectory() as tmp:
                server = Server(Path(tmp), config_text=config_for(backend_port))
                try:
                    await server.wait_ready(session)
                    for r in range(args.rounds):
                        rounds.append(await round_(server, backend, args))
                        rpc = rounds[-1]["rpc"]
                        progress.step(f"round {r + 1}: {rpc['rpc_per_second']:,.0f} RPC/s")
                finally:
                    server.stop()
    finally:
        backend.terminate()
        backend.wait(10)
    return {
        name: {"rounds": [r[name] for r in rounds], "median": medians([r[name] for r in rounds])}
        for name in ("rpc", "api", "rpc_with_api")
    }


def run(args) -> None:
    progress = Progress("proxy", args.rounds)
    results = asyncio.run(proxy_run(args, progress))
    progress.finish()
    rpc, api, both = (results[k]["median"] for k in ("rpc", "api", "rpc_with_api"))
    plots = [
        {
            "title": f"rpc proxy: calls answered per second ({args.proxy_connections} callers)",
            "ylabel": "per second",
            "labels": ["RPC alone", "RPC + /api/publish load", "/api/publish alone"],
            "series": {
                "RPCs": [rpc["rpc_per_second"], both["rpc_per_second"], 0],
                "publications": [
                    0,
                    both["api_publications_per_second"],
                    api["api_publications_per_second"],
                ],
            },
        }
    ]
    save("proxy", results, plots, connections=args.proxy_connections, seconds=args.proxy_seconds)
    print(
        f"proxy: {rpc['rpc_per_second']:,.0f} RPC/s alone "
        f"({rpc['rpc_per_server_cpu_second']:,.0f} per server CPU-s, "
        f"p50 {rpc['rpc_p50_ms']:.1f} ms, p99 {rpc['rpc_p99_ms']:.1f} ms), "
        f"{rpc['connects_per_second']:,.0f} connects/s; "
        f"with /api/publish load: {both['rpc_per_second']:,.0f} RPC/s (p99 "
        f"{both['rpc_p99_ms']:.1f} ms) and {both['api_publications_per_second']:,.0f} "
        f"publications/s (alone {api['api_publications_per_second']:,.0f}/s)"
    )

"""``pushgate serve --workers N``: real worker processes sharing one port over the real Redis.

The supervisor runs as a real ``pushgate serve --workers 2``; the test connects plain
WebSockets until the kernel (SO_REUSEPORT) has given it connections on both workers,
publishes through the API, and checks every connection on every worker gets it. Then
it kills one worker (the supervisor starts another) and stops the supervisor with
SIGTERM (every process exits, every node leaves the registry).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from pushgate import workers
from pushgate.auth import mint_connection_token
from tests.conftest import API_KEY, BASE_CONFIG, REDIS_URL, SECRET, free_port

ROOT = Path(__file__).resolve().parents[2]
CHANNEL = "board:workers"


def write_config(tmp_path: Path, prefix: str) -> Path:
    engine = (
        "[engine]\n"
        'type = "redis"\n'
        f'redis_url = "{REDIS_URL}"\n'
        f'redis_prefix = "{prefix}"\n'
        'node_heartbeat = "0.5s"\n'
        'node_ttl = "2s"\n'
    )
    text = BASE_CONFIG.replace('[engine]\ntype = "memory"\n', engine)
    assert engine in text
    path = tmp_path / "workers.toml"
    path.write_text(text)
    return path


class Cluster:
    """A ``pushgate serve --workers N`` supervisor process and an HTTP session to it."""

    def __init__(self, config: Path, count: int, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pushgate",
                "serve",
                "--config",
                str(config),
                "--port",
                str(self.port),
                "--workers",
                str(count),
            ],
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.session = aiohttp.ClientSession()

    async def api(self, method: str, params: dict | None = None) -> dict:
        async with self.session.post(
            f"{self.url}/api/{method}", json=params or {}, headers={"X-API-Key": API_KEY}
        ) as response:
            assert response.status == 200, await response.text()
            body = await response.json()
            assert "result" in body, body
            return body["result"]

    async def nodes(self) -> list[dict]:
        return (await self.api("info"))["nodes"]

    async def wait_nodes(self, predicate, timeout: float = 20.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        nodes: list[dict] = []
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output()
            try:
                nodes = await self.nodes()
                if predicate(nodes):
                    return nodes
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        raise AssertionError(f"nodes never matched: {nodes}\n{self.output()}")

    async def connect(self, user: str) -> tuple[aiohttp.ClientWebSocketResponse, str]:
        """A WebSocket connected and subscribed to CHANNEL; and the node that holds it."""
        ws = await self.session.ws_connect(self.url.replace("http", "ws") + "/connection/websocket")
        token = mint_connection_token(SECRET, user, ttl=3600)
        await ws.send_str(
            "\n".join(
                orjson.dumps(command).decode()
                for command in (
                    {"id": 1, "connect": {"token": token}},
                    {"id": 2, "subscribe": {"channel": CHANNEL}},
                )
            )
        )
        replies = {}
        while len(replies) < 2:
            for reply in await receive(ws):
                replies[reply["id"]] = reply
        assert "connect" in replies[1] and "subscribe" in replies[2], replies
        return ws, replies[1]["connect"]["node"]

    def output(self, tail: int = 4000) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-tail:]

    async def close(self) -> None:
        await self.session.close()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.log.close()


async def receive(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5.0) -> list[dict]:
    message = await ws.receive(timeout=timeout)
    assert message.type == aiohttp.WSMsgType.TEXT, message
    return [orjson.loads(line) for line in message.data.split("\n") if line]


async def publications(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[dict]:
    pubs: list[dict] = []
    async with asyncio.timeout(10):
        while len(pubs) < count:
            for reply in await receive(ws):
                if "push" in reply and "pub" in reply["push"]:
                    assert reply["push"]["channel"] == CHANNEL
                    pubs.append(reply["push"]["pub"])
    return pubs


def worker_pid(node: dict) -> int:
    """Workers are named host_pid (server.name is empty in this configuration)."""
    return int(node["name"].rsplit("_", 1)[1])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as gone
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


async def test_two_workers_share_the_port_and_act_as_one_node(tmp_path, redis_prefix):
    cluster = Cluster(write_config(tmp_path, redis_prefix), 2, tmp_path / "serve.log")
    sockets: list[tuple[aiohttp.ClientWebSocketResponse, str]] = []
    try:
        nodes = await cluster.wait_nodes(lambda nodes: len(nodes) == 2)
        node_ids = {node["uid"] for node in nodes}
        assert len({node["name"] for node in nodes}) == 2, nodes

        # SO_REUSEPORT spreads connections by their addresses: keep connecting until
        # both workers hold some (all of 40 on one worker: chance 2**-39)
        for n in range(40):
            sockets.append(await cluster.connect(f"user{n}"))
            seen = {node for _, node in sockets}
            if seen == node_ids and len(sockets) >= 6:
                break
        assert {node for _, node in sockets} == node_ids

        for n in range(3):
            await cluster.api("publish", {"channel": CHANNEL, "data": {"n": n}})
        for ws, _ in sockets:
            pubs = await publications(ws, 3)
            assert [p["data"] for p in pubs] == [{"n": 0}, {"n": 1}, {"n": 2}]
            assert [p["offset"] for p in pubs] == [1, 2, 3]

        # the other worker's counts are as of its last heartbeat (0.5 s here)
        expected = {uid: sum(1 for _, node in sockets if node == uid) for uid in node_ids}
        info = await cluster.wait_nodes(
            lambda nodes: {node["uid"]: node["num_clients"] for node in nodes} == expected,
            timeout=5,
        )
        presence = await cluster.api("presence_stats", {"channel": CHANNEL})
        assert presence["num_clients"] == len(sockets)

        # a worker that dies is replaced by the supervisor
        victim = info[0]
        os.kill(worker_pid(victim), signal.SIGKILL)
        nodes = await cluster.wait_nodes(
            lambda nodes: len(nodes) == 2 and victim["uid"] not in {n["uid"] for n in nodes}
        )
        pids = [worker_pid(node) for node in nodes]
        assert all(alive(pid) for pid in pids)

        # SIGTERM to the supervisor: every worker shuts down gracefully and leaves
        started = time.monotonic()
        cluster.process.send_signal(signal.SIGTERM)
        assert cluster.process.wait(10) == 0, cluster.output()
        assert time.monotonic() - started < 8
        assert not any(alive(pid) for pid in pids)
        for ws, _ in sockets:
            if ws.closed:
                continue
            # the survivors' clients were told to reconnect (3001 = shutdown)
            async with asyncio.timeout(5):
                while (message := await ws.receive()).type == aiohttp.WSMsgType.TEXT:
                    pass
            assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        redis = aioredis.from_url(REDIS_URL)
        try:
            # the survivors said goodbye; the killed worker's entry stays (expired) for
            # an hour, so its users' last-seen time is known
            remaining = await redis.hkeys(f"{redis_prefix}:nodes")
            assert [key.decode() for key in remaining] == [victim["uid"]]
        finally:
            await redis.aclose()
        log = cluster.output(tail=10**6)
        assert "worker 0 started" in log and "worker 1 started" in log
        assert "was killed by SIGKILL" in log and "all workers stopped" in log
    finally:
        for ws, _ in sockets:
            await ws.close()
        await cluster.close()


async def scrape(cluster: Cluster) -> dict[tuple[str, tuple], float]:
    async with cluster.session.get(cluster.url + "/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def per_worker(samples: dict, name: str, **labels: str) -> dict[str, float]:
    """worker label → value of the series ``name`` with ``labels``."""
    out = {}
    for (sample, sample_labels), value in samples.items():
        found = dict(sample_labels)
        worker = found.pop("worker", None)
        if sample == name and found == labels:
            out[worker] = value
    return out


async def test_every_scrape_covers_every_worker_consistently(tmp_path, redis_prefix):
    """A scrape reaches any worker; each answers with every worker's series, labelled, so
    counters never jump back and the node's totals are right on every scrape."""
    cluster = Cluster(write_config(tmp_path, redis_prefix), 2, tmp_path / "serve.log")
    sockets: list[tuple[aiohttp.ClientWebSocketResponse, str]] = []
    try:
        nodes = await cluster.wait_nodes(lambda nodes: len(nodes) == 2)
        node_ids = {node["uid"] for node in nodes}
        for n in range(40):
            sockets.append(await cluster.connect(f"m{n}"))
            if {node for _, node in sockets} == node_ids and len(sockets) >= 4:
                break
        for n in range(5):
            await cluster.api("publish", {"channel": CHANNEL, "data": {"n": n}})
        for ws, _ in sockets:
            await publications(ws, 5)
        last: dict[str, float] = {}
        for _ in range(12):  # new connections each: SO_REUSEPORT spreads them over workers
            samples = await scrape(cluster)
            connections = per_worker(
                samples, "pushgate_connections", transport="websocket", dialect="centrifugo"
            )
            assert set(connections) == {"0", "1"}, samples.keys()
            assert sum(connections.values()) == len(sockets)
            deliveries = per_worker(samples, "pushgate_deliveries_total")
            assert sum(deliveries.values()) == 5 * len(sockets)
            for worker, value in per_worker(
                samples, "pushgate_api_requests_total", method="publish", result="ok"
            ).items():
                assert value >= last.get(worker, 0)  # a counter never goes back
                last[worker] = value
            assert set(per_worker(samples, "process_resident_memory_bytes")) == {"0", "1"}
        assert sum(last.values()) == 5
    finally:
        for ws, _ in sockets:
            await ws.close()
        await cluster.close()


def test_workers_with_the_memory_engine_are_refused(tmp_path):
    config = tmp_path / "memory.toml"
    config.write_text(BASE_CONFIG)
    result = subprocess.run(
        [sys.executable, "-m", "pushgate", "serve", "--config", str(config), "--workers", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "memory engine lives inside one process" in result.stderr
    assert 'type = "redis"' in result.stderr


def test_workers_count_auto_is_one_per_cpu():
    cpus = len(os.sched_getaffinity(0))
    assert workers.parse_workers("auto") == cpus
    assert workers.parse_workers("0") == cpus
    assert workers.parse_workers("3") == 3
    with pytest.raises(ValueError):
        workers.parse_workers("-1")
    with pytest.raises(ValueError):
        workers.parse_workers("many")


def test_supervisor_gives_up_on_workers_that_keep_dying_at_start(monkeypatch, caplog):
    monkeypatch.setattr(workers, "FIRST_BACKOFF", 0.01)
    monkeypatch.setattr(workers, "MAX_START_FAILURES", 3)
    starts: list[int] = []

    def command(index: int, parent_pid: int) -> list[str]:
        starts.append(index)
        if index == 0:  # worker 0 cannot start; worker 1 runs until told to stop
            return [sys.executable, "-c", "raise SystemExit(3)"]
        return [sys.executable, "-c", "import time; time.sleep(60)"]

    supervisor = workers.Supervisor(command, 2, shutdown_timeout=1)
    started = time.monotonic()
    with caplog.at_level("INFO", logger="pushgate.workers"):
        assert supervisor.run() == 1
    assert time.monotonic() - started < 10
    assert starts.count(0) == 3 and starts.count(1) == 1
    assert "exited with status 3 3 times in a row" in caplog.text
    assert supervisor.workers[1].process.returncode == -signal.SIGTERM

"""Arbitrary bytes into every parser give an error value, never an unhandled exception.

The same entry points as the atheris harness (fuzz/targets.py, ``make fuzz``); here
hypothesis drives them on every test run, and the HTTP transports and the API are fed
random bodies through a real server, which must answer 4xx (never 500) and keep serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from pathlib import Path

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz.targets import TARGETS
from pushgate.config import SECTIONS, ConfigError, env_var_name, load_config
from tests.conftest import API_KEY, make_config, start_server

#: inputs that once crashed a parser (found by fuzzing); each stays a test
CRASHES: list[tuple[str, bytes]] = [("config", b"\x80")]  # non-UTF-8 file

json_ish = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "id",
                    "connect",
                    "subscribe",
                    "session",
                    "rid",
                    "ack",
                    "commands",
                    "close",
                    "channel",
                    "data",
                    "token",
                    "node",
                    "publish",
                ]
            ),
            inner,
            max_size=5,
        )
    ),
    max_leaves=12,
)


def _as_json(value: object) -> bytes:
    import orjson

    try:
        return orjson.dumps(value)
    except TypeError:
        return b"null"


inputs = st.binary(max_size=400) | json_ish.map(_as_json)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_target_takes_arbitrary_bytes(name: str) -> None:
    target = TARGETS[name]

    @settings(max_examples=200, deadline=None, derandomize=True)
    @given(inputs)
    def run(data: bytes) -> None:
        target(data)

    run()


@pytest.mark.parametrize(("name", "data"), CRASHES)
def test_crash_found_by_atheris_stays_fixed(name: str, data: bytes) -> None:
    TARGETS[name](data)


_keys = st.sampled_from(
    [(section, f) for section, cls in SECTIONS.items() for f in cls.__dataclass_fields__]
)
_toml_values = st.sampled_from(
    [
        "1",
        "-1",
        "0",
        '"x"',
        '""',
        "true",
        '"10s"',
        '"-5m"',
        "[]",
        '["a"]',
        "1.5",
        "{}",
        "99999999999999999999",
        '"redis://h"',
        '"1e400"',
        "nan",
        "inf",
    ]
)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(st.tuples(_keys, _toml_values), max_size=8))
def test_structured_config_files_give_config_errors_only(entries) -> None:
    by_section: dict[str, list[str]] = {}
    for (section, key), value in entries:
        by_section.setdefault(section, []).append(f"{key} = {value}")
    text = "\n".join(
        f"[{section}]\n" + "\n".join(dict.fromkeys(lines)) for section, lines in by_section.items()
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pushgate.toml"
        path.write_text(text)
        with contextlib.suppress(ConfigError):
            load_config(str(path), env={})


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.dictionaries(_keys.map(lambda k: env_var_name(*k)), st.text(max_size=12), max_size=5))
def test_random_environment_gives_config_errors_only(env) -> None:
    with contextlib.suppress(ConfigError):
        load_config(None, env={"PUSHGATE_CONFIG": "", **env})


ENDPOINTS = (
    "/connection/poll",
    "/connection/longpoll",
    "/emulation",
    "/connection/http_stream",
    "/connection/uni_sse",
    "/connection/uni_http_stream",
    "/api/publish",
    "/api/batch",
)


async def _post_all(bodies: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = make_config(Path(tmp), polling__hold="0.05s", server__shutdown_timeout="0.5s")
        runner, _hub, url = await start_server(config)
        try:
            async with aiohttp.ClientSession() as session:
                for body in bodies:
                    for path in ENDPOINTS:
                        async with session.post(
                            url + path,
                            data=body,
                            headers={"X-API-Key": API_KEY},
                            timeout=aiohttp.ClientTimeout(total=5),
                        ) as response:
                            assert response.status < 500, (path, body, response.status)
                async with session.get(url + "/health") as response:
                    assert response.status == 200
        finally:
            await runner.cleanup()


@settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(inputs, min_size=1, max_size=6))
def test_http_bodies_get_4xx_never_500(bodies: list[bytes]) -> None:
    asyncio.run(_post_all(bodies))

"""docs/centrifugo.md's configuration for the Centrifugal SDKs' own test setups loads, and
a server running it behaves as those setups expect (with centrifuge-python)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import jwt

from pushgate.config import load_config
from tests.centrifuge_helpers import clients_fixture, subscribed  # noqa: F401

DOC = Path(__file__).resolve().parents[2] / "docs" / "centrifugo.md"


def sdk_test_config(tmp_path: Path):
    text = DOC.read_text()
    section = text[text.index("**Running the SDKs' own test suites against pushgate.**") :]
    block = re.search(r"```toml\n(.*?)```", section, re.S)
    assert block, "the TOML example is missing"
    path = tmp_path / "sdk-tests.toml"
    path.write_text(block.group(1))
    return load_config(str(path), env={}, overrides={"engine.type": "memory"})


def sdk_token(user: str) -> str:
    """What the SDKs' test suites mint: HS256 with the secret "secret", no expiry."""
    with warnings.catch_warnings():  # their secret is short; so be it in a test setup
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
        return jwt.encode({"sub": user}, "secret", algorithm="HS256")


async def test_the_documented_sdk_test_configuration(tmp_path, make_server, clients):
    server = await make_server(sdk_test_config(tmp_path))
    # centrifuge-python's suite: user "42", personal channel "#42", recovering channels
    user, user_events = clients(server, "42", token=sdk_token("42"))
    await user.connect()
    await user_events.wait_for("subscribed", lambda c: c.channel == "#42")
    sub, events = await subscribed(user, "channel_x", token="")
    assert events.of("subscribed")[0].recoverable is True
    await sub.publish({"input": "test"})
    await events.wait_for("publication", lambda c: c.pub.data == {"input": "test"})
    assert (await sub.presence_stats()).num_clients == 1
    # centrifuge-js's suite: anonymous connections (client.insecure) in its namespaces
    anonymous, _ = clients(server, "", token="")
    await anonymous.connect()
    small, small_events = await subscribed(anonymous, "smallhistory:1")
    await small.publish(1)
    await small_events.wait_for("publication", lambda c: c.pub.data == 1)
    assert [p.data for p in (await small.history(limit=-1)).publications] == [1]

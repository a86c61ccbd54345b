"""The types of pushgate/ check: mypy, configured by ``[tool.mypy]`` in pyproject.toml
(strict on the hub, protocol and engine layers), finds no error — what `make lint` runs.

One mypy run over the whole package (15-60 s; later runs reuse .mypy_cache).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.mark.timeout(600)
def test_mypy_finds_no_error_in_pushgate():
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (it is in the test extras: make install)")
    run = subprocess.run(
        [sys.executable, "-m", "mypy"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=580,
    )
    assert run.returncode == 0, f"mypy found errors:\n{run.stdout}{run.stderr}"
    assert "Success: no issues found" in run.stdout


def test_the_hub_protocol_and_engine_layers_are_checked_strictly():
    """Strictness comes from per-module flags (``strict = true`` is global only)."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert config["files"] == ["pushgate"]
    strict = [o for o in config["overrides"] if o.get("disallow_untyped_defs")]
    assert len(strict) == 1
    assert set(strict[0]["module"]) >= {
        "pushgate.hub.*",
        "pushgate.protocol.*",
        "pushgate.engine.*",
    }
    for flag in (
        "disallow_any_generics",
        "disallow_incomplete_defs",
        "disallow_untyped_calls",
        "check_untyped_defs",
        "warn_return_any",
        "strict_equality",
    ):
        assert strict[0][flag] is True, flag

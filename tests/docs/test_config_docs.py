"""docs/configuration.md must list exactly the options of pushgate.config, with their
defaults and environment variables, and its example must load."""

import re
import tomllib
from pathlib import Path

import pytest

from pushgate.config import ENTRY_SECTIONS, env_var_name, iter_options, load_config
from pushgate.durations import parse_duration

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
HEADING = re.compile(r"^## `\[{1,2}(\w+)\]{1,2}`\s*$")
ROW = re.compile(r"^\| `(\w+)` \| (.+?) \| (.+?) \| (.+?) \|\s*$")


def documented_rows() -> list[tuple[str, str, str, str]]:
    """(section.key, default cell, env cell, meaning) for every option row in the doc."""
    rows = []
    section = None
    for line in DOC.read_text().splitlines():
        heading = HEADING.match(line)
        if heading:
            section = heading.group(1)
            continue
        row = ROW.match(line)
        if row and section:
            key, default, env, meaning = row.groups()
            rows.append((f"{section}.{key}", default, env, meaning))
    return rows


def parse_default(cell: str, expected: object) -> object:
    """Read a Default cell: a TOML literal in backticks, or "(required)"."""
    if cell == "(required)":
        return None
    literal = cell.strip("`")
    value = tomllib.loads(f"v = {literal}")["v"]
    if isinstance(expected, float) and isinstance(value, str | int):
        return parse_duration(value)
    return value


def test_every_option_documented_once() -> None:
    documented = [name for name, *_ in documented_rows()]
    assert len(documented) == len(set(documented)), "an option is documented twice"
    assert set(documented) == {name for name, _, _ in iter_options()}


@pytest.mark.parametrize(("name", "default", "doc"), list(iter_options()))
def test_documented_default_and_env(name: str, default: object, doc: str) -> None:
    rows = {row[0]: row[1:] for row in documented_rows()}
    assert name in rows, f"{name} is missing from docs/configuration.md"
    cell, env, meaning = rows[name]
    assert parse_default(cell, default) == default, f"{name}: docs say {cell}"
    section, key = name.split(".")
    in_file_only = section in ENTRY_SECTIONS  # [[namespace]], [[proxies]]…: no variables
    expected_env = "—" if in_file_only else f"`{env_var_name(section, key)}`"
    assert env == expected_env
    assert meaning.strip()


def test_example_is_a_valid_configuration(tmp_path: Path) -> None:
    example = re.search(r"```toml\n(.*?)```", DOC.read_text(), re.S)
    assert example is not None
    config_file = tmp_path / "pushgate.toml"
    config_file.write_text(example.group(1))
    cfg = load_config(str(config_file), env={})
    board = cfg.namespace("board")
    assert board is not None and board.history_ttl == 600.0

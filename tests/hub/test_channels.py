"""Channel names: namespace resolution, defaults, name limits and user-limited channels."""

from __future__ import annotations

from pathlib import Path

import pytest

from pushgate.config import ChannelConfig, NamespaceConfig
from pushgate.hub.channels import ChannelRules
from pushgate.hub.errors import HubError
from tests.conftest import make_config


@pytest.fixture
def rules(tmp_path: Path) -> ChannelRules:
    config = make_config(
        tmp_path, '[channel]\npresence = true\nhistory_size = 5\nhistory_ttl = "30s"\n'
    )
    return ChannelRules.build(config.channel, config.namespaces)


def test_namespace_of(rules):
    assert rules.namespace_of("board:42") == "board"
    assert rules.namespace_of("board:42:sub") == "board"
    assert rules.namespace_of("plain") == ""
    assert rules.namespace_of("personal:#alice") == "personal"


def test_options_come_from_the_namespace(rules):
    board = rules.options("board:42")
    assert isinstance(board, NamespaceConfig) and board.name == "board"
    assert board.join_leave is True and board.history_size == 1000
    private = rules.options("private:x")
    assert private.name == "private" and private.history_size == 10
    assert private.allow_subscribe_for_client is False
    assert rules.options("nohistory:1").history_size == 0


def test_names_without_namespace_use_the_channel_defaults(rules):
    options = rules.options("lobby")
    assert isinstance(options, ChannelConfig)
    assert options.presence is True
    assert (options.history_size, options.history_ttl) == (5, 30.0)
    assert options.join_leave is False


def test_unknown_namespace_is_102(rules):
    with pytest.raises(HubError) as info:
        rules.options("nope:1")
    assert info.value.code == 102


def test_empty_name_is_107_and_too_long_is_106(rules):
    with pytest.raises(HubError) as info:
        rules.options("")
    assert info.value.code == 107
    rules.options("x" * 255)
    with pytest.raises(HubError) as info:
        rules.options("x" * 256)
    assert info.value.code == 106


def test_user_limited_channel_with_several_users(rules):
    assert rules.allowed_users("chat:#alice,bob") == ["alice", "bob"]
    assert rules.is_allowed_user("chat:#alice,bob", "alice") is True
    assert rules.is_allowed_user("chat:#alice,bob", "bob") is True
    assert rules.is_allowed_user("chat:#alice,bob", "carol") is False
    assert rules.is_allowed_user("chat:#alice,bob", "ali") is False
    assert rules.is_allowed_user("chat:#alice,bob", "") is False


def test_user_limited_single_user_and_no_namespace(rules):
    assert rules.allowed_users("personal:#alice") == ["alice"]
    assert rules.allowed_users("#bob") == ["bob"]
    assert rules.is_allowed_user("#bob", "bob") is True


def test_not_user_limited(rules):
    assert rules.allowed_users("board:42") is None
    assert rules.is_allowed_user("board:42", "alice") is None


def test_user_limited_edge_cases(rules):
    assert rules.allowed_users("chat:#") == []
    assert rules.is_allowed_user("chat:#", "") is False
    assert rules.allowed_users("chat:#alice,,bob,") == ["alice", "bob"]
    # the users are those after the last boundary
    assert rules.allowed_users("a#b:#carol") == ["carol"]


def test_custom_boundaries():
    channel = ChannelConfig(namespace_boundary="/", user_boundary="$", user_separator=";")
    rules = ChannelRules.build(channel, [NamespaceConfig(name="team", presence=True)])
    assert rules.namespace_of("team/7") == "team"
    assert rules.options("team/7").presence is True
    assert rules.namespace_of("team:7") == ""
    assert rules.options("team:7") is channel
    assert rules.allowed_users("team/$alice;bob") == ["alice", "bob"]
    assert rules.allowed_users("team/#alice") is None


def test_max_length_is_configurable():
    rules = ChannelRules.build(ChannelConfig(max_length=5), [])
    rules.options("abcde")
    with pytest.raises(HubError) as info:
        rules.options("abcdef")
    assert info.value.code == 106

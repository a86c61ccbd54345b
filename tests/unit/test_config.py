"""Tests for pushgate.config (loading, precedence, validation) and pushgate.durations."""

from pathlib import Path

import pytest

from pushgate.config import (
    ChannelConfig,
    Config,
    ConfigError,
    NamespaceConfig,
    config_to_dict,
    env_var_name,
    iter_options,
    load_config,
)
from pushgate.durations import format_duration, parse_duration

EXAMPLE = """
[token]
hmac_secret = "secret"
[api]
key = "apikey"
[engine]
type = "memory"
[[namespace]]
name = "board"
presence = true
join_leave = true
force_push_join_leave = true
history_size = 1000
history_ttl = "600s"
force_recovery = true
allow_subscribe_for_client = true
allow_publish_for_subscriber = true
allow_presence_for_subscriber = true
allow_history_for_subscriber = true
"""


def write(tmp_path: Path, text: str, name: str = "pushgate.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def errors_of(excinfo: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    return str(excinfo.value).splitlines()


# --------------------------------------------------------------------------- loading


def test_defaults_without_any_source() -> None:
    cfg = load_config(env={})
    assert cfg == Config()
    assert cfg.server.port == 8000
    assert cfg.engine.redis_url == ["redis://127.0.0.1:6379/0"]
    assert cfg.client.pong_timeout == 8.0
    assert cfg.namespaces == []


def test_example_toml_loads(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, EXAMPLE), env={})
    assert cfg.token.hmac_secret == "secret"
    assert cfg.api.key == "apikey"
    assert cfg.engine.type == "memory"
    (board,) = cfg.namespaces
    assert board == NamespaceConfig(
        name="board",
        presence=True,
        join_leave=True,
        force_push_join_leave=True,
        history_size=1000,
        history_ttl=600.0,
        force_recovery=True,
        allow_subscribe_for_client=True,
        allow_publish_for_subscriber=True,
        allow_presence_for_subscriber=True,
        allow_history_for_subscriber=True,
    )
    assert board.allow_publish_for_client is False
    assert board.allow_user_limited_channels is False  # opt-in per namespace


def test_namespace_lookup_and_channel_options(tmp_path: Path) -> None:
    text = EXAMPLE + '[[namespace]]\nname = "team"\n'
    cfg = load_config(write(tmp_path, text), env={})
    assert cfg.namespace("board") is cfg.namespaces[0]
    assert cfg.namespace("team") is cfg.namespaces[1]
    assert cfg.namespace("nope") is None
    assert cfg.options_for("board:42") is cfg.namespaces[0]
    assert cfg.options_for("lobby") is cfg.channel
    assert cfg.options_for("nope:1") is None


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 9100\n")
    assert load_config(env={"PUSHGATE_CONFIG": path}).server.port == 9100


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(str(tmp_path / "absent.toml"), env={})
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(write(tmp_path, "[server\nport = 1"), env={})


# --------------------------------------------------------------------------- precedence


def test_env_overrides_toml(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE + "[server]\nport = 9000\n")
    env = {
        "PUSHGATE_SERVER_PORT": "9001",
        "PUSHGATE_TOKEN_HMAC_SECRET": "from-env",
        "PUSHGATE_API_INSECURE": "Yes",
        "PUSHGATE_CHANNEL_HISTORY_SIZE": "10",
        "PUSHGATE_CHANNEL_HISTORY_TTL": "1h30m",
        "PUSHGATE_SERVER_ALLOWED_ORIGINS": "https://a.example.com, https://b.example.com",
        "HOME": "/root",  # unrelated variables are ignored
    }
    cfg = load_config(path, env=env)
    assert cfg.server.port == 9001
    assert cfg.token.hmac_secret == "from-env"
    assert cfg.api.key == "apikey"
    assert cfg.api.insecure is True
    assert cfg.channel.history_size == 10
    assert cfg.channel.history_ttl == 5400.0
    assert cfg.server.allowed_origins == ["https://a.example.com", "https://b.example.com"]


def test_overrides_beat_env(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 9000\n")
    cfg = load_config(
        path,
        env={"PUSHGATE_SERVER_PORT": "9001", "PUSHGATE_API_KEY": "env-key"},
        overrides={
            "server.port": 9002,
            "api.key": "flag-key",
            "server.host": None,
            "client.ping_interval": "10s",
            "api.insecure": "true",
        },
    )
    assert cfg.server.port == 9002
    assert cfg.api.key == "flag-key"
    assert cfg.server.host == "127.0.0.1"
    assert cfg.client.ping_interval == 10.0
    assert cfg.api.insecure is True


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ('[engine]\nredis_url = "redis://h:1/0"\n', {}, ["redis://h:1/0"]),
        (
            '[engine]\nredis_url = ["redis://a:1", "redis://b:2"]\n',
            {},
            ["redis://a:1", "redis://b:2"],
        ),
        (
            "",
            {"PUSHGATE_ENGINE_REDIS_URL": "redis://a:1,redis://b:2"},
            ["redis://a:1", "redis://b:2"],
        ),
        ("", {"PUSHGATE_ENGINE_REDIS_URL": "redis://a:1"}, ["redis://a:1"]),
    ],
)
def test_redis_url_string_becomes_list(
    tmp_path: Path, text: str, env: dict[str, str], expected: list[str]
) -> None:
    assert load_config(write(tmp_path, text), env=env).engine.redis_url == expected


@pytest.mark.parametrize("value", ["true", "TRUE", "1", "yes", "On"])
def test_env_bool_true_spellings(value: str) -> None:
    assert load_config(env={"PUSHGATE_CLIENT_ANONYMOUS": value}).client.anonymous is True


@pytest.mark.parametrize("value", ["false", "False", "0", "no", "OFF"])
def test_env_bool_false_spellings(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, "[channel]\nallow_user_limited_channels = true\n")
    env = {"PUSHGATE_CHANNEL_ALLOW_USER_LIMITED_CHANNELS": value}
    assert load_config(path, env=env).channel.allow_user_limited_channels is False


# --------------------------------------------------------------------------- refusals


def test_unknown_key_in_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_config(write(tmp_path, "[server]\nprot = 1\n"), env={})
    (message,) = errors_of(excinfo)
    assert message.startswith("server.prot: unknown key")
    assert "'port'" in message
    assert message.endswith("(in " + str(tmp_path / "pushgate.toml") + ")")


def test_unknown_section_in_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^servers: unknown section"):
        load_config(write(tmp_path, "[servers]\nport = 1\n"), env={})


def test_unknown_key_in_namespace(tmp_path: Path) -> None:
    text = '[[namespace]]\nname = "a"\npresense = true\n'
    with pytest.raises(ConfigError, match=r"\[\[namespace\]\] \"a\" presense: unknown key"):
        load_config(write(tmp_path, text), env={})


def test_unknown_env_variables() -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_config(env={"PUSHGATE_SERVER_PROT": "1", "PUSHGATE_BOGUS_THING": "x"})
    messages = errors_of(excinfo)
    assert len(messages) == 2
    assert any(m.startswith("PUSHGATE_SERVER_PROT: unknown setting") for m in messages)
    assert any(m.startswith("PUSHGATE_BOGUS_THING: unknown setting") for m in messages)


def test_unknown_override() -> None:
    with pytest.raises(ConfigError, match=r"^server\.prot: unknown option.*\(in overrides\)$"):
        load_config(env={}, overrides={"server.prot": 1})


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        (
            '[[namespace]]\nname = "a"\nhistory_size = 1\nhistory_ttl = "abc"\n',
            "[[namespace]] \"a\" history_ttl: invalid duration 'abc'",
        ),
        ('[server]\nport = "x"\n', "server.port: expected an integer, got 'x'"),
        ("[server]\nport = 70000\n", "server.port: must be between 0 and 65535, got 70000"),
        ("[channel]\nhistory_size = -1\n", "channel.history_size: must be >= 0, got -1"),
        ('[engine]\ntype = "foo"\n', "engine.type: expected one of memory, redis; got 'foo'"),
        ('[server]\nlog_level = "loud"\n', "server.log_level: expected one of"),
        ('[client]\nanonymous = "yes"\n', "client.anonymous: expected a boolean"),
        ("[client]\nmax_frame_bytes = 0\n", "client.max_frame_bytes: must be >= 1"),
        (
            '[client]\nping_interval = "10s"\npong_timeout = "10s"\n',
            "client.pong_timeout: must be less than client.ping_interval",
        ),
        ("[client]\nping_interval = 0\n", "client.ping_interval: must be > 0"),
        ("[channel]\nhistory_size = 10\n", "channel.history_ttl: required (> 0)"),
        ('[channel]\nhistory_ttl = "1m"\n', "channel.history_size: required (> 0)"),
        ("[channel]\nforce_recovery = true\n", "channel.force_recovery: needs history"),
        (
            '[server]\nallowed_origins = ["app.example.com"]\n',
            "server.allowed_origins: invalid origin",
        ),
        ('[engine]\nredis_url = "http://x"\n', "engine.redis_url: invalid Redis URL"),
        ('[engine]\nredis_sentinels = ["h:1"]\n', "engine.redis_sentinel_master: required"),
        (
            '[token]\nrsa_public_key = "/no/such/key.pem"\n',
            "token.rsa_public_key: neither PEM text nor an existing file",
        ),
        ('[[namespace]]\nname = "bad name"\n', "[[namespace]] #1 name: invalid namespace name"),
        (
            '[[namespace]]\nname = "__pushgate"\n',
            "[[namespace]] #1 name: namespace names beginning with '__pushgate' are reserved",
        ),
        (
            "[server]\ninternal_port = 8000\n",
            "server.internal_port: must differ from server.port",
        ),
        ("[[namespace]]\npresence = true\n", "[[namespace]] #1 name: required"),
        (
            '[[namespace]]\nname = "a"\n[[namespace]]\nname = "a"\n',
            "[[namespace]] #2 name: duplicate namespace 'a' (also [[namespace]] #1)",
        ),
        ('[namespace]\nname = "a"\n', "namespace: expected an array of tables"),
        ("server = 1\n", "server: expected a table"),
    ],
)
def test_bad_values_in_toml(tmp_path: Path, toml: str, expected: str) -> None:
    path = write(tmp_path, toml)
    with pytest.raises(ConfigError) as excinfo:
        load_config(path, env={})
    (message,) = errors_of(excinfo)
    assert message.startswith(expected)
    assert message.endswith(f"(in {path})")


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        ("PUSHGATE_SERVER_PORT", "x", "PUSHGATE_SERVER_PORT: expected an integer, got 'x'"),
        ("PUSHGATE_CLIENT_ANONYMOUS", "maybe", "PUSHGATE_CLIENT_ANONYMOUS: expected a boolean"),
        (
            "PUSHGATE_SERVER_SHUTDOWN_TIMEOUT",
            "-1s",
            "PUSHGATE_SERVER_SHUTDOWN_TIMEOUT: invalid duration '-1s'",
        ),
        ("PUSHGATE_ENGINE_TYPE", "foo", "PUSHGATE_ENGINE_TYPE: expected one of memory, redis"),
    ],
)
def test_bad_values_in_env(var: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_config(env={var: value})
    (message,) = errors_of(excinfo)
    assert message.startswith(expected)


def test_all_errors_reported_together(tmp_path: Path) -> None:
    text = (
        '[server]\nport = "x"\nbogus = 1\n'
        '[engine]\ntype = "foo"\n'
        '[[namespace]]\nname = "a"\nhistory_size = 5\nhistory_ttl = "abc"\n'
    )
    with pytest.raises(ConfigError) as excinfo:
        load_config(
            write(tmp_path, text),
            env={"PUSHGATE_API_KEYS": "k"},
            overrides={"client.max_subscriptions": -1},
        )
    messages = errors_of(excinfo)
    assert excinfo.value.errors == messages
    assert [m.split(":")[0] for m in messages] == [
        "server.port",
        "server.bogus",
        "engine.type",
        '[[namespace]] "a" history_ttl',
        "PUSHGATE_API_KEYS",
        "client.max_subscriptions",
    ]


def test_allowlisted_env_variable_is_not_an_option(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    assert load_config(env={"PUSHGATE_CONFIG": path}) == Config()


# --------------------------------------------------------------------------- output


def test_config_to_dict_masks_secrets(tmp_path: Path) -> None:
    cfg = load_config(
        write(tmp_path, EXAMPLE),
        env={"PUSHGATE_ENGINE_REDIS_URL": "redis://user:pw@redis.local:6379/1"},
    )
    masked = config_to_dict(cfg)
    assert masked["token"]["hmac_secret"] == "***"
    assert masked["api"]["key"] == "***"
    assert masked["token"]["rsa_public_key"] == ""
    assert masked["engine"]["redis_url"] == ["redis://user:***@redis.local:6379/1"]
    assert masked["namespace"][0]["name"] == "board"
    assert masked["namespace"][0]["history_ttl"] == 600.0
    plain = config_to_dict(cfg, mask_secrets=False)
    assert plain["token"]["hmac_secret"] == "secret"
    assert plain["api"]["key"] == "apikey"
    assert plain["engine"]["redis_url"] == ["redis://user:pw@redis.local:6379/1"]


def test_config_to_dict_masks_pem_text_but_not_paths(tmp_path: Path) -> None:
    pem = "-----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----\n"
    key_path = write(tmp_path, pem, "ec.pem")
    cfg = load_config(
        env={}, overrides={"token.rsa_public_key": pem, "token.ecdsa_public_key": key_path}
    )
    masked = config_to_dict(cfg)
    assert masked["token"]["rsa_public_key"] == "***"
    assert masked["token"]["ecdsa_public_key"] == key_path


def test_iter_options_covers_every_field() -> None:
    options = {name: default for name, default, _ in iter_options()}
    assert options["server.port"] == 8000
    assert options["engine.redis_url"] == ["redis://127.0.0.1:6379/0"]
    assert options["namespace.name"] is None
    assert options["channel.namespace_boundary"] == ":"
    assert "namespace.namespace_boundary" not in options
    assert all(doc for _, _, doc in iter_options())
    assert len(options) == len(list(iter_options()))
    assert env_var_name("token", "hmac_secret") == "PUSHGATE_TOKEN_HMAC_SECRET"
    assert isinstance(Config().channel, ChannelConfig)


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("600s", 600.0),
        ("10m", 600.0),
        ("1h", 3600.0),
        ("500ms", 0.5),
        ("1h30m", 5400.0),
        ("1m30s", 90.0),
        ("1.5s", 1.5),
        (" 2s ", 2.0),
        ("0", 0.0),
        ("42", 42.0),
        ("2.5", 2.5),
        (7, 7.0),
        (0.25, 0.25),
    ],
)
def test_parse_duration(value: str | int | float, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    "value",
    ["", "abc", "-1", "-5s", "5x", "s", "1h-30m", "nan", "inf", "1 h", "10d", -3, True, None, [1]],
)
def test_parse_duration_refuses(value: object) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("seconds", [0.0, 0.5, 1.0, 90.0, 600.0, 5400.0, 3600.0, 3661.0])
def test_format_duration_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


# --------------------------------------------------------------------------- Centrifugo options


def test_recovery_mode_is_another_name_of_force_recovery_mode(tmp_path: Path) -> None:
    text = (
        '[channel]\nrecovery_mode = "cache"\nhistory_size = 1\nhistory_ttl = "1m"\n'
        '[[namespace]]\nname = "a"\nrecovery_mode = "cache"\nhistory_size = 1\n'
        'history_ttl = "1m"\nforce_recovery = true\nauto_cache_recover = true\n'
    )
    config = load_config(write(tmp_path, text), env={})
    assert config.channel.force_recovery_mode == "cache"
    assert config.namespace("a").force_recovery_mode == "cache"
    with pytest.raises(ConfigError, match=r"expected one of stream, cache"):
        load_config(write(tmp_path, '[[namespace]]\nname = "a"\nrecovery_mode = "x"\n'), env={})


def test_centrifugo_option_rules(tmp_path: Path) -> None:
    text = """
[client]
subscribe_to_user_personal_channel = true
personal_channel_namespace = "personal"
personal_channel_single_connection = true
[[namespace]]
name = "a"
allow_recovery = true
[[namespace]]
name = "b"
history_size = 5
history_ttl = "1m"
auto_cache_recover = true
"""
    with pytest.raises(ConfigError) as excinfo:
        load_config(write(tmp_path, text), env={})
    assert errors_of(excinfo) == [
        f'[[namespace]] "a" allow_recovery: needs history (history_size and history_ttl) '
        f"(in {tmp_path / 'pushgate.toml'})",
        f'[[namespace]] "b" auto_cache_recover: needs force_recovery_mode = "cache" '
        f"(in {tmp_path / 'pushgate.toml'})",
        f"client.personal_channel_namespace: no [[namespace]] named 'personal' "
        f"(in {tmp_path / 'pushgate.toml'})",
    ]
    text = (
        "[client]\nsubscribe_to_user_personal_channel = true\n"
        "personal_channel_single_connection = true\n"
    )
    with pytest.raises(ConfigError, match=r"needs presence = true in \[channel\]"):
        load_config(write(tmp_path, text), env={})
    with pytest.raises(ConfigError, match=r"needs client.subscribe_to_user_personal_channel"):
        load_config(env={"PUSHGATE_CLIENT_PERSONAL_CHANNEL_SINGLE_CONNECTION": "true"})


# --------------------------------------------------------------------------- proxies

PROXIES = """
[[proxies]]
name = "auth"
endpoint = "http://127.0.0.1:3000/centrifugo/connect"
timeout = "500ms"
http_headers = ["Cookie"]
static_headers = ["X-Proxy-Key: s3cret"]
[[proxies]]
name = "rpc"
endpoint = "https://backend.example/centrifugo/rpc"
[client]
connect_proxy_enabled = true
connect_proxy_name = "auth"
[rpc]
proxy_enabled = true
[[rpc_namespace]]
name = "board"
proxy_enabled = true
"""


def test_proxies_load_and_secrets_are_masked(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, PROXIES), env={})
    auth, rpc = cfg.proxies
    assert (auth.name, auth.timeout, auth.http_headers) == ("auth", 0.5, ["Cookie"])
    assert (rpc.max_concurrency, rpc.circuit_failures, rpc.circuit_open) == (64, 5, 5.0)
    assert cfg.client.connect_proxy_enabled and cfg.rpc.proxy_name == "rpc"
    assert cfg.rpc_namespaces[0].name == "board"
    masked = config_to_dict(cfg)
    assert masked["proxies"][0]["static_headers"] == ["X-Proxy-Key: ***"]
    assert masked["proxies"][0]["endpoint"] == auth.endpoint
    assert config_to_dict(cfg, mask_secrets=False)["proxies"][0]["static_headers"] == [
        "X-Proxy-Key: s3cret"
    ]


def test_proxy_mistakes_are_reported_by_name(tmp_path: Path) -> None:
    bad = """
[[proxies]]
name = "grpc"
endpoint = "grpc://127.0.0.1:10001"
static_headers = ["no colon here"]
[[proxies]]
name = "grpc"
endpoint = "http://127.0.0.1:1/x"
[[proxies]]
name = "noendpoint"
[client]
refresh_proxy_enabled = true
[[namespace]]
name = "chat"
publish_proxy_enabled = true
publish_proxy_name = "nope"
[[rpc_namespace]]
name = "board"
proxy_enabled = true
"""
    with pytest.raises(ConfigError) as excinfo:
        load_config(write(tmp_path, bad), env={})
    errors = "\n".join(errors_of(excinfo))
    assert "invalid header 'no colon here'" in errors
    assert "duplicate proxy 'grpc'" in errors
    assert '[[proxies]] "noendpoint" endpoint: required' in errors
    assert "gRPC proxies are not supported" in errors
    assert "client.refresh_proxy_name: no [[proxies]] entry named 'refresh'" in errors
    assert "[[namespace]] \"chat\" publish_proxy_name: no [[proxies]] entry named 'nope'" in errors
    assert "[[rpc_namespace]] \"board\" proxy_name: no [[proxies]] entry named 'rpc'" in errors


def test_proxies_off_need_no_entries() -> None:
    cfg = load_config(env={}, overrides={"client.connect_proxy_name": "missing"})
    assert cfg.proxies == [] and not cfg.client.connect_proxy_enabled

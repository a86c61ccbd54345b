"""The ``pushgate`` command: serve, token, publish, check-config."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from pushgate import __version__, logs
from pushgate.auth import mint_connection_token, mint_subscription_token
from pushgate.config import Config, ConfigError, config_to_dict, load_config
from pushgate.listening import CannotListen


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        help="TOML configuration file (default: $PUSHGATE_CONFIG, else built-in defaults)",
    )
    parser.add_argument(
        "-o",
        "--option",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="set any option, e.g. -o server.port=8001 (wins over file and environment); "
        "repeatable",
    )


def _overrides(args: argparse.Namespace, flags: dict[str, str]) -> dict[str, object]:
    """Flags as ``section.key`` overrides: named flags, then ``-o`` ones."""
    overrides: dict[str, object] = {}
    for attr, key in flags.items():
        # by name: argparse sets only the flags of the subcommand that ran
        value = getattr(args, attr, None)
        if value is not None:
            overrides[key] = value
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise ConfigError(f"-o {item!r}: expected SECTION.KEY=VALUE")
        overrides[key.strip()] = value
    return overrides


def _load(args: argparse.Namespace, flags: dict[str, str] | None = None) -> Config:
    return load_config(args.config, overrides=_overrides(args, flags or {}))


SERVE_FLAGS = {
    "host": "server.host",
    "port": "server.port",
    "engine": "engine.type",
    "log_level": "server.log_level",
    "api_key": "api.key",
    "token_hmac_secret": "token.hmac_secret",
}


def _worker_args(args: argparse.Namespace) -> list[str]:
    """The configuration arguments of this ``serve``, to run its workers with."""
    argv: list[str] = []
    if args.config:
        argv += ["--config", args.config]
    for attr in SERVE_FLAGS:
        value = getattr(args, attr, None)  # by name, as above
        if value is not None and attr != "port":
            argv += [f"--{attr.replace('_', '-')}", str(value)]
    for item in args.option:
        argv += ["-o", item]
    return argv


def cmd_serve(args: argparse.Namespace) -> int:
    config = _load(args, SERVE_FLAGS)
    logs.setup(config.server.log_level, config.server.log_format)
    if args.worker_index is not None:
        from pushgate.workers import run_worker

        run_worker(config, args.worker_index, args.worker_of)
        return 0
    if args.workers > 1 and config.engine.type == "memory":
        print(
            "pushgate: --workers needs a shared engine: the memory engine lives inside one "
            'process, so several workers would not see each other. Set [engine] type = "redis".',
            file=sys.stderr,
        )
        return 2
    if args.workers > 1:
        from pushgate.workers import supervise

        return supervise(config, args.workers, _worker_args(args))
    from pushgate.server import serve

    serve(config)
    return 0


def _workers(value: str) -> int:
    from pushgate.workers import parse_workers

    try:
        return parse_workers(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_token(args: argparse.Namespace) -> int:
    config = _load(args)
    secret = args.secret or config.token.hmac_secret
    if not secret:
        print("pushgate: no HMAC secret: set token.hmac_secret or pass --secret", file=sys.stderr)
        return 2
    try:
        info = json.loads(args.info) if args.info else None
    except json.JSONDecodeError as exc:
        print(f"pushgate: --info is not JSON: {exc}", file=sys.stderr)
        return 2
    ttl = args.ttl if args.ttl > 0 else None
    if args.channel:
        token = mint_subscription_token(secret, args.user, args.channel, ttl=ttl, info=info)
    else:
        channels = [c for c in (args.channels or "").split(",") if c]
        token = mint_connection_token(secret, args.user, ttl=ttl, info=info, channels=channels)
    print(token)
    return 0


def api_call(url: str, key: str, method: str, params: dict, timeout: float = 10.0) -> dict:
    request = urllib.request.Request(
        f"{url.rstrip('/')}/api/{method}",
        data=json.dumps(params).encode(),
        headers={"Content-Type": "application/json", "X-API-Key": key},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")
        raise SystemExit(f"pushgate: API answered {exc.code}: {body}") from None
    except urllib.error.URLError as exc:
        raise SystemExit(f"pushgate: cannot reach {url}: {exc.reason}") from None


def cmd_publish(args: argparse.Namespace) -> int:
    config = _load(args)
    try:
        data = json.loads(args.data)
    except json.JSONDecodeError as exc:
        print(f"pushgate: data is not JSON: {exc}", file=sys.stderr)
        return 2
    url = args.url or f"http://{config.server.host}:{config.server.port}"
    key = args.api_key or config.api.key
    reply = api_call(url, key, "publish", {"channel": args.channel, "data": data})
    if "error" in reply:
        print(f"pushgate: {reply['error']['code']}: {reply['error']['message']}", file=sys.stderr)
        return 1
    print(json.dumps(reply["result"]))
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    if args.file and args.config and args.file != args.config:
        print("pushgate: give the file once: FILE or --config FILE", file=sys.stderr)
        return 2
    config = load_config(args.file or args.config, overrides=_overrides(args, {}))
    print(json.dumps(config_to_dict(config, mask_secrets=True), indent=2, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pushgate", description="real-time push gateway")
    parser.add_argument("--version", action="version", version=f"pushgate {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve",
        help="run the server",
        description="Run pushgate (without the demo: `make run` is `python -m demo`, which "
        "serves the team board demo next to it).",
    )
    _add_config_args(serve)
    serve.add_argument("--host", help="address to listen on (server.host; default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (server.port; default 8000)")
    serve.add_argument(
        "--engine",
        choices=["memory", "redis"],
        help="engine.type: memory (one process) or redis (several workers or machines)",
    )
    serve.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="server.log_level (default info)",
    )
    serve.add_argument("--api-key", help="api.key: the server API's key")
    serve.add_argument("--token-hmac-secret", help="token.hmac_secret: the JWT HMAC secret")
    serve.add_argument(
        "--workers",
        type=_workers,
        default=1,
        metavar="N",
        help="worker processes sharing the port (redis engine); 0 or 'auto' = one per CPU",
    )
    # internal: set by the supervisor on the workers it starts (pushgate/workers.py)
    serve.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--worker-of", type=int, help=argparse.SUPPRESS)
    serve.set_defaults(func=cmd_serve)

    token = commands.add_parser("token", help="mint a connection or subscription JWT")
    _add_config_args(token)
    token.add_argument("user", help="the token's subject (sub): the user id")
    token.add_argument("--ttl", type=float, default=3600, help="seconds; 0 = no expiry")
    token.add_argument("--channel", help="mint a subscription token for this channel")
    token.add_argument("--channels", help="comma-separated server-side subscriptions")
    token.add_argument("--info", help="JSON info attached to the connection")
    token.add_argument("--secret", help="HMAC secret (default: token.hmac_secret)")
    token.set_defaults(func=cmd_token)

    publish = commands.add_parser("publish", help="publish through the server API")
    _add_config_args(publish)
    publish.add_argument("channel", help="channel to publish to, e.g. board:1")
    publish.add_argument("data", help='the publication\'s data as JSON, e.g. \'{"text": "hi"}\'')
    publish.add_argument("--url", help="server URL (default: from server.host/port)")
    publish.add_argument("--api-key", help="API key (default: api.key)")
    publish.set_defaults(func=cmd_publish)

    bench = commands.add_parser(
        "bench",
        add_help=False,
        help="run the benchmark (python -m bench.run; needs a source checkout, see --help)",
    )
    bench.add_argument(
        "bench_args", nargs=argparse.REMAINDER, help="scenarios and options of the benchmark"
    )
    bench.set_defaults(func=lambda args: cmd_bench(args.bench_args))

    check = commands.add_parser(
        "check-config",
        help="validate and print a configuration",
        description="Validate a configuration (file, PUSHGATE_* environment, -o options) and "
        "print the effective one with secrets masked; exit 2 with every problem if invalid.",
    )
    _add_config_args(check)
    check.add_argument("file", nargs="?", metavar="FILE", help="the file (same as --config)")
    check.set_defaults(func=cmd_check_config)
    return parser


def _bench_root() -> Path | None:
    """The source checkout holding bench/run.py: next to this package, or the cwd."""
    for root in (Path(__file__).resolve().parent.parent, Path.cwd()):
        if (root / "bench" / "run.py").is_file():
            return root
    return None


def cmd_bench(bench_args: Sequence[str]) -> int:
    """``pushgate bench …`` = ``python -m bench.run …`` in the source checkout."""
    root = _bench_root()
    if root is None:
        print(
            "pushgate bench: the benchmark (the bench/ package) is not part of the installed "
            "package; run it from a source checkout of pushgate: `make bench` or "
            "`pushgate bench --help` inside the checkout",
            file=sys.stderr,
        )
        return 2
    import subprocess

    # bench.run's --help then names the command the user typed
    env = {**os.environ, "BENCH_PROG": "pushgate bench"}
    return subprocess.call([sys.executable, "-m", "bench.run", *bench_args], cwd=root, env=env)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # everything after it belongs to bench.run, --help included
        return cmd_bench(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"pushgate: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    except CannotListen as exc:
        print(f"pushgate: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

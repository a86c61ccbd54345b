"""``python -m demo [--config pushgate.toml]``: pushgate and the team board on one port.

The configuration is pushgate's (``PUSHGATE_CONFIG`` or ``--config``, default
``pushgate.toml``); the board's SQLite file is ``$DEMO_DB`` (default
``demo/data/demo.sqlite3``, ignored by git).
"""

from __future__ import annotations

import argparse
import logging
import os

from aiohttp import web

from demo.server import build_app, settings_for, url_of, with_demo_proxies
from pushgate.config import ConfigError, load_config
from pushgate.listening import CannotListen
from pushgate.server import bind_socket, install_uvloop, raise_open_files_limit


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=os.environ.get("PUSHGATE_CONFIG") or "pushgate.toml",
        help="pushgate's configuration (default: $PUSHGATE_CONFIG, else pushgate.toml)",
    )
    parser.add_argument("--host", help="address to listen on (server.host)")
    parser.add_argument("--port", type=int, help="port to listen on (server.port)")
    args = parser.parse_args()
    overrides = {"server.host": args.host, "server.port": args.port}
    try:
        config = load_config(args.config, overrides=overrides)
    except ConfigError as exc:
        parser.exit(2, f"{args.config}: {exc}\n")
    logging.basicConfig(
        level=config.server.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    install_uvloop()
    raise_open_files_limit()
    try:
        sock = bind_socket(config.server.host, config.server.port)
    except CannotListen as exc:
        parser.exit(2, f"{parser.prog}: {exc}\n")
    url = url_of(sock)
    config = with_demo_proxies(config, url)
    settings = settings_for(config, url)
    app = build_app(config, settings)
    logging.getLogger("demo").info(
        "pushgate on %s, the team board on %s/demo/ (database %s)", url, url, settings.db_path
    )
    web.run_app(
        app,
        sock=sock,
        shutdown_timeout=config.server.shutdown_timeout,
        print=None,
        access_log=None,
        handle_signals=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Listening sockets, and a one-line explanation when one cannot be had.

A busy port is the most common first-run failure: the error names the address and says
how to pick another (``--port``, ``server.port``, ``PUSHGATE_SERVER_PORT``), instead of an
``OSError`` traceback.
"""

from __future__ import annotations

import errno
import socket

#: pending connections the kernel may queue: bursts of reconnects must not be dropped
BACKLOG = 4096


class CannotListen(Exception):
    """A listening socket could not be had; the message says what to do about it."""


def cannot_listen(host: str, port: int, exc: OSError) -> CannotListen:
    """One line: what failed, where, and how to pick another port or address."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        why = (
            "the port is in use by another process; pick another with --port N "
            "(or server.port in the configuration, or PUSHGATE_SERVER_PORT=N; "
            "`make run PORT=N` for the demo)"
        )
    elif exc.errno == errno.EACCES:
        why = "permission denied (ports below 1024 need privileges); pick a port above 1023"
    elif exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
        why = "no such address on this machine; set --host (server.host) to one it has"
    else:
        why = exc.strerror or str(exc)
    return CannotListen(f"cannot listen on {where}: {why}")


def bind_socket(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A listening socket on host:port; CannotListen with the reason and the remedy."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise cannot_listen(host, port, exc) from None
    sock.setblocking(False)
    return sock

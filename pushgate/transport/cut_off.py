"""Cutting off a peer that does not read what was queued for it.

A transport closed with bytes still queued waits for the peer to read them; a peer that
never does gets ``ABORT_AFTER`` seconds, then an RST. A bare ``abort()`` would let go of
the file descriptor but leave the kernel's socket, and the megabytes in its send queue,
probing a shut window for minutes (LAST-ACK or FIN-WAIT); a zero-timeout ``SO_LINGER``
before it makes the close a reset, which frees both at once (nginx's
``reset_timedout_connection`` does the same).
"""

from __future__ import annotations

import asyncio
import socket
import struct

#: seconds a closed connection's peer has to read what is still queued for it
ABORT_AFTER = 5.0

_RESET_ON_CLOSE = struct.pack("ii", 1, 0)  # struct linger: on, 0 seconds


def cut_off(transport: asyncio.WriteTransport) -> None:
    """End the connection now, whatever is still queued: with a reset if it was being
    closed (what keeps it is unread bytes), else (an HTTP connection kept alive after
    its stream ended) with a plain abort."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        if sock.fileno() < 0:
            return  # closed in the meantime, as most are: nothing left to end
        if transport.is_closing():
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
            except OSError:  # gone between the two calls
                return
    transport.abort()


def close_or_cut_off(transport: asyncio.WriteTransport) -> None:
    """Close after what is queued is written; if some is still waiting for the peer,
    the peer has ``ABORT_AFTER`` seconds to read it before it is cut off."""
    transport.close()
    if transport.get_write_buffer_size():
        cut_off_later(transport)


def cut_off_later(transport: asyncio.WriteTransport) -> None:
    """Give the peer ``ABORT_AFTER`` seconds to read what is queued, then cut it off."""
    asyncio.get_running_loop().call_later(ABORT_AFTER, cut_off, transport)

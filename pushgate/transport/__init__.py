"""Transports: aiohttp handlers that own sockets, framing, write queues and closing."""

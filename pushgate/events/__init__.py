"""Events for the product's backend: delivered from the engine's event log, in order.

The engine writes events (connect, disconnect, user online / offline / status, channel
occupied / vacated, notification hand-offs) to an ordered log — a Redis Stream per shard
with the redis engine, a bounded list with the memory engine — atomically with the change
they tell of. ``dispatcher`` delivers each log to each configured sink (``sinks``: an
HTTP webhook signed with HMAC-SHA256, RabbitMQ) from a durable cursor, in order, at least
once, retrying with backoff; one node at a time does it, under a lease.
"""

"""Lua scripts of the redis engine: each keeps one channel's stream consistent.

A channel's stream lives in two keys on its shard: a Redis Stream of publications (entry
id ``<offset>-0``) and a meta hash (``s`` = top offset, ``e`` = epoch). Publishing assigns
the next offset, appends, trims and publishes to the channel's PUB/SUB channel in one
script, so offsets are atomic and the PUB/SUB order is the offset order.

On a Redis Cluster every script runs in its ``cluster_variant``: ``SPUBLISH`` (sharded
PUB/SUB, Redis >= 7) instead of ``PUBLISH``, and a stream's meta remembers which master
wrote it (``n``). Replication is asynchronous: a replica promoted after its master died
may lack the master's last publications, and would hand their offsets out again. So a
meta written by another master (a failover, or a slot moved) ends its epoch when it is
next read or written: positions in the old epoch are reported lost (recovered=false),
never silently continued.
"""

# KEYS: stream, meta[, idempotency key]
# ARGV: message body, history_size, history_ttl (s), meta_ttl (s), pubsub channel,
#       epoch to use if the stream is new, idempotency ttl (s)
PUBLISH = """
if KEYS[3] then
  local seen = redis.call("get", KEYS[3])
  if seen then
    local sep = string.find(seen, ":", 1, true)
    return {tonumber(string.sub(seen, 1, sep - 1)), string.sub(seen, sep + 1)}
  end
end
local size = tonumber(ARGV[2])
local offset = 0
local epoch = ""
if size > 0 then
  offset = redis.call("hincrby", KEYS[2], "s", 1)
  epoch = redis.call("hget", KEYS[2], "e")
  if not epoch then
    epoch = ARGV[6]
    redis.call("hset", KEYS[2], "e", epoch)
  end
  redis.call("expire", KEYS[2], ARGV[4])
  redis.call("xadd", KEYS[1], "MAXLEN", size, offset .. "-0", "d", ARGV[1])
  redis.call("expire", KEYS[1], ARGV[3])
end
redis.call("publish", ARGV[5], "p" .. offset .. "\\n" .. epoch .. "\\n" .. ARGV[1])
if KEYS[3] then
  redis.call("set", KEYS[3], offset .. ":" .. epoch, "EX", ARGV[7])
end
return {offset, epoch}
"""

# KEYS: stream, meta
# ARGV: since offset (-1: from the start), limit (-1: all, 0: none), reverse ("1"/"0"),
#       epoch to use if the stream is new, meta_ttl (s)
HISTORY = """
local top = tonumber(redis.call("hget", KEYS[2], "s") or "0")
local epoch = redis.call("hget", KEYS[2], "e")
if not epoch then
  epoch = ARGV[4]
  redis.call("hset", KEYS[2], "e", epoch)
  redis.call("expire", KEYS[2], ARGV[5])
end
local first = redis.call("xrange", KEYS[1], "-", "+", "COUNT", 1)
local first_offset = top + 1
if #first > 0 then
  first_offset = tonumber(string.match(first[1][1], "^(%d+)"))
end
local limit = tonumber(ARGV[2])
local entries = {}
if limit ~= 0 then
  local since = tonumber(ARGV[1])
  local low = "-"
  if since >= 0 then low = (since + 1) .. "-0" end
  if ARGV[3] == "1" then
    if limit > 0 then
      entries = redis.call("xrevrange", KEYS[1], "+", low, "COUNT", limit)
    else
      entries = redis.call("xrevrange", KEYS[1], "+", low)
    end
  else
    if limit > 0 then
      entries = redis.call("xrange", KEYS[1], low, "+", "COUNT", limit)
    else
      entries = redis.call("xrange", KEYS[1], low, "+")
    end
  end
end
return {top, epoch, first_offset, entries}
"""

# KEYS: presence hash, presence expiry zset; ARGV: now
# Drops expired entries and returns what is left.
PRESENCE = """
local gone = redis.call("zrangebyscore", KEYS[2], "-inf", ARGV[1])
if #gone > 0 then
  redis.call("hdel", KEYS[1], unpack(gone))
  redis.call("zremrangebyscore", KEYS[2], "-inf", ARGV[1])
end
return redis.call("hgetall", KEYS[1])
"""

# the cluster variants read a meta's epoch through this: another master's epoch is dropped
_OWNED_EPOCH = """
local function owned_epoch(meta)
  local me = redis.call("cluster", "myid")
  local got = redis.call("hmget", meta, "e", "n")
  if got[1] and got[2] == me then return got[1] end
  if got[1] then redis.call("hdel", meta, "e") end
  redis.call("hset", meta, "n", me)
  return false
end
"""
_READ_EPOCH = 'redis.call("hget", KEYS[2], "e")'


def cluster_variant(body: str, sharded: bool = True) -> str:
    """``body`` for a Redis Cluster: sharded PUB/SUB (where the server has it) and epochs
    that end when another master wrote the meta (see the module docstring)."""
    if sharded:
        body = body.replace('redis.call("publish",', 'redis.call("spublish",')
    if body.count(_READ_EPOCH) == 1:
        body = _OWNED_EPOCH + body.replace(_READ_EPOCH, "owned_epoch(KEYS[2])")
    return body

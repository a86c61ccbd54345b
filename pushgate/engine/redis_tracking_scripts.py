"""Lua scripts of the redis engine's tracking: each change and the event it makes, at once.

Keys (``P`` = engine.redis_prefix), on the shard of the channel or user they are about:

- ``P:members:<inc>`` hash ``<client> <channel>`` → ``<flags>\\n<info JSON>``: the memberships
  (presence entry ``p``, join announced ``j``) of node incarnation ``<inc>``;
- ``P:presence:<ch>`` / ``P:presence_exp:<ch>``: presence entries and their expiry;
- ``P:user:<u>`` hash: ``c:<client>`` → attention code (a/i/h) of each open connection,
  ``_st`` the status rolled up now, ``_pub`` the status last announced, ``_seen``,
  ``_act``; ``P:conns:<inc>`` hash client → ``<user>\\n<disconnect event JSON>``;
- ``P:timers`` sorted set: ``o:<user>`` (announce offline if still so), ``h:<id>`` (hand a
  notification off), scored by due time; ``P:handoffs`` hash id → event JSON;
  ``P:settled:<ch>`` set of offsets acknowledged or handed off; ``P:reads:<u>`` hash;
- ``P:events``: the shard's event log (a Stream; entry field ``e`` = the event JSON);
- ``P:tomb:<inc>``: written on every shard when a node incarnation was found dead. A
  script that would add an entry for that incarnation refuses (-1), so a node that comes
  back cannot resurrect what the cluster announced gone;
- on the first shard: ``P:alive`` sorted set incarnation → expiry (Redis' clock: no
  skew between machines), ``P:reap:<inc>`` the lock of whoever removes a dead one.

Times are Redis' own (``TIME``); a removal happens once because it is a ``HDEL`` that
returned 1, in the same script as the event or leave it causes.
"""

_CLOCK = """
local function clock()
  local t = redis.call("time")
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function has(flags, letter)
  return string.find(flags, letter, 1, true) ~= nil
end
local function xadd(key, retention, body)
  redis.call("xadd", key, "MAXLEN", "~", retention, "*", "e", body)
end
local function split(value)
  local sep = string.find(value, "\\n", 1, true)
  return string.sub(value, 1, sep - 1), string.sub(value, sep + 1)
end
"""

# roll a user's status up from their connections' codes; announce a change (offline only
# through the o:<user> timer, so that a reload is not an offline)
_ROLLUP = """
local RANK = {o = 0, h = 1, i = 2, a = 3}
local CODE = {[0] = "o", [1] = "h", [2] = "i", [3] = "a"}
local STATUS = {o = "offline", h = "hidden", i = "idle", a = "active"}
local function rollup(ukey, tkey, ekey, user, now, flags, delay, retention)
  local fields = redis.call("hgetall", ukey)
  local best, st, pub = 0, "o", "o"
  for i = 1, #fields, 2 do
    local f = fields[i]
    if string.sub(f, 1, 2) == "c:" then
      local r = RANK[fields[i + 1]] or 3
      if r > best then best = r end
    elseif f == "_st" then st = fields[i + 1]
    elseif f == "_pub" then pub = fields[i + 1] end
  end
  local code = CODE[best]
  if code ~= st then
    redis.call("hset", ukey, "_st", code)
    if st == "a" then redis.call("hset", ukey, "_act", now) end
    if code == "o" then
      redis.call("hset", ukey, "_seen", now)
      if delay > 0 then redis.call("zadd", tkey, now + delay, "o:" .. user) end
    end
  end
  if code == pub or (code == "o" and delay > 0) then return "", 0 end
  if code == "o" then
    redis.call("hset", ukey, "_pub", "o")
    if has(flags, "o") then
      xadd(ekey, retention,
        cjson.encode({type = "user_offline", user = user, last_seen = math.floor(now)}))
      return "o", 1
    end
    return "o", 0
  end
  redis.call("hset", ukey, "_pub", code)
  local etype, letter = "user_status", "s"
  if pub == "o" then etype, letter = "user_online", "o" end
  if has(flags, letter) then
    xadd(ekey, retention, cjson.encode({type = etype, user = user, status = STATUS[code]}))
    return code, 1
  end
  return code, 0
end
"""

# KEYS: user, conns:<inc>, tomb:<inc>, events, timers, reads:<user>
# ARGV: client, code, user, flags, offline delay, retention, connect event, conns value,
#       user key ttl
# → {1, announced code, events added, read positions (flat)} or {-1}
CONN_OPEN = (
    _CLOCK
    + _ROLLUP
    + """
if redis.call("exists", KEYS[3]) == 1 then return {-1} end
local now = clock()
redis.call("hset", KEYS[2], ARGV[1], ARGV[8])
redis.call("hset", KEYS[1], "c:" .. ARGV[1], ARGV[2])
redis.call("expire", KEYS[1], ARGV[9])
local added = 0
if has(ARGV[4], "c") then
  xadd(KEYS[4], ARGV[6], ARGV[7])
  added = 1
end
local told, more = rollup(KEYS[1], KEYS[5], KEYS[4], ARGV[3], now, ARGV[4], tonumber(ARGV[5]),
  ARGV[6])
return {1, told, added + more, redis.call("hgetall", KEYS[6])}
"""
)

# KEYS: user, events, timers; ARGV: client, code, user, flags, offline delay, retention
# → {1 | 0 (no such connection), announced code, events added}
CONN_STATE = (
    _CLOCK
    + _ROLLUP
    + """
if redis.call("hexists", KEYS[1], "c:" .. ARGV[1]) == 0 then return {0, "", 0} end
redis.call("hset", KEYS[1], "c:" .. ARGV[1], ARGV[2])
local told, added = rollup(KEYS[1], KEYS[3], KEYS[2], ARGV[3], clock(), ARGV[4],
  tonumber(ARGV[5]), ARGV[6])
return {1, told, added}
"""
)

# KEYS: user, conns:<inc>, events, timers; ARGV: client, user, flags, offline delay,
# retention, reason, when it closed ("" = now; the reaper: the dead node's last beat)
# → {1 | 0 (already gone), announced code, events added}
CONN_CLOSE = (
    _CLOCK
    + _ROLLUP
    + """
local value = redis.call("hget", KEYS[2], ARGV[1])
if not value then return {0, "", 0} end
redis.call("hdel", KEYS[2], ARGV[1])
redis.call("hdel", KEYS[1], "c:" .. ARGV[1])
local added = 0
if has(ARGV[3], "d") then
  local _, template = split(value)
  local event = cjson.decode(template)
  event["reason"] = ARGV[6]
  xadd(KEYS[3], ARGV[5], cjson.encode(event))
  added = 1
end
local now = clock()
if ARGV[7] ~= "" then now = tonumber(ARGV[7]) end
local told, more = rollup(KEYS[1], KEYS[4], KEYS[3], ARGV[2], now, ARGV[3],
  tonumber(ARGV[4]), ARGV[5])
return {1, told, added + more}
"""
)

# KEYS: members:<inc>, presence, presence_exp, tomb:<inc>, events
# ARGV: field, client, info, presence "1"/"0", ttl, channel, flags, retention, joined "1"/"0"
# → events added, or -1 (this incarnation was found dead)
MEMBER_ADD = (
    _CLOCK
    + """
if redis.call("exists", KEYS[4]) == 1 then return -1 end
local flags = ""
if ARGV[4] == "1" then flags = "p" end
local old = redis.call("hget", KEYS[1], ARGV[1])
if ARGV[9] == "1" or (old and has(split(old), "j")) then flags = flags .. "j" end
redis.call("hset", KEYS[1], ARGV[1], flags .. "\\n" .. ARGV[3])
if ARGV[4] ~= "1" then return 0 end
local now = clock()
local lapsed = redis.call("zrangebyscore", KEYS[3], "-inf", now)
if #lapsed > 0 then
  redis.call("hdel", KEYS[2], unpack(lapsed))
  redis.call("zremrangebyscore", KEYS[3], "-inf", now)
end
local before = redis.call("zcard", KEYS[3])
redis.call("hset", KEYS[2], ARGV[2], ARGV[3])
redis.call("zadd", KEYS[3], now + tonumber(ARGV[5]), ARGV[2])
redis.call("expire", KEYS[2], math.floor(tonumber(ARGV[5])) + 1)
redis.call("expire", KEYS[3], math.floor(tonumber(ARGV[5])) + 1)
if before == 0 and has(ARGV[7], "v") then
  xadd(KEYS[5], ARGV[8], cjson.encode({type = "channel_occupied", channel = ARGV[6]}))
  return 1
end
return 0
"""
)

# KEYS: members:<inc>; ARGV: field, pubsub channel → 1, or 0 when not a member
MEMBER_JOINED = (
    _CLOCK
    + """
local value = redis.call("hget", KEYS[1], ARGV[1])
if not value then return 0 end
local flags, info = split(value)
if not has(flags, "j") then
  redis.call("hset", KEYS[1], ARGV[1], flags .. "j\\n" .. info)
end
redis.call("publish", ARGV[2], "j" .. info)
return 1
"""
)

# KEYS: members:<inc>, presence, presence_exp; ARGV: field, client, info, ttl
MEMBER_UPDATE = (
    _CLOCK
    + """
local value = redis.call("hget", KEYS[1], ARGV[1])
if not value then return 0 end
local flags = split(value)
redis.call("hset", KEYS[1], ARGV[1], flags .. "\\n" .. ARGV[3])
if has(flags, "p") then
  redis.call("hset", KEYS[2], ARGV[2], ARGV[3])
  redis.call("zadd", KEYS[3], clock() + tonumber(ARGV[4]), ARGV[2])
end
return 1
"""
)

# KEYS: members:<inc>, presence, presence_exp, events
# ARGV: field, client, pubsub channel, announce "1"/"0", channel, flags, retention
# → {1 | 0 (already gone), events added}
MEMBER_REMOVE = (
    _CLOCK
    + """
local value = redis.call("hget", KEYS[1], ARGV[1])
if not value then return {0, 0} end
redis.call("hdel", KEYS[1], ARGV[1])
local flags, info = split(value)
local added = 0
if has(flags, "p") then
  redis.call("hdel", KEYS[2], ARGV[2])
  redis.call("zrem", KEYS[3], ARGV[2])
  if has(ARGV[6], "v") and redis.call("zcount", KEYS[3], clock(), "+inf") == 0 then
    xadd(KEYS[4], ARGV[7], cjson.encode({type = "channel_vacated", channel = ARGV[5]}))
    added = 1
  end
end
if ARGV[4] == "1" and has(flags, "j") then
  redis.call("publish", ARGV[3], "l" .. info)
end
return {1, added}
"""
)

# KEYS: nodes, alive, tomb:<inc> (first shard); ARGV: node id, info, inc, node_ttl
# → 1 (first beat of this incarnation), 0, or -1 (it was found dead)
BEAT = (
    _CLOCK
    + """
if redis.call("exists", KEYS[3]) == 1 then return -1 end
local added = redis.call("zadd", KEYS[2], clock() + tonumber(ARGV[4]), ARGV[3])
redis.call("hset", KEYS[1], ARGV[1], ARGV[2])
return added
"""
)

# KEYS: alive (first shard); ARGV: prefix, claimer, lease (ms), most, stall grace (s)
# → {incarnation, its expiry, …} claimed. Most of the cluster silent at once is a stall
# (Redis stood still, a machine short of cores, a partition on the checker's side)
# rather than most of it dead: then only those silent for the grace longer are claimed.
REAP_CLAIM = (
    _CLOCK
    + """
local due = clock()
if redis.call("zcount", KEYS[1], "-inf", due) * 2 > redis.call("zcard", KEYS[1]) then
  due = due - tonumber(ARGV[5])
end
local dead = redis.call("zrangebyscore", KEYS[1], "-inf", due, "WITHSCORES", "LIMIT", 0,
  ARGV[4])
local claimed = {}
for i = 1, #dead, 2 do
  if redis.call("set", ARGV[1] .. ":reap:" .. dead[i], ARGV[2], "PX", ARGV[3], "NX") then
    table.insert(claimed, dead[i])
    table.insert(claimed, dead[i + 1])
  end
end
return claimed
"""
)

# KEYS: timers, events, handoffs; ARGV: prefix, flags, retention, most, settled keep (s)
# → {{user, last seen, …} announced offline, events added, next due score or ""}
CLAIM_TIMERS = (
    _CLOCK
    + """
local due = redis.call("zrangebyscore", KEYS[1], "-inf", clock(), "LIMIT", 0, ARGV[4])
local offline = {}
local added = 0
for _, member in ipairs(due) do
  redis.call("zrem", KEYS[1], member)
  local kind, key = string.sub(member, 1, 2), string.sub(member, 3)
  if kind == "o:" then
    local ukey = ARGV[1] .. ":user:" .. key
    local got = redis.call("hmget", ukey, "_st", "_pub", "_seen")
    if (got[1] or "o") == "o" and (got[2] or "o") ~= "o" then
      redis.call("hset", ukey, "_pub", "o")
      if has(ARGV[2], "o") then
        local seen = math.floor(tonumber(got[3] or "0"))
        xadd(KEYS[2], ARGV[3], cjson.encode({type = "user_offline", user = key, last_seen = seen}))
        added = added + 1
      end
      table.insert(offline, key)
      table.insert(offline, got[3] or "")
    end
  elseif kind == "h:" then
    local body = redis.call("hget", KEYS[3], key)
    if body then
      redis.call("hdel", KEYS[3], key)
      local channel, offset = split(key)
      local settled = ARGV[1] .. ":settled:" .. channel
      redis.call("sadd", settled, offset)
      redis.call("expire", settled, ARGV[5])
      if has(ARGV[2], "h") then
        xadd(KEYS[2], ARGV[3], body)
        added = added + 1
      end
    end
  end
end
local nxt = redis.call("zrange", KEYS[1], 0, 0, "WITHSCORES")
return {offline, added, nxt[2] or ""}
"""
)

# KEYS: timers, handoffs, settled:<ch>; ARGV: id, offset, ttl, event → 1 added, 0 settled
HANDOFF_ADD = (
    _CLOCK
    + """
if redis.call("sismember", KEYS[3], ARGV[2]) == 1 then return 0 end
if redis.call("hsetnx", KEYS[2], ARGV[1], ARGV[4]) == 0 then return 0 end
redis.call("zadd", KEYS[1], clock() + tonumber(ARGV[3]), "h:" .. ARGV[1])
return 1
"""
)

# KEYS: timers, handoffs, settled:<ch>; ARGV: id, offset, keep (s), epoch ("" = any)
# → 1 if one was waiting, 0 if none, -1 if the one waiting is of another epoch (kept)
HANDOFF_ACK = """
if ARGV[4] ~= "" then
  local body = redis.call("hget", KEYS[2], ARGV[1])
  if body and cjson.decode(body)["epoch"] ~= ARGV[4] then return -1 end
end
redis.call("sadd", KEYS[3], ARGV[2])
redis.call("expire", KEYS[3], ARGV[3])
redis.call("zrem", KEYS[1], "h:" .. ARGV[1])
return redis.call("hdel", KEYS[2], ARGV[1])
"""

# KEYS: reads:<user>; ARGV: channel, offset, epoch, most channels, keep (s)
# → 1 stored, 0 not newer, -1 too many channels
READ_MARK = """
local current = redis.call("hget", KEYS[1], ARGV[1])
if current then
  local sep = string.find(current, ":", 1, true)
  local offset, epoch = tonumber(string.sub(current, 1, sep - 1)), string.sub(current, sep + 1)
  if epoch == ARGV[3] and offset >= tonumber(ARGV[2]) then return 0 end
elseif redis.call("hlen", KEYS[1]) >= tonumber(ARGV[4]) then
  return -1
end
redis.call("hset", KEYS[1], ARGV[1], ARGV[2] .. ":" .. ARGV[3])
redis.call("expire", KEYS[1], ARGV[5])
return 1
"""

# KEYS: lock; ARGV: owner, lease (ms) → 1 held (taken or renewed), 0 another holds it
EVENTS_LOCK = """
local holder = redis.call("get", KEYS[1])
if not holder then
  redis.call("set", KEYS[1], ARGV[1], "PX", ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call("pexpire", KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: lock; ARGV: owner
EVENTS_UNLOCK = """
if redis.call("get", KEYS[1]) == ARGV[1] then redis.call("del", KEYS[1]) end
return 1
"""

# KEYS: lock, cursor; ARGV: owner, old cursor ("" = none), new cursor → 1 moved, 0 not
EVENTS_COMMIT = """
if redis.call("get", KEYS[1]) ~= ARGV[1] then return 0 end
if (redis.call("get", KEYS[2]) or "") ~= ARGV[2] then return 0 end
redis.call("set", KEYS[2], ARGV[3])
return 1
"""

ALL = {
    name: body
    for name, body in globals().items()
    if name.isupper() and not name.startswith("_") and isinstance(body, str)
}

"""The Lua script that checks and counts several limits in one Redis round trip.

Why not the ``limits`` library alone: each of its strategies checks one limit per call
(one script each), so a send that must pass both its key's request rate and its daily
quota of recipients would cost two round trips, and the first would be counted even when
the second refuses. This script does both, all or nothing, atomically (Redis runs a
script alone), and returns what the ``RateLimit`` header fields need, which a ``limits``
hit does not. It keeps the ``limits`` data layout exactly (its acquire_moving_window.lua
and acquire_sliding_window.lua), so the library still reads, clears and counts the same
keys (tests/integration/test_ratelimit_script.py checks that).

KEYS, per check: a moving window's list; a sliding window counter's previous and
current counters. ARGV: now (seconds), then per check: kind (``m`` or ``s``), amount,
window (seconds), cost. Returns the 1-based index of the first refusing check (0: every
check fits, and all were counted), then per check its remaining before this hit and a
time in ms: until the window resets when it fits, until ``cost`` fits when it does not.
"""

SCRIPT = """
local now = tonumber(ARGV[1])
local checks, k, a = {}, 1, 2
while a <= #ARGV do
  local c = {kind = ARGV[a], amount = tonumber(ARGV[a + 1]),
             expiry = tonumber(ARGV[a + 2]), cost = tonumber(ARGV[a + 3])}
  if c.kind == 'm' then
    c.key = KEYS[k]; k = k + 1
  else
    c.prev, c.cur = KEYS[k], KEYS[k + 1]; k = k + 2
  end
  checks[#checks + 1] = c
  a = a + 4
end

-- Moving window: a list of hit times, newest first, at most amount long.
local function moving(c)
  local since = now - c.expiry
  local len = math.min(redis.call('llen', c.key), c.amount)
  local count = 0
  local last = tonumber(redis.call('lindex', c.key, len - 1))
  if len > 0 and last >= since then
    count = len  -- the usual case, whole list in the window: one look at its tail
  else  -- else a binary search for the oldest hit in the window (as limits' moving_window.lua)
    local low, high = 0, len - 2
    while low <= high do
      local mid = math.floor((low + high) / 2)
      local v = tonumber(redis.call('lindex', c.key, mid))
      if v and v >= since then count = mid + 1; low = mid + 1 else high = mid - 1 end
    end
  end
  c.remaining = c.amount - count
  if c.cost > c.amount then
    c.fits, c.ms = false, c.expiry * 1000
  elseif count + c.cost > c.amount then
    local entry = tonumber(redis.call('lindex', c.key, c.amount - c.cost))
    c.fits, c.ms = false, math.ceil((entry + c.expiry - now) * 1000)
  else
    local oldest = now
    if count == len and count > 0 then
      oldest = last
    elseif count > 0 then
      oldest = tonumber(redis.call('lindex', c.key, count - 1))
    end
    c.fits, c.ms = true, math.ceil((oldest + c.expiry - now) * 1000)
  end
end

-- Sliding window counter: the current window's count plus the previous one's, weighted
-- by how much of it still overlaps (times in ms, as limits does).
local function sliding(c)
  local e = c.expiry * 1000
  local ttl = tonumber(redis.call('pttl', c.cur))
  if ttl > 0 and ttl < e then  -- the current window ended: it becomes the previous one
    redis.call('rename', c.cur, c.prev)
    redis.call('set', c.cur, 0, 'PX', ttl + e)
  end
  local p_count = tonumber(redis.call('get', c.prev)) or 0
  local p_ttl = math.max(tonumber(redis.call('pttl', c.prev)), 0)
  local count = tonumber(redis.call('get', c.cur)) or 0
  local c_ttl = math.max(tonumber(redis.call('pttl', c.cur)), 0)
  local weighted = math.floor(p_count * p_ttl / e) + count
  c.remaining = math.max(c.amount - weighted, 0)
  local need = c.amount - c.cost
  if need < 0 then
    c.fits, c.ms = false, e
  elseif weighted <= need then
    c.fits, c.ms = true, math.max(c_ttl - e, 0)
    if c_ttl == 0 then c.ms = e end
  elseif count <= need then  -- the previous window's share must decay enough
    c.fits, c.ms = false, math.ceil(math.max(p_ttl - (need - count + 1) * e / p_count, 1))
  else  -- wait for this window to end, then for its share to decay enough
    local shift = math.max(c_ttl - e, 0)
    c.fits, c.ms = false, math.ceil(shift + math.max(e - (need + 1) * e / count, 1))
  end
end

local refused = 0
for i, c in ipairs(checks) do
  if c.kind == 'm' then moving(c) else sliding(c) end
  if not c.fits and refused == 0 then refused = i end
end
if refused == 0 then
  for _, c in ipairs(checks) do
    if c.kind == 'm' then
      local entries = {}
      for i = 1, c.cost do entries[i] = now end
      for i = 1, #entries, 5000 do
        redis.call('lpush', c.key, unpack(entries, i, math.min(i + 4999, #entries)))
      end
      redis.call('ltrim', c.key, 0, c.amount - 1)
      redis.call('expire', c.key, c.expiry)
    elseif redis.call('exists', c.cur) == 1 then
      redis.call('incrby', c.cur, c.cost)
    else
      redis.call('set', c.cur, c.cost, 'PX', c.expiry * 2000)
    end
  end
end
local out = {refused}
for _, c in ipairs(checks) do
  out[#out + 1] = c.remaining
  out[#out + 1] = c.ms
end
return out
"""

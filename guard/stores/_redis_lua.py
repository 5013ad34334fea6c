"""The Lua scripts of ``RedisReservations``; each runs atomically inside Redis.

Keys (``P`` is the prefix ``{namespace}:``; the braces put every key in one cluster slot):

- ``P r:<payout_id>`` hash, one hold: ``k`` key, ``cur``, ``amt``/``fee``/``held`` in minor
  units, ``st`` state, ``ca``/``ea``/``cm`` created/expires/committed times.
- ``P p:<key>`` hash of the pending holds on a key: payout id -> ``"<held> <expires_at>"``.
- ``P c:<key>`` sorted set of the committed holds, scored by commit time; each member is
  ``"<running total, 30 digits> <held> <payout_id>"``.
- ``P t:<key>`` hash, the key's ledger: ``cur``, ``total`` (running total of every commit, 30
  digits), ``last`` (the latest commit time; commit times never go backwards on a key).
- ``P x:<key>`` sorted set of expired pending holds by expiry, to forget after the retention.

Lua numbers are doubles: integers are exact below 2**53. A single hold is refused from Python
at that size; totals are checked here. Running totals can outgrow 2**53 over months, so they
are kept as decimal strings and handled in two exact parts of 14 digits. Times travel as the
shortest ``repr`` of the guard's floats and are compared with ``tonumber`` (the same double).
Committed in the window since ``t`` = ledger total - running total before the first member
scored above ``t``: one ``ZRANGEBYSCORE ... LIMIT 0 1``, however many holds are kept.
"""

from __future__ import annotations

__all__ = ["COMMIT", "HOLDS", "RELEASE", "RESERVED", "TRY_HOLD"]

_COMMON = r"""
local LIMIT = 9007199254740992
local B = 1e14
local function split(s)
  local n = #s
  return tonumber(string.sub(s, 1, n - 14)) or 0, tonumber(string.sub(s, n - 13))
end
local function add(s, n)
  local hi, lo = split(s)
  local nlo = math.fmod(n, B)
  hi = hi + (n - nlo) / B
  lo = lo + nlo
  if lo >= B then lo = lo - B; hi = hi + 1 end
  return string.format('%016d%014d', hi, lo)
end
local function too_large()
  return redis.error_reply('PAYOUT_GUARD_TOO_LARGE the holds on this key reach 2^53 minor units')
end
local function lost()
  return redis.error_reply('PAYOUT_GUARD_LOST the ledger of this key is missing')
end
-- pending total (dropping expired entries when drop is set) plus committed total since
-- `since`; nil when it reaches 2^53, false when the ledger is gone
local function counted(base, key, now, since, drop)
  local p = base .. 'p:' .. key
  local total = 0
  local pending = redis.call('HGETALL', p)
  for i = 1, #pending, 2 do
    local held, ea = string.match(pending[i + 1], '^(%d+) (%S+)$')
    if now < tonumber(ea) then
      total = total + tonumber(held)
    elseif drop then
      redis.call('HDEL', p, pending[i])
      redis.call('ZADD', base .. 'x:' .. key, ea, pending[i])
    end
  end
  local first = redis.call('ZRANGEBYSCORE', base .. 'c:' .. key, '(' .. since, '+inf',
    'LIMIT', 0, 1)[1]
  if first then
    local run, held = string.match(first, '^(%d+) (%d+) ')
    local ledger = redis.call('HGET', base .. 't:' .. key, 'total')
    if not ledger then return false end
    local thi, tlo = split(ledger)
    local rhi, rlo = split(run)
    if thi - rhi > 90 then return nil end
    -- both terms are exact, so the difference is exact whenever it is below 2^53
    local window = (thi - rhi) * B + (tlo - rlo)
    total = total + window + tonumber(held)
  end
  if total >= LIMIT then return nil end
  return total
end
"""

# KEYS[1] the hold's record. ARGV: 1 prefix, 2 payout id, 3 key, 4 currency, 5 the numbers,
# space-separated (fewer arguments cost the client less): amount, fee, held, created_at,
# expires_at, ceiling (minor, clamped to [-1, 2^53]), counted_since, now, horizon
# (now - retention), record ttl, key ttl (seconds).
# Returns {status, counted[, k, cur, amt, fee, st, ca, ea, cm]}.
TRY_HOLD = _COMMON + r"""
local base, id, key, cur = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local v = {}
for token in string.gmatch(ARGV[5], '%S+') do v[#v + 1] = token end
local amt, fee, held, ca, ea, ceiling, since, now, horizon, life, ttl = unpack(v)
now = tonumber(now)
local ledger = base .. 't:' .. key
local held_cur = redis.call('HGET', ledger, 'cur')
if held_cur and held_cur ~= cur then
  return redis.error_reply('PAYOUT_GUARD_CURRENCY ' .. held_cur)
end
if not held_cur and redis.call('EXISTS', base .. 'c:' .. key) == 1 then return lost() end
local total = counted(base, key, now, since, true)
if total == false then return lost() end
if not total then return too_large() end
local rec = redis.call('HMGET', KEYS[1], 'k', 'cur', 'amt', 'fee', 'st', 'ca', 'ea', 'cm')
if rec[1] and (rec[5] ~= 'pending' or now < tonumber(rec[7])) then
  local same = rec[1] == key and rec[2] == cur and rec[3] == amt and rec[4] == fee
  return {same and 'existing' or 'conflict', total,
    rec[1], rec[2], rec[3], rec[4], rec[5], rec[6], rec[7], rec[8] or ''}
end
local after = total + tonumber(held)
ceiling = tonumber(ceiling)
if after >= LIMIT and ceiling >= LIMIT then return too_large() end
if after > ceiling then return {'over_ceiling', total} end
if rec[1] then redis.call('HDEL', base .. 'p:' .. rec[1], id) end
-- forget what left the retention window, a bounded number per call
local c = base .. 'c:' .. key
local old = redis.call('ZRANGEBYSCORE', c, '-inf', horizon, 'LIMIT', 0, 64)
for _, member in ipairs(old) do
  local oid = string.match(member, '^%d+ %d+ (.*)$')
  local o = redis.call('HMGET', base .. 'r:' .. oid, 'k', 'st')
  if o[1] == key and o[2] == 'committed' then redis.call('DEL', base .. 'r:' .. oid) end
  redis.call('ZREM', c, member)
end
local x = base .. 'x:' .. key
old = redis.call('ZRANGEBYSCORE', x, '-inf', horizon, 'LIMIT', 0, 64)
for _, oid in ipairs(old) do
  local o = redis.call('HMGET', base .. 'r:' .. oid, 'k', 'st', 'ea')
  if o[1] == key and o[2] == 'pending' and tonumber(o[3]) <= tonumber(horizon) then
    redis.call('DEL', base .. 'r:' .. oid)
  end
  redis.call('ZREM', x, oid)
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'k', key, 'cur', cur, 'amt', amt, 'fee', fee,
  'held', held, 'st', 'pending', 'ca', ca, 'ea', ea)
redis.call('EXPIRE', KEYS[1], life)
redis.call('HSET', base .. 'p:' .. key, id, held .. ' ' .. ea)
if not held_cur then
  redis.call('HSET', ledger, 'cur', cur, 'total', string.format('%030d', 0))
end
for _, name in ipairs({'p:', 'c:', 't:', 'x:'}) do
  redis.call('EXPIRE', base .. name .. key, ttl)
end
return {'held', total}
"""

# KEYS[1] the hold's record. ARGV: 1 prefix, 2 payout id, 3 now, 4 record ttl, 5 key ttl.
# Returns nil or {k, cur, amt, fee, st, ca, ea, cm}.
COMMIT = _COMMON + r"""
local base, id = ARGV[1], ARGV[2]
local rec = redis.call('HMGET', KEYS[1], 'k', 'cur', 'amt', 'fee', 'st', 'ca', 'ea', 'cm', 'held')
if not rec[1] then return nil end
if rec[5] == 'pending' then
  local key = rec[1]
  local ledger = base .. 't:' .. key
  local t = redis.call('HMGET', ledger, 'total', 'last')
  if not t[1] and redis.call('EXISTS', base .. 'c:' .. key) == 1 then return lost() end
  local total, at = t[1] or string.format('%030d', 0), ARGV[3]
  if t[2] and tonumber(t[2]) > tonumber(at) then at = t[2] end
  local run = add(total, tonumber(rec[9]))
  redis.call('HSET', ledger, 'cur', rec[2], 'total', run, 'last', at)
  local c = base .. 'c:' .. key
  redis.call('ZADD', c, at, run .. ' ' .. rec[9] .. ' ' .. id)
  redis.call('HDEL', base .. 'p:' .. key, id)
  redis.call('HSET', KEYS[1], 'st', 'committed', 'cm', at)
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  redis.call('EXPIRE', ledger, ARGV[5])
  redis.call('EXPIRE', c, ARGV[5])
  rec[5], rec[8] = 'committed', at
end
return {rec[1], rec[2], rec[3], rec[4], rec[5], rec[6], rec[7], rec[8] or ''}
"""

# KEYS[1] the hold's record. ARGV: 1 prefix, 2 payout id. Returns 1 if a pending hold went.
RELEASE = r"""
local rec = redis.call('HMGET', KEYS[1], 'k', 'st')
if rec[2] ~= 'pending' then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HDEL', ARGV[1] .. 'p:' .. rec[1], ARGV[2])
return 1
"""

# KEYS[1] the key's ledger. ARGV: 1 prefix, 2 key, 3 counted_since, 4 now.
# Returns {currency, counted} or {} when nothing was ever held on the key.
RESERVED = _COMMON + r"""
local cur = redis.call('HGET', KEYS[1], 'cur')
if not cur then
  if redis.call('EXISTS', ARGV[1] .. 'p:' .. ARGV[2], ARGV[1] .. 'c:' .. ARGV[2]) > 0 then
    return lost()
  end
  return {}
end
local total = counted(ARGV[1], ARGV[2], tonumber(ARGV[4]), ARGV[3], false)
if total == false then return lost() end
if not total then return too_large() end
return {cur, total}
"""

# KEYS[1] the key's ledger. ARGV: 1 prefix, 2 key, 3 counted_since, 4 now.
# Returns a JSON list of [payout_id, k, cur, amt, fee, st, ca, ea, cm] of the holds that count.
HOLDS = r"""
local base, key, now = ARGV[1], ARGV[2], tonumber(ARGV[4])
local ids = {}
local pending = redis.call('HGETALL', base .. 'p:' .. key)
for i = 1, #pending, 2 do
  local ea = string.match(pending[i + 1], '^%d+ (%S+)$')
  if now < tonumber(ea) then table.insert(ids, pending[i]) end
end
local members = redis.call('ZRANGEBYSCORE', base .. 'c:' .. key, '(' .. ARGV[3], '+inf')
for _, member in ipairs(members) do
  table.insert(ids, string.match(member, '^%d+ %d+ (.*)$'))
end
local limit = tonumber(ARGV[5])
local found = {}
for n, id in ipairs(ids) do
  -- a bounded sample when asked: pending first, then the earliest commits
  if limit >= 0 and n > limit then break end
  local r = redis.call('HMGET', base .. 'r:' .. id,
    'k', 'cur', 'amt', 'fee', 'st', 'ca', 'ea', 'cm')
  if r[1] then
    table.insert(found, {id, r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8] or ''})
  end
end
-- one JSON string of strings (no numbers, so nothing is rounded): far cheaper to parse
return cjson.encode(found)
"""

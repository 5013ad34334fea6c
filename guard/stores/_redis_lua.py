"""The Lua scripts of ``RedisReservations``; each runs atomically inside Redis.

They mirror the hold state machine of ``guard/stores/_machine.py`` (and the bookkeeping of
``guard/stores/memory.py``) step for step; each part names the Python function it mirrors, so a
change to the machine shows where the scripts must change too.

Keys (``P`` is the prefix ``{namespace}:``; the braces put every key in one cluster slot):

- ``P epoch`` string, the store's epoch marker: every script is given the epoch its store
  remembered and refuses with ``PAYOUT_GUARD_LOST`` when the marker is missing or another one
  (Redis restarted empty, flushed, evicted). Never expires.
- ``P r:<payout_id>`` hash, one hold: ``k`` key, ``cur``, ``amt``/``fee``/``held`` in minor
  units, ``st`` state (``pending``, ``committed``, ``uncertain``), ``ca``/``ea``/``cm``
  created/expires/committed times, ``o`` the owner token.
- ``P p:<key>`` hash of the live (pending and uncertain) holds on a key: payout id ->
  ``"<held> <expires_at>"``. They count while ``now < expires_at``; an entry stays (without
  counting) until the retention after its expiry has passed, as in the memory store.
- ``P x:<key>`` sorted set of the same live holds by expiry, to forget them after retention.
- ``P u:<key>`` sorted set of the uncertain holds by expiry, not yet reported as lapsed.
- ``P c:<key>`` sorted set of the committed holds, scored by commit time; each member is
  ``"<running total, 30 digits> <held> <payout_id>"``.
- ``P t:<key>`` hash, the key's ledger: ``cur``, ``total`` (running total of every commit, 30
  digits), ``last`` (the latest commit time; commit times never go backwards on a key).

Every script does all of its checks (epoch, currency, ledger, totals, ceiling, owner) before its
first write, so an error never leaves half a change. Times and ttls were checked in Python
(finite, at most 30 days), so no ``EXPIRE`` can fail. The ttls only collect garbage; expiry
follows the guard's clock values.

Lua numbers are doubles: integers are exact below 2**53. A single hold is refused from Python
at that size; totals are checked here. Running totals can outgrow 2**53 over months, so they
are kept as decimal strings and handled in two exact parts of 14 digits. Times travel as the
shortest ``repr`` of the guard's floats, are compared with ``tonumber`` (the same double) and
are handed back to Redis as the original strings (Lua would print a number with 14 digits).
Committed in the window since ``t`` = ledger total - running total before the first member
scored above ``t``: one ``ZRANGEBYSCORE ... LIMIT 0 1``, however many holds are kept.
"""

from __future__ import annotations

__all__ = [
    "COMMIT",
    "GET",
    "HOLDS",
    "MARK_UNCERTAIN",
    "RELEASE",
    "REPAIR",
    "RESERVED",
    "RESOLVE",
    "TRY_HOLD",
]

_COMMON = r"""
local LIMIT = 9007199254740992
local B = 1e14
local ZERO = string.format('%030d', 0)
local FIELDS = {'k', 'cur', 'amt', 'fee', 'st', 'ca', 'ea', 'cm', 'o', 'held'}
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
  return redis.error_reply(
    'PAYOUT_GUARD_LOST the epoch marker is missing or changed: Redis restarted empty, was '
    .. 'flushed or evicted keys')
end
local function lost_ledger()
  return redis.error_reply(
    'PAYOUT_GUARD_LOST the ledger of a balance key is missing: its keys were deleted or evicted')
end
-- the epoch marker this store remembered is still there: nothing was lost since
local function armed(base, epoch)
  return redis.call('GET', base .. 'epoch') == epoch
end
local function record(rkey)
  local r = redis.call('HMGET', rkey, unpack(FIELDS))
  if not r[1] then return nil end
  return r
end
local function reply(r)
  return {r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8] or '', r[9] or ''}
end
-- _machine.owned: only the token of the reservation that took the hold, never an empty one
local function owned(r, owner)
  return r ~= nil and owner ~= '' and r[9] == owner
end
-- make `k` live at least `secs` seconds (a key's structures outlive every record on it)
local function extend(k, secs)
  local ms = redis.call('PTTL', k)
  if ms == -1 or (ms >= 0 and ms < secs * 1000) then redis.call('EXPIRE', k, secs) end
end
-- make the key's structures in `names` (that this script wrote to) and its ledger live at
-- least `secs` seconds: the ledger always outlives the rest, so a missing ledger means loss
local function touch(base, key, secs, names)
  for _, name in ipairs(names) do extend(base .. name .. key, secs) end
  extend(base .. 't:' .. key, secs)
end
-- holds on the key but no ledger: its keys were lost
local function ledger_gone(base, key)
  return redis.call('EXISTS', base .. 'p:' .. key, base .. 'c:' .. key) > 0
end
-- Hold.counts summed (the memory store's _Tally.counted), read only: live holds with
-- now < expires_at, plus commits after `since`; nil when it reaches 2^53, false when the
-- ledger is gone
local function counted(base, key, now, since)
  local total = 0
  local live = redis.call('HGETALL', base .. 'p:' .. key)
  for i = 1, #live, 2 do
    local held, ea = string.match(live[i + 1], '^(%d+) (%S+)$')
    if now < tonumber(ea) then total = total + tonumber(held) end
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
-- the memory store's _Ledger.add_commit, with _machine.commit_time: record the live hold `r`
-- under `id` as committed at `now`, or at the key's last commit when the clock stepped back.
-- Returns the recorded time, or false (having written nothing) when the key's ledger is gone.
local function record_commit(base, id, rkey, r, now, gc)
  local key = r[1]
  local ledger = base .. 't:' .. key
  local t = redis.call('HMGET', ledger, 'total', 'last')
  if not t[1] then return false end
  local at = now
  if t[2] and tonumber(t[2]) > tonumber(now) then at = t[2] end
  local run = add(t[1], tonumber(r[10]))
  redis.call('HSET', ledger, 'cur', r[2], 'total', run, 'last', at)
  redis.call('ZADD', base .. 'c:' .. key, at, run .. ' ' .. r[10] .. ' ' .. id)
  redis.call('HDEL', base .. 'p:' .. key, id)
  redis.call('ZREM', base .. 'x:' .. key, id)
  redis.call('ZREM', base .. 'u:' .. key, id)
  redis.call('HSET', rkey, 'st', 'committed', 'cm', at)
  redis.call('EXPIRE', rkey, gc)
  touch(base, key, gc, {'c:'})
  return at
end
-- the memory store's _forget: drop a live hold and every index entry of it
local function forget(base, id, rkey, key)
  redis.call('DEL', rkey)
  redis.call('HDEL', base .. 'p:' .. key, id)
  redis.call('ZREM', base .. 'x:' .. key, id)
  redis.call('ZREM', base .. 'u:' .. key, id)
end
"""

# KEYS[1] the hold's record. ARGV: 1 prefix, 2 epoch, 3 payout id, 4 key, 5 currency, 6 owner,
# 7 the numbers, space-separated (fewer arguments cost the client less): amount, fee, held,
# created_at, expires_at, ceiling (minor, clamped to [-1, 2^53]), counted_since, now, horizon
# (now - retention), record ttl (seconds).
# Returns {status, counted, existing hold or {}, lapsed holds {{id, fields...}, ...}}.
TRY_HOLD = _COMMON + r"""
local base, epoch, id, key, cur, owner = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
if not armed(base, epoch) then return lost() end
local v = {}
for token in string.gmatch(ARGV[7], '%S+') do v[#v + 1] = token end
local amt, fee, held, ca, ea, ceiling, since, nows, horizon, life = unpack(v)
local now = tonumber(nows)
local ledger = base .. 't:' .. key
-- _machine.admit, first: a key holds one currency
local key_cur = redis.call('HGET', ledger, 'cur')
if key_cur and key_cur ~= cur then
  return redis.error_reply('PAYOUT_GUARD_CURRENCY ' .. key_cur)
end
if not key_cur and ledger_gone(base, key) then return lost_ledger() end
local total = counted(base, key, now, since)
if total == false then return lost_ledger() end
if not total then return too_large() end
local rec = record(KEYS[1])
local status = 'held'
-- _machine.admit, then: any hold but an expired pending one (Hold.expired) is a duplicate;
-- then the ceiling
if rec and not (rec[5] == 'pending' and tonumber(rec[7]) <= now) then
  status = 'duplicate'
else
  local after = total + tonumber(held)
  ceiling = tonumber(ceiling)
  if after >= LIMIT and ceiling >= LIMIT then return too_large() end
  if after > ceiling then status = 'over_ceiling' end
end
-- Every check is done: the writes start here.
-- The memory store's _Ledger.lapse: uncertain holds whose uncertain_ttl ended, each reported
-- once (taken out of the u: index as they are reported).
local lapsed = {}
local u = base .. 'u:' .. key
for _, uid in ipairs(redis.call('ZRANGEBYSCORE', u, '-inf', nows)) do
  local r = record(base .. 'r:' .. uid)
  if r and r[1] == key and r[5] == 'uncertain' and tonumber(r[7]) <= now then
    local row = reply(r)
    table.insert(row, 1, uid)
    table.insert(lapsed, row)
  end
  redis.call('ZREM', u, uid)
end
if status == 'duplicate' then return {status, total, reply(rec), lapsed} end
if status ~= 'held' then return {status, total, {}, lapsed} end
-- try_hold in the memory store: an expired pending hold under the same id leaves its key
if rec then
  redis.call('HDEL', base .. 'p:' .. rec[1], id)
  redis.call('ZREM', base .. 'x:' .. rec[1], id)
end
-- the memory store's _purge: live holds whose expiry is a retention ago (a bounded number per
-- call)...
local p, x = base .. 'p:' .. key, base .. 'x:' .. key
for _, oid in ipairs(redis.call('ZRANGEBYSCORE', x, '-inf', horizon, 'LIMIT', 0, 64)) do
  local o = redis.call('HMGET', base .. 'r:' .. oid, 'k', 'st', 'ea')
  local live = o[1] == key and (o[2] == 'pending' or o[2] == 'uncertain')
  if live and tonumber(o[3]) > tonumber(horizon) then
    redis.call('ZADD', x, o[3], oid)
  else
    if live then redis.call('DEL', base .. 'r:' .. oid) end
    redis.call('HDEL', p, oid)
    redis.call('ZREM', u, oid)
    redis.call('ZREM', x, oid)
  end
end
-- ...and commits before the retention window
local c = base .. 'c:' .. key
local oldest = redis.call('ZRANGE', c, 0, 0, 'WITHSCORES')
if oldest[2] and tonumber(oldest[2]) < tonumber(horizon) then
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', c, '-inf', horizon, 'LIMIT', 0, 64)) do
    local oid = string.match(member, '^%d+ %d+ (.*)$')
    local o = redis.call('HMGET', base .. 'r:' .. oid, 'k', 'st')
    if o[1] == key and o[2] == 'committed' then redis.call('DEL', base .. 'r:' .. oid) end
    redis.call('ZREM', c, member)
  end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'k', key, 'cur', cur, 'amt', amt, 'fee', fee,
  'held', held, 'st', 'pending', 'ca', ca, 'ea', ea, 'o', owner)
redis.call('EXPIRE', KEYS[1], life)
redis.call('HSET', p, id, held .. ' ' .. ea)
redis.call('ZADD', x, ea, id)
if not key_cur then
  redis.call('HSET', ledger, 'cur', cur, 'total', ZERO)
end
touch(base, key, tonumber(life), {'p:', 'x:'})
return {'held', total, {}, lapsed}
"""

# KEYS[1] the hold's record. ARGV: 1 prefix, 2 epoch, 3 payout id, 4 owner, 5 now,
# 6 record ttl. Returns nil or {k, cur, amt, fee, st, ca, ea, cm, o}.
COMMIT = _COMMON + r"""
local base, id = ARGV[1], ARGV[3]
if not armed(base, ARGV[2]) then return lost() end
local r = record(KEYS[1])
-- _machine.to_commit: only the owner's hold; a committed one stays as it is
if not owned(r, ARGV[4]) then return nil end
if r[5] ~= 'committed' then
  local at = record_commit(base, id, KEYS[1], r, ARGV[5], tonumber(ARGV[6]))
  if not at then return lost_ledger() end
  r[5], r[8] = 'committed', at
end
return reply(r)
"""

# KEYS[1] the hold's record. ARGV: 1 prefix, 2 epoch, 3 payout id, 4 owner.
# Returns 1 if the owner's pending hold went.
RELEASE = _COMMON + r"""
local base, id = ARGV[1], ARGV[3]
if not armed(base, ARGV[2]) then return lost() end
local r = record(KEYS[1])
-- InMemoryReservations.release: only the owner's pending hold
if not r or r[5] ~= 'pending' or not owned(r, ARGV[4]) then return 0 end
forget(base, id, KEYS[1], r[1])
return 1
"""

# KEYS[1] the hold's record. ARGV: 1 prefix, 2 epoch, 3 payout id, 4 owner, 5 until,
# 6 ttl (seconds) of the record and its key's structures.
# Returns nil or {k, cur, amt, fee, st, ca, ea, cm, o}.
MARK_UNCERTAIN = _COMMON + r"""
local base, id, untl = ARGV[1], ARGV[3], ARGV[5]
if not armed(base, ARGV[2]) then return lost() end
local r = record(KEYS[1])
-- _machine.to_uncertain: only the owner's hold, and only a pending one changes
if not owned(r, ARGV[4]) then return nil end
if r[5] == 'pending' then
  local key, life = r[1], tonumber(ARGV[6])
  redis.call('HSET', KEYS[1], 'st', 'uncertain', 'ea', untl)
  extend(KEYS[1], life)
  redis.call('HSET', base .. 'p:' .. key, id, r[10] .. ' ' .. untl)
  redis.call('ZADD', base .. 'x:' .. key, untl, id)
  redis.call('ZADD', base .. 'u:' .. key, untl, id)
  touch(base, key, life, {'p:', 'x:', 'u:'})
  r[5], r[7] = 'uncertain', untl
end
return reply(r)
"""

# KEYS[1] the hold's record. ARGV: 1 prefix, 2 epoch, 3 payout id, 4 sent ("1" or "0"),
# 5 now, 6 record ttl. Returns nil or the hold as found {k, cur, amt, fee, st, ca, ea, cm, o}.
RESOLVE = _COMMON + r"""
local base, id = ARGV[1], ARGV[3]
if not armed(base, ARGV[2]) then return lost() end
local r = record(KEYS[1])
-- InMemoryReservations.resolve: only an uncertain hold ends; sent -> committed at now
-- (_machine.commit_time, as for a commit), not sent -> dropped
if not r then return nil end
local found = reply(r)
if r[5] ~= 'uncertain' then return found end
if ARGV[4] == '1' then
  if not record_commit(base, id, KEYS[1], r, ARGV[5], tonumber(ARGV[6])) then
    return lost_ledger()
  end
else
  forget(base, id, KEYS[1], r[1])
end
return found
"""

# KEYS[1] a key's ledger. ARGV: 1 prefix, 2 epoch, 3 key, 4 ledger ttl (seconds).
# Run by rearm() for every key with holds: rebuilds a missing ledger from the commits kept
# (their last running total and time) and the currency of any hold still recorded on the key;
# when no hold says which currency, the key's leftovers are forgotten (nothing can count them).
# Returns "kept", "rebuilt" or "forgotten".
REPAIR = _COMMON + r"""
local base, key = ARGV[1], ARGV[3]
if not armed(base, ARGV[2]) then return lost() end
if redis.call('EXISTS', KEYS[1]) == 1 then return 'kept' end
local c = base .. 'c:' .. key
local ids = redis.call('HKEYS', base .. 'p:' .. key)
for _, member in ipairs(redis.call('ZRANGE', c, 0, 63)) do
  table.insert(ids, string.match(member, '^%d+ %d+ (.*)$'))
end
local cur = nil
for _, id in ipairs(ids) do
  local o = redis.call('HMGET', base .. 'r:' .. id, 'k', 'cur')
  if o[1] == key then cur = o[2]; break end
end
if not cur then
  redis.call('DEL', c, base .. 'p:' .. key, base .. 'x:' .. key, base .. 'u:' .. key)
  return 'forgotten'
end
local last = redis.call('ZRANGE', c, -1, -1, 'WITHSCORES')
if last[1] then
  redis.call('HSET', KEYS[1], 'cur', cur, 'total', string.match(last[1], '^(%d+) '),
    'last', last[2])
else
  redis.call('HSET', KEYS[1], 'cur', cur, 'total', ZERO)
end
-- the ledger outlives the rest again
local secs = tonumber(ARGV[4])
for _, name in ipairs({'p:', 'x:', 'u:', 'c:'}) do
  local ms = redis.call('PTTL', base .. name .. key)
  if ms > secs * 1000 then secs = math.ceil(ms / 1000) end
end
redis.call('EXPIRE', KEYS[1], secs)
return 'rebuilt'
"""

# KEYS[1] the hold's record. ARGV: 1 prefix, 2 epoch.
# Returns nil or {k, cur, amt, fee, st, ca, ea, cm, o}.
GET = _COMMON + r"""
if not armed(ARGV[1], ARGV[2]) then return lost() end
local r = record(KEYS[1])
if not r then return nil end
return reply(r)
"""

# KEYS[1] the key's ledger. ARGV: 1 prefix, 2 epoch, 3 key, 4 counted_since, 5 now.
# Returns {currency, counted} or {} when nothing was ever held on the key.
RESERVED = _COMMON + r"""
local base, key = ARGV[1], ARGV[3]
if not armed(base, ARGV[2]) then return lost() end
local cur = redis.call('HGET', KEYS[1], 'cur')
if not cur then
  if ledger_gone(base, key) then return lost_ledger() end
  return {}
end
local total = counted(base, key, tonumber(ARGV[5]), ARGV[4])
if total == false then return lost_ledger() end
if not total then return too_large() end
return {cur, total}
"""

# KEYS[1] the key's ledger. ARGV: 1 prefix, 2 epoch, 3 key, 4 counted_since, 5 now, 6 limit.
# Returns a JSON list of [payout_id, k, cur, amt, fee, st, ca, ea, cm, o] of the holds that
# count (Hold.counts).
HOLDS = _COMMON + r"""
local base, key, now = ARGV[1], ARGV[3], tonumber(ARGV[5])
if not armed(base, ARGV[2]) then return lost() end
local ids = {}
local live = redis.call('HGETALL', base .. 'p:' .. key)
for i = 1, #live, 2 do
  local ea = string.match(live[i + 1], '^%d+ (%S+)$')
  if now < tonumber(ea) then table.insert(ids, live[i]) end
end
local members = redis.call('ZRANGEBYSCORE', base .. 'c:' .. key, '(' .. ARGV[4], '+inf')
for _, member in ipairs(members) do
  table.insert(ids, string.match(member, '^%d+ %d+ (.*)$'))
end
local limit = tonumber(ARGV[6])
local found = {}
for n, id in ipairs(ids) do
  -- a bounded sample when asked: live holds first, then the earliest commits
  if limit >= 0 and n > limit then break end
  local r = record(base .. 'r:' .. id)
  if r then
    local row = reply(r)
    table.insert(row, 1, id)
    table.insert(found, row)
  end
end
-- one JSON string of strings (no numbers, so nothing is rounded): far cheaper to parse
return cjson.encode(found)
"""

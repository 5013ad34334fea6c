"""The Lua scripts of ``RedisReservations``; each runs atomically inside Redis.

They mirror the hold state machine of ``guard/stores/_machine.py`` (and the bookkeeping of
``guard/stores/memory.py``) step for step; each part names the Python function it mirrors, so a
change to the machine shows where the scripts must change too.

Keys (``P`` is the prefix ``{namespace}:``; the braces put every key in one cluster slot):

- ``P epoch`` string, the store's epoch marker: every script is given the epoch its store
  remembered and refuses with ``PAYOUT_GUARD_LOST`` when the marker is missing or another one
  (Redis restarted empty, flushed, evicted). Never expires.
- ``P writes`` string, the write counter: every script that changes holds (``TRY_HOLD``,
  ``COMMIT``, ``RELEASE``, ``MARK_UNCERTAIN``, ``RESOLVE``, ``REPAIR``) counts it up first,
  even when it then changes nothing. Every script replies ``{counter, its reply}`` (an error
  reply as it is), and is given, as ``ARGV[2]`` (``marks`` below), ``"<epoch> <seen>"``:
  ``seen`` the highest counter the store was replied. A counter below it means Redis came
  back from an older snapshot (or a replica behind it took over): ``PAYOUT_GUARD_LOST``, and
  a script that counts replaces the epoch marker, so every store denies until ``rearm()``
  (each store notices by itself only a counter below what it saw). Never expires.
- ``P r:<payout_id>`` hash, one hold: ``k`` key, ``cur``, ``amt``/``fee``/``held`` in minor
  units, ``st`` state (``pending``, ``committed``, ``uncertain``), ``ca``/``ea``/``cm``
  created/expires/committed times (``cm`` empty until committed), ``o`` the owner token.
- ``P x:<key>`` sorted set of the live (pending and uncertain) holds on a key by
  ``expires_at``; each member is ``"<held> <payout_id>"``. They count while
  ``now < expires_at``; a member stays (without counting) until the retention after its
  expiry has passed, as in the memory store.
- ``P u:<key>`` sorted set of the uncertain holds by expiry, not yet reported as lapsed.
- ``P c:<key>`` sorted set of the committed holds, scored by commit time; each member is
  ``"<running total, 30 digits> <held> <payout_id>"``.
- ``P t:<key>`` hash, the key's ledger: ``cur``; ``total`` (running total of every commit, 30
  digits) and ``last`` (the latest commit time; commit times never go backwards on a key);
  ``live`` (the sum of ``held`` over the members of ``x:`` scored above ``wm``), ``wm``
  (the latest time the key was counted at) and ``nx`` (no member above ``wm`` expires
  before it; missing: unknown); ``ul`` (no uncertain hold in ``u:`` ends before it);
  ``gcu`` (server time until which every structure of the key lives) and ``pur`` (when the
  next purge of ``x:`` and ``c:`` is due). ``nx`` and ``ul`` spare the hot path a look at
  the indexes when nothing can have changed there.

Counting is O(1) amortized however many holds a key has: ``live`` is the running total of the
live holds as of ``wm``. Counting at a later ``now`` first takes out the members that expired
in ``(wm, now]`` (each leaves once) and moves ``wm`` to ``now``; counting at an earlier
``now`` (a caller's clock stepped back) adds back those expiring in ``(now, wm]``, so the
answer is exact either way. Committed in the window since ``t`` = ledger total - running total
before the first member scored above ``t``: one ``ZRANGEBYSCORE ... LIMIT 0 1``.

Times. A store on the server clock (the default) passes ``"T"`` as ``now`` and every other
time as an offset from the caller's ``now``: the script reads ``TIME`` and adds the offsets to
it, so hosts whose clocks disagree still agree on creation, expiry and commit times. A store on
the caller's clock passes absolute times, handed back to Redis as the original strings (the
shortest ``repr`` of the guard's floats). Times made here are printed with 17 significant
digits, so they read back as the same double. The TTLs only collect garbage (they are kept
on the server's seconds, so a stepped caller clock cannot shorten them).

Every script does all of its checks (epoch, currency, ledger, totals, ceiling, owner) before its
first write, so an error never leaves half a change (the write counter aside: counting it up
first changes no hold). Times and ttls were checked in Python
(finite, at most 30 days), so no ``EXPIRE`` can fail. A key's structures get one TTL together
(the ledger's, ``gcu``), renewed about once a retention, not at every write: a structure made
after that gets the ledger's remaining life (``EXPIRE ... NX``), so the ledger always outlives
the rest and a missing ledger means loss.

Lua numbers are doubles: integers are exact below 2**53. A single hold is refused from Python
at that size; totals are checked here. Running totals of commits can outgrow 2**53 over
months, so they are kept as decimal strings and handled in two exact parts of 14 digits.
Numbers are returned as strings (Redis would truncate a Lua number to an integer).

The fleet scripts (``READ_SHARED``, ``WRITE_SHARED``, ``DROP_LEASE``, ``SPEND``) always use
``TIME``: the age of a shared value and a request budget must agree across hosts. They check
the store's marks but do not count writes (nothing of theirs is a hold).
``P s:<name>`` hash ``v`` payload, ``at`` when written; ``P l:<name>`` string, the owner of
the fetch lease (expiring with it); ``P g:<name>`` string, a budget's ``tat`` (``gcra``).
"""

from __future__ import annotations

import hashlib
import re

__all__ = [
    "COMMIT",
    "COMMITTED",
    "DROP_LEASE",
    "GET",
    "HOLDS",
    "MARK_UNCERTAIN",
    "READ_SHARED",
    "RECORDS",
    "RELEASE",
    "REPAIR",
    "RESERVED",
    "RESOLVE",
    "SPEND",
    "TRY_HOLD",
    "WRITE_SHARED",
]

_COMMON = r"""
local LIMIT = 9007199254740992
local B = 1e14
local ZERO = '000000000000000000000000000000'  -- 30 digits
local FIELDS = {'k', 'cur', 'amt', 'fee', 'st', 'ca', 'ea', 'cm', 'o', 'held'}
local LEDGER = {'cur', 'total', 'last', 'live', 'wm', 'gcu', 'pur', 'nx', 'ul'}
local NONE = '1e300'  -- `nx` or `ul` when there is nothing to wait for
local function split(s)
  local n = #s
  local hi = string.sub(s, 1, n - 14)
  return hi == '' and 0 or hi + 0, string.sub(s, n - 13) + 0
end
local function add(s, n)
  local hi, lo = split(s)
  local nlo = math.fmod(n, B)
  hi = hi + (n - nlo) / B
  lo = lo + nlo
  if lo >= B then lo = lo - B; hi = hi + 1 end
  return string.format('%016d%014d', hi, lo)
end
local function fmt(n)
  return string.format('%.17g', n)
end
local function int(n)
  return string.format('%d', n)
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
local function old_layout()
  return redis.error_reply(
    'PAYOUT_GUARD_LOST a balance key keeps its live holds as an older version did (p:); '
    .. 'rearm() moves them to this layout')
end
local function went_back()
  return redis.error_reply(
    'PAYOUT_GUARD_LOST the write counter went back: Redis restarted from an older snapshot '
    .. '(or a replica behind it took over)')
end
-- the write counter as the last check of the store's marks found it (`wrap` replies it)
local W = 0
-- Nil when the store's marks hold (`mark` is "<epoch> <seen>"), else the reply that ends the
-- script: the epoch marker the store remembered is still there (Redis was not wiped) and the
-- write counter is not below `seen`, the highest the store saw (Redis did not come back from
-- an older snapshot). A script that writes (`writes`) counts the counter up; when it finds it
-- gone back, it replaces the epoch marker, so every store denies until rearm().
local function unarmed(base, mark, writes)
  local epoch, seen = string.match(mark, '^(%S+) (%d+)$')
  if redis.call('GET', base .. 'epoch') ~= epoch then return lost() end
  local w = base .. 'writes'
  if writes then
    W = redis.call('INCR', w)
    if W > seen + 0 then return nil end
    local t = redis.call('TIME')
    redis.call('SET', base .. 'epoch', 'went-back-' .. t[1] .. '.' .. t[2])
  else
    W = (redis.call('GET', w) or 0) + 0
    if W >= seen + 0 then return nil end
  end
  return went_back()
end
-- the reply of a script with the write counter before it, {W, r} (an error reply as it is)
local function wrap(r)
  if type(r) == 'table' and r.err then return r end
  return {W, r}
end
-- (arithmetic on a numeric string converts it once; tonumber() converts it twice)
local function server_time()
  local t = redis.call('TIME')
  return t[1] + t[2] / 1e6
end
-- The script's clock. `nows` is "T" (the server's clock: every other time passed is an offset
-- from the caller's now) or the caller's absolute now (every time passed is absolute). Returns
-- the server's time, now as text, the function giving the time a passed value stands for (as
-- text, and as the number that text reads back as), and now as a number. A time made here is
-- printed with 17 significant digits, so its text reads back as the very number it was made
-- from: no text made here is converted back.
local function clock(nows)
  local T = server_time()
  if nows == 'T' then
    local text = fmt(T)
    return T, text, function(off)
      if off == '0.0' then return text, T end  -- T + 0.0 is T
      local t = T + off
      return fmt(t), t
    end, T
  end
  return T, nows, function(v) return v, v + 0 end, nows + 0
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
-- make `k` live at least `secs` seconds
local function extend(k, secs)
  local ms = redis.call('PTTL', k)
  if ms == -1 or (ms >= 0 and ms < secs * 1000) then redis.call('EXPIRE', k, secs) end
end
-- the key's ledger (see the module docstring); missing fields are false. `wmn` and `nxn` are
-- `wm` and `nx` as numbers, kept along with them (each text is converted once).
local function ledger_of(base, key)
  local v = redis.call('HMGET', base .. 't:' .. key, unpack(LEDGER))
  return {cur = v[1], total = v[2], last = v[3], live = (v[4] or 0) + 0, wm = v[5],
    gcu = (v[6] or 0) + 0, pur = v[7], nx = v[8], ul = v[9],
    wmn = v[5] and v[5] + 0, nxn = v[8] and v[8] + 0,
    old = v[1] and not v[4] and not v[5], stored = v}
end
-- a ledger from before the running total of live holds, with live holds it cannot count
local function outdated(base, key, L)
  return L.old and redis.call('EXISTS', base .. 'p:' .. key) == 1
end
-- write the ledger `L`: the fields that differ from what `ledger_of` read (every value moved
-- across redis.call costs; most writes change one or two fields)
local function put(base, key, L)
  local args, stored = {}, L.stored or {}
  for i, f in ipairs(LEDGER) do
    local v = L[f]
    if v then
      if type(v) == 'number' then v = int(v) end
      if v ~= stored[i] then
        args[#args + 1] = f
        args[#args + 1] = v
      end
    end
  end
  if #args > 0 then redis.call('HSET', base .. 't:' .. key, unpack(args)) end
end
-- Write the ledger `L`, then keep the key's structures alive: when one must outlive `secs`
-- more seconds of the server's time `T` and the ledger's TTL is too short, all of them get
-- twice that, together (so this happens about once a retention); else `made`, a structure
-- this script may have created, gets the ledger's TTL if it has none.
local function save(base, key, L, T, secs, made)
  local renew = L.gcu < T + secs
  if renew then L.gcu = math.ceil(T + 2 * secs) end
  put(base, key, L)
  if renew then
    for _, name in ipairs({'t:', 'x:', 'u:', 'c:'}) do
      redis.call('EXPIREAT', base .. name .. key, int(L.gcu))
    end
  elseif made then
    local k = base .. made .. key
    if redis.call('TTL', k) == -1 then redis.call('EXPIREAT', k, int(L.gcu)) end
  end
end
-- holds on the key but no ledger: its keys were lost
local function ledger_gone(base, key)
  return redis.call('EXISTS', base .. 'x:' .. key, base .. 'c:' .. key) > 0
end
-- the key's ledger for a read-only script, or (nil, the reply that ends it): the store lost
-- its holds, nothing was ever held on the key ({}), or the key is in an older layout
local function ledger_to_read(base, key, epoch)
  local stop = unarmed(base, epoch, false)
  if stop then return nil, stop end
  local L = ledger_of(base, key)
  if not L.cur then
    if ledger_gone(base, key) then return nil, lost_ledger() end
    return nil, {}
  end
  if outdated(base, key, L) then return nil, old_layout() end
  return L
end
local function member_held(m)
  return tonumber(string.match(m, '^(%d+) '))
end
-- whether a live hold expiring at `ean` (a number) is in the running total `L.live` (scored
-- above `L.wm`)
local function in_live(L, ean)
  return not L.wm or ean > L.wmn
end
-- a live hold expiring at `ea` (`ean` as a number) joins the running total, and `L.nx` stays
-- a lower bound of the expiries in it (`nx` missing: unknown)
local function join_live(L, ea, ean, held)
  if not in_live(L, ean) then return end
  L.live = L.live + held
  if L.nx and ean < L.nxn then L.nx, L.nxn = ea, ean end
end
-- Hold.counts summed over the live holds (the memory store's _Tally.counted, first half):
-- `L.live` brought from `L.wm` to `now`; the holds that expired meanwhile leave it, each once,
-- and `L.moved` says the ledger must be written. Before `L.nx` (no expiry in the total comes
-- sooner) nothing can have expired: no hold is read and nothing is written (the stored `live`
-- is still right as of the stored `wm`). A `now` before `L.wm` (a caller's clock stepped back)
-- adds back the holds that count again, without changing the ledger.
local function live_at(base, key, L, now, nows)
  local x = base .. 'x:' .. key
  if not L.wm or now > L.wmn then
    if L.wm and L.nx and now < L.nxn then
      L.wm, L.wmn = nows, now
      return L.live
    end
    local from = L.wm and ('(' .. L.wm) or '-inf'
    for _, m in ipairs(redis.call('ZRANGEBYSCORE', x, from, nows)) do
      L.live = L.live - member_held(m)
    end
    local next = redis.call('ZRANGEBYSCORE', x, '(' .. nows, '+inf', 'WITHSCORES',
      'LIMIT', '0', '1')
    L.wm, L.nx, L.moved = nows, next[2] or NONE, true
    L.wmn, L.nxn = now, L.nx + 0
    return L.live
  end
  local total = L.live
  if now < L.wmn then
    for _, m in ipairs(redis.call('ZRANGEBYSCORE', x, '(' .. nows, L.wm)) do
      total = total + member_held(m)
    end
  end
  return total
end
-- the commits after `since` (the memory store's _Tally.counted, second half): one seek;
-- nil when it reaches 2^53
local function committed_since(base, key, L, since)
  local first = redis.call('ZRANGEBYSCORE', base .. 'c:' .. key, '(' .. since, '+inf',
    'LIMIT', '0', '1')[1]
  if not first then return 0 end
  local run, held = string.match(first, '^(%d+) (%d+) ')
  local thi, tlo = split(L.total)
  local rhi, rlo = split(run)
  if thi - rhi > 90 then return nil end
  -- both terms are exact, so the difference is exact whenever it is below 2^53
  local window = (thi - rhi) * B + (tlo - rlo) + held
  if window >= LIMIT then return nil end
  return window
end
-- Hold.counts summed (the memory store's _Tally.counted): nil when it reaches 2^53
local function counted(base, key, L, now, nows, since)
  local window = committed_since(base, key, L, since)
  if not window then return nil end
  local total = live_at(base, key, L, now, nows) + window
  if total >= LIMIT then return nil end
  return total
end
-- a live hold `r` under `id` leaves its key's index and (if it is in it) running total
local function unlive(base, key, L, id, r)
  local removed = redis.call('ZREM', base .. 'x:' .. key, r[10] .. ' ' .. id)
  if removed == 1 and in_live(L, r[7] + 0) then
    L.live, L.moved = L.live - r[10], true
  end
  if r[5] == 'uncertain' then redis.call('ZREM', base .. 'u:' .. key, id) end
end
-- the memory store's _Ledger.add_commit, with _machine.commit_time: record the live hold `r`
-- under `id` as committed at `nows` (`now` as a number), or at the key's last commit when the
-- clock stepped back; `gc` is the record's ttl (text). Returns the recorded time, or false
-- (having written nothing) when the key's ledger is gone.
local function record_commit(base, id, rkey, r, T, nows, now, gc, server)
  local key = r[1]
  local L = ledger_of(base, key)
  if not L.total then return false end
  local at = nows
  if L.last and L.last + 0 > now then at = L.last end
  local run = add(L.total, r[10] + 0)
  L.cur, L.total, L.last = r[2], run, at
  redis.call('ZADD', base .. 'c:' .. key, at, run .. ' ' .. r[10] .. ' ' .. id)
  unlive(base, key, L, id, r)
  redis.call('HSET', rkey, 'st', 'committed', 'cm', at)
  -- on the server's clock a hold committed before its expiry has more than `gc` left already
  if not server or r[7] + 0 <= T then redis.call('EXPIRE', rkey, gc) end
  save(base, key, L, T, gc, 'c:')
  return at
end
-- the memory store's _forget: drop a live hold and every index entry of it
local function forget(base, id, rkey, r)
  local key = r[1]
  redis.call('DEL', rkey)
  local L = ledger_of(base, key)
  unlive(base, key, L, id, r)
  if L.cur and L.moved then redis.call('HSET', base .. 't:' .. key, 'live', int(L.live)) end
end
-- The memory store's _purge, off the hot path: only when due (`L.pur`), live holds whose
-- expiry is a retention ago and commits before the retention window, a bounded number per
-- call; then the next due time, when the oldest left passes the retention.
local function purge(base, key, L, now, retention)
  if L.pur and now < L.pur + 0 then return end
  local horizon = fmt(now - retention)
  local x, u, c = base .. 'x:' .. key, base .. 'u:' .. key, base .. 'c:' .. key
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', x, '-inf', horizon, 'LIMIT', '0', '64')) do
    local oid = string.match(m, '^%d+ (.*)$')
    local o = redis.call('HMGET', base .. 'r:' .. oid, 'k', 'st')
    if o[1] == key and (o[2] == 'pending' or o[2] == 'uncertain') then
      redis.call('DEL', base .. 'r:' .. oid)
    end
    -- scored a retention before now, so below `L.wm`: not in the running total
    redis.call('ZREM', x, m)
    redis.call('ZREM', u, oid)
  end
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', c, '-inf', horizon, 'LIMIT', '0', '64')) do
    local oid = string.match(member, '^%d+ %d+ (.*)$')
    local o = redis.call('HMGET', base .. 'r:' .. oid, 'k', 'st')
    if o[1] == key and o[2] == 'committed' then redis.call('DEL', base .. 'r:' .. oid) end
    redis.call('ZREM', c, member)
  end
  local oldest = now
  for _, k in ipairs({x, c}) do
    local first = redis.call('ZRANGE', k, '0', '0', 'WITHSCORES')
    if first[2] and tonumber(first[2]) < oldest then oldest = tonumber(first[2]) end
  end
  L.pur, L.moved = fmt(oldest + retention), true
end
"""

_BODIES: dict[str, str] = {}  # each script's text -> its body (the text after its helpers)
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAMED = re.compile(r"^local (?:function )?([A-Za-z_][A-Za-z0-9_]*)(?: =|\()")


def _parts(common: str) -> list[tuple[str, str]]:
    """Split *common* into its top-level definitions: (the name each defines, its text).

    Each part is one ``local NAME = ...`` or ``local function NAME(...)`` at the start of a
    line, with the comment lines just before it.
    """
    parts: list[tuple[str, str]] = []
    lines: list[str] = []
    name = ""
    for line in common.splitlines(keepends=True):
        top = bool(line.strip()) and not line[0].isspace()
        if top and not line.startswith(("local ", "--", "end")):  # pragma: no cover
            # a statement here would be kept or left out with whichever part it follows
            raise ValueError(f"_COMMON holds only definitions, not {line!r}")
        if name and (line.startswith(("local ", "--"))):
            parts.append((name, "".join(lines)))
            lines, name = [], ""
        if line.startswith("local "):
            found = _NAMED.match(line)
            if found is None:  # pragma: no cover - a definition this splitter cannot name
                raise ValueError(f"cannot tell what this line of _COMMON defines: {line!r}")
            name = found.group(1)
        lines.append(line)
    if name:
        parts.append((name, "".join(lines)))
    elif "".join(lines).strip():  # pragma: no cover - text after the last definition
        raise ValueError("_COMMON must end with a definition")
    return parts


def _words(text: str) -> set[str]:
    return set(_WORD.findall(re.sub(r"--[^\n]*", "", text)))


def _script(body: str) -> str:
    """Return *body* after the definitions of ``_COMMON`` it uses, directly or not.

    Redis runs a script's whole text at every call, so every helper defined costs (a closure
    made, then collected) even when unused: each script carries only the ones it names. The
    body runs as a function whose reply goes out through ``wrap`` (with the write counter). A
    helper left out by mistake cannot happen: Lua finds a local only by its name in the text.
    """
    parts = _parts(_COMMON)
    wanted = _words(body) | {"wrap"}
    kept: set[str] = set()
    grew = True
    while grew:
        grew = False
        for name, text in parts:
            if name in wanted and name not in kept:
                kept.add(name)
                wanted |= _words(text)
                grew = True
    script = "".join(text for name, text in parts if name in kept) + (
        f"local function body(KEYS, ARGV)\n{body}end\nreturn wrap(body(KEYS, ARGV))\n")
    _BODIES[script] = body
    return script


# KEYS[1] the hold's record. ARGV: 1 prefix, 2 marks, 3 payout id, 4 key, 5 currency, 6 owner,
# 7 the numbers, space-separated (fewer arguments cost the client less): amount, fee, held,
# created_at, expires_at, ceiling (minor, clamped to [-1, 2^53]), counted_since, now
# ("T" for the server's clock; the times before it are then offsets from the caller's now),
# retention (seconds), record ttl (seconds).
# Returns {status, counted, the existing hold or {} or (held) the times stored {ca, ea},
# lapsed holds {{id, fields...}, ...}, (held) the expired pending hold replaced or {}}; when
# no hold lapsed and none was replaced, "held <counted> <ca> <ea>" or "over_ceiling <counted>"
# instead (one string).
TRY_HOLD = _script(r"""
local base, epoch, id, key, cur, owner = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local stop = unarmed(base, epoch, true)
if stop then return stop end
local amt, fee, held, ca, ea, ceiling, since, nows, retention, life = string.match(ARGV[7],
  '^(%S+) (%S+) (%S+) (%S+) (%S+) (%S+) (%S+) (%S+) (%S+) (%S+)$')
local T, at, now, ean
T, nows, at, now = clock(nows)
ca = at(ca)
ea, ean = at(ea)
since = at(since)
local heldn = held + 0
local L = ledger_of(base, key)
-- _machine.admit, first: a key holds one currency
if L.cur and L.cur ~= cur then
  return redis.error_reply('PAYOUT_GUARD_CURRENCY ' .. L.cur)
end
if not L.cur and ledger_gone(base, key) then return lost_ledger() end
if outdated(base, key, L) then return old_layout() end
local total = counted(base, key, L, now, nows, since)
if not total then return too_large() end
-- a new payout id (the usual case) costs one EXISTS, not a read of every field
local rec = nil
if redis.call('EXISTS', KEYS[1]) == 1 then rec = record(KEYS[1]) end
local status = 'held'
-- _machine.admit, then: any hold but an expired pending one (Hold.expired) is a duplicate;
-- then the ceiling
if rec and not (rec[5] == 'pending' and tonumber(rec[7]) <= now) then
  status = 'duplicate'
else
  local after = total + heldn
  ceiling = ceiling + 0
  if after >= LIMIT and ceiling >= LIMIT then return too_large() end
  if after > ceiling then status = 'over_ceiling' end
end
-- Every check is done: the writes start here.
-- The memory store's _Ledger.lapse: uncertain holds whose uncertain_ttl ended, each reported
-- once (taken out of the u: index as they are reported); looked for only from `L.ul` on (a
-- lower bound of the uncertain expiries not reported yet).
local lapsed = {}
local u = base .. 'u:' .. key
if L.ul and now >= L.ul + 0 then
  for _, uid in ipairs(redis.call('ZRANGEBYSCORE', u, '-inf', nows)) do
    local r = record(base .. 'r:' .. uid)
    if r and r[1] == key and r[5] == 'uncertain' and tonumber(r[7]) <= now then
      local row = reply(r)
      table.insert(row, 1, uid)
      table.insert(lapsed, row)
    end
    redis.call('ZREM', u, uid)
  end
  L.ul, L.moved = redis.call('ZRANGE', u, '0', '0', 'WITHSCORES')[2] or NONE, true
end
if status ~= 'held' then
  if L.moved then put(base, key, L) end
  if status == 'duplicate' then return {status, total, reply(rec), lapsed} end
  if #lapsed == 0 then return 'over_ceiling ' .. int(total) end
  return {status, total, {}, lapsed}
end
-- try_hold in the memory store: an expired pending hold under the same id leaves its key
if rec then
  if rec[1] == key then
    unlive(base, key, L, id, rec)
  else
    local other = ledger_of(base, rec[1])
    unlive(base, rec[1], other, id, rec)
    if other.cur and other.moved then put(base, rec[1], other) end
  end
end
purge(base, key, L, now, retention)
redis.call('HSET', KEYS[1], 'k', key, 'cur', cur, 'amt', amt, 'fee', fee,
  'held', held, 'st', 'pending', 'ca', ca, 'ea', ea, 'cm', '', 'o', owner)
redis.call('EXPIRE', KEYS[1], life)
redis.call('ZADD', base .. 'x:' .. key, ea, held .. ' ' .. id)
join_live(L, ea, ean, heldn)
if not L.cur then L.cur, L.total = cur, ZERO end
save(base, key, L, T, life, 'x:')
-- the usual answer as one string: far cheaper for a client to read than nested arrays
if not rec and #lapsed == 0 then return 'held ' .. int(total) .. ' ' .. ca .. ' ' .. ea end
local replaced = {}
if rec then replaced = reply(rec) end
return {'held', total, {ca, ea}, lapsed, replaced}
""")

# KEYS[1] the hold's record. ARGV: 1 prefix, 2 marks, 3 payout id, 4 owner, 5 now ("T": the
# server's), 6 record ttl. Returns nil or the hold as one string "cur amt fee st ca ea cm k"
# (the key last: it is the one field that may hold spaces; the owner is the caller's own).
COMMIT = _script(r"""
local base, id = ARGV[1], ARGV[3]
local stop = unarmed(base, ARGV[2], true)
if stop then return stop end
local r = record(KEYS[1])
-- _machine.to_commit: only the owner's hold; a committed one stays as it is
if not owned(r, ARGV[4]) then return nil end
if r[5] ~= 'committed' then
  local T, nows, _, now = clock(ARGV[5])
  local at = record_commit(base, id, KEYS[1], r, T, nows, now, ARGV[6], ARGV[5] == 'T')
  if not at then return lost_ledger() end
  r[5], r[8] = 'committed', at
end
return r[2] .. ' ' .. r[3] .. ' ' .. r[4] .. ' ' .. r[5] .. ' ' .. r[6] .. ' ' .. r[7] .. ' '
  .. (r[8] or '') .. ' ' .. r[1]
""")

# KEYS[1] the hold's record. ARGV: 1 prefix, 2 marks, 3 payout id, 4 owner.
# Returns 1 if the owner's pending hold went.
RELEASE = _script(r"""
local base, id = ARGV[1], ARGV[3]
local stop = unarmed(base, ARGV[2], true)
if stop then return stop end
local r = record(KEYS[1])
-- InMemoryReservations.release: only the owner's pending hold
if not r or r[5] ~= 'pending' or not owned(r, ARGV[4]) then return 0 end
forget(base, id, KEYS[1], r)
return 1
""")

# KEYS[1] the hold's record. ARGV: 1 prefix, 2 marks, 3 payout id, 4 owner, 5 now ("T": the
# server's), 6 until (an offset from the caller's now on the server's clock), 7 ttl (seconds)
# of the record and its key's structures. Returns nil or {k, cur, amt, fee, st, ca, ea, cm, o}.
MARK_UNCERTAIN = _script(r"""
local base, id = ARGV[1], ARGV[3]
local stop = unarmed(base, ARGV[2], true)
if stop then return stop end
local r = record(KEYS[1])
-- _machine.to_uncertain: only the owner's hold, and only a pending one changes
if not owned(r, ARGV[4]) then return nil end
if r[5] == 'pending' then
  local T, _, at = clock(ARGV[5])
  local untl, untln = at(ARGV[6])
  local key, life = r[1], tonumber(ARGV[7])
  local L = ledger_of(base, key)
  unlive(base, key, L, id, r)
  redis.call('HSET', KEYS[1], 'st', 'uncertain', 'ea', untl)
  extend(KEYS[1], life)
  redis.call('ZADD', base .. 'x:' .. key, untl, r[10] .. ' ' .. id)
  join_live(L, untl, untln, r[10])
  redis.call('ZADD', base .. 'u:' .. key, untl, id)
  if not L.ul or tonumber(untl) < tonumber(L.ul) then L.ul = untl end
  if L.cur then save(base, key, L, T, life, 'u:') end
  r[5], r[7] = 'uncertain', untl
end
return reply(r)
""")

# KEYS[1] the hold's record. ARGV: 1 prefix, 2 marks, 3 payout id, 4 sent ("1" or "0"),
# 5 now ("T": the server's), 6 record ttl. Returns nil or the hold as found.
RESOLVE = _script(r"""
local base, id = ARGV[1], ARGV[3]
local stop = unarmed(base, ARGV[2], true)
if stop then return stop end
local r = record(KEYS[1])
-- InMemoryReservations.resolve: only an uncertain hold ends; sent -> committed at now
-- (_machine.commit_time, as for a commit), not sent -> dropped
if not r then return nil end
local found = reply(r)
if r[5] ~= 'uncertain' then return found end
if ARGV[4] == '1' then
  local T, nows, _, now = clock(ARGV[5])
  if not record_commit(base, id, KEYS[1], r, T, nows, now, ARGV[6], ARGV[5] == 'T') then
    return lost_ledger()
  end
else
  forget(base, id, KEYS[1], r)
end
return found
""")

# KEYS[1] a key's ledger. ARGV: 1 prefix, 2 marks, 3 key, 4 ledger ttl (seconds).
# Run by rearm() for every key with holds: moves live holds kept as an older version did (a
# p: hash of id -> "<held> <expires_at>") into x:, then rebuilds a missing ledger from the
# holds kept (the live ones' total, the commits' last running total and time) and the currency
# of any hold still recorded on the key; when no hold says which currency, the key's leftovers
# are forgotten (nothing can count them). Returns "kept", "migrated", "rebuilt" or "forgotten".
REPAIR = _script(r"""
local base, key = ARGV[1], ARGV[3]
local stop = unarmed(base, ARGV[2], true)
if stop then return stop end
local c, x, p = base .. 'c:' .. key, base .. 'x:' .. key, base .. 'p:' .. key
local moved = redis.call('EXISTS', p) == 1
if moved then
  local old = redis.call('HGETALL', p)
  for i = 1, #old, 2 do
    -- only holds still live on this key (a commit since then left its entry behind)
    local o = redis.call('HMGET', base .. 'r:' .. old[i], 'k', 'st')
    if o[1] == key and (o[2] == 'pending' or o[2] == 'uncertain') then
      local held, ea = string.match(old[i + 1], '^(%d+) (%S+)$')
      redis.call('ZADD', x, ea, held .. ' ' .. old[i])
    end
  end
  redis.call('DEL', p)
end
local L = ledger_of(base, key)
if L.cur then
  if not moved and not L.old then return 'kept' end
  -- no `wm`: every live hold is in the running total until the next count
  local live = 0
  for _, member in ipairs(redis.call('ZRANGE', x, 0, -1)) do live = live + member_held(member) end
  redis.call('HDEL', KEYS[1], 'wm', 'gcu', 'nx', 'ul')
  redis.call('HSET', KEYS[1], 'live', int(live),
    'ul', redis.call('ZRANGE', base .. 'u:' .. key, 0, 0, 'WITHSCORES')[2] or NONE)
  return 'migrated'
end
local live, ids = 0, {}
for _, member in ipairs(redis.call('ZRANGE', x, 0, -1)) do
  live = live + member_held(member)
  table.insert(ids, string.match(member, '^%d+ (.*)$'))
end
for _, member in ipairs(redis.call('ZRANGE', c, 0, 63)) do
  table.insert(ids, string.match(member, '^%d+ %d+ (.*)$'))
end
local cur = nil
for _, id in ipairs(ids) do
  local o = redis.call('HMGET', base .. 'r:' .. id, 'k', 'cur')
  if o[1] == key then cur = o[2]; break end
end
if not cur then
  redis.call('DEL', c, x, base .. 'u:' .. key)
  return 'forgotten'
end
-- no `wm`: every live hold is in the running total until the next count
local ul = redis.call('ZRANGE', base .. 'u:' .. key, 0, 0, 'WITHSCORES')[2] or NONE
local last = redis.call('ZRANGE', c, -1, -1, 'WITHSCORES')
if last[1] then
  redis.call('HSET', KEYS[1], 'cur', cur, 'total', string.match(last[1], '^(%d+) '),
    'last', last[2], 'live', int(live), 'ul', ul)
else
  redis.call('HSET', KEYS[1], 'cur', cur, 'total', ZERO, 'live', int(live), 'ul', ul)
end
-- the ledger outlives the rest again (and `gcu` unset: the next write renews them all)
local secs = tonumber(ARGV[4])
for _, name in ipairs({'x:', 'u:', 'c:'}) do
  local ms = redis.call('PTTL', base .. name .. key)
  if ms > secs * 1000 then secs = math.ceil(ms / 1000) end
end
redis.call('EXPIRE', KEYS[1], secs)
return 'rebuilt'
""")

# KEYS[1] the hold's record. ARGV: 1 prefix, 2 marks.
# Returns nil or {k, cur, amt, fee, st, ca, ea, cm, o}.
GET = _script(r"""
local stop = unarmed(ARGV[1], ARGV[2], false)
if stop then return stop end
local r = record(KEYS[1])
if not r then return nil end
return reply(r)
""")

# KEYS[1] the key's ledger. ARGV: 1 prefix, 2 marks, 3 key, 4 counted_since, 5 now ("T": the
# server's; counted_since is then an offset from the caller's now).
# Returns {currency, counted} or {} when nothing was ever held on the key.
RESERVED = _script(r"""
local base, key = ARGV[1], ARGV[3]
local L, ends = ledger_to_read(base, key, ARGV[2])
if not L then return ends end
local _, nows, at, now = clock(ARGV[5])
local total = counted(base, key, L, now, nows, (at(ARGV[4])))
if not total then return too_large() end
-- the expired holds taken out stay out: the next count starts from here
if L.moved then put(base, key, L) end
return {L.cur, total}
""")

# KEYS[1] the key's ledger. ARGV: 1 prefix, 2 marks, 3 key, 4 since, 5 now ("T": the
# server's; since is then an offset from the caller's now).
# Returns {currency, committed} or {} when nothing was ever held on the key.
COMMITTED = _script(r"""
local base, key = ARGV[1], ARGV[3]
local L, ends = ledger_to_read(base, key, ARGV[2])
if not L then return ends end
local _, _, at = clock(ARGV[5])
local total = committed_since(base, key, L, (at(ARGV[4])))
if not total then return too_large() end
return {L.cur, total}
""")

# KEYS[1] the key's ledger. ARGV: 1 prefix, 2 marks, 3 key, 4 counted_since, 5 now ("T": the
# server's), 6 limit. Returns a JSON list of [payout_id, k, cur, amt, fee, st, ca, ea, cm, o]
# of the holds that count (Hold.counts).
HOLDS = _script(r"""
local base, key = ARGV[1], ARGV[3]
local stop = unarmed(base, ARGV[2], false)
if stop then return stop end
local _, nows, at = clock(ARGV[5])
local since = at(ARGV[4])
local limit = tonumber(ARGV[6])
local page = {}
if limit >= 0 then page = {'LIMIT', 0, limit} end
local ids = {}
-- a bounded sample when asked: live holds first, then the earliest commits
for _, m in ipairs(redis.call('ZRANGEBYSCORE', base .. 'x:' .. key, '(' .. nows, '+inf',
    unpack(page))) do
  table.insert(ids, string.match(m, '^%d+ (.*)$'))
end
for _, m in ipairs(redis.call('ZRANGEBYSCORE', base .. 'c:' .. key, '(' .. since, '+inf',
    unpack(page))) do
  table.insert(ids, string.match(m, '^%d+ %d+ (.*)$'))
end
local found = {}
for n, id in ipairs(ids) do
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
""")

# KEYS the records of the holds to read (at most a few hundred a call: a listing never holds
# Redis long). ARGV: 1 prefix, 2 marks, 3 now ("T": the server's). Returns a JSON list of
# [payout_id, k, cur, amt, fee, st, ca, ea, cm, ""] (no owner token) of the holds found, but a
# pending hold past its ttl (Hold.expired): list_holds, for operators.
RECORDS = _script(r"""
local base = ARGV[1]
local stop = unarmed(base, ARGV[2], false)
if stop then return stop end
local _, nows = clock(ARGV[3])
local now = tonumber(nows)
local skip = #base + 3
local found = {}
for _, name in ipairs(KEYS) do
  local r = record(name)
  if r and not (r[5] == 'pending' and tonumber(r[7]) <= now) then
    local row = reply(r)
    row[9] = ''
    table.insert(row, 1, string.sub(name, skip))
    table.insert(found, row)
  end
end
return cjson.encode(found)
""")

_FLEET_CHECK = r"""
local stop = unarmed(ARGV[1], ARGV[2], false)
if stop then return stop end
"""


def _fleet(body: str) -> str:
    """Return the fleet script *body* after the check of the store's marks."""
    return _script(_FLEET_CHECK + body)


# KEYS[1] the shared value, KEYS[2] its lease. ARGV: 1 prefix, 2 marks, 3 owner,
# 4 lease ttl (ms), 5 fresh_for (seconds). Returns {found (0/1), payload, age, leads (0/1)}.
READ_SHARED = _fleet(r"""
local T = server_time()
local v = redis.call('HMGET', KEYS[1], 'v', 'at')
local age = nil
if v[1] then age = math.max(0, T - tonumber(v[2])) end
local holder = redis.call('GET', KEYS[2])
-- FleetStore.read_shared: no value, or one fresh_for old, and no other owner's lease: lead
if (not v[1] or age >= tonumber(ARGV[5])) and not holder then
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
  holder = ARGV[3]
end
local leads = 0
if holder == ARGV[3] then leads = 1 end
if not v[1] then return {0, '', '', leads} end
return {1, v[1], fmt(age), leads}
""")

# KEYS[1] the shared value, KEYS[2] its lease. ARGV: 1 prefix, 2 marks, 3 owner, 4 payload,
# 5 keep (ms).
WRITE_SHARED = _fleet(r"""
redis.call('HSET', KEYS[1], 'v', ARGV[4], 'at', fmt(server_time()))
redis.call('PEXPIRE', KEYS[1], ARGV[5])
if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
return 1
""")

# KEYS[1] the lease. ARGV: 1 prefix, 2 marks, 3 owner.
DROP_LEASE = _fleet(r"""
if redis.call('GET', KEYS[1]) == ARGV[3] then redis.call('DEL', KEYS[1]) end
return 1
""")

# KEYS[1] the budget's tat. ARGV: 1 prefix, 2 marks, 3 per_minute.
# Returns the seconds to wait as text ("0": one request taken).
SPEND = _fleet(r"""
-- _protocol.gcra, line for line; the stored tat expires once it has passed (None again)
local now = server_time()
local per_minute = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]))
local burst = math.max(1, math.floor(per_minute / 10))
local interval = 60.0 / (per_minute - burst + 1)
local tolerance = (burst - 1) * interval
local start = tat
if tat == nil or tat < now then start = now end
if start - now > tolerance then return fmt(start - tolerance - now) end
redis.call('SET', KEYS[1], fmt(start + interval), 'PX',
  string.format('%d', math.ceil((start + interval - now) * 1000) + 1000))
return '0'
""")


# Functions flags (Redis 7): without one, a function is refused whole at maxmemory
# (noeviction). What ends a hold must still run there, or a payout whose money left could not
# be committed ("allow-oom": each adds little, a commit's index entry, or frees memory); so
# must counting (its only write is the ledger's fields, in place) and the reads ("no-writes":
# they cannot write at all). What adds a hold, or the fleet's values, is refused: the guard
# denies. Scripts run by EVALSHA carry no flags: there a write that needs memory fails.
_FLAGS = {
    "commit": "allow-oom", "release": "allow-oom", "mark_uncertain": "allow-oom",
    "resolve": "allow-oom", "reserved": "allow-oom", "get": "no-writes", "holds": "no-writes",
    "records": "no-writes", "committed": "no-writes",
}

_SCRIPTS = {
    "try_hold": TRY_HOLD, "commit": COMMIT, "release": RELEASE,
    "mark_uncertain": MARK_UNCERTAIN, "resolve": RESOLVE, "get": GET, "reserved": RESERVED,
    "holds": HOLDS, "repair": REPAIR, "records": RECORDS, "committed": COMMITTED,
    "read_shared": READ_SHARED, "write_shared": WRITE_SHARED, "drop_lease": DROP_LEASE,
    "spend": SPEND,
}


def _flags(name: str) -> str:
    """Return the Lua list of the Functions flags of script *name* (see ``_FLAGS``)."""
    flag = _FLAGS.get(name)
    return "" if flag is None else f"'{flag}'"


def _library() -> tuple[str, str, dict[str, str]]:
    """Return every script as one Redis Functions library: (its name, its text, name -> function).

    A script run by ``EVALSHA`` defines its helpers again at every call (a closure each, then
    collected): about a fifth of the server's time on a hold. A library loaded once
    (``FUNCTION LOAD``, Redis 7) defines them once; ``FCALL`` then runs only the body. Each
    function carries its flags (``_FLAGS``), so what ends a hold still runs at maxmemory. The
    bodies are the scripts' own, so both ways run the same steps. The library and its functions
    are named after a digest of the text, so stores of different versions sharing one Redis
    each call their own (a library stays on the server, a few kilobytes, until ``FUNCTION
    DELETE``).
    """
    calls = "".join(
        f"local function run_{name}(KEYS, ARGV)\n{_BODIES[text]}end\n"
        f"redis.register_function{{function_name='{{lib}}_{name}', callback=function(KEYS, ARGV)"
        f" return wrap(run_{name}(KEYS, ARGV)) end, flags={{{_flags(name)}}}}}\n"
        for name, text in _SCRIPTS.items()
    )
    # Loading runs the definitions only: nothing of _COMMON may call a library then.
    common = _COMMON
    digest = hashlib.sha1((common + calls).encode()).hexdigest()[:16]  # noqa: S324 - a name
    lib = f"payout_guard_{digest}"
    text = f"#!lua name={lib}\n{common}{calls.replace('{lib}', lib)}"
    return lib, text, {name: f"{lib}_{name}" for name in _SCRIPTS}


LIBRARY_NAME, LIBRARY, FUNCTIONS = _library()

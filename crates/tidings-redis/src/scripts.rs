//! The Lua scripts. Each runs atomically inside Redis (nothing else runs
//! between its first and last command), which is what makes seq assignment,
//! idempotency and cursor checks safe with several servers on one stream.
//!
//! Numbers: Redis' Lua is 5.1, whose numbers are doubles, exact up to 2^53;
//! ids are always formatted with `%d`, never `tostring` (which would switch
//! to exponent notation above 1e14).

use std::sync::LazyLock;

use redis::Script;

/// Append a group: one or more appends (each an all-or-nothing batch) of
/// this process, committed in one atomic step (group commit, see
/// `log/append.rs`).
///
/// `KEYS[1]` stream, `KEYS[2]` counter, `KEYS[3..]` the idempotency keys of
/// the whole group (each once). `ARGV[1]` idempotency window in ms,
/// `ARGV[2]` max count (`""` = none), `ARGV[3]` the floor (the highest seq
/// the caller already saw committed), `ARGV[4]` the number of appends; then
/// per append: its expected last seq (`""` = none) and its number of
/// events; then per event: the index in `KEYS` of its idempotency key (0 =
/// none), the number of field/value items that follow, and those items.
///
/// Phase 1 only reads: the counter and every idempotency key, deciding the
/// fate of each append in order. An append whose expectation differs from
/// the running last seq (the counter plus what the appends before it in the
/// group take) is refused whole and takes nothing. Phase 2 writes: one
/// `XADD <seq>-0` per fresh event (its `at` field first, then its items straight from
/// `ARGV`), one `INCRBY` of the counter, the
/// idempotency keys (`SET .. PX window`, value = the committed entry as
/// JSON so a duplicate can be answered even after retention removed the
/// original), then the count trim. Every entry also gets an `at` field: the
/// commit time, in µs, from Redis' own clock (`TIME`, one reading per
/// script), which age retention measures (Redis ≥ 5 replicates scripts by
/// effects, so a script may read the clock before writing). The first
/// write is the first `XADD`; it is refused (before anything was written)
/// if the stream key holds another type.
///
/// Reply: `{2, last}` when the counter is below the floor (Redis lost
/// acknowledged writes: appending would hand out their seqs again, so
/// nothing is written); otherwise `{1, new_last, a1.., .., am..}`, flat,
/// where `ai..` is `0, running` for an append refused by its expectation,
/// else `1, r1, .., rn` (the caller knows each append's `n`), `rj` being
/// the seq of a fresh event, `-seq` for a repeat of a key first used
/// earlier in the group, or the stored JSON of the original for a key seen
/// within the window. Flat because Redis converts every nested Lua table
/// of a reply on its own: with one table per append, the reply alone cost
/// about a tenth of a call of 16 single appends. For the same reason the
/// writes are kept in four flat arrays, not a table per event.
pub(crate) static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local stream, counter = KEYS[1], KEYS[2]
local last = tonumber(redis.call('GET', counter) or '0')
if tonumber(ARGV[3]) > last then
  return {2, last}
end
local running = last
local pos = 5
local seen = {}
local wseq, wbase, wcnt, wkey, nw = {}, {}, {}, {}, 0
local reply, r = {1, 0}, 2
for a = 1, tonumber(ARGV[4]) do
  local expected = ARGV[pos]
  local n = tonumber(ARGV[pos + 1])
  pos = pos + 2
  if expected ~= '' and tonumber(expected) ~= running then
    for i = 1, n do pos = pos + 2 + tonumber(ARGV[pos + 1]) end
    reply[r + 1] = 0
    reply[r + 2] = running
    r = r + 2
  else
    r = r + 1
    reply[r] = 1
    for i = 1, n do
      local kidx = tonumber(ARGV[pos])
      local cnt = tonumber(ARGV[pos + 1])
      local base = pos + 2
      pos = base + cnt
      local dup = nil
      if kidx > 0 then
        local k = KEYS[kidx]
        if seen[k] then
          dup = -seen[k]
        else
          dup = redis.call('GET', k)
        end
      end
      r = r + 1
      if dup then
        reply[r] = dup
      else
        running = running + 1
        reply[r] = running
        nw = nw + 1
        wseq[nw], wbase[nw], wcnt[nw], wkey[nw] = running, base, cnt, kidx
        if kidx > 0 then seen[KEYS[kidx]] = running end
      end
    end
  end
end
if nw > 0 then
  local clock = redis.call('TIME')
  local at = string.format('%d', tonumber(clock[1]) * 1000000 + tonumber(clock[2]))
  for w = 1, nw do
    local base = wbase[w]
    redis.call('XADD', stream, string.format('%d-0', wseq[w]), 'at', at,
      unpack(ARGV, base, base + wcnt[w] - 1))
  end
  redis.call('INCRBY', counter, nw)
  local window = ARGV[1]
  for w = 1, nw do
    local kidx = wkey[w]
    if kidx > 0 then
      local base = wbase[w]
      local entry = {string.format('%d', wseq[w])}
      for j = 0, wcnt[w] - 1 do entry[j + 2] = ARGV[base + j] end
      redis.call('SET', KEYS[kidx], cjson.encode(entry), 'PX', window)
    end
  end
  if ARGV[2] ~= '' then
    redis.call('XTRIM', stream, 'MAXLEN', '=', ARGV[2])
  end
end
reply[2] = running
return reply
"#,
    )
});

/// Read a page: `KEYS[1]` stream, `KEYS[2]` counter, `ARGV[1]` after,
/// `ARGV[2]` limit. Reply `{last, entries}` with the entries of `XRANGE
/// (after-0 + COUNT limit`, read in the same atomic step as the counter.
pub(crate) static READ: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[1]) >= last or tonumber(ARGV[2]) <= 0 then
  return {last, {}}
end
return {last, redis.call('XRANGE', KEYS[1], '(' .. ARGV[1] .. '-0', '+', 'COUNT', ARGV[2])}
"#,
    )
});

/// Bounds: `KEYS[1]` stream, `KEYS[2]` counter. Reply `{last, first_id}`,
/// `first_id` being `false` (nil) when the stream holds nothing.
pub(crate) static BOUNDS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
if first then return {last, first[1]} end
return {last}
"#,
    )
});

/// Commit a cursor: `KEYS[1]` cursors hash, `KEYS[2]` counter, `ARGV[1]`
/// consumer, `ARGV[2]` seq. Reply `{1}` when stored, `{0, last}` when `seq`
/// is beyond the counter (nothing stored).
pub(crate) static COMMIT_CURSOR: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[2]) > last then return {0, last} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return {1}
"#,
    )
});

/// Define a consumer unless it is defined: `KEYS[1]` consumers hash,
/// `ARGV[1]` name, `ARGV[2]` spec. Reply: the stored spec (the first
/// definition wins).
pub(crate) static DEFINE_CONSUMER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
return redis.call('HGET', KEYS[1], ARGV[1])
"#,
    )
});

/// Delete a consumer: `KEYS[1]` consumers hash, `KEYS[2]` cursors hash,
/// `ARGV[1]` name. Reply: how many of the two fields existed.
pub(crate) static DELETE_CONSUMER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
return redis.call('HDEL', KEYS[1], ARGV[1]) + redis.call('HDEL', KEYS[2], ARGV[1])
"#,
    )
});

/// List consumers: `KEYS[1]` consumers hash, `KEYS[2]` cursors hash.
/// Reply: `{HGETALL consumers, HGETALL cursors}`, read together.
pub(crate) static CONSUMERS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])}
"#,
    )
});

/// One step of `seq_before`: `KEYS[1]` stream, `KEYS[2]` counter, `ARGV[1]`
/// time in µs, `ARGV[2]` exclusive start seq (`""` = from the first entry),
/// `ARGV[3]` entries to examine. Only the `time` field is looked at, and
/// only ids go back over the wire. Reply: `{1, id}` the first entry at or
/// after the time; `{2, last}` none is (the counter, read atomically with
/// the end of the stream); `{0, id}` not yet found, go on after `id`.
pub(crate) static SEQ_BEFORE_STEP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = tonumber(ARGV[1])
local count = tonumber(ARGV[3])
local start = '-'
if ARGV[2] ~= '' then start = '(' .. ARGV[2] .. '-0' end
local entries = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', count)
for _, e in ipairs(entries) do
  local f = e[2]
  for j = 1, #f, 2 do
    if f[j] == 'time' then
      if tonumber(f[j + 1]) >= t then return {1, e[1]} end
      break
    end
  end
end
if #entries < count then
  return {2, tonumber(redis.call('GET', KEYS[2]) or '0')}
end
return {0, entries[#entries][1]}
"#,
    )
});

/// One step of age retention: `KEYS[1]` stream, `ARGV[1]` the maximum age
/// in µs, `ARGV[2]` most entries to examine. The cutoff is Redis' clock
/// (`TIME`) minus the age, the clock that stamped each entry's `at` (its
/// commit time); an entry without `at` (written before commit times were
/// stored) is judged by its `time`. Removes the run of entries at the
/// front of the stream committed before the cutoff (stopping at the first
/// younger one, so only the front is ever removed: readers see one hole,
/// reported as lag). Reply `{removed, more}`: `more` = 1 when the step
/// stopped only because it examined its maximum.
pub(crate) static PRUNE_AGE_STEP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local clock = redis.call('TIME')
local cutoff = tonumber(clock[1]) * 1000000 + tonumber(clock[2]) - tonumber(ARGV[1])
local max = tonumber(ARGV[2])
local entries = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', max)
local old = 0
for _, e in ipairs(entries) do
  local at, time = nil, nil
  local f = e[2]
  for j = 1, #f, 2 do
    if f[j] == 'at' then
      at = tonumber(f[j + 1])
    elseif f[j] == 'time' then
      time = tonumber(f[j + 1])
    end
  end
  local committed = at or time
  if committed and committed >= cutoff then break end
  old = old + 1
end
if old == 0 then return {0, 0} end
local minid
if old < #entries then
  minid = entries[old + 1][1]
else
  local s = tonumber(string.match(entries[old][1], '^(%d+)-'))
  minid = string.format('%d-0', s + 1)
end
local removed = redis.call('XTRIM', KEYS[1], 'MINID', '=', minid)
local more = 0
if old == max then more = 1 end
return {removed, more}
"#,
    )
});

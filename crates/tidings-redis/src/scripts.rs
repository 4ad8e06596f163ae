//! The Lua scripts. Each runs atomically inside Redis (nothing else runs
//! between its first and last command), which is what makes seq assignment,
//! idempotency and cursor checks safe with several servers on one stream.
//!
//! Numbers: Redis' Lua is 5.1, whose numbers are doubles, exact up to 2^53;
//! ids are always formatted with `%d`, never `tostring` (which would switch
//! to exponent notation above 1e14).

use std::sync::LazyLock;

use redis::{Script, ScriptInvocation};

use crate::log::KeyLayout;

/// `script` invoked with the keys every script on the stream takes first,
/// in this order: `KEYS[1]` the stream, `KEYS[2]` the counter, `KEYS[3]`
/// the kept floor.
pub(crate) fn on_stream<'a>(script: &'a Script, keys: &KeyLayout) -> ScriptInvocation<'a> {
    let mut inv = script.prepare_invoke();
    inv.key(&keys.stream).key(&keys.counter).key(&keys.first);
    inv
}

/// Helpers the scripts that read or trim the stream share (prepended to
/// them), so the entry layout (see `codec.rs`) and count retention are
/// written once.
const PRELUDE: &str = r#"
local function fmt(n) return string.format('%d', n) end
-- The seq an entry id names: its last event's.
local function id_seq(id) return tonumber(string.match(id, '^(%d+)')) end
-- The events in an entry, by its fields: a group entry is 'at', at, then
-- 'e', record per event; anything else is a single entry.
local function entry_len(f)
  if f[3] == 'e' then return (#f - 2) / 2 end
  return 1
end
local function entry_first(e) return id_seq(e[1]) - entry_len(e[2]) + 1 end
-- A single entry's event time (its 'time' field, µs), nil without one.
local function single_time(f)
  for j = 1, #f, 2 do
    if f[j] == 'time' then return tonumber(f[j + 1]) end
  end
  return nil
end
-- The first seq count retention keeps (1 when it never trimmed).
local function kept_from(first_key)
  return tonumber(redis.call('GET', first_key) or '1')
end
-- The first seq readable: the first entry's first event, not below what
-- count retention keeps; last + 1 when the stream is empty.
local function first_seq(stream, first_key, last)
  local e = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
  if not e then return last + 1 end
  return math.max(entry_first(e), kept_from(first_key))
end
-- Count retention: keep the newest max seqs up to last. Raises the kept
-- floor and removes the entries wholly below it; an entry straddling it
-- stays, its older events hidden by the floor.
local function trim_count(stream, first_key, last, max)
  local keep = last - max + 1
  if keep > kept_from(first_key) then
    redis.call('SET', first_key, fmt(keep))
    redis.call('XTRIM', stream, 'MINID', '=', fmt(keep) .. '-0')
  end
end
"#;

/// How both append scripts write a group's fresh events (prepended to
/// them), so the entry layout is written once: `write_entries(stream,
/// last, n, per, rec)` reads Redis' clock once and writes the `n` records
/// `rec(1) .. rec(n)` as entries of at most `per` events, the entry holding
/// events `w ..= hi` getting the id `<last + hi>-0` and the fields `at
/// <µs> e <record> e <record> ..` (see `codec.rs`).
const WRITE_ENTRIES: &str = r#"
local function write_entries(stream, last, n, per, rec)
  local clock = redis.call('TIME')
  local at = string.format('%d', tonumber(clock[1]) * 1000000 + tonumber(clock[2]))
  local w = 1
  while w <= n do
    local hi = math.min(n, w + per - 1)
    local args, ai = {'XADD', stream, string.format('%d', last + hi) .. '-0', 'at', at}, 5
    for x = w, hi do
      args[ai + 1] = 'e'
      args[ai + 2] = rec(x)
      ai = ai + 2
    end
    redis.call(unpack(args))
    w = hi + 1
  end
end
"#;

/// A script made of [`PRELUDE`] and `body`.
fn with_prelude(body: &str) -> Script {
    Script::new(&[PRELUDE, body].concat())
}

/// Append a group: one or more appends (each an all-or-nothing batch) of
/// this process, committed in one atomic step (group commit, see
/// `log/append.rs`).
///
/// `KEYS[1]` stream, `KEYS[2]` counter, `KEYS[3]` the kept floor,
/// `KEYS[4..]` the idempotency keys of the whole group (each once).
/// `ARGV[1]` idempotency window in ms, `ARGV[2]` max count (`""` = none),
/// `ARGV[3]` the floor (the highest seq the caller already saw committed),
/// `ARGV[4]` the number of appends, `ARGV[5]` the most events per stream
/// entry; then per append: its expected last seq (`""` = none) and its
/// number of events; then per event: the index in `KEYS` of its
/// idempotency key (0 = none) and its record.
///
/// Phase 1 only reads: the counter and every idempotency key, deciding the
/// fate of each append in order. An append whose expectation differs from
/// the running last seq (the counter plus what the appends before it in the
/// group take) is refused whole and takes nothing. Phase 2 writes: the
/// fresh events as group entries (one `XADD <last seq>-0 at <t> e <record>
/// e <record> ..` per [`EVENTS_PER_ENTRY`](crate::codec::EVENTS_PER_ENTRY)
/// events), one `INCRBY` of the counter, the idempotency keys (`SET .. PX
/// window`, value `<seq> <record>`, so a duplicate can be answered even
/// after retention removed the original), then count retention. `at` is
/// the commit time, in µs, from Redis' own clock (`TIME`, one reading per
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
/// earlier in the group, or the stored `<seq> <record>` of the original
/// for a key seen within the window. Flat because Redis converts every
/// nested Lua table of a reply on its own.
pub(crate) static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        &[
            PRELUDE,
            WRITE_ENTRIES,
            r#"
local stream, counter, first_key = KEYS[1], KEYS[2], KEYS[3]
local last = tonumber(redis.call('GET', counter) or '0')
if tonumber(ARGV[3]) > last then
  return {2, last}
end
local running = last
local pos = 6
local seen = {}
local wrec, wkey, nw = {}, {}, 0
local reply, r = {1, 0}, 2
for a = 1, tonumber(ARGV[4]) do
  local expected = ARGV[pos]
  local n = tonumber(ARGV[pos + 1])
  pos = pos + 2
  if expected ~= '' and tonumber(expected) ~= running then
    pos = pos + 2 * n
    reply[r + 1] = 0
    reply[r + 2] = running
    r = r + 2
  else
    r = r + 1
    reply[r] = 1
    for i = 1, n do
      local kidx = tonumber(ARGV[pos])
      local rec = pos + 1
      pos = pos + 2
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
        wrec[nw], wkey[nw] = rec, kidx
        if kidx > 0 then seen[KEYS[kidx]] = running end
      end
    end
  end
end
if nw > 0 then
  write_entries(stream, last, nw, tonumber(ARGV[5]), function(x) return ARGV[wrec[x]] end)
  redis.call('INCRBY', counter, nw)
  local window = ARGV[1]
  for x = 1, nw do
    local kidx = wkey[x]
    if kidx > 0 then
      redis.call('SET', KEYS[kidx], fmt(last + x) .. ' ' .. ARGV[wrec[x]], 'PX', window)
    end
  end
  if ARGV[2] ~= '' then
    trim_count(stream, first_key, running, tonumber(ARGV[2]))
  end
end
reply[2] = running
return reply
"#,
        ]
        .concat(),
    )
});

/// Append a plain group: what [`APPEND`] does for a group with no
/// idempotency key, no expected last seq and no count retention, without
/// its per-append bookkeeping (measured inside Redis with `redis-benchmark`:
/// 28–35 µs against 38–41 µs for one event, 46–55 µs against 60–75 µs for
/// eleven). Every event of such a group is fresh, so the group takes the
/// next `n` seqs whole.
///
/// `KEYS[1]` stream, `KEYS[2]` counter, `KEYS[3]` the kept floor (unused;
/// every script on the stream takes the same first keys). `ARGV[1]` the
/// floor, `ARGV[2]` the most events per stream entry, `ARGV[3..]` the
/// records, in order.
///
/// Reply: `{2, last}` when the counter is below the floor (nothing
/// written, as in [`APPEND`]); otherwise `{1, new_last}`: the records took
/// `new_last - n + 1 ..= new_last`, in order. Entries, the commit time and
/// the counter are written exactly as [`APPEND`] writes them.
pub(crate) static APPEND_PLAIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        &[
            WRITE_ENTRIES,
            r#"
local stream, counter = KEYS[1], KEYS[2]
local last = tonumber(redis.call('GET', counter) or '0')
if tonumber(ARGV[1]) > last then
  return {2, last}
end
local n = #ARGV - 2
write_entries(stream, last, n, tonumber(ARGV[2]), function(x) return ARGV[x + 2] end)
redis.call('INCRBY', counter, n)
return {1, last + n}
"#,
        ]
        .concat(),
    )
});

/// Read a page: `KEYS[1]` stream, `KEYS[2]` counter, `KEYS[3]` the kept
/// floor, `ARGV[1]` after, `ARGV[2]` limit. Reply `{last, kept, entries}`:
/// the entries holding the events from the first one after `after` (and
/// not below `kept`) to `limit` events on, read in the same atomic step as
/// the counter. The caller drops the events of the first and last entry
/// outside that range (at most two entries' worth). Entry ids are last
/// seqs and seqs are dense from the first readable one, so the range is
/// found by id: the entry holding its first event, the entries ending
/// within it, and the one entry straddling its end.
pub(crate) static READ: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r#"
local stream = KEYS[1]
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local kept = kept_from(KEYS[3])
local after, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
if after >= last or limit <= 0 then
  return {last, kept, {}}
end
after = math.max(after, kept - 1)
limit = math.min(limit, last - after)
local out = redis.call('XRANGE', stream, '(' .. fmt(after) .. '-0', '+', 'COUNT', 1)
if #out == 0 then
  return {last, kept, out}
end
local top = id_seq(out[1][1])
local hi = math.max(after + 1, entry_first(out[1])) + limit - 1
if hi > top then
  for _, e in ipairs(redis.call('XRANGE', stream, '(' .. fmt(top) .. '-0', fmt(hi) .. '-0')) do
    out[#out + 1] = e
  end
  top = id_seq(out[#out][1])
  if top < hi and top < last then
    local e = redis.call('XRANGE', stream, '(' .. fmt(top) .. '-0', '+', 'COUNT', 1)[1]
    if e then out[#out + 1] = e end
  end
end
return {last, kept, out}
"#,
    )
});

/// Bounds: `KEYS[1]` stream, `KEYS[2]` counter, `KEYS[3]` the kept floor.
/// Reply `{last, first}`, `first` being the first readable seq (`last +
/// 1` when none is).
pub(crate) static BOUNDS: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r#"
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
return {last, first_seq(KEYS[1], KEYS[3], last)}
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

/// One step of `seq_before`: `KEYS[1]` stream, `KEYS[2]` counter,
/// `KEYS[3]` the kept floor, `ARGV[1]` time in µs, `ARGV[2]` the id (a
/// seq) of the entry to go on after (`""` = from the first entry),
/// `ARGV[3]` entries to examine. Only event times are looked at (a
/// record's leading `time`, a single entry's `time` field), and only seqs
/// go back over the wire. Reply: `{1, seq}` the first readable event at or
/// after the time; `{2, last}` none is (the counter, read atomically with
/// the end of the stream); `{0, id}` not yet found, go on after entry `id`.
pub(crate) static SEQ_BEFORE_STEP: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r#"
local t = tonumber(ARGV[1])
local count = tonumber(ARGV[3])
local kept = kept_from(KEYS[3])
local start = '-'
if ARGV[2] ~= '' then start = '(' .. ARGV[2] .. '-0' end
local entries = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', count)
for _, e in ipairs(entries) do
  local f = e[2]
  if f[3] == 'e' then
    local seq = entry_first(e)
    for j = 4, #f, 2 do
      if seq >= kept then
        local time = tonumber(string.match(f[j], '^{"time":(-?%d+)'))
        if time and time >= t then return {1, seq} end
      end
      seq = seq + 1
    end
  else
    local time = single_time(f)
    if time and time >= t then return {1, id_seq(e[1])} end
  end
end
if #entries < count then
  return {2, tonumber(redis.call('GET', KEYS[2]) or '0')}
end
return {0, id_seq(entries[#entries][1])}
"#,
    )
});

/// One step of age retention: `KEYS[1]` stream, `KEYS[2]` counter,
/// `KEYS[3]` the kept floor, `ARGV[1]` the maximum age in µs, `ARGV[2]`
/// most entries to examine. The cutoff is Redis' clock (`TIME`) minus the
/// age, the clock that stamped each entry's `at` (its commit time, shared
/// by all its events); a single entry without `at` (written before commit
/// times were stored) is judged by its `time`. Removes the run of entries
/// at the front of the stream committed before the cutoff (stopping at the
/// first younger one, so only the front is ever removed: readers see one
/// hole, reported as lag). Reply `{removed, more}`: the events no longer
/// readable, and `more` = 1 when the step stopped only because it examined
/// its maximum.
pub(crate) static PRUNE_AGE_STEP: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r#"
local clock = redis.call('TIME')
local cutoff = tonumber(clock[1]) * 1000000 + tonumber(clock[2]) - tonumber(ARGV[1])
local max = tonumber(ARGV[2])
local entries = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', max)
local old = 0
for _, e in ipairs(entries) do
  local f = e[2]
  local committed = nil
  if f[1] == 'at' then
    committed = tonumber(f[2])
  else
    committed = single_time(f)
  end
  if committed and committed >= cutoff then break end
  old = old + 1
end
if old == 0 then return {0, 0} end
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local before = first_seq(KEYS[1], KEYS[3], last)
local minid
if old < #entries then
  minid = entries[old + 1][1]
else
  minid = fmt(id_seq(entries[old][1]) + 1) .. '-0'
end
redis.call('XTRIM', KEYS[1], 'MINID', '=', minid)
local more = 0
if old == max then more = 1 end
return {math.max(0, first_seq(KEYS[1], KEYS[3], last) - before), more}
"#,
    )
});

/// Count retention now: `KEYS[1]` stream, `KEYS[2]` counter, `KEYS[3]` the
/// kept floor, `ARGV[1]` max count. Reply: the events no longer readable.
pub(crate) static PRUNE_COUNT: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r#"
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local before = first_seq(KEYS[1], KEYS[3], last)
trim_count(KEYS[1], KEYS[3], last, tonumber(ARGV[1]))
return math.max(0, first_seq(KEYS[1], KEYS[3], last) - before)
"#,
    )
});

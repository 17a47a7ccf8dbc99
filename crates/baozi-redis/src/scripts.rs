//! The Lua scripts that make each step atomic on the server.
//!
//! Every key of one queue shares the hash tag `{NAME}`, so a queue lives in one hash slot and
//! the scripts run unchanged on Redis Cluster. Wake-up tokens: `room` (putters wait on it with
//! BLPOP), `closed` (getters wait on it beside `items`, and whoever takes it puts it back, so a
//! close wakes every getter in turn), `alldone` (joiners). A token left over only causes one
//! spurious wake-up and a re-check; a missing one is bounded by the wait slice.

/// Keys of one queue.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    pub(crate) prefix: String,
    pub(crate) items: String,
    pub(crate) meta: String,
    pub(crate) room: String,
    pub(crate) closed: String,
    pub(crate) alldone: String,
    pub(crate) pending: String,
    pub(crate) leases: String,
}

impl Keys {
    pub(crate) fn new(name: &str) -> Keys {
        let prefix = format!("baozi:{{{name}}}:");
        let k = |s: &str| format!("{prefix}{s}");
        Keys {
            items: k("items"),
            meta: k("meta"),
            room: k("room"),
            closed: k("closed"),
            alldone: k("alldone"),
            pending: k("pending"),
            leases: k("leases"),
            prefix,
        }
    }

    /// The deduplication key of one producer (or of one handle's task_done calls).
    pub(crate) fn dedup(&self, producer: u64, what: &str) -> String {
        format!("{}{what}:{producer}", self.prefix)
    }

    /// Every fixed key, for unlink.
    pub(crate) fn all(&self) -> [&str; 7] {
        [
            &self.items,
            &self.meta,
            &self.room,
            &self.closed,
            &self.alldone,
            &self.pending,
            &self.leases,
        ]
    }
}

/// Keeps the `room` tokens at min(free slots, 16) so putters blocked on it wake in turn.
const ROOM: &str = r"
local function room(items, roomkey, max)
  if max <= 0 then return end
  local want = math.min(max - redis.call('LLEN', items), 16)
  local have = redis.call('LLEN', roomkey)
  if have > want then
    if want <= 0 then redis.call('DEL', roomkey) else redis.call('LTRIM', roomkey, 0, want - 1) end
  else
    for _ = have + 1, want do redis.call('RPUSH', roomkey, 'r') end
  end
end
local function unfinished(meta)
  local m = redis.call('HMGET', meta, 'puts', 'done', 'discarded')
  return tonumber(m[1] or '0') - tonumber(m[3] or '0') - tonumber(m[2] or '0')
end
";

/// PUT. KEYS: items meta room dedup. ARGV: maxsize first_seq last_seq dedup_ttl_ms envelopes...
/// Returns 1 put, 2 already put (a retry), 0 full, -1 closed.
pub(crate) const PUT: &str = r"
local last = tonumber(redis.call('GET', KEYS[4]) or '0')
if tonumber(ARGV[2]) <= last then return 2 end
if redis.call('HGET', KEYS[2], 'closed') == '1' then
  if redis.call('LLEN', KEYS[3]) == 0 then redis.call('RPUSH', KEYS[3], 'c') end
  return -1
end
local n = #ARGV - 4
local max = tonumber(ARGV[1])
local len = redis.call('LLEN', KEYS[1])
if max > 0 and len + n > max then return 0 end
local i = 5
while i <= #ARGV do
  local j = math.min(i + 999, #ARGV)
  redis.call('RPUSH', KEYS[1], unpack(ARGV, i, j))
  i = j + 1
end
redis.call('SET', KEYS[4], ARGV[3], 'PX', ARGV[4])
redis.call('HINCRBY', KEYS[2], 'puts', n)
room(KEYS[1], KEYS[3], max)
return 1
";

/// TAKE (at-most-once). KEYS: items meta room closed. ARGV: maxsize count.
/// Returns {closed, envelopes...}; keeps the closed token in place once closed.
pub(crate) const TAKE: &str = r"
local out = {0}
local n = tonumber(ARGV[2])
if n > 0 then
  local got = redis.call('LPOP', KEYS[1], n)
  if got then for k = 1, #got do out[k + 1] = got[k] end end
end
if redis.call('HGET', KEYS[2], 'closed') == '1' then
  out[1] = 1
  if redis.call('LLEN', KEYS[4]) == 0 then redis.call('RPUSH', KEYS[4], 'c') end
end
room(KEYS[1], KEYS[3], tonumber(ARGV[1]))
return out
";

/// TAKE_LEASED (at-least-once). KEYS: items pending leases meta room closed.
/// ARGV: lease_ms count maxsize envelopes-to-lease...
/// Gives a lease to pending entries that have none (a consumer died between its BLMOVE and
/// its lease), moves expired ones back to the head of `items`, then moves up to `count` items
/// to `pending`, each with a lease. Returns {closed, envelopes...}.
///
/// A closed at-least-once queue ends with the close sentinel, an empty entry (a real one has
/// at least its 16-byte header), because a getter blocked in BLMOVE can watch one list only:
/// the sentinel wakes it; it is put back at the tail at once, so it wakes every getter in turn,
/// and it is never handed out nor counted.
pub(crate) const TAKE_LEASED: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
local function sentinel_back()
  while redis.call('LREM', KEYS[2], 0, '') > 0 do end
  if redis.call('LINDEX', KEYS[1], -1) ~= '' then redis.call('RPUSH', KEYS[1], '') end
end
for k = 4, #ARGV do
  if ARGV[k] == '' then sentinel_back() else redis.call('ZADD', KEYS[3], now + lease, ARGV[k]) end
end
local pend = redis.call('LRANGE', KEYS[2], 0, 999)
for _, e in ipairs(pend) do
  if e == '' then
    sentinel_back()
  elseif not redis.call('ZSCORE', KEYS[3], e) then
    redis.call('ZADD', KEYS[3], now + lease, e)
  end
end
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 100)
local back = 0
for k = #expired, 1, -1 do
  local e = expired[k]
  redis.call('ZREM', KEYS[3], e)
  if redis.call('LREM', KEYS[2], 1, e) > 0 then
    redis.call('LPUSH', KEYS[1], e)
    back = back + 1
  end
end
if back > 0 then redis.call('HINCRBY', KEYS[4], 'redelivered', back) end
local out = {0}
for _ = 1, tonumber(ARGV[2]) do
  local head = redis.call('LINDEX', KEYS[1], 0)
  if not head or head == '' then break end
  local e = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
  redis.call('ZADD', KEYS[3], now + lease, e)
  out[#out + 1] = e
end
if redis.call('HGET', KEYS[4], 'closed') == '1' then
  out[1] = 1
  if redis.call('LLEN', KEYS[6]) == 0 then redis.call('RPUSH', KEYS[6], 'c') end
end
if #out > 1 then room(KEYS[1], KEYS[5], tonumber(ARGV[3])) end
return out
";

/// ACK (at-least-once task_done). KEYS: pending leases meta alldone. ARGV: envelope.
/// Returns 1 done, 0 the lease had expired (the item went back to the queue).
pub(crate) const ACK: &str = r"
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[3], 'done', 1)
if unfinished(KEYS[3]) <= 0 and redis.call('LLEN', KEYS[4]) == 0 then
  redis.call('RPUSH', KEYS[4], 'd')
end
return 1
";

/// TASK_DONE (at-most-once). KEYS: meta alldone dedup. ARGV: seq dedup_ttl_ms.
/// Returns 1 done (or already done by this call's earlier attempt), 0 too many times.
pub(crate) const TASK_DONE: &str = r"
local last = tonumber(redis.call('GET', KEYS[3]) or '0')
if tonumber(ARGV[1]) <= last then return 1 end
if unfinished(KEYS[1]) <= 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'done', 1)
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
if unfinished(KEYS[1]) <= 0 and redis.call('LLEN', KEYS[2]) == 0 then
  redis.call('RPUSH', KEYS[2], 'd')
end
return 1
";

/// UNFINISHED. KEYS: meta alldone. Returns the unfinished count; when it is 0, leaves a token
/// so that every other joiner wakes in turn.
pub(crate) const UNFINISHED: &str = r"
local u = unfinished(KEYS[1])
if u <= 0 and redis.call('LLEN', KEYS[2]) == 0 then redis.call('RPUSH', KEYS[2], 'd') end
return u
";

/// CLOSE. KEYS: meta closed room items alldone. ARGV: immediate (0/1), at-least-once (0/1).
/// With immediate, what is left is thrown away and counted done; at-least-once queues get the
/// close sentinel at the tail (see TAKE_LEASED).
pub(crate) const CLOSE: &str = r"
redis.call('HSET', KEYS[1], 'closed', '1')
if redis.call('LLEN', KEYS[2]) == 0 then redis.call('RPUSH', KEYS[2], 'c') end
if redis.call('LLEN', KEYS[3]) == 0 then redis.call('RPUSH', KEYS[3], 'c') end
if ARGV[1] == '1' then
  local n = redis.call('LLEN', KEYS[4])
  if n > 0 and redis.call('LINDEX', KEYS[4], -1) == '' then n = n - 1 end
  redis.call('DEL', KEYS[4])
  if n > 0 then redis.call('HINCRBY', KEYS[1], 'discarded', n) end
  if unfinished(KEYS[1]) <= 0 and redis.call('LLEN', KEYS[5]) == 0 then
    redis.call('RPUSH', KEYS[5], 'd')
  end
end
if ARGV[2] == '1' and redis.call('LINDEX', KEYS[4], -1) ~= '' then
  redis.call('RPUSH', KEYS[4], '')
end
return 1
";

/// One script with its SHA1, prefixed with the shared helpers.
#[derive(Debug)]
pub(crate) struct Script {
    pub(crate) src: String,
    pub(crate) sha: String,
}

impl Script {
    fn new(body: &str) -> Script {
        let src = format!("{ROOM}{body}");
        let sha = redis::Script::new(&src).get_hash().to_owned();
        Script { src, sha }
    }
}

/// All scripts, loaded on every new connection (so a restarted server has them before a
/// pipeline needs them).
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) put: Script,
    pub(crate) take: Script,
    pub(crate) take_leased: Script,
    pub(crate) ack: Script,
    pub(crate) task_done: Script,
    pub(crate) unfinished: Script,
    pub(crate) close: Script,
}

impl Scripts {
    pub(crate) fn new() -> Scripts {
        Scripts {
            put: Script::new(PUT),
            take: Script::new(TAKE),
            take_leased: Script::new(TAKE_LEASED),
            ack: Script::new(ACK),
            task_done: Script::new(TASK_DONE),
            unfinished: Script::new(UNFINISHED),
            close: Script::new(CLOSE),
        }
    }

    pub(crate) fn all(&self) -> [&Script; 7] {
        [
            &self.put,
            &self.take,
            &self.take_leased,
            &self.ack,
            &self.task_done,
            &self.unfinished,
            &self.close,
        ]
    }
}

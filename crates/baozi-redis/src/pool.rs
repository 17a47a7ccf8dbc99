//! [`RedisWorkers`]: a [`Pool`](baozi_process::Pool) whose workers are baozi worker processes
//! on any number of hosts, meeting the pool on one Redis server.
//!
//! # Protocol
//!
//! Every key of a namespace `NS` starts with `baozi:pool:{NS}:` (one hash tag, one hash slot);
//! a pool adds its id (64 random bits), `Q` = `baozi:pool:{NS}:ID:`.
//!
//! | key | type | written by | read by |
//! |---|---|---|---|
//! | `…{NS}:offers` | list of `ID SLOT TTL_MS TOKEN` | parent (LPUSH: "a worker wanted in SLOT") | idle workers (BRPOP) |
//! | `Q offered` | hash SLOT → TOKEN of its open offer | parent (offer, withdraw, re-offer) | the claim script (a claim must name the token; it removes it) |
//! | `Q alive` | string, expires (parent TTL, 10 s) | parent, refreshed every reap (with `results`, `live` and the live inboxes) | workers: no key, no pool |
//! | `Q results` | list of events | workers (LPUSH: started, done, exited), parent's reaper (lost) | parent (BRPOP), FIFO |
//! | `Q inbox:SLOT:GEN` | list of task messages | parent (LPUSH; RPOP to take one back) | the worker of that generation (BRPOP) |
//! | `Q hb:SLOT:GEN` | string, expires (the heartbeat TTL) | its worker (every TTL/3) | parent's reaper |
//! | `Q live` | hash `SLOT:GEN` → its "lost" event | worker (claim, release), reaper | reaper |
//!
//! A worker takes an offer and claims the slot with one script (pool alive and the offer's
//! token still current? then `live`, `hb` and the "started" event together), with a random
//! generation `GEN` of its own. An offer that a worker took from the list but never claimed
//! (killed in between, or cut off from the server) is replaced after the heartbeat TTL by a
//! new one with a new token, so the pool is never left a worker short for longer than
//! `TTL + min(TTL/4, 250 ms)`, and the old taker, should it come back, claims nothing. It runs
//! tasks from its inbox one at a time and pushes each result (a script that drops it once the
//! pool is gone). A heartbeat thread renews `hb` every TTL/3; should it find the key gone (the
//! pool gave up on this worker) the worker leaves the slot. "Stop" (after `close`) makes it
//! release the slot (script: `live` entry, `hb`, and the "exited" event) and go back to offers.
//!
//! The parent's reaper runs every `min(TTL/4, 250 ms)` (the result thread's waits for events
//! end when it is due): one
//! script finds each `live` entry whose `hb` has expired, removes it and pushes its "lost"
//! event into `results` — after every result that worker pushed, as the pool's accounting
//! needs. The parent then takes back what is still in that worker's inbox (never taken: run
//! elsewhere) and fails the rest of what it gave it, the task it was running, with
//! [`ProcessError::WorkerDied`](baozi_process::ProcessError::WorkerDied), or runs it again
//! when the pool is [idempotent](baozi_process::PoolBuilder::idempotent). **Bound**: a task
//! whose worker dies (SIGKILL, host lost, network cut) fails within `TTL + min(TTL/4, 250 ms)`
//! of the worker's last heartbeat, plus one Redis round trip.
//!
//! A worker that was given up on but still runs (a long pause, a healed partition) finds its
//! heartbeat gone and stops; it reads only its own generation's inbox, which no one fills any
//! more, so it cannot take a task meant for its successor; a result it still sends settles
//! nothing that was already failed.
//!
//! # Failures
//!
//! * A server down when the pool is made: [`RedisQueueError::Connection`] from
//!   [`RedisWorkers::connect`].
//! * A fault of the parent's connection later (server restarted, network cut, a reply slower
//!   than `io_timeout`): the pool breaks, and every task not done fails with
//!   [`ProcessError::PoolBroken`](baozi_process::ProcessError::PoolBroken) naming the fault,
//!   within `io_timeout + 200 ms`; nothing waits for ever. A restarted server has lost the
//!   pool's keys in any case.
//! * Workers ride out faults: they reconnect, and drop a pool whose keys are gone.
//! * `terminate` (or a broken pool) cannot kill remote processes: it deletes the pool's keys,
//!   so workers drop it within TTL/3, and a task still running there finishes unseen.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use baozi_process::backend::{wake_event, Give, PoolBackend, PoolEnd};

use crate::conn::Conn;
use crate::error::RedisQueueError;
use crate::options::RedisOptions;

/// The default heartbeat TTL of workers ([`RedisWorkersBuilder::heartbeat`]).
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(3);

/// The default of [`RedisWorkersBuilder::parent_ttl`].
pub const DEFAULT_PARENT_TTL: Duration = Duration::from_secs(10);

/// Keys of one namespace and pool.
#[derive(Debug, Clone)]
pub(crate) struct PoolKeys {
    pub(crate) offers: String,
    /// `baozi:pool:{NS}:ID:`
    pub(crate) prefix: String,
    pub(crate) alive: String,
    pub(crate) results: String,
    pub(crate) live: String,
    /// Hash SLOT → the token of the slot's open offer: a claim must name it.
    pub(crate) offered: String,
}

impl PoolKeys {
    pub(crate) fn offers(namespace: &str) -> String {
        format!("baozi:pool:{{{namespace}}}:offers")
    }

    pub(crate) fn new(namespace: &str, pool: &str) -> PoolKeys {
        let prefix = format!("baozi:pool:{{{namespace}}}:{pool}:");
        PoolKeys {
            offers: Self::offers(namespace),
            alive: format!("{prefix}alive"),
            results: format!("{prefix}results"),
            live: format!("{prefix}live"),
            offered: format!("{prefix}offered"),
            prefix,
        }
    }

    pub(crate) fn inbox(&self, slot: u32, gen: u64) -> String {
        format!("{}inbox:{slot}:{gen}", self.prefix)
    }

    pub(crate) fn hb(&self, slot: u32, gen: u64) -> String {
        format!("{}hb:{slot}:{gen}", self.prefix)
    }
}

/// Each `live` worker whose heartbeat is gone: forget it, push its "lost" event. The pool's
/// keys (`alive`, `results`, `live`, the live workers' inboxes) get their TTL again, so a
/// parent killed with SIGKILL leaves nothing behind after it; -1 when `alive` is gone (a
/// restarted server, a parent stalled too long).
const REAP: &str = r"
if redis.call('EXISTS', KEYS[3]) == 0 then return -1 end
redis.call('PEXPIRE', KEYS[3], ARGV[2])
local all = redis.call('HGETALL', KEYS[1])
local n = 0
for i = 1, #all, 2 do
  if redis.call('EXISTS', ARGV[1] .. 'hb:' .. all[i]) == 0 then
    redis.call('HDEL', KEYS[1], all[i])
    redis.call('LPUSH', KEYS[2], all[i + 1])
    n = n + 1
  else
    redis.call('PEXPIRE', ARGV[1] .. 'inbox:' .. all[i], ARGV[2])
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[4], ARGV[2])
return n
";

/// An offer that has been open for a while (KEYS: `offered`, the offers list; ARGV: slot,
/// token, offer, new token, new offer, TTL). 0: claimed or withdrawn (its token is gone);
/// 1: still in the list, no worker idle yet; 2: taken from the list but never claimed (the
/// taker died or lost its connection in between): a new offer replaces it, and the old
/// token no longer claims anything.
const REOFFER: &str = r"
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
if redis.call('LPOS', KEYS[2], ARGV[3]) then return 1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('LPUSH', KEYS[2], ARGV[5])
return 2
";

/// The pool's end: every key it has, its live workers' heartbeats and inboxes, and its offers
/// not taken (ARGV[2..]).
const END: &str = r"
for _, m in ipairs(redis.call('HKEYS', KEYS[3])) do
  redis.call('DEL', ARGV[1] .. 'hb:' .. m, ARGV[1] .. 'inbox:' .. m)
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[5])
for i = 2, #ARGV do redis.call('LREM', KEYS[4], 1, ARGV[i]) end
return 1
";

struct Scripts {
    reap: redis::Script,
    reoffer: redis::Script,
    end: redis::Script,
}

fn scripts() -> &'static Scripts {
    static S: OnceLock<Scripts> = OnceLock::new();
    S.get_or_init(|| Scripts {
        reap: redis::Script::new(REAP),
        reoffer: redis::Script::new(REOFFER),
        end: redis::Script::new(END),
    })
}

/// Options of a [`RedisWorkers`] backend; made by [`RedisWorkers::builder`].
#[derive(Clone, Debug)]
pub struct RedisWorkersBuilder {
    url: String,
    namespace: String,
    heartbeat: Duration,
    parent_ttl: Duration,
    opts: RedisOptions,
}

impl RedisWorkersBuilder {
    /// How long the pool's keys outlive a parent that stopped refreshing them (default
    /// [`DEFAULT_PARENT_TTL`], at least 1 s): a parent killed with SIGKILL is dropped by its
    /// workers, and its keys expire, this long after. The parent refreshes them from its
    /// result thread, which also runs the pool's callbacks (`on_ready`): a callback that blocks
    /// longer than this breaks the pool (as in Python, callbacks should return at once).
    pub fn parent_ttl(mut self, ttl: Duration) -> Self {
        self.parent_ttl = ttl.max(Duration::from_secs(1));
        self
    }

    /// The namespace the workers serve (default `"default"`; a worker's `--baozi-pool NAME`).
    pub fn namespace(mut self, name: &str) -> Self {
        self.namespace = name.to_owned();
        self
    }

    /// The workers' heartbeat TTL (default [`DEFAULT_HEARTBEAT`], at least 100 ms): a worker
    /// renews it every third of it, and one silent for this long is lost; its task fails
    /// within `heartbeat + min(heartbeat/4, 250 ms)` (see [`RedisWorkers`](crate::RedisWorkers)).
    /// Shorter finds deaths sooner; a worker must then never stall longer (a swapped-out
    /// host, a stopped process).
    pub fn heartbeat(mut self, ttl: Duration) -> Self {
        self.heartbeat = ttl.max(Duration::from_millis(100));
        self
    }

    /// Connection timeouts ([`RedisOptions::connect_timeout`], [`RedisOptions::io_timeout`]);
    /// the queue options in it do not apply.
    pub fn redis_options(mut self, opts: RedisOptions) -> Self {
        self.opts = opts;
        self
    }

    /// Connects, and makes the pool's keys: give the result to
    /// [`PoolBuilder::backend`](baozi_process::PoolBuilder::backend).
    ///
    /// # Errors
    /// [`RedisQueueError::Connection`] when the server cannot be reached (within
    /// `connect_timeout` + `io_timeout`), [`RedisQueueError::Server`] for a bad URL or a
    /// refused login, [`RedisQueueError::Tls`] for a `rediss://` server whose certificate is not
    /// trusted (or `rediss://` without the `tls` feature).
    pub fn connect(self) -> Result<RedisWorkers, RedisQueueError> {
        let mut cmd = Conn::new(&self.url, self.opts)?;
        let events = cmd.sibling();
        let id = format!("{:016x}", crate::link::random_id());
        let keys = PoolKeys::new(&self.namespace, &id);
        cmd.run(Duration::ZERO, |c| {
            redis::cmd("SET")
                .arg(&keys.alive)
                .arg(std::process::id())
                .arg("PX")
                .arg(ms(self.parent_ttl))
                .query::<()>(c)
        })?;
        let reap_every =
            (self.heartbeat / 4).clamp(Duration::from_millis(20), Duration::from_millis(250));
        Ok(RedisWorkers {
            id,
            keys,
            heartbeat: self.heartbeat,
            parent_ttl: self.parent_ttl,
            reap_every,
            cmd: Mutex::new(Cmd {
                conn: cmd,
                offers: HashMap::new(),
                ended: false,
            }),
            events: Mutex::new(Events {
                conn: events,
                last_reap: None,
            }),
            ended: AtomicBool::new(false),
            lost: Mutex::new(None),
        })
    }
}

/// Where a pool's workers are baozi worker processes connected to one Redis server, on any
/// number of hosts (a [`PoolBackend`]): `Pool::builder().backend(RedisWorkers::connect(url)?)`.
///
/// Workers are started apart from the pool, by whoever runs the hosts: any program whose
/// `main` begins with [`main_guard`](crate::main_guard) becomes one when run as
/// `program --baozi-worker redis://host:6379/0 [--baozi-pool NAMESPACE]`. A worker serves one
/// pool slot at a time, any pool of its namespace, one after the other; the pool uses up to
/// [`processes`](baozi_process::PoolBuilder::processes) workers at once, and its tasks wait
/// until workers come (the pool does not wait for them at `build`).
///
/// Tasks cross by name: each must be registered with [`baozi_process::task!`] in the program
/// the workers run (the same program, or another build that registers the same names and
/// types). A closure or an unregistered function is refused at the call with
/// [`ProcessError::Invalid`](baozi_process::ProcessError::Invalid).
///
/// The protocol, the bound on finding a dead worker, and what each failure does, are in the
/// [module documentation](crate#pool-across-hosts).
///
/// ```no_run
/// use baozi_process::Pool;
/// use baozi_redis::RedisWorkers;
///
/// baozi_process::task! {
///     fn steam(minutes: u32) -> String { format!("steamed {minutes} min") }
/// }
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     baozi_redis::main_guard(); // `prog --baozi-worker URL` is a worker, and stops here
///     let pool = Pool::builder()
///         .processes(8)
///         .backend(RedisWorkers::connect("redis://10.0.0.5:6379/0")?)
///         .build()?;
///     assert_eq!(pool.apply(steam, 8)?, "steamed 8 min");
///     assert_eq!(pool.map(steam, [1, 2])?, ["steamed 1 min", "steamed 2 min"]);
///     pool.close();
///     pool.join()?;
///     Ok(())
/// }
/// ```
#[derive(Debug)]
pub struct RedisWorkers {
    id: String,
    keys: PoolKeys,
    heartbeat: Duration,
    parent_ttl: Duration,
    reap_every: Duration,
    /// Quick commands, under the pool's lock.
    cmd: Mutex<Cmd>,
    /// The result thread's connection (blocking waits).
    events: Mutex<Events>,
    /// The pool has ended: no event will come, and the server may be gone (no waiting on it).
    ended: AtomicBool,
    /// Why a worker could not be asked for (the pool breaks with it).
    lost: Mutex<Option<String>>,
}

#[derive(Debug)]
struct Cmd {
    conn: Conn,
    /// Offers not yet known claimed, by slot.
    offers: HashMap<u32, Offer>,
    ended: bool,
}

/// An open offer: `ID SLOT TTL_MS TOKEN` as pushed, and when it was pushed or last seen waiting.
#[derive(Debug)]
struct Offer {
    text: String,
    token: u64,
    since: Instant,
}

impl Offer {
    fn new(pool: &str, slot: u32, ttl: Duration) -> Offer {
        let token = crate::link::random_id();
        Offer {
            text: format!("{pool} {slot} {} {token}", ms(ttl)),
            token,
            since: Instant::now(),
        }
    }
}

#[derive(Debug)]
struct Events {
    conn: Conn,
    last_reap: Option<Instant>,
}

/// Milliseconds for a TTL (never 0).
pub(crate) fn ms(d: Duration) -> u64 {
    d.as_millis().max(1) as u64
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RedisWorkers {
    /// A backend on the server at `url`, namespace `"default"`, heartbeat
    /// [`DEFAULT_HEARTBEAT`]; see [`RedisWorkersBuilder::connect`].
    ///
    /// # Errors
    /// As [`RedisWorkersBuilder::connect`].
    pub fn connect(url: &str) -> Result<RedisWorkers, RedisQueueError> {
        Self::builder(url).connect()
    }

    /// Options: namespace, heartbeat, timeouts.
    pub fn builder(url: &str) -> RedisWorkersBuilder {
        RedisWorkersBuilder {
            url: url.to_owned(),
            namespace: "default".into(),
            heartbeat: DEFAULT_HEARTBEAT,
            parent_ttl: DEFAULT_PARENT_TTL,
            opts: RedisOptions::new(),
        }
    }

    /// This pool's id (in its keys).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The heartbeat TTL its workers keep.
    pub fn heartbeat(&self) -> Duration {
        self.heartbeat
    }

    fn failed(&self, e: RedisQueueError) -> String {
        format!("the pool lost its Redis server: {e}")
    }

    /// Offers open for longer than the heartbeat TTL: forgotten once claimed, and replaced
    /// when a worker took one from the list and never claimed it (killed in between, or cut
    /// off), so that a lost offer leaves the pool a worker short for at most
    /// `TTL + min(TTL/4, 250 ms)`.
    fn renew_offers(&self) -> Result<(), String> {
        let mut cmd = lock(&self.cmd);
        if cmd.ended {
            return Ok(());
        }
        let stale: Vec<u32> = cmd
            .offers
            .iter()
            .filter(|(_, o)| o.since.elapsed() >= self.heartbeat)
            .map(|(&slot, _)| slot)
            .collect();
        for slot in stale {
            let old = &cmd.offers[&slot];
            let new = Offer::new(&self.id, slot, self.heartbeat);
            let k = &self.keys;
            let (old_text, old_token) = (old.text.clone(), old.token);
            let got = cmd
                .conn
                .run(Duration::ZERO, |c| {
                    scripts()
                        .reoffer
                        .key(&k.offered)
                        .key(&k.offers)
                        .arg(slot)
                        .arg(old_token)
                        .arg(&old_text)
                        .arg(new.token)
                        .arg(&new.text)
                        .arg(ms(self.parent_ttl))
                        .invoke::<i64>(c)
                })
                .map_err(|e| self.failed(e))?;
            match got {
                0 => {
                    cmd.offers.remove(&slot);
                }
                1 => {
                    if let Some(o) = cmd.offers.get_mut(&slot) {
                        o.since = Instant::now();
                    }
                }
                _ => {
                    cmd.offers.insert(slot, new);
                }
            }
        }
        Ok(())
    }
}

impl PoolBackend for RedisWorkers {
    fn by_name(&self) -> bool {
        true
    }

    fn waits_for_workers(&self) -> bool {
        false
    }

    fn max_task_len(&self) -> usize {
        crate::MAX_MESSAGE_LEN
    }

    fn start(&self, slot: u32) -> bool {
        // The namespace's offers list is shared by every pool and never expires; an offer of a
        // dead pool is dropped by the worker that takes it.
        let mut cmd = lock(&self.cmd);
        if cmd.ended {
            return false;
        }
        let offer = Offer::new(&self.id, slot, self.heartbeat);
        let k = &self.keys;
        let ttl = ms(self.parent_ttl);
        let sent = cmd.conn.run(Duration::ZERO, |c| {
            // The token first: a worker that takes the offer at once finds it.
            redis::pipe()
                .cmd("HSET")
                .arg(&k.offered)
                .arg(slot)
                .arg(offer.token)
                .ignore()
                .cmd("PEXPIRE")
                .arg(&k.offered)
                .arg(ttl)
                .ignore()
                .cmd("LPUSH")
                .arg(&k.offers)
                .arg(&offer.text)
                .ignore()
                .query::<()>(c)
        });
        match sent {
            Ok(_) => {
                cmd.offers.insert(slot, offer);
                true
            }
            Err(e) => {
                *lock(&self.lost) = Some(self.failed(e));
                false
            }
        }
    }

    fn withdraw(&self, slot: u32) -> bool {
        // Cancelled either way: an offer a worker took meanwhile makes a "started" event
        // that the pool ignores for a slot it closed, and that worker drops the pool when
        // its keys go at the end.
        let mut cmd = lock(&self.cmd);
        if let Some(offer) = cmd.offers.remove(&slot) {
            let k = &self.keys;
            // Without its token the offer claims nothing, even if a worker holds it already.
            let _ = cmd.conn.run(Duration::ZERO, |c| {
                redis::pipe()
                    .cmd("HDEL")
                    .arg(&k.offered)
                    .arg(slot)
                    .ignore()
                    .cmd("LREM")
                    .arg(&k.offers)
                    .arg(1)
                    .arg(&offer.text)
                    .ignore()
                    .query::<()>(c)
            });
        }
        true
    }

    fn end(&self, _how: PoolEnd) {
        let mut cmd = lock(&self.cmd);
        if cmd.ended {
            return;
        }
        cmd.ended = true;
        self.ended.store(true, Ordering::Relaxed);
        let offers: Vec<String> = cmd.offers.drain().map(|(_, o)| o.text).collect();
        let k = &self.keys;
        // Best effort: a server that is gone has nothing left to clean; the keys expire by
        // themselves, and workers drop a pool without `alive`.
        let _ = cmd.conn.run(Duration::ZERO, |c| {
            scripts()
                .end
                .key(&k.alive)
                .key(&k.results)
                .key(&k.live)
                .key(&k.offers)
                .key(&k.offered)
                .arg(&k.prefix)
                .arg(&offers)
                .invoke::<i64>(c)
        });
    }

    fn lost(&self) -> Option<String> {
        lock(&self.lost).clone()
    }

    fn reap(&self) {}

    fn give(&self, slot: u32, gen: u64, msg: Vec<u8>) -> Result<(), Give> {
        let mut cmd = lock(&self.cmd);
        // The slot's worker took the offer.
        cmd.offers.remove(&slot);
        let inbox = self.keys.inbox(slot, gen);
        let ttl = ms(self.parent_ttl);
        cmd.conn
            .run(Duration::ZERO, |c| {
                // The inbox expires with the pool (refreshed at each reap while it lives).
                redis::pipe()
                    .cmd("LPUSH")
                    .arg(&inbox)
                    .arg(&msg)
                    .ignore()
                    .cmd("PEXPIRE")
                    .arg(&inbox)
                    .arg(ttl)
                    .ignore()
                    .query::<()>(c)
            })
            .map(drop)
            .map_err(|e| Give::Failed(self.failed(e)))
    }

    fn take_back(&self, slot: u32, gen: u64) -> Result<Option<Vec<u8>>, String> {
        let mut cmd = lock(&self.cmd);
        let inbox = self.keys.inbox(slot, gen);
        cmd.conn
            .run(Duration::ZERO, |c| {
                redis::cmd("RPOP").arg(&inbox).query::<Option<Vec<u8>>>(c)
            })
            .map_err(|e| self.failed(e))
    }

    fn next_event(&self, wait: Duration) -> Result<Option<Vec<u8>>, String> {
        if self.ended.load(Ordering::Relaxed) {
            // Only the pool's own wake-up is left to come: do not wait on a server that may
            // be gone.
            std::thread::sleep(wait.min(Duration::from_millis(10)));
            return Ok(None);
        }
        let mut ev = lock(&self.events);
        if ev
            .last_reap
            .map_or(true, |t| t.elapsed() >= self.reap_every)
        {
            let k = &self.keys;
            let n = ev
                .conn
                .run(Duration::ZERO, |c| {
                    scripts()
                        .reap
                        .key(&k.live)
                        .key(&k.results)
                        .key(&k.alive)
                        .key(&k.offered)
                        .arg(&k.prefix)
                        .arg(ms(self.parent_ttl))
                        .invoke::<i64>(c)
                })
                .map_err(|e| self.failed(e))?;
            if n < 0 {
                return Err(format!(
                    "the pool's keys are gone from the Redis server at {} (was it restarted, or flushed?)",
                    ev.conn.shown
                ));
            }
            ev.last_reap = Some(Instant::now());
            self.renew_offers()?;
        }
        // Wait no longer than until the next reap is due, so reaps are at most `reap_every`
        // apart (the bound on finding a dead worker counts on it).
        let next_reap = ev.last_reap.map_or(Duration::ZERO, |t| {
            self.reap_every.saturating_sub(t.elapsed())
        });
        let wait = wait.min(next_reap).max(Duration::from_millis(1));
        let results = self.keys.results.clone();
        ev.conn
            .run(wait, |c| {
                redis::cmd("BRPOP")
                    .arg(&results)
                    .arg(crate::link::secs(wait))
                    .query::<Option<(String, Vec<u8>)>>(c)
            })
            .map(|got| got.map(|(_, bytes)| bytes))
            .map_err(|e| self.failed(e))
    }

    fn wake(&self) {
        if self.ended.load(Ordering::Relaxed) {
            return; // the result thread no longer waits on the server
        }
        let mut cmd = lock(&self.cmd);
        let results = self.keys.results.clone();
        let _ = cmd.conn.run(Duration::ZERO, |c| {
            redis::pipe()
                .cmd("LPUSH")
                .arg(&results)
                .arg(wake_event())
                .ignore()
                .cmd("PEXPIRE")
                .arg(&results)
                .arg(ms(self.parent_ttl))
                .ignore()
                .query::<()>(c)
        });
    }
}

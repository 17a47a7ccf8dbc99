//! The worker side of [`RedisWorkers`](crate::RedisWorkers): [`serve`] and [`main_guard`].

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use baozi_process::backend::{self, Served};

use crate::conn::Conn;
use crate::error::RedisQueueError;
use crate::options::RedisOptions;
use crate::pool::{ms, PoolKeys};

/// The longest a worker waits in one blocking call before it checks its state again.
const SLICE: Duration = Duration::from_secs(1);

/// Claim a slot: only while the pool lives; its `live` entry (with the event that says it is
/// lost), its heartbeat and its "started" event in one step. Every key a worker makes or fills
/// expires with the pool's `alive` key (a parent killed with SIGKILL leaves nothing behind).
const CLAIM: &str = r"
local ttl = redis.call('PTTL', KEYS[1])
if ttl <= 0 then return 0 end
if redis.call('HGET', KEYS[5], ARGV[6]) ~= ARGV[7] then return 0 end
redis.call('HDEL', KEYS[5], ARGV[6])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[2])
redis.call('LPUSH', KEYS[4], ARGV[5])
redis.call('PEXPIRE', KEYS[4], ttl)
return 1
";

/// Renew the heartbeat; 0 when it is gone (the pool gave up on this worker) or the pool is.
const RENEW: &str = r"
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[1])
";

/// A result, only while the pool lives (a terminated pool's keys stay gone), expiring with it.
const DONE: &str = r"
local ttl = redis.call('PTTL', KEYS[1])
if ttl <= 0 then return 0 end
redis.call('LPUSH', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ttl)
return 1
";

/// Leave the slot cleanly: unless the reaper got there first (then the pool has its "lost"
/// event), remove the `live` entry and the heartbeat, and say "exited".
const RELEASE: &str = r"
if redis.call('HDEL', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('DEL', KEYS[3])
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then
  redis.call('LPUSH', KEYS[4], ARGV[2])
  redis.call('PEXPIRE', KEYS[4], ttl)
end
return 1
";

struct Scripts {
    claim: redis::Script,
    renew: redis::Script,
    done: redis::Script,
    release: redis::Script,
}

fn scripts() -> &'static Scripts {
    static S: OnceLock<Scripts> = OnceLock::new();
    S.get_or_init(|| Scripts {
        claim: redis::Script::new(CLAIM),
        renew: redis::Script::new(RENEW),
        done: redis::Script::new(DONE),
        release: redis::Script::new(RELEASE),
    })
}

/// One slot of one pool, as a worker holds it.
struct Claim {
    keys: PoolKeys,
    slot: u32,
    gen: u64,
    ttl: Duration,
    /// The offer's token: the claim is valid only while it is the slot's current one.
    token: String,
}

impl Claim {
    fn member(&self) -> String {
        format!("{}:{}", self.slot, self.gen)
    }
}

/// Runs this process as a pool worker for `namespace` on the server at `url`, for ever: it
/// takes a pool slot when a pool of the namespace asks for a worker, runs that pool's tasks
/// (by name: see [`baozi_process::task!`]) until the pool stops it or ends, and goes back for
/// another. Connection faults after the start are ridden out (a line on stderr, a new
/// connection a moment later).
///
/// # Errors
/// Only at the start: [`RedisQueueError::Connection`] when the server cannot be reached,
/// [`RedisQueueError::Server`] for a bad URL or login.
pub fn serve(url: &str, namespace: &str) -> Result<Infallible, RedisQueueError> {
    let mut conn = Conn::new(url, RedisOptions::new())?;
    conn.run(Duration::ZERO, |c| redis::cmd("PING").query::<String>(c))?;
    backend::prepare_worker();
    let offers = PoolKeys::offers(namespace);
    let pid = std::process::id() as i32;
    loop {
        let got = conn.run(SLICE, |c| {
            redis::cmd("BRPOP")
                .arg(&offers)
                .arg(crate::link::secs(SLICE))
                .query::<Option<(String, String)>>(c)
        });
        let offer = match got {
            Ok(Some((_, offer))) => offer,
            Ok(None) => continue,
            Err(e) => {
                pause(&e);
                continue;
            }
        };
        let Some(claim) = parse_offer(namespace, &offer) else {
            eprintln!("baozi worker {pid}: ignored a garbled offer {offer:?}");
            continue;
        };
        match take(&mut conn, &claim, pid) {
            Ok(true) => work(&mut conn, &claim, pid),
            Ok(false) => {} // the pool is gone
            Err(e) => pause(&e),
        }
    }
}

fn pause(e: &RedisQueueError) {
    eprintln!(
        "baozi worker {}: {e}; trying again in a moment",
        std::process::id()
    );
    std::thread::sleep(SLICE);
}

/// `ID SLOT TTL_MS TOKEN` → a claim with a fresh generation.
fn parse_offer(namespace: &str, offer: &str) -> Option<Claim> {
    let mut it = offer.split(' ');
    let (id, slot, ttl, token) = (it.next()?, it.next()?, it.next()?, it.next()?);
    token.parse::<u64>().ok()?;
    Some(Claim {
        token: token.to_owned(),
        keys: PoolKeys::new(namespace, id),
        slot: slot.parse().ok()?,
        gen: crate::link::random_id(),
        ttl: Duration::from_millis(ttl.parse().ok()?),
    })
}

/// `script` on the slot's keys (alive, live, hb, results) and member: the claim and the
/// release.
fn on_slot<'a>(script: &'a redis::Script, cl: &Claim) -> redis::ScriptInvocation<'a> {
    let k = &cl.keys;
    let mut inv = script.key(&k.alive);
    inv.key(&k.live)
        .key(k.hb(cl.slot, cl.gen))
        .key(&k.results)
        .arg(cl.member());
    inv
}

fn take(conn: &mut Conn, cl: &Claim, pid: i32) -> Result<bool, RedisQueueError> {
    let claimed = conn.run(Duration::ZERO, |c| {
        on_slot(&scripts().claim, cl)
            .arg(ms(cl.ttl))
            .arg(pid)
            .arg(backend::lost_event(cl.slot, pid))
            .arg(backend::started_event(cl.slot, pid, cl.gen))
            .arg(cl.slot)
            .arg(&cl.token)
            .key(&cl.keys.offered)
            .invoke::<i64>(c)
    })?;
    Ok(claimed == 1)
}

/// Serves a claimed slot until "stop", the pool's end, or the heartbeat's loss.
fn work(conn: &mut Conn, cl: &Claim, pid: i32) {
    let fenced = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let beat = {
        let (fenced, stop) = (Arc::clone(&fenced), Arc::clone(&stop));
        let mut hb_conn = conn.sibling();
        let (hb, alive, ttl) = (cl.keys.hb(cl.slot, cl.gen), cl.keys.alive.clone(), cl.ttl);
        std::thread::spawn(move || heartbeat(&mut hb_conn, &hb, &alive, ttl, &fenced, &stop))
    };
    let inbox = cl.keys.inbox(cl.slot, cl.gen);
    let wait = (cl.ttl / 3).min(SLICE);
    while !fenced.load(Ordering::Relaxed) {
        let got = conn.run(wait, |c| {
            redis::cmd("BRPOP")
                .arg(&inbox)
                .arg(crate::link::secs(wait))
                .query::<Option<(String, Vec<u8>)>>(c)
        });
        let msg = match got {
            Ok(Some((_, msg))) => msg,
            Ok(None) => continue,
            Err(e) => {
                pause(&e);
                continue;
            }
        };
        match backend::serve_task(cl.slot, &msg) {
            Served::Done(event) => send_done(conn, cl, &event, &fenced),
            Served::Stop => {
                release(conn, cl, pid);
                break;
            }
            Served::Garbled => {
                eprintln!("baozi worker {pid}: a garbled task message; leaving the pool");
                release(conn, cl, pid);
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = beat.join();
}

/// Pushes a result, retrying faults while the heartbeat holds (a repeated result settles
/// nothing twice).
fn send_done(conn: &mut Conn, cl: &Claim, event: &[u8], fenced: &AtomicBool) {
    let k = &cl.keys;
    while !fenced.load(Ordering::Relaxed) {
        let sent = conn.run(Duration::ZERO, |c| {
            scripts()
                .done
                .key(&k.alive)
                .key(&k.results)
                .arg(event)
                .invoke::<i64>(c)
        });
        match sent {
            Ok(_) => return,
            Err(e) => pause(&e),
        }
    }
}

fn release(conn: &mut Conn, cl: &Claim, pid: i32) {
    let r = conn.run(Duration::ZERO, |c| {
        on_slot(&scripts().release, cl)
            .arg(backend::exited_event(cl.slot, pid))
            .invoke::<i64>(c)
    });
    if let Err(e) = r {
        // The heartbeat lapses by itself, and the pool counts the worker lost.
        eprintln!("baozi worker {pid}: could not leave the pool cleanly: {e}");
    }
}

/// Renews the heartbeat every third of its TTL until told to stop; sets `fenced` when the
/// key or the pool is gone (or stays unreachable past the TTL).
fn heartbeat(
    conn: &mut Conn,
    hb: &str,
    alive: &str,
    ttl: Duration,
    fenced: &AtomicBool,
    stop: &AtomicBool,
) {
    let every = ttl / 3;
    let mut last_ok = std::time::Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let r = conn.run(Duration::ZERO, |c| {
            scripts()
                .renew
                .key(hb)
                .key(alive)
                .arg(ms(ttl))
                .invoke::<i64>(c)
        });
        match r {
            Ok(1) => last_ok = std::time::Instant::now(),
            Ok(_) => {
                fenced.store(true, Ordering::Relaxed);
                return;
            }
            Err(_) if last_ok.elapsed() > ttl => {
                fenced.store(true, Ordering::Relaxed);
                return;
            }
            Err(_) => {}
        }
        std::thread::sleep(every);
    }
}

/// The first line of `main` in a program whose runs may be pool workers: it does what
/// [`baozi_process::main_guard`] does (a spawned child runs its job), and a run with
/// `--baozi-worker URL [--baozi-pool NAMESPACE]` as its first arguments becomes a
/// [`RedisWorkers`](crate::RedisWorkers) worker ([`serve`]) and never returns. Any other run
/// goes on with `main`.
///
/// A worker that cannot reach its server at the start prints one line and exits with code 1;
/// bad worker arguments, one line and exit code 2.
///
/// ```no_run
/// baozi_process::task! {
///     fn steam(minutes: u32) -> String { format!("steamed {minutes} min") }
/// }
///
/// fn main() {
///     baozi_redis::main_guard(); // `prog --baozi-worker redis://host/0` serves pools here
///     // ... the program's own work: make pools, queues ...
/// }
/// ```
pub fn main_guard() {
    baozi_process::main_guard();
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some("--baozi-worker") {
        return;
    }
    let usage = "usage: PROGRAM --baozi-worker redis://HOST[:PORT][/DB] [--baozi-pool NAMESPACE]";
    let Some(url) = args.next() else {
        eprintln!("baozi: --baozi-worker needs the server's URL; {usage}");
        std::process::exit(2);
    };
    let namespace = match (args.next().as_deref(), args.next()) {
        (None, _) => "default".to_owned(),
        (Some("--baozi-pool"), Some(ns)) if args.next().is_none() => ns,
        _ => {
            eprintln!("baozi: unexpected worker arguments; {usage}");
            std::process::exit(2);
        }
    };
    match serve(&url, &namespace) {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("baozi worker {}: {e}", std::process::id());
            std::process::exit(1);
        }
    }
}

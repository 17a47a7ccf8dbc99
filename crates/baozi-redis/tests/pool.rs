//! The Pool across hosts (`RedisWorkers`) against a private `redis-server`: the Pool API on
//! remote workers, pools without workers, two pools sharing workers, an offer taken and never
//! claimed (offered again), one of 3 workers killed
//! with SIGKILL mid-map (WorkerDied within the stated bound, or the whole result when the pool
//! is idempotent), a kill -9 loop (`BAOZI_REDIS_POOL_KILL_ITERS`, default 10), a parent killed
//! mid-task, and connection faults (server down at start, restarted, frozen). No key of a
//! finished pool stays behind.
//!
//! `harness = false`, and this binary is its own worker: `main` starts with
//! `baozi_redis::main_guard()`, so a run with `--baozi-worker URL --baozi-pool NS` serves pools
//! (the tests start such runs with `std::process::Command`, fork + exec, safe from any thread).
//! Every worker is killed and reaped by the case that started it. Without `redis-server` it
//! prints one line naming what it skipped and passes, unless `BAOZI_REQUIRE_REDIS=1` (CI).

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use baozi_process::{Pool, ProcessError};
use baozi_redis::{LocalServer, RedisOptions, RedisWorkers};

baozi_process::task! {
    fn square(x: u64) -> u64 { x * x }
}

baozi_process::task! {
    fn add(a: i32, b: i32) -> i32 { a + b }
}

baozi_process::task! {
    /// Sleeps `ms`, then says which worker ran it.
    fn nap(ms: u64) -> u32 {
        std::thread::sleep(Duration::from_millis(ms));
        std::process::id()
    }
}

baozi_process::task! {
    fn boom(x: u8) -> u8 {
        if x == 3 { panic!("no filling in bun {x}") }
        x
    }
}

baozi_process::task! {
    fn slow_square(x: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(x % 40));
        x * x
    }
}

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A namespace of its own for each case: its workers serve only its pools.
fn namespace() -> String {
    format!(
        "t{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Worker processes (runs of this binary), SIGKILLed and reaped on drop.
struct Workers(Vec<Child>);

impl Workers {
    fn start(url: &str, ns: &str, n: usize) -> Workers {
        let exe = std::env::current_exe().expect("this test's executable");
        Workers(
            (0..n)
                .map(|_| {
                    Command::new(&exe)
                        .args(["--baozi-worker", url, "--baozi-pool", ns])
                        .stdin(Stdio::null())
                        .spawn()
                        .expect("start a worker")
                })
                .collect(),
        )
    }

    fn pids(&self) -> Vec<u32> {
        self.0.iter().map(Child::id).collect()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn pool(url: &str, ns: &str, processes: usize, heartbeat: Duration, idempotent: bool) -> Pool {
    Pool::builder()
        .processes(processes)
        .idempotent(idempotent)
        .backend(
            RedisWorkers::builder(url)
                .namespace(ns)
                .heartbeat(heartbeat)
                .connect()
                .expect("connect"),
        )
        .build()
        .expect("a pool on Redis")
}

/// Nothing of the namespace's pools is left on the server.
fn assert_no_keys(url: &str, ns: &str) {
    let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
    let left: Vec<String> = redis::cmd("KEYS")
        .arg(format!("baozi:pool:{{{ns}}}:*"))
        .query(&mut c)
        .unwrap();
    assert!(left.is_empty(), "left on the server: {left:?}");
}

/// Waits until the pool has `n` workers (they come by themselves).
fn wait_workers(pool: &Pool, n: usize) {
    let t = Instant::now();
    while pool.worker_pids().len() < n {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "only {:?} of {n} workers came",
            pool.worker_pids()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn api(url: &str) {
    let ns = namespace();
    let workers = Workers::start(url, &ns, 2);
    let pool = pool(url, &ns, 2, Duration::from_secs(3), false);
    // apply and apply_async, before any worker came: the tasks wait for them.
    assert_eq!(pool.apply(square, 7).unwrap(), 49);
    let r = pool.apply_async(square, 8).unwrap();
    assert_eq!(r.get().unwrap(), 64);
    wait_workers(&pool, 2);
    let mut pids = pool.worker_pids();
    pids.sort_unstable();
    let mut started = workers.pids();
    started.sort_unstable();
    assert_eq!(
        pids,
        started.iter().map(|&p| p as i32).collect::<Vec<_>>(),
        "the pool's workers are the processes started"
    );
    // map (auto chunks, and chunksize), starmap, imap, imap_unordered.
    let want: Vec<u64> = (0..200).map(|x| x * x).collect();
    assert_eq!(pool.map(square, 0..200).unwrap(), want);
    assert_eq!(pool.with_chunksize(7).map(square, 0..200).unwrap(), want);
    assert_eq!(pool.starmap(add, [(1, 2), (3, 4)]).unwrap(), [3, 7]);
    let lazy: Vec<u64> = pool
        .imap(square, 0..50)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(lazy, want[..50]);
    let mut any: Vec<u64> = pool
        .imap_unordered(square, 0..50)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    any.sort_unstable();
    assert_eq!(any, want[..50]);
    // Both workers ran tasks.
    let mut ran: Vec<u32> = pool.map(nap, [50; 8]).unwrap();
    ran.sort_unstable();
    ran.dedup();
    assert_eq!(ran.len(), 2, "tasks ran on {ran:?}");
    // Callbacks: on_ready with the value, and with the error.
    let (tx, rx) = mpsc::channel();
    for x in 0..4 {
        let tx = tx.clone();
        pool.apply_async(square, x)
            .unwrap()
            .on_ready(move |r| tx.send(r.unwrap()).unwrap());
    }
    let mut got: Vec<u64> = rx.iter().take(4).collect();
    got.sort_unstable();
    assert_eq!(got, [0, 1, 4, 9]);
    let (tx, rx) = mpsc::channel();
    pool.map_async(boom, [1, 2, 3, 4])
        .unwrap()
        .on_ready(move |r| tx.send(r).unwrap());
    match rx.recv_timeout(Duration::from_secs(10)).unwrap() {
        Err(ProcessError::TaskPanicked { message, .. }) => {
            assert_eq!(message, "no filling in bun 3")
        }
        other => panic!("expected the task's panic, got {other:?}"),
    }
    // A closure (or any unregistered fn) cannot cross hosts: a typed error at the call.
    match pool.apply(|x: u64| x + 1, 1) {
        Err(ProcessError::Invalid { what }) => assert!(what.contains("task!"), "{what}"),
        other => panic!("expected Invalid for a closure, got {other:?}"),
    }
    // close + join: everything submitted runs, then the workers leave the pool.
    let last = pool.map_async(nap, [100; 4]).unwrap();
    pool.close();
    assert!(matches!(
        pool.apply(square, 1),
        Err(ProcessError::PoolClosed)
    ));
    let t = Instant::now();
    pool.join().unwrap();
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_eq!(last.get().unwrap().len(), 4);
    assert!(pool.worker_pids().is_empty());
    // The workers go on serving the namespace: a new pool gets them.
    let again = self::pool(url, &ns, 2, Duration::from_secs(3), false);
    assert_eq!(again.map(square, [2, 3]).unwrap(), [4, 9]);
    drop(again); // terminates it
                 // Both pools' keys are gone (joined, and terminated): nothing is left on the server.
    assert_no_keys(url, &ns);
    drop(workers);
}

fn terminate(url: &str) {
    let ns = namespace();
    let _workers = Workers::start(url, &ns, 1);
    let pool = pool(url, &ns, 1, Duration::from_secs(3), false);
    wait_workers(&pool, 1);
    let long = pool.map_async(nap, [5000; 3]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    pool.terminate();
    assert!(matches!(long.get(), Err(ProcessError::PoolTerminated)));
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(matches!(
        pool.apply(square, 1),
        Err(ProcessError::PoolTerminated)
    ));
}

/// Pools that no worker ever joined: `close` + `join` returns at once (the requests for
/// workers are withdrawn), and `terminate` fails what waits.
fn no_workers_never_hang(url: &str) {
    let ns = namespace();
    let pool = pool(url, &ns, 3, Duration::from_secs(3), false);
    let t = Instant::now();
    pool.close();
    pool.join().unwrap();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let pool = self::pool(url, &ns, 2, Duration::from_secs(3), false);
    let waiting = pool.map_async(square, 0..10).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    pool.terminate();
    assert!(matches!(waiting.get(), Err(ProcessError::PoolTerminated)));
    // The withdrawn requests are gone: a worker that comes later finds nothing to take.
    assert_no_keys(url, &ns);
}

/// A worker killed after it took the pool's offer from the list and before it claimed the slot
/// (played here by a connection that takes the offer and does nothing more): after the
/// heartbeat TTL the pool offers the slot again, with a new token, and a real worker takes
/// it, so a one-worker pool still runs its tasks, within the stated bound. The old offer,
/// presented by its taker, claims nothing.
fn a_lost_offer_is_offered_again(url: &str) {
    let ns = namespace();
    let heartbeat = Duration::from_secs(1);
    let pool = pool(url, &ns, 1, heartbeat, false);
    let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
    let offers = format!("baozi:pool:{{{ns}}}:offers");
    let stolen: Option<(String, String)> = redis::cmd("BRPOP")
        .arg(&offers)
        .arg(5)
        .query(&mut c)
        .unwrap();
    let (_, stolen) = stolen.expect("the pool offered its slot");
    let t = Instant::now();
    let workers = Workers::start(url, &ns, 1);
    match pool
        .apply_async(square, 5)
        .unwrap()
        .get_timeout(bound(heartbeat))
    {
        Ok(v) => assert_eq!(v.unwrap(), 25),
        Err(_) => panic!(
            "the slot was not offered again within {:?}",
            bound(heartbeat)
        ),
    }
    assert!(t.elapsed() < bound(heartbeat), "{:?}", t.elapsed());
    // The taker comes back with the old offer: its token is no longer the slot's.
    let mut it = stolen.split(' ');
    let (id, slot, token) = (it.next().unwrap(), it.next().unwrap(), it.nth(1).unwrap());
    let current: Option<String> = redis::cmd("HGET")
        .arg(format!("baozi:pool:{{{ns}}}:{id}:offered"))
        .arg(slot)
        .query(&mut c)
        .unwrap();
    assert_ne!(current.as_deref(), Some(token));
    let pids: Vec<u32> = pool.worker_pids().iter().map(|&p| p as u32).collect();
    assert_eq!(pids, workers.pids());
    pool.close();
    pool.join().unwrap();
    drop(workers);
    assert_no_keys(url, &ns);
}

/// Two pools at once on one namespace share its workers: each gets one, both finish.
fn two_pools_share_the_workers(url: &str) {
    let ns = namespace();
    let _workers = Workers::start(url, &ns, 2);
    let a = pool(url, &ns, 1, Duration::from_secs(3), false);
    let b = pool(url, &ns, 1, Duration::from_secs(3), false);
    let ra = a.map_async(nap, [100; 4]).unwrap();
    let rb = b.map_async(nap, [100; 4]).unwrap();
    let (ra, rb) = (ra.get().unwrap(), rb.get().unwrap());
    assert!(ra.iter().all(|&p| p == ra[0]), "pool a: one worker, {ra:?}");
    assert!(rb.iter().all(|&p| p == rb[0]), "pool b: one worker, {rb:?}");
    assert_ne!(ra[0], rb[0], "each pool has a worker of its own");
    a.close();
    b.close();
    a.join().unwrap();
    b.join().unwrap();
}

/// The role of a parent that the `parent_killed` case SIGKILLs: a pool (parent TTL 1 s) with
/// a long task running on the namespace's worker, "ready" on stdout, then nothing.
fn as_parent(url: &str, ns: &str) -> ! {
    let pool = Pool::builder()
        .processes(1)
        .backend(
            RedisWorkers::builder(url)
                .namespace(ns)
                .heartbeat(Duration::from_secs(1))
                .parent_ttl(Duration::from_secs(1))
                .connect()
                .unwrap(),
        )
        .build()
        .unwrap();
    wait_workers(&pool, 1);
    let _running = pool.apply_async(nap, 800).unwrap();
    println!("ready");
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// A parent killed with SIGKILL mid-task: its worker finishes the task, drops the pool within
/// the parent TTL (1 s) and serves the next pool; the dead pool's keys expire.
fn parent_killed(url: &str) {
    use std::io::BufRead;
    let ns = namespace();
    let _workers = Workers::start(url, &ns, 1);
    let mut parent = Command::new(std::env::current_exe().unwrap())
        .args(["--as-parent", url, &ns])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(parent.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    std::thread::sleep(Duration::from_millis(200));
    parent.kill().unwrap();
    parent.wait().unwrap();
    let t = Instant::now();
    let next = pool(url, &ns, 1, Duration::from_secs(1), false);
    assert_eq!(next.apply(square, 4).unwrap(), 16);
    // The task (800 ms, 200 ms in) ends, then the parent TTL (1 s) and a heartbeat renewal.
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    next.close();
    next.join().unwrap();
    std::thread::sleep(Duration::from_millis(1500)); // the dead pool's keys expire
    assert_no_keys(url, &ns);
}

/// The stated bound: a task whose worker dies fails within heartbeat + min(heartbeat/4,
/// 250 ms) + a round trip; the test allows 1.5 s of slack for a loaded machine.
fn bound(heartbeat: Duration) -> Duration {
    heartbeat + (heartbeat / 4).min(Duration::from_millis(250)) + Duration::from_millis(1500)
}

/// 3 workers, a map of 3 tasks of 400 ms (one each); one worker SIGKILLed 150 ms in, so the
/// others are done long before the death can be known, and the map returns when it is.
/// Returns the map's outcome, the time from the kill to it, and the killed pid.
fn kill_mid_map(url: &str, idempotent: bool) -> (Result<Vec<u32>, ProcessError>, Duration, i32) {
    let ns = namespace();
    let mut workers = Workers::start(url, &ns, 3);
    let heartbeat = Duration::from_secs(1);
    let pool = pool(url, &ns, 3, heartbeat, idempotent);
    wait_workers(&pool, 3);
    let map = pool.with_chunksize(1).map_async(nap, [400; 3]).unwrap();
    std::thread::sleep(Duration::from_millis(150));
    let mut victim = workers.0.remove(1);
    let pid = victim.id() as i32;
    victim.kill().unwrap();
    let killed = Instant::now();
    victim.wait().unwrap();
    let out = map.get();
    let took = killed.elapsed();
    // An idempotent pool runs the task again after the death is known: 400 ms more.
    let allowed = bound(heartbeat)
        + if idempotent {
            Duration::from_millis(400)
        } else {
            Duration::ZERO
        };
    assert!(
        took < allowed,
        "the map took {took:?} after the kill, more than the bound {allowed:?}"
    );
    // The pool goes on with the two left.
    assert_eq!(pool.map(square, [5]).unwrap(), [25]);
    (out, took, pid)
}

/// SIGKILL of a random worker at a random moment, in a loop, with a replacement started each
/// time (`BAOZI_REDIS_POOL_KILL_ITERS`, default 10): in an idempotent pool every call gets its
/// right value; in a plain one each gets its value or `WorkerDied`, at most one per kill; neither
/// ever hangs.
fn kill_loop(url: &str) {
    let iters: u64 = std::env::var("BAOZI_REDIS_POOL_KILL_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let heartbeat = Duration::from_millis(300);
    let mut seed = std::process::id() as u64 | 1;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for idempotent in [true, false] {
        let ns = namespace();
        let mut workers = Workers::start(url, &ns, 3);
        let pool = pool(url, &ns, 3, heartbeat, idempotent);
        let (mut kills, mut died) = (0, 0);
        for _ in 0..iters {
            wait_workers(&pool, 3);
            let items: Vec<u64> = (0..30).map(|_| rand(1000)).collect();
            let t = Instant::now();
            // One call per item, all submitted now: each has its own outcome.
            let calls: Vec<_> = items
                .iter()
                .map(|&x| pool.apply_async(slow_square, x).unwrap())
                .collect();
            std::thread::sleep(Duration::from_millis(rand(150)));
            let victim = rand(workers.0.len() as u64) as usize;
            let mut w = workers.0.swap_remove(victim);
            w.kill().unwrap();
            w.wait().unwrap();
            kills += 1;
            workers.0.append(&mut Workers::start(url, &ns, 1).0);
            let mut lost_here = 0;
            for (i, call) in calls.into_iter().enumerate() {
                match call.get() {
                    Ok(v) => assert_eq!(v, items[i] * items[i]),
                    Err(ProcessError::WorkerDied { .. }) if !idempotent => lost_here += 1,
                    Err(e) => panic!("item {i}: {e}"),
                }
            }
            assert!(lost_here <= 1, "{lost_here} tasks lost to one kill");
            died += lost_here;
            assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
        }
        println!(
            "    idempotent {idempotent}: {iters} iterations, {kills} workers killed, {died} tasks failed with WorkerDied"
        );
    }
}

fn worker_killed_mid_map(url: &str) {
    let (out, took, pid) = kill_mid_map(url, false);
    match out {
        Err(ProcessError::WorkerDied {
            pid: died,
            signal: None,
            exit_status: None,
        }) => assert_eq!(died, pid),
        other => panic!("expected WorkerDied for pid {pid}, got {other:?}"),
    }
    println!("    WorkerDied {took:?} after the SIGKILL (heartbeat 1 s)");
}

fn worker_killed_mid_map_idempotent(url: &str) {
    let (out, took, pid) = kill_mid_map(url, true);
    let ran = out.expect("an idempotent pool runs the dead worker's task again");
    assert_eq!(ran.len(), 3);
    // The victim died in its task (400 ms, killed 150 ms in): it ran again on another.
    assert!(
        !ran.contains(&(pid as u32)),
        "{ran:?} has a result of the dead worker {pid}"
    );
    println!("    full result {took:?} after the SIGKILL (heartbeat 1 s)");
}

fn server_down_at_start(_url: &str) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let t = Instant::now();
    let e = RedisWorkers::builder(&format!("redis://127.0.0.1:{port}/0"))
        .redis_options(RedisOptions::new().connect_timeout(Duration::from_millis(500)))
        .connect()
        .unwrap_err();
    assert!(e.is_connection(), "{e}");
    assert!(t.elapsed() < Duration::from_secs(3));
    // A worker pointed there says so and exits 1.
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--baozi-worker", &format!("redis://127.0.0.1:{port}/0")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot talk to the Redis server"), "{err}");
    // Bad worker arguments: exit code 2, one line.
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--baozi-worker"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
}

/// A pool on `url` with a 1 s I/O timeout, one worker attached.
fn small_pool(url: &str, ns: &str) -> Pool {
    let pool = Pool::builder()
        .processes(1)
        .backend(
            RedisWorkers::builder(url)
                .namespace(ns)
                .redis_options(RedisOptions::new().io_timeout(Duration::from_secs(1)))
                .connect()
                .unwrap(),
        )
        .build()
        .unwrap();
    wait_workers(&pool, 1);
    pool
}

/// The pool's tasks fail with PoolBroken naming Redis within `within`, and so does any later
/// call.
fn breaks(pool: &Pool, long: baozi_process::AsyncResult<u32>, within: Duration) {
    let t = Instant::now();
    match long.get() {
        Err(ProcessError::PoolBroken { reason }) => assert!(reason.contains("Redis"), "{reason}"),
        other => panic!("expected PoolBroken, got {other:?}"),
    }
    assert!(t.elapsed() < within, "{:?}", t.elapsed());
    assert!(matches!(
        pool.apply(square, 1),
        Err(ProcessError::PoolBroken { .. })
    ));
}

/// A server of the case's own, one worker on it, a pool, and a task of `ms` running there.
fn own_server_with_a_running_task(
    ms: u64,
) -> (
    LocalServer,
    String,
    Workers,
    Pool,
    baozi_process::AsyncResult<u32>,
) {
    let server = LocalServer::start().unwrap();
    let url = server.url();
    let ns = namespace();
    let workers = Workers::start(&url, &ns, 1);
    let pool = small_pool(&url, &ns);
    let long = pool.apply_async(nap, ms).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    (server, ns, workers, pool, long)
}

/// The server restarts (no persistence: the pool's keys are gone) under a running pool: the
/// pending task fails with PoolBroken, never a hang; the worker rides the restart out and
/// serves the next pool.
fn server_restarted_mid_run(_url: &str) {
    let (mut server, ns, _workers, pool, long) = own_server_with_a_running_task(3000);
    let url = server.url();
    server.restart().unwrap();
    breaks(&pool, long, Duration::from_secs(4));
    let next = small_pool(&url, &ns);
    assert_eq!(next.apply(square, 9).unwrap(), 81);
}

/// The server stops answering (SIGSTOP: a network that drops everything): PoolBroken within
/// the I/O timeout (1 s) and a tick.
fn server_frozen_mid_run(_url: &str) {
    let (server, _ns, _workers, pool, long) = own_server_with_a_running_task(5000);
    let pid = server.pid().unwrap() as i32;
    // SAFETY: kill(2) on the server this case started; no memory is involved.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        breaks(&pool, long, Duration::from_secs(4))
    }));
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
}

type Case = (&'static str, fn(&str));

const CASES: &[Case] = &[
    ("pool_api_on_redis_workers", api),
    ("terminate_fails_pending_at_once", terminate),
    ("no_workers_never_hang", no_workers_never_hang),
    ("two_pools_share_the_workers", two_pools_share_the_workers),
    (
        "a_lost_offer_is_offered_again",
        a_lost_offer_is_offered_again,
    ),
    (
        "a_worker_killed_mid_map_fails_its_task_with_worker_died_within_the_bound",
        worker_killed_mid_map,
    ),
    (
        "an_idempotent_pool_reruns_the_dead_workers_task",
        worker_killed_mid_map_idempotent,
    ),
    ("kill9_workers_in_a_loop", kill_loop),
    (
        "a_killed_parents_worker_serves_the_next_pool",
        parent_killed,
    ),
    (
        "server_down_at_start_is_a_connection_error",
        server_down_at_start,
    ),
    (
        "server_restarted_mid_run_breaks_the_pool",
        server_restarted_mid_run,
    ),
    (
        "server_frozen_mid_run_breaks_the_pool",
        server_frozen_mid_run,
    ),
];

fn main() {
    baozi_redis::main_guard();
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--as-parent") {
        as_parent(&args[2], &args[3]);
    }
    let names: Vec<&str> = CASES.iter().map(|c| c.0).collect();
    if !LocalServer::available_or_skip("baozi-redis pool", &names) {
        return;
    }
    let server = LocalServer::start().expect("start redis-server");
    let url = server.url();
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let (mut passed, mut failed) = (0, 0);
    for (name, run) in CASES {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let t = Instant::now();
        match std::panic::catch_unwind(|| run(&url)) {
            Ok(()) => {
                passed += 1;
                println!("ok   {name} ({:?})", t.elapsed());
            }
            Err(_) => {
                failed += 1;
                println!("FAIL {name} ({:?})", t.elapsed());
            }
        }
    }
    drop(server);
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}

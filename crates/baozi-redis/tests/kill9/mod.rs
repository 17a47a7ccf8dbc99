//! kill -9 torture on Redis: 2 producer and 2 consumer processes on one queue; each iteration
//! one worker is SIGKILLed at a random instant (a killed consumer is replaced, so the queue
//! drains); the ledger must be exact.
//!
//! Ledger, with `hw[p]` the puts producer `p` saw return Ok (appended to a file after each put,
//! so a killed producer's last put may have landed unrecorded):
//! * exactly once: every `(p, s)` with `s < hw[p]` is received once, except at most one per
//!   killed consumer (at-most-once: it took the item and died before recording it);
//! * in flight: from a killed producer at most `(p, hw[p])` may arrive as well, nothing later;
//! * never a duplicate, never a torn or foreign message; per-producer order at each consumer;
//! * no survivor hangs: each iteration ends within 30 s.
//!
//! The at-least-once variant ([`torture_leased`], a `RedisJoinableQueue` with a 300 ms lease,
//! consumers recording each item before its `task_done`): every `(p, s)` with `s < hw[p]` is
//! received at least once, nothing is lost to a killed consumer, at most one item more than once
//! per killed consumer (it recorded and died before `task_done`), and `join` returns.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use baozi_queue::GetError;
use baozi_redis::{RedisJoinableQueue, RedisOptions, RedisQueue};

const MSGS: u64 = 60;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn iterations() -> u64 {
    std::env::var("BAOZI_REDIS_KILL_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200)
}

/// Forks a child that runs `f` and leaves with `_exit` (never unwinding into the parent's code).
fn fork(f: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: the process is single-threaded here (the cases before joined their threads); the
    // child only runs `f` and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(101);
        // SAFETY: ends the child without running the parent's atexit handlers or destructors.
        unsafe { libc::_exit(code) };
    }
    pid
}

fn kill(pid: libc::pid_t) {
    // SAFETY: plain syscall on our own child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// Waits for `pid` until `deadline`; None if it is still running then.
fn wait(pid: libc::pid_t, deadline: Instant) -> Option<i32> {
    loop {
        let mut status = 0;
        // SAFETY: waitpid on our own child, with a valid status pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn payload(p: u64, s: u64) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&p.to_le_bytes());
    v.extend_from_slice(&s.to_le_bytes());
    v.resize(16 + (s % 40) as usize, (p * 31 + s) as u8);
    v
}

fn parse(v: &[u8]) -> (u64, u64) {
    assert!(v.len() >= 16, "torn message: {} bytes", v.len());
    let p = u64::from_le_bytes(v[..8].try_into().unwrap());
    let s = u64::from_le_bytes(v[8..16].try_into().unwrap());
    assert_eq!(v, payload(p, s), "torn or foreign message");
    (p, s)
}

fn append(path: &Path, line: &str) {
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(line.as_bytes()).unwrap();
}

fn producer(url: &str, name: &str, p: u64, log: &Path, delay_every: u64) -> i32 {
    let q: RedisQueue<Vec<u8>> = RedisQueue::open(url, name).unwrap();
    for s in 0..MSGS {
        q.put(payload(p, s)).unwrap();
        append(log, &format!("{s}\n"));
        if delay_every != 0 && s % delay_every == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    0
}

fn consumer(url: &str, name: &str, log: &Path) -> i32 {
    let q: RedisJoinableQueue<Vec<u8>> = RedisJoinableQueue::open(url, name).unwrap();
    let leased = q.lease().is_some();
    loop {
        match q.get_timeout(Duration::from_secs(10)) {
            Ok(v) => {
                let (p, s) = parse(&v);
                append(log, &format!("{p} {s}\n"));
                if leased {
                    // Work on it a little, so kills land while an item is held.
                    std::thread::sleep(Duration::from_millis(2));
                    q.task_done().unwrap();
                }
            }
            Err(GetError::Closed) => return 0,
            Err(e) => {
                eprintln!("consumer: {e}");
                return 3;
            }
        }
    }
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

pub(crate) fn torture(url: &str) {
    run(url, iterations(), false);
}

pub(crate) fn torture_leased(url: &str) {
    run(url, iterations().div_ceil(4), true);
}

fn run(url: &str, iters: u64, leased: bool) {
    let seed = std::env::var("BAOZI_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    let mode = if leased {
        "at-least-once"
    } else {
        "at-most-once"
    };
    println!("kill9 torture ({mode}): {iters} iterations, BAOZI_KILL_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = std::env::temp_dir().join(format!("baozi-redis-kill9-{}", std::process::id()));
    // Removed however the run ends (a failed assertion unwinds through here).
    struct RemoveDir(std::path::PathBuf);
    impl Drop for RemoveDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = RemoveDir(dir.clone());
    let (mut producer_kills, mut consumer_kills, mut landed) = (0, 0, 0);
    let mut redelivered = 0;
    let (mut lost, mut twice) = (0, 0);
    for it in 0..iters {
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let name = format!("kill9-{}-{it}", std::process::id());
        let mut opts = RedisOptions::new().maxsize(8);
        if leased {
            opts = opts
                .lease(Duration::from_millis(300))
                .wait_slice(Duration::from_millis(100));
        }
        let q: RedisJoinableQueue<Vec<u8>> = opts.joinable(url, &name).unwrap();
        let plog = |p: u64| dir.join(format!("p{p}"));
        let clog = |c: u64| dir.join(format!("c{c}"));
        let mut producers: Vec<(u64, libc::pid_t)> = (0..2)
            .map(|p| {
                let (u, n, l, d) = (url.to_owned(), name.clone(), plog(p), rng.below(8));
                (p, fork(move || producer(&u, &n, p, &l, d)))
            })
            .collect();
        let mut consumers: Vec<(u64, libc::pid_t)> = (0..2)
            .map(|c| {
                let (u, n, l) = (url.to_owned(), name.clone(), clog(c));
                (c, fork(move || consumer(&u, &n, &l)))
            })
            .collect();
        let mut next_consumer = 2;
        // Kill the victim mid-work: once its log shows k items (or after 2 s), then a little later.
        let victim = rng.below(4);
        let log = if victim < 2 {
            plog(victim)
        } else {
            clog(victim - 2)
        };
        let k = rng.below(40) as usize;
        let until = Instant::now() + Duration::from_secs(2);
        while lines(&log).len() < k && Instant::now() < until {
            std::thread::sleep(Duration::from_micros(200));
        }
        std::thread::sleep(Duration::from_micros(rng.below(3000)));
        let mut killed_producer = None;
        if victim < 2 {
            kill(producers[victim as usize].1);
            killed_producer = Some(victim);
            producer_kills += 1;
        } else {
            let (c, pid) = consumers.remove((victim - 2) as usize);
            kill(pid);
            let st = wait(pid, Instant::now() + Duration::from_secs(5))
                .unwrap_or_else(|| panic!("iteration {it}: killed consumer {c} not reaped"));
            landed += u32::from(libc::WIFSIGNALED(st));
            consumer_kills += 1;
            let (u, n, l) = (url.to_owned(), name.clone(), clog(next_consumer));
            consumers.push((next_consumer, fork(move || consumer(&u, &n, &l))));
            next_consumer += 1;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for (p, pid) in producers.drain(..) {
            let st =
                wait(pid, deadline).unwrap_or_else(|| panic!("iteration {it}: producer {p} hangs"));
            if killed_producer == Some(p) {
                landed += u32::from(libc::WIFSIGNALED(st));
            } else {
                assert!(
                    libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
                    "iteration {it}: producer {p} failed: {st}"
                );
            }
        }
        if leased {
            q.join_timeout(Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("iteration {it}: join: {e}"));
        }
        q.close().unwrap();
        for (c, pid) in consumers.drain(..) {
            let st =
                wait(pid, deadline).unwrap_or_else(|| panic!("iteration {it}: consumer {c} hangs"));
            assert!(
                libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
                "iteration {it}: consumer {c} failed: {st}"
            );
        }
        // The ledger.
        let hw: Vec<u64> = (0..2).map(|p| lines(&plog(p)).len() as u64).collect();
        let mut seen: HashMap<(u64, u64), u32> = HashMap::new();
        for c in 0..next_consumer {
            let mut last: HashMap<u64, u64> = HashMap::new();
            for l in lines(&clog(c)) {
                let mut it2 = l.split(' ').map(|x| x.parse::<u64>().unwrap());
                let (p, s) = (it2.next().unwrap(), it2.next().unwrap());
                // A redelivered item (at-least-once) may come after later ones.
                if let Some(&prev) = last.get(&p).filter(|_| !leased) {
                    assert!(
                        s > prev,
                        "iteration {it}: consumer {c} got ({p},{s}) after ({p},{prev})"
                    );
                }
                last.insert(p, s);
                *seen.entry((p, s)).or_default() += 1;
            }
        }
        let mut missing = 0;
        let mut repeats = 0;
        for p in 0..2u64 {
            for s in 0..hw[p as usize] {
                match seen.get(&(p, s)) {
                    None => missing += 1,
                    Some(1) => {}
                    Some(n) if leased => repeats += n - 1,
                    Some(n) => panic!("iteration {it}: ({p},{s}) delivered {n} times"),
                }
            }
            for (&(pp, s), &n) in &seen {
                if pp != p || s < hw[p as usize] {
                    continue;
                }
                if leased {
                    repeats += n - 1;
                } else {
                    assert_eq!(n, 1, "iteration {it}: ({p},{s}) delivered {n} times");
                }
                assert!(
                    killed_producer == Some(p) && s == hw[p as usize],
                    "iteration {it}: ({p},{s}) arrived but producer {p} recorded only {} puts",
                    hw[p as usize]
                );
            }
        }
        let killed_consumers = u32::from(victim >= 2);
        let allowed = if leased { 0 } else { killed_consumers };
        assert!(
            missing <= allowed,
            "iteration {it}: {missing} acknowledged puts lost (allowed {allowed})"
        );
        assert!(
            repeats <= killed_consumers,
            "iteration {it}: {repeats} items delivered twice with {killed_consumers} consumer(s) killed"
        );
        assert!(
            q.empty().unwrap(),
            "iteration {it}: items left in a closed, drained queue"
        );
        redelivered += q.redelivered().unwrap();
        lost += missing;
        twice += repeats;
        RedisQueue::<Vec<u8>>::unlink(url, &name).unwrap();
    }
    let _ = fs::remove_dir_all(&dir);
    println!(
        "kill9 torture ({mode}): {iters} iterations, {producer_kills} producer kills, {consumer_kills} consumer kills, {landed} landed mid-work, {redelivered} redelivered after a lease, {lost} lost and {twice} delivered twice by killed consumers (allowed), ledger exact"
    );
    if leased && consumer_kills >= 8 {
        assert!(
            redelivered > 0,
            "no consumer was killed holding an item: the leases went untested"
        );
    }
    // A kill that found its victim already done tests nothing: most must land.
    assert!(
        u64::from(landed) * 2 >= iters,
        "only {landed} of {iters} kills landed while the victim worked"
    );
}

//! [`RawOwnerLock`] across real, forked processes, some of them SIGKILLed while they hold it.
//!
//! `harness = false` (see `support`): every case runs in its own forked process group under a
//! watchdog. Arguments: substrings selecting cases; `--list`.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use baozi_shm::{Offset, Region};
use baozi_sync::{Acquired, Deadline, RawOwnerLock, SyncError, OWNER_CHECK_EVERY};

use support::{case, seed, spawn, wait_until, Child, Rng, Words};

/// Bound on a child finishing after it was told to (generous: a loaded 2-core box).
const CHILD_BOUND: Duration = Duration::from_secs(30);

/// A lock in its own shared region, inherited by children forked afterwards.
struct SharedLock(Region);

impl SharedLock {
    fn new() -> Self {
        SharedLock(Region::anonymous(64).expect("map the lock"))
    }

    fn get(&self) -> &RawOwnerLock {
        self.0.get(Offset::new(0)).expect("in bounds")
    }
}

/// Load, yield now and then, store: loses updates unless the lock excludes.
fn racy_increment(counter: &AtomicU64, i: u64) {
    let v = counter.load(Ordering::Relaxed);
    if i % 64 == 0 {
        std::thread::yield_now();
    }
    counter.store(v + 1, Ordering::Relaxed);
}

fn must_lock(lock: &RawOwnerLock) -> Acquired {
    lock.lock(None).unwrap_or_else(|e| panic!("lock: {e}"))
}

/// 8 processes × 20 000 increments by load-then-store under the lock: none lost.
fn counter_8_processes() {
    let lock = SharedLock::new();
    let words = Words::new(2);
    let (counter, gate) = (words.at(0), words.at(1));
    const PER: u64 = 20_000;
    let children: Vec<Child> = (0..8)
        .map(|_| {
            spawn(|| {
                while gate.load(Ordering::Acquire) == 0 {
                    std::thread::yield_now();
                }
                for i in 0..PER {
                    assert_eq!(must_lock(lock.get()), Acquired::Clean);
                    racy_increment(counter, i);
                    // SAFETY: we hold it.
                    unsafe { lock.get().unlock() };
                }
                0
            })
        })
        .collect();
    gate.store(1, Ordering::Release);
    for (i, c) in children.into_iter().enumerate() {
        c.join_ok(Duration::from_secs(120), &format!("incrementer {i}"));
    }
    assert_eq!(counter.load(Ordering::Relaxed), 8 * PER);
    assert_eq!(lock.get().holder_pid(), None);
}

/// A holder SIGKILLed while it holds the lock: a waiter takes it over with `OwnerDied` within a
/// few check periods, both while the dead holder is still a zombie and after it is reaped.
fn holder_killed_is_taken_over() {
    for reap_first in [false, true] {
        let lock = SharedLock::new();
        let words = Words::new(1);
        let held = words.at(0);
        let mut holder = spawn(|| {
            assert_eq!(must_lock(lock.get()), Acquired::Clean);
            held.store(1, Ordering::Release);
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        assert!(wait_until(CHILD_BOUND, || held.load(Ordering::Acquire) == 1));
        assert_eq!(lock.get().holder_pid(), Some(holder.pid as u32));
        if reap_first {
            holder.kill();
        } else {
            // SAFETY: our unreaped child: the pid cannot have been reused. It stays a zombie
            // until `holder` is dropped.
            unsafe { libc::kill(holder.pid, libc::SIGKILL) };
            assert!(wait_until(CHILD_BOUND, || !proc_running(holder.pid)));
        }
        let start = Instant::now();
        let got = lock
            .get()
            .lock(Some(Deadline::after(Duration::from_secs(10))));
        let took = start.elapsed();
        println!(
            "    holder {}: taken over after {took:?}",
            if reap_first { "reaped" } else { "a zombie" }
        );
        assert!(matches!(got, Ok(Acquired::OwnerDied)), "{got:?}");
        assert!(took < Duration::from_secs(2), "took {took:?}");
        assert_eq!(lock.get().holder_pid(), Some(std::process::id()));
        // SAFETY: we hold it; unlocking declares the (empty) state repaired.
        unsafe { lock.get().unlock() };
        assert!(matches!(lock.get().lock(None), Ok(Acquired::Clean)));
        // SAFETY: we hold it.
        unsafe { lock.get().unlock() };
        drop(holder);
    }
}

/// Whether `pid` exists and is not a zombie.
fn proc_running(pid: libc::pid_t) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rfind(')')
            .is_some_and(|i| !s[i + 1..].trim_start().starts_with('Z'))
    })
}

/// A live holder in another process keeps the lock: a waiter with a deadline gets `Timeout`,
/// no earlier than the deadline and not much later, and never `OwnerDied`.
fn live_holder_keeps_it_past_checks() {
    let lock = SharedLock::new();
    let words = Words::new(2);
    let (held, release) = (words.at(0), words.at(1));
    let holder = spawn(|| {
        assert_eq!(must_lock(lock.get()), Acquired::Clean);
        held.store(1, Ordering::Release);
        while release.load(Ordering::Acquire) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        // SAFETY: we hold it.
        unsafe { lock.get().unlock() };
        0
    });
    assert!(wait_until(CHILD_BOUND, || held.load(Ordering::Acquire) == 1));
    // Many owner checks happen in 200 ms: each must find the holder alive.
    let wait = (OWNER_CHECK_EVERY * 200).max(Duration::from_millis(200));
    let start = Instant::now();
    let r = lock.get().lock(Some(Deadline::after(wait)));
    let took = start.elapsed();
    assert!(matches!(r, Err(SyncError::Timeout)), "{r:?}");
    assert!(took >= wait, "gave up early: {took:?}");
    assert!(took < wait + Duration::from_secs(1), "late: {took:?}");
    release.store(1, Ordering::Release);
    holder.join_ok(CHILD_BOUND, "holder");
    assert!(matches!(lock.get().lock(None), Ok(Acquired::Clean)));
    // SAFETY: we hold it.
    unsafe { lock.get().unlock() };
}

/// Sleepers are woken one by one by the unlocks: four processes asleep on a held lock all get
/// it, each in turn, soon after the holder lets go.
fn sleepers_are_woken_in_turn() {
    let lock = SharedLock::new();
    let words = Words::new(2);
    let (inside, done) = (words.at(0), words.at(1));
    assert_eq!(must_lock(lock.get()), Acquired::Clean);
    let children: Vec<Child> = (0..4)
        .map(|_| {
            spawn(|| {
                assert_eq!(must_lock(lock.get()), Acquired::Clean);
                assert_eq!(
                    inside.fetch_add(1, Ordering::AcqRel),
                    0,
                    "two inside at once"
                );
                std::thread::sleep(Duration::from_millis(5));
                inside.fetch_sub(1, Ordering::AcqRel);
                done.fetch_add(1, Ordering::AcqRel);
                // SAFETY: we hold it.
                unsafe { lock.get().unlock() };
                0
            })
        })
        .collect();
    let refs: Vec<&Child> = children.iter().collect();
    support::wait_asleep(&refs, "waiters");
    let start = Instant::now();
    // SAFETY: we hold it.
    unsafe { lock.get().unlock() };
    assert!(wait_until(CHILD_BOUND, || done.load(Ordering::Acquire) == 4));
    println!(
        "    4 sleepers through, 5 ms each, in {:?}",
        start.elapsed()
    );
    for (i, c) in children.into_iter().enumerate() {
        c.join_ok(CHILD_BOUND, &format!("sleeper {i}"));
    }
}

/// A lock given up after a failed repair refuses everyone from then on.
fn given_up_is_unrecoverable_everywhere() {
    let lock = SharedLock::new();
    assert_eq!(must_lock(lock.get()), Acquired::Clean);
    // SAFETY: we hold it.
    unsafe { lock.get().give_up() };
    let child = spawn(
        || match lock.get().lock(Some(Deadline::after(CHILD_BOUND))) {
            Err(SyncError::Unrecoverable) => 0,
            other => {
                eprintln!("child got {other:?}");
                1
            }
        },
    );
    child.join_ok(CHILD_BOUND, "late locker");
}

/// kill -9 loop: four processes take the lock over and over; a "who is inside" word proves
/// mutual exclusion (a clean acquire must find nobody inside; a takeover may find the dead one).
/// The parent kills a random worker at a random instant, often inside the critical section,
/// and starts a replacement. Nobody may hang, and no acquire may find a live process inside.
fn kill_loop() {
    let iters: u64 = std::env::var("BAOZI_OWNER_LOCK_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let mut rng = Rng(seed());
    let lock = SharedLock::new();
    let words = Words::new(3);
    let (inside, entries, takeovers) = (words.at(0), words.at(1), words.at(2));
    let worker = || {
        spawn(|| {
            let me = u64::from(std::process::id());
            loop {
                let how = must_lock(lock.get());
                let was = inside.swap(me, Ordering::AcqRel);
                match how {
                    Acquired::Clean if was != 0 => return 3, // somebody else is inside
                    Acquired::OwnerDied => {
                        takeovers.fetch_add(1, Ordering::Relaxed);
                    }
                    Acquired::Clean => {}
                }
                entries.fetch_add(1, Ordering::Relaxed);
                for _ in 0..50 {
                    std::hint::spin_loop();
                }
                if inside.swap(0, Ordering::AcqRel) != me {
                    return 4;
                }
                // SAFETY: we hold it.
                unsafe { lock.get().unlock() };
            }
        })
    };
    let mut workers: Vec<Child> = (0..4).map(|_| worker()).collect();
    let start = Instant::now();
    let mut killed = 0;
    for _ in 0..iters {
        std::thread::sleep(Duration::from_micros(rng.below(2_000)));
        let i = rng.below(workers.len() as u64) as usize;
        if let Some(e) = workers[i].try_wait() {
            panic!("worker {} ended by itself: {e:?}", workers[i].pid);
        }
        // Not reaped yet: the next takeover sees a zombie (or, once reaped, nothing).
        // SAFETY: our unreaped child.
        unsafe { libc::kill(workers[i].pid, libc::SIGKILL) };
        killed += 1;
        workers[i] = worker();
        // Progress: the lock keeps being taken (a hang here is a bug).
        let before = entries.load(Ordering::Relaxed);
        assert!(
            wait_until(Duration::from_secs(10), || entries.load(Ordering::Relaxed)
                > before),
            "no progress after a kill: lock {:?}",
            lock.get()
        );
    }
    for mut w in workers {
        if let Some(e) = w.try_wait() {
            panic!("worker {} ended by itself: {e:?}", w.pid);
        }
        w.kill();
    }
    println!(
        "    {killed} kills, {} entries, {} takeovers from a dead holder, {:.1} s",
        entries.load(Ordering::Relaxed),
        takeovers.load(Ordering::Relaxed),
        start.elapsed().as_secs_f64()
    );
}

fn main() {
    support::run(vec![
        case("counter_8_processes", counter_8_processes).timeout(180),
        case("holder_killed_is_taken_over", holder_killed_is_taken_over),
        case(
            "live_holder_keeps_it_past_checks",
            live_holder_keeps_it_past_checks,
        ),
        case("sleepers_are_woken_in_turn", sleepers_are_woken_in_turn),
        case(
            "given_up_is_unrecoverable_everywhere",
            given_up_is_unrecoverable_everywhere,
        ),
        case("kill_loop", kill_loop).timeout(300),
    ]);
}

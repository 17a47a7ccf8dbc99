//! Python's `multiprocessing.synchronize` objects across real, forked processes — some of them
//! killed with SIGKILL at awkward moments.
//!
//! `harness = false`: every case runs in a forked process that leads its own process group,
//! under a watchdog: a case still running after its bound has its whole group SIGKILLed and
//! fails loudly. The runner never starts a thread, so forking is safe everywhere. The binary
//! prints one line per case, then exactly one `N passed, N failed` line, and exits non-zero on
//! any failure. Arguments: substrings selecting cases; `--list`; other flags are ignored.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use baozi_shm::{Region, ShmError};
use baozi_sync::{
    AcquireError, Acquired, Barrier, BoundedSemaphore, Condition, Event, Lock, RLock,
    RawRobustMutex, Semaphore, ShmMutex, SyncError,
};

/// Bound on one child finishing after it was told to.
const CHILD_BOUND: Duration = Duration::from_secs(20);
/// Bound on a woken waiter returning after its wake-up (generous: a loaded 2-core box).
const WAKE_BOUND: Duration = Duration::from_secs(5);

use support::{
    case, join_all_ok, seed, spawn, unique_name, wait_asleep, wait_until, Child, Exit, Rng, Words,
};

// ------------------------------------------------------------------------------------------
// Cases: mutual exclusion
// ------------------------------------------------------------------------------------------

/// A start line: children wait (yielding) until the parent opens it, so that they run at once
/// rather than one after another as they are forked.
fn gate_wait(gate: &AtomicU64) {
    while gate.load(Ordering::Acquire) == 0 {
        std::thread::yield_now();
    }
}

/// The increment under test: load, (sometimes) yield the CPU mid-update, store. Without mutual
/// exclusion this loses updates (see `counter_without_lock_loses_updates`).
fn racy_increment(counter: &AtomicU64, i: u64) {
    let v = counter.load(Ordering::Relaxed);
    if i % 64 == 0 {
        std::thread::yield_now();
    }
    counter.store(v + 1, Ordering::Relaxed);
}

/// Python's docs example: 10 processes increment a counter 10 000 times each under a Lock, by
/// load then store (no atomic add), half with acquire/release and half with the guard.
fn lock_counter_10_processes() {
    let lock = Lock::anonymous().unwrap();
    let words = Words::new(2);
    let (counter, gate) = (words.at(0), words.at(1));
    let children: Vec<Child> = (0..10u64)
        .map(|p| {
            let lock = &lock;
            spawn(move || {
                gate_wait(gate);
                for i in 0..10_000u64 {
                    if (i + p) % 2 == 0 {
                        assert_eq!(lock.acquire().unwrap(), Acquired::Clean);
                        racy_increment(counter, i);
                        lock.release().unwrap();
                    } else {
                        let _g = lock.lock().unwrap();
                        racy_increment(counter, i);
                    }
                }
                0
            })
        })
        .collect();
    gate.store(1, Ordering::Release);
    join_all_ok(children, Duration::from_secs(120), "incrementer");
    assert_eq!(counter.load(Ordering::Relaxed), 100_000);
    assert!(!lock.is_owned());
}

/// The control for the counters: the same increments without a lock lose updates, so the
/// counter cases can tell a lock that excludes from one that does not.
fn counter_without_lock_loses_updates() {
    let words = Words::new(2);
    let (counter, gate) = (words.at(0), words.at(1));
    let children: Vec<Child> = (0..10)
        .map(|_| {
            spawn(move || {
                gate_wait(gate);
                for i in 0..10_000u64 {
                    racy_increment(counter, i);
                }
                0
            })
        })
        .collect();
    gate.store(1, Ordering::Release);
    join_all_ok(children, Duration::from_secs(120), "incrementer");
    let total = counter.load(Ordering::Relaxed);
    println!("    without a lock: {total} of 100000");
    assert!(
        total < 100_000,
        "no update lost without a lock: the counter test is blind"
    );
}

/// The same with a `ShmMutex<u64>` and with the RLock (taken twice, recursively, each time).
fn shm_mutex_and_rlock_counters() {
    let m = ShmMutex::anonymous(0u64).unwrap();
    let rlock = RLock::anonymous().unwrap();
    let words = Words::new(2);
    let (counter, gate) = (words.at(0), words.at(1));
    let children: Vec<Child> = (0..10)
        .map(|_| {
            let (m, rlock) = (&m, &rlock);
            spawn(move || {
                gate_wait(gate);
                for i in 0..3000u64 {
                    *m.lock().unwrap() += 1;
                    let _outer = rlock.lock().unwrap();
                    let _inner = rlock.lock().unwrap();
                    assert_eq!(rlock.depth(), 2);
                    racy_increment(counter, i);
                }
                0
            })
        })
        .collect();
    gate.store(1, Ordering::Release);
    join_all_ok(children, Duration::from_secs(120), "incrementer");
    assert_eq!(*m.lock().unwrap(), 30_000);
    assert_eq!(counter.load(Ordering::Relaxed), 30_000);
}

/// Semaphore(3): never more than 3 inside at once, and 3 are reached.
fn semaphore_admits_at_most_3() {
    let sem = Semaphore::anonymous(3).unwrap();
    let words = Words::new(3); // inside now, most inside ever, total entries
    let children: Vec<Child> = (0..8)
        .map(|p| {
            let (sem, words) = (&sem, &words);
            spawn(move || {
                for i in 0..60 {
                    let unit = if i % 2 == 0 {
                        sem.acquire().unwrap();
                        None
                    } else {
                        Some(sem.access().unwrap())
                    };
                    let inside = words.at(0).fetch_add(1, Ordering::SeqCst) + 1;
                    words.at(1).fetch_max(inside, Ordering::SeqCst);
                    words.at(2).fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_micros(200 + 50 * p));
                    words.at(0).fetch_sub(1, Ordering::SeqCst);
                    if unit.is_none() {
                        sem.release().unwrap();
                    }
                    drop(unit);
                }
                0
            })
        })
        .collect();
    join_all_ok(children, Duration::from_secs(60), "semaphore user");
    let most = words.at(1).load(Ordering::SeqCst);
    assert!(
        most <= 3,
        "{most} processes were inside a Semaphore(3) at once"
    );
    assert_eq!(most, 3, "never 3 inside at once: the semaphore serialised");
    assert_eq!(words.at(2).load(Ordering::SeqCst), 8 * 60);
    assert_eq!(sem.get_value(), 3);
}

/// BoundedSemaphore refuses a release above its initial value; Semaphore above MAX_VALUE.
fn bounded_semaphore_over_release() {
    let sem = BoundedSemaphore::anonymous(2).unwrap();
    assert_eq!(sem.limit(), 2);
    assert!(matches!(
        sem.release(),
        Err(SyncError::ReleasedTooManyTimes { limit: 2 })
    ));
    sem.acquire().unwrap();
    // Released by another process: allowed, as in Python.
    spawn(|| i32::from(sem.release().is_err())).join_ok(CHILD_BOUND, "releaser");
    assert_eq!(sem.get_value(), 2);
    sem.acquire().unwrap();
    assert!(matches!(
        sem.release_many(2),
        Err(SyncError::ReleasedTooManyTimes { limit: 2 })
    ));
    assert_eq!(sem.get_value(), 1, "a refused release must release nothing");
    sem.release().unwrap();
    let e = sem.release().unwrap_err();
    assert!(e.to_string().contains("released too many times"), "{e}");

    let plain = Semaphore::anonymous(Semaphore::MAX_VALUE - 1).unwrap();
    plain.release().unwrap();
    assert!(matches!(
        plain.release(),
        Err(SyncError::ReleasedTooManyTimes { .. })
    ));
    assert!(matches!(
        Semaphore::anonymous(Semaphore::MAX_VALUE + 1),
        Err(SyncError::InvalidParameter { .. })
    ));
    assert!(matches!(
        BoundedSemaphore::anonymous(0),
        Err(SyncError::InvalidParameter { .. })
    ));
    let zero = Semaphore::anonymous(0).unwrap();
    assert!(!zero.try_acquire());
}

/// RLock: recursion counted per owner; another thread/process is not the owner.
fn rlock_recursion_and_not_owner() {
    let rlock = RLock::anonymous().unwrap();
    assert!(matches!(
        rlock.release(),
        Err(SyncError::NotOwner { what: "rlock" })
    ));
    for depth in 1..=3 {
        assert_eq!(rlock.acquire().unwrap(), Acquired::Clean);
        assert_eq!(rlock.depth(), depth);
    }
    assert_eq!(rlock.try_acquire().unwrap(), Some(Acquired::Clean));
    assert_eq!(rlock.depth(), 4);
    rlock.release().unwrap();
    let child = spawn(|| {
        assert!(!rlock.is_owned());
        assert_eq!(rlock.depth(), 0);
        assert!(matches!(rlock.release(), Err(SyncError::NotOwner { .. })));
        assert!(rlock.try_acquire().unwrap().is_none());
        assert!(matches!(
            rlock.acquire_timeout(Duration::from_millis(30)),
            Err(SyncError::Timeout)
        ));
        0
    });
    child.join_ok(CHILD_BOUND, "non-owner");
    // Another thread of the same process is not the owner either.
    let other_thread = std::thread::scope(|s| {
        s.spawn(|| {
            (
                matches!(rlock.release(), Err(SyncError::NotOwner { .. })),
                rlock.try_acquire().unwrap().is_none(),
            )
        })
        .join()
        .unwrap()
    });
    assert_eq!(other_thread, (true, true));
    for _ in 0..3 {
        rlock.release().unwrap();
    }
    assert!(!rlock.is_owned());
    assert!(rlock.release().is_err());
    // Free now for another process.
    spawn(|| {
        let ok = rlock.try_acquire().unwrap() == Some(Acquired::Clean);
        rlock.release().unwrap();
        i32::from(!ok)
    })
    .join_ok(CHILD_BOUND, "next owner");
}

/// Lock: release of an unheld lock, or by a non-owner, is NotOwner; double acquire blocks.
fn lock_release_rules() {
    let lock = Lock::anonymous().unwrap();
    let e = lock.release().unwrap_err();
    assert!(matches!(e, SyncError::NotOwner { what: "lock" }), "{e:?}");
    assert!(e.to_string().contains("does not hold the lock"), "{e}");
    let _ = lock.acquire().unwrap();
    assert!(lock.is_owned());
    // Not recursive: a second acquire by the holder times out (Python would block).
    assert!(matches!(
        lock.acquire_timeout(Duration::from_millis(20)),
        Err(SyncError::Timeout)
    ));
    assert!(lock.try_acquire().unwrap().is_none());
    spawn(|| {
        let not_owner = matches!(lock.release(), Err(SyncError::NotOwner { .. }));
        let busy = lock.try_lock().unwrap().is_none();
        i32::from(!(not_owner && busy))
    })
    .join_ok(CHILD_BOUND, "non-owner");
    lock.release().unwrap();
    assert!(matches!(lock.release(), Err(SyncError::NotOwner { .. })));
}

// ------------------------------------------------------------------------------------------
// Cases: waking across processes
// ------------------------------------------------------------------------------------------

/// Event: set() in one process wakes waiters in four others; clear() makes waits block again.
fn event_wakes_other_processes() {
    let event = Event::anonymous().unwrap();
    let words = Words::new(1);
    let children: Vec<Child> = (0..4)
        .map(|_| {
            let (event, words) = (&event, &words);
            spawn(move || {
                event.wait().unwrap();
                assert!(event.is_set());
                words.at(0).fetch_add(1, Ordering::SeqCst);
                0
            })
        })
        .collect();
    wait_asleep(&children.iter().collect::<Vec<_>>(), "event waiters");
    assert_eq!(words.at(0).load(Ordering::SeqCst), 0);
    let set_at = Instant::now();
    event.set();
    join_all_ok(children, WAKE_BOUND, "event waiter");
    assert_eq!(words.at(0).load(Ordering::SeqCst), 4);
    println!("    4 waiters woken and reaped in {:?}", set_at.elapsed());
    assert!(event.wait_timeout(Duration::ZERO).unwrap());
    event.clear();
    assert!(!event.is_set());
    assert!(!event.wait_timeout(Duration::from_millis(20)).unwrap());
    // A set() followed at once by clear() still wakes a waiter (Python's semantics).
    let pulse = spawn(|| i32::from(!event.wait_timeout(Duration::from_secs(10)).unwrap()));
    wait_asleep(&[&pulse], "pulse waiter");
    event.set();
    event.clear();
    pulse.join_ok(WAKE_BOUND, "pulse waiter");
}

/// Condition: 2 producers and 2 consumers through a 4-slot ring in shared memory.
fn condition_producer_consumer() {
    const CAP: u64 = 4;
    const PER_PRODUCER: u64 = 2000;
    let cond = Condition::anonymous().unwrap();
    // head, tail, consumed count, consumed sum, ring[CAP]
    let words = Words::new(4 + CAP as usize);
    let (head, tail) = (words.at(0), words.at(1));
    let mut children = Vec::new();
    for p in 0..2u64 {
        let (cond, words) = (&cond, &words);
        children.push(spawn(move || {
            for i in 0..PER_PRODUCER {
                let g = cond.lock().unwrap();
                let w = g
                    .wait_for(|| tail.load(Ordering::Relaxed) - head.load(Ordering::Relaxed) < CAP)
                    .unwrap();
                assert!(w.notified && !w.owner_died());
                let t = tail.load(Ordering::Relaxed);
                words
                    .at(4 + (t % CAP) as usize)
                    .store(p * PER_PRODUCER + i + 1, Ordering::Relaxed);
                tail.store(t + 1, Ordering::Relaxed);
                g.notify_all().unwrap();
            }
            0
        }));
    }
    for _ in 0..2 {
        let (cond, words) = (&cond, &words);
        children.push(spawn(move || loop {
            let g = cond.lock().unwrap();
            let w = g
                .wait_for(|| {
                    tail.load(Ordering::Relaxed) > head.load(Ordering::Relaxed)
                        || words.at(2).load(Ordering::Relaxed) == 2 * PER_PRODUCER
                })
                .unwrap();
            assert!(w.notified);
            if words.at(2).load(Ordering::Relaxed) == 2 * PER_PRODUCER {
                g.notify_all().unwrap();
                return 0;
            }
            let h = head.load(Ordering::Relaxed);
            let item = words.at(4 + (h % CAP) as usize).load(Ordering::Relaxed);
            head.store(h + 1, Ordering::Relaxed);
            words.at(2).fetch_add(1, Ordering::Relaxed);
            words.at(3).fetch_add(item, Ordering::Relaxed);
            g.notify_all().unwrap();
        }));
    }
    join_all_ok(children, Duration::from_secs(120), "producer/consumer");
    let n = 2 * PER_PRODUCER;
    assert_eq!(words.at(2).load(Ordering::Relaxed), n);
    assert_eq!(words.at(3).load(Ordering::Relaxed), n * (n + 1) / 2);
    assert_eq!(cond.waiting(), 0);
}

/// Condition::notify(n) wakes exactly n waiters, oldest first; notify_all the rest.
fn condition_notify_n_is_exact() {
    let cond = Condition::anonymous().unwrap();
    let words = Words::new(5); // woken count, then the order each child woke in
    let children: Vec<Child> = (0..4)
        .map(|i| {
            let (cond, words) = (&cond, &words);
            let child = spawn(move || {
                let g = cond.lock().unwrap();
                let w = g.wait().unwrap();
                assert!(w.notified);
                let order = words.at(0).fetch_add(1, Ordering::SeqCst) + 1;
                words.at(1 + i).store(order, Ordering::SeqCst);
                0
            });
            // One at a time, so the arrival order is known.
            assert!(wait_until(Duration::from_secs(10), || cond.waiting() == i as u32 + 1));
            child
        })
        .collect();
    wait_asleep(&children.iter().collect::<Vec<_>>(), "condition waiters");
    let woken = || words.at(0).load(Ordering::SeqCst);
    let g = cond.lock().unwrap();
    g.notify(1).unwrap();
    drop(g);
    assert!(wait_until(WAKE_BOUND, || woken() == 1));
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(woken(), 1, "notify(1) woke more than one");
    assert_eq!(
        words.at(1).load(Ordering::SeqCst),
        1,
        "the oldest waiter goes first"
    );
    let g = cond.lock().unwrap();
    g.notify(2).unwrap();
    drop(g);
    assert!(wait_until(WAKE_BOUND, || woken() == 3));
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(woken(), 3, "notify(2) woke more than two");
    assert_eq!(
        words.at(4).load(Ordering::SeqCst),
        0,
        "the youngest still waits"
    );
    assert_eq!(cond.acquire().unwrap(), Acquired::Clean);
    cond.notify_all().unwrap();
    cond.release().unwrap();
    join_all_ok(children, WAKE_BOUND, "condition waiter");
    assert_eq!(woken(), 4);
    // Not holding the lock: Python's RuntimeError.
    assert!(matches!(cond.notify(1), Err(SyncError::NotOwner { .. })));
    assert!(matches!(cond.wait(), Err(SyncError::NotOwner { .. })));
}

/// More waiters than slots: TooManyWaiters, with the lock still held.
fn condition_too_many_waiters() {
    let cond = Condition::anonymous_with_max_waiters(2).unwrap();
    assert_eq!(cond.max_waiters(), 2);
    let children: Vec<Child> = (0..2)
        .map(|_| {
            let cond = &cond;
            spawn(move || {
                let g = cond.lock().unwrap();
                i32::from(!g.wait().unwrap().notified)
            })
        })
        .collect();
    assert!(wait_until(Duration::from_secs(10), || cond.waiting() == 2));
    let g = cond.lock().unwrap();
    let e = g.wait_timeout(Duration::from_secs(1)).unwrap_err();
    assert!(matches!(e, SyncError::TooManyWaiters { max: 2 }), "{e:?}");
    assert!(cond.is_owned(), "the lock stays held after TooManyWaiters");
    g.notify_all().unwrap();
    drop(g);
    join_all_ok(children, WAKE_BOUND, "waiter");
}

/// Barrier(5) over 40 cycles: in each, the five arrival indices are 0..5, one each.
fn barrier_distinct_indices() {
    const PARTIES: u32 = 5;
    const CYCLES: usize = 40;
    let barrier = Barrier::anonymous(PARTIES).unwrap();
    assert_eq!(barrier.parties(), PARTIES);
    let words = Words::new(CYCLES);
    let children: Vec<Child> = (0..PARTIES)
        .map(|_| {
            let (barrier, words) = (&barrier, &words);
            spawn(move || {
                for cycle in 0..CYCLES {
                    let index = barrier.wait().unwrap();
                    assert!(index < PARTIES);
                    let bit = 1u64 << index;
                    let before = words.at(cycle).fetch_or(bit, Ordering::SeqCst);
                    assert_eq!(before & bit, 0, "index {index} twice in cycle {cycle}");
                }
                0
            })
        })
        .collect();
    join_all_ok(children, Duration::from_secs(60), "party");
    for cycle in 0..CYCLES {
        assert_eq!(
            words.at(cycle).load(Ordering::SeqCst),
            0b11111,
            "cycle {cycle}"
        );
    }
    assert_eq!(barrier.n_waiting(), 0);
    assert!(!barrier.broken());
}

/// Barrier: a timed-out waiter breaks it for all; abort likewise; reset makes it usable.
fn barrier_broken_abort_reset() {
    let barrier = Barrier::anonymous(3).unwrap();
    // Two of three arrive with a timeout: both get BrokenBarrier.
    let waiters: Vec<Child> = (0..2)
        .map(|i| {
            let barrier = &barrier;
            spawn(move || {
                let t = Duration::from_millis(200 + 300 * i);
                let r = barrier.wait_timeout(t);
                i32::from(!matches!(r, Err(SyncError::BrokenBarrier)))
            })
        })
        .collect();
    join_all_ok(waiters, Duration::from_secs(10), "timing-out party");
    assert!(barrier.broken());
    assert_eq!(barrier.n_waiting(), 0);
    assert!(matches!(barrier.wait(), Err(SyncError::BrokenBarrier)));
    let e = barrier.wait().unwrap_err();
    assert!(e.to_string().contains("reset()"), "{e}");
    barrier.reset();
    assert!(!barrier.broken());
    // abort() wakes plain waiters with BrokenBarrier.
    let waiters: Vec<Child> = (0..2)
        .map(|_| {
            let barrier = &barrier;
            spawn(move || i32::from(!matches!(barrier.wait(), Err(SyncError::BrokenBarrier))))
        })
        .collect();
    assert!(wait_until(Duration::from_secs(10), || barrier.n_waiting() == 2));
    barrier.abort();
    join_all_ok(waiters, WAKE_BOUND, "aborted party");
    // reset() with waiters: they get BrokenBarrier, and the barrier works afterwards.
    barrier.reset();
    let waiters: Vec<Child> = (0..2)
        .map(|_| {
            let barrier = &barrier;
            spawn(move || i32::from(!matches!(barrier.wait(), Err(SyncError::BrokenBarrier))))
        })
        .collect();
    assert!(wait_until(Duration::from_secs(10), || barrier.n_waiting() == 2));
    barrier.reset();
    join_all_ok(waiters, WAKE_BOUND, "reset party");
    assert!(!barrier.broken());
    let parties: Vec<Child> = (0..2)
        .map(|_| {
            let barrier = &barrier;
            spawn(move || i32::from(barrier.wait().is_err()))
        })
        .collect();
    let mine = barrier.wait_timeout(Duration::from_secs(10)).unwrap();
    assert!(mine < 3);
    join_all_ok(parties, WAKE_BOUND, "party after reset");
    assert!(matches!(
        Barrier::anonymous(0),
        Err(SyncError::InvalidParameter { .. })
    ));
}

// ------------------------------------------------------------------------------------------
// Cases: kill -9
// ------------------------------------------------------------------------------------------

/// A Lock holder SIGKILLed while holding it: a process blocked in acquire gets it, told
/// OwnerDied; after mark_consistent the lock is clean again. 20 rounds. Then: unmarked release
/// makes it Unrecoverable.
fn lock_holder_killed_is_recovered() {
    let lock = Lock::anonymous().unwrap();
    let words = Words::new(2); // holding, counter
    for round in 0..20 {
        words.at(0).store(0, Ordering::SeqCst);
        let mut holder = {
            let (lock, words) = (&lock, &words);
            spawn(move || {
                let _ = lock.acquire().unwrap();
                // A half-done update the next holder must notice and repair.
                words.at(1).fetch_add(1000, Ordering::SeqCst);
                words.at(0).store(1, Ordering::SeqCst);
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                }
            })
        };
        assert!(wait_until(Duration::from_secs(10), || words
            .at(0)
            .load(Ordering::SeqCst)
            == 1));
        let next = {
            let (lock, words) = (&lock, &words);
            spawn(move || match lock.lock() {
                Err(AcquireError::OwnerDied(mut g)) => {
                    words.at(1).fetch_sub(1000, Ordering::SeqCst); // the repair
                    g.mark_consistent();
                    7
                }
                Ok(_) => 1,
                Err(AcquireError::Sync(e)) => panic!("{e}"),
            })
        };
        if round % 2 == 0 {
            wait_asleep(&[&next], "blocked acquirer");
        }
        assert_eq!(holder.kill(), Exit::Signal(libc::SIGKILL));
        next.join_code(WAKE_BOUND, "next acquirer", 7);
        assert_eq!(words.at(1).load(Ordering::SeqCst), 0, "round {round}");
        assert_eq!(lock.acquire().unwrap(), Acquired::Clean, "round {round}");
        lock.release().unwrap();
    }
    // Released without mark_consistent: unrecoverable for everyone, as POSIX says.
    let mut holder = spawn(|| {
        let _ = lock.acquire().unwrap();
        words.at(0).store(2, Ordering::SeqCst);
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    assert!(wait_until(Duration::from_secs(10), || words
        .at(0)
        .load(Ordering::SeqCst)
        == 2));
    holder.kill();
    assert_eq!(lock.acquire().unwrap(), Acquired::OwnerDied);
    lock.release().unwrap();
    let e = lock.acquire().unwrap_err();
    assert!(matches!(e, SyncError::Unrecoverable), "{e:?}");
}

/// A sleeper whose wake-up went to a waiter that was killed before it took the lock, while the
/// lock was taken back uncontended (so its word lost the waiters bit): the kernel's cleanup of
/// the dead waiter wakes nobody (it does so only for a free word) and the next unlock sees no
/// waiters. The sleeper must still get the lock, within a wait slice. The killed waiter is
/// written by hand here, a raw `FUTEX_WAIT` on the lock word as glibc's own waiter does it, and
/// it sleeps first, so the futex queue's FIFO order makes it the one woken in every round.
/// (The race itself, with real waiters, hung `value_counter_with_kills` in 1 run of ~300.)
fn lock_wakeup_lost_to_killed_waiter() {
    const FUTEX_WAITERS: u32 = 0x8000_0000;
    let region = Region::anonymous(4096).unwrap();
    let at = region.as_ptr().cast::<RawRobustMutex>();
    // SAFETY: a fresh private page, aligned, that outlives every use below.
    unsafe { RawRobustMutex::init(at).unwrap() };
    // SAFETY: initialised just above; the region lives to the end of the case.
    let mutex = unsafe { &*at };
    // glibc keeps the futex word first in the mutex (see baozi-sync's sys module).
    // SAFETY: an aligned 4-byte word at the start of the live region.
    let word = unsafe { &*region.as_ptr().cast::<std::sync::atomic::AtomicU32>() };
    let words = Words::new(1); // the victim was woken
    for round in 0..5 {
        words.at(0).store(0, Ordering::SeqCst);
        assert_eq!(mutex.lock(None).unwrap(), Acquired::Clean);
        let mut victim = {
            let words = &words;
            spawn(move || {
                let expect = word.fetch_or(FUTEX_WAITERS, Ordering::SeqCst) | FUTEX_WAITERS;
                // SAFETY: FUTEX_WAIT on a live, aligned word; shared (no PRIVATE flag), as
                // glibc waits on a process-shared mutex.
                unsafe {
                    libc::syscall(
                        libc::SYS_futex,
                        word.as_ptr(),
                        libc::FUTEX_WAIT,
                        expect,
                        std::ptr::null::<libc::timespec>(),
                    )
                };
                words.at(0).store(1, Ordering::SeqCst);
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                }
            })
        };
        wait_asleep(&[&victim], "the waiter to be killed");
        let survivor = spawn(move || {
            let acquired = mutex.lock(None).unwrap();
            if acquired == Acquired::OwnerDied {
                // SAFETY: held after EOWNERDEAD.
                unsafe { mutex.mark_consistent() };
            }
            // SAFETY: held by this thread.
            unsafe { mutex.unlock() };
            0
        });
        wait_asleep(&[&survivor], "the other sleeper");
        let start = Instant::now();
        // SAFETY: this thread holds it. The unlock wakes the oldest sleeper: the victim.
        unsafe { mutex.unlock() };
        match mutex.try_lock().unwrap() {
            Some(_) => {
                assert!(
                    wait_until(Duration::from_secs(10), || words
                        .at(0)
                        .load(Ordering::SeqCst)
                        == 1),
                    "round {round}: the oldest sleeper was not the one woken"
                );
                assert_eq!(victim.kill(), Exit::Signal(libc::SIGKILL));
                // SAFETY: this thread holds it. No waiters bit: this wakes nobody.
                unsafe { mutex.unlock() };
            }
            // The survivor's slice ended just then and it took the lock: nothing was lost.
            None => {
                victim.kill();
            }
        }
        survivor.join_ok(WAKE_BOUND, "the sleeper whose wake-up was lost");
        let waited = start.elapsed();
        println!("    round {round}: the other sleeper got the lock after {waited:?}");
        assert!(
            waited < baozi_sync::WAIT_SLICE + Duration::from_secs(1),
            "round {round}: {waited:?}, more than a wait slice"
        );
    }
}

/// RLock held at depth 3 and the Condition's lock: holder SIGKILLed -> next acquirer told.
fn rlock_and_condition_holder_killed() {
    let rlock = RLock::anonymous().unwrap();
    let cond = Condition::anonymous().unwrap();
    let words = Words::new(1);
    let mut holder = spawn(|| {
        for _ in 0..3 {
            let _ = rlock.acquire().unwrap();
        }
        let _ = cond.acquire().unwrap();
        let _ = cond.acquire().unwrap();
        words.at(0).store(1, Ordering::SeqCst);
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    assert!(wait_until(Duration::from_secs(10), || words
        .at(0)
        .load(Ordering::SeqCst)
        == 1));
    holder.kill();
    assert_eq!(rlock.acquire().unwrap(), Acquired::OwnerDied);
    assert_eq!(
        rlock.depth(),
        1,
        "a dead holder's recursion is not inherited"
    );
    rlock.mark_consistent().unwrap();
    rlock.release().unwrap();
    assert!(!rlock.is_owned());
    assert_eq!(rlock.acquire().unwrap(), Acquired::Clean);
    rlock.release().unwrap();
    match cond.lock() {
        Err(AcquireError::OwnerDied(mut g)) => {
            g.mark_consistent();
            // The condition still works: notify with nobody waiting, a timed wait.
            g.notify_all().unwrap();
            let w = g.wait_timeout(Duration::from_millis(20)).unwrap();
            assert!(!w.notified && !w.owner_died());
        }
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    assert!(!cond.is_owned());
    assert_eq!(cond.acquire().unwrap(), Acquired::Clean);
    cond.release().unwrap();
}

/// A waiter SIGKILLed while blocked in Event::wait: the others are still woken. 30 rounds.
fn event_waiter_killed() {
    let mut rng = Rng(seed());
    for round in 0..30 {
        let event = Event::anonymous().unwrap();
        let mut children: Vec<Child> = (0..3)
            .map(|_| {
                let event = &event;
                spawn(move || i32::from(event.wait().is_err()))
            })
            .collect();
        wait_asleep(&children.iter().collect::<Vec<_>>(), "event waiters");
        let victim = rng.below(3) as usize;
        children[victim].kill();
        if round % 2 == 1 {
            // A later waiter, arriving after the death.
            children.push(spawn(|| i32::from(event.wait().is_err())));
            wait_asleep(&[children.last().unwrap()], "late waiter");
        }
        event.set();
        let start = Instant::now();
        for (i, c) in children.into_iter().enumerate() {
            if i != victim {
                c.join_ok(WAKE_BOUND, &format!("round {round}: live waiter"));
            }
        }
        assert!(start.elapsed() < WAKE_BOUND);
    }
}

/// A waiter SIGKILLed while blocked in Condition::wait: notify(2) still wakes both live
/// waiters (the dead one swallows nothing), and a notifier never blocks. 30 rounds.
fn condition_waiter_killed() {
    let mut rng = Rng(seed());
    let cond = Condition::anonymous().unwrap();
    let words = Words::new(1);
    for round in 0..30 {
        words.at(0).store(0, Ordering::SeqCst);
        let mut children: Vec<Child> = (0..3)
            .map(|_| {
                let (cond, words) = (&cond, &words);
                spawn(move || {
                    let g = cond.lock().unwrap();
                    let w = g.wait().unwrap();
                    i32::from(!w.notified || words.at(0).load(Ordering::SeqCst) != 1)
                })
            })
            .collect();
        assert!(wait_until(Duration::from_secs(10), || cond.waiting() == 3));
        wait_asleep(&children.iter().collect::<Vec<_>>(), "condition waiters");
        let victim = rng.below(3) as usize;
        children[victim].kill();
        let g = cond.lock().unwrap();
        words.at(0).store(1, Ordering::SeqCst);
        if round % 2 == 0 {
            g.notify(2).unwrap();
        } else {
            g.notify(1).unwrap();
            g.notify(1).unwrap();
        }
        drop(g);
        for (i, c) in children.into_iter().enumerate() {
            if i != victim {
                c.join_ok(WAKE_BOUND, &format!("round {round}: live waiter"));
            }
        }
        assert!(
            wait_until(Duration::from_secs(2), || cond.waiting() == 0),
            "round {round}: {} slots still occupied",
            cond.waiting()
        );
    }
}

/// A waiter notified and then SIGKILLed before it took the lock back: its notification is
/// passed on to the other waiter, which returns notified. 10 rounds.
fn condition_notified_waiter_killed() {
    let cond = Condition::anonymous().unwrap();
    for round in 0..10 {
        let mut first = spawn(|| {
            let g = cond.lock().unwrap();
            let _ = g.wait();
            0
        });
        assert!(wait_until(Duration::from_secs(10), || cond.waiting() == 1));
        let second = spawn(|| {
            let g = cond.lock().unwrap();
            let w = g.wait_timeout(Duration::from_secs(10)).unwrap();
            i32::from(!w.notified)
        });
        assert!(wait_until(Duration::from_secs(10), || cond.waiting() == 2));
        wait_asleep(&[&first, &second], "condition waiters");
        // Notify the oldest (the first), and kill it while we still hold the lock, so it cannot
        // have taken its notification.
        let g = cond.lock().unwrap();
        g.notify(1).unwrap();
        first.kill();
        drop(g);
        let start = Instant::now();
        second.join_ok(WAKE_BOUND, &format!("round {round}: second waiter"));
        if round == 0 {
            println!(
                "    stranded notification passed on in {:?}",
                start.elapsed()
            );
        }
        assert!(wait_until(Duration::from_secs(2), || cond.waiting() == 0));
    }
}

/// A waiter SIGKILLed while blocked in Barrier::wait (after arriving): the others are
/// released when the rest arrive; in the next cycle, with a party missing, wait_timeout
/// gives BrokenBarrier instead of hanging. 30 rounds.
fn barrier_waiter_killed() {
    let mut rng = Rng(seed());
    for round in 0..30 {
        let barrier = Barrier::anonymous(3).unwrap();
        let mut children: Vec<Child> = (0..2)
            .map(|_| {
                let barrier = &barrier;
                spawn(move || {
                    if barrier.wait().is_err() {
                        return 1;
                    }
                    // Next cycle: one party is dead, so this must break, not hang.
                    match barrier.wait_timeout(Duration::from_millis(150)) {
                        Err(SyncError::BrokenBarrier) => 0,
                        _ => 2,
                    }
                })
            })
            .collect();
        assert!(wait_until(Duration::from_secs(10), || barrier.n_waiting() == 2));
        wait_asleep(&children.iter().collect::<Vec<_>>(), "barrier waiters");
        let victim = rng.below(2) as usize;
        children[victim].kill();
        // The third party: the cycle completes (the dead one had arrived).
        let index = barrier.wait_timeout(WAKE_BOUND).unwrap();
        assert_eq!(index, 2, "round {round}: the last arrival gets parties - 1");
        // Join the survivor's next cycle, then let it time out... as the parent, we arrive
        // too: two of three, so both break.
        let mine = barrier.wait_timeout(Duration::from_millis(150));
        assert!(matches!(mine, Err(SyncError::BrokenBarrier)), "{mine:?}");
        for (i, c) in children.into_iter().enumerate() {
            if i != victim {
                c.join_ok(WAKE_BOUND, &format!("round {round}: live party"));
            }
        }
    }
}

/// A waiter SIGKILLed while blocked in Semaphore::acquire: releases still reach the others.
fn semaphore_waiter_killed() {
    let sem = Semaphore::anonymous(0).unwrap();
    for _ in 0..10 {
        let mut children: Vec<Child> = (0..3)
            .map(|_| {
                let sem = &sem;
                spawn(move || i32::from(sem.acquire().is_err()))
            })
            .collect();
        wait_asleep(&children.iter().collect::<Vec<_>>(), "semaphore waiters");
        children[0].kill();
        sem.release_many(2).unwrap();
        for c in children.into_iter().skip(1) {
            c.join_ok(WAKE_BOUND, "live acquirer");
        }
        assert_eq!(sem.get_value(), 0);
    }
}

// ------------------------------------------------------------------------------------------
// Cases: timeouts and names
// ------------------------------------------------------------------------------------------

/// Every timeout returns after at least its length, and within generous slack.
fn timeouts_are_bounded() {
    const T: Duration = Duration::from_millis(150);
    const SLACK: Duration = Duration::from_secs(1);
    fn timed<R>(what: &str, f: impl FnOnce() -> R) -> R {
        let start = Instant::now();
        let r = f();
        let took = start.elapsed();
        assert!(took >= T, "{what} returned after {took:?} < {T:?}");
        assert!(took < T + SLACK, "{what} returned after {took:?}");
        r
    }
    let lock = Lock::anonymous().unwrap();
    let rlock = RLock::anonymous().unwrap();
    let cond = Condition::anonymous().unwrap();
    let words = Words::new(1);
    let mut holder = spawn(|| {
        let _ = lock.acquire().unwrap();
        let _ = rlock.acquire().unwrap();
        let _ = cond.acquire().unwrap();
        words.at(0).store(1, Ordering::SeqCst);
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    assert!(wait_until(Duration::from_secs(10), || words
        .at(0)
        .load(Ordering::SeqCst)
        == 1));
    assert!(matches!(
        timed("Lock::acquire_timeout", || lock.acquire_timeout(T)),
        Err(SyncError::Timeout)
    ));
    assert!(matches!(
        timed("Lock::lock_timeout", || lock.lock_timeout(T)),
        Err(AcquireError::Sync(SyncError::Timeout))
    ));
    assert!(matches!(
        timed("RLock::acquire_timeout", || rlock.acquire_timeout(T)),
        Err(SyncError::Timeout)
    ));
    assert!(matches!(
        timed("Condition::acquire_timeout", || cond.acquire_timeout(T)),
        Err(SyncError::Timeout)
    ));
    holder.kill();
    let sem = Semaphore::anonymous(0).unwrap();
    assert!(matches!(
        timed("Semaphore::acquire_timeout", || sem.acquire_timeout(T)),
        Err(SyncError::Timeout)
    ));
    let bsem = BoundedSemaphore::anonymous(1).unwrap();
    bsem.acquire().unwrap();
    assert!(matches!(
        timed("BoundedSemaphore::acquire_timeout", || bsem
            .acquire_timeout(T)),
        Err(SyncError::Timeout)
    ));
    let event = Event::anonymous().unwrap();
    assert!(!timed("Event::wait_timeout", || event.wait_timeout(T)).unwrap());
    let cond = Condition::anonymous().unwrap();
    let g = cond.lock().unwrap();
    let w = timed("Condition::wait_timeout", || g.wait_timeout(T)).unwrap();
    assert!(!w.notified && !w.owner_died());
    let w = timed("Condition::wait_for_timeout", || {
        g.wait_for_timeout(T, || false)
    })
    .unwrap();
    assert!(!w.notified);
    drop(g);
    let barrier = Barrier::anonymous(2).unwrap();
    assert!(matches!(
        timed("Barrier::wait_timeout", || barrier.wait_timeout(T)),
        Err(SyncError::BrokenBarrier)
    ));
    // A zero timeout on something available returns at once.
    let start = Instant::now();
    event.set();
    assert!(event.wait_timeout(Duration::ZERO).unwrap());
    bsem.release().unwrap();
    bsem.acquire_timeout(Duration::ZERO).unwrap();
    assert!(start.elapsed() < SLACK);
}

/// Every primitive opens by name (and works across processes that way); opening one kind as
/// another is a typed error naming both.
fn open_by_name_and_wrong_kind() {
    let n_lock = unique_name("lock");
    let n_rlock = unique_name("rlock");
    let n_sem = unique_name("sem");
    let n_bsem = unique_name("bsem");
    let n_event = unique_name("event");
    let n_cond = unique_name("cond");
    let n_barrier = unique_name("barrier");
    let n_mutex = unique_name("mutex");
    let lock = Lock::create(&n_lock).unwrap();
    let _rlock = RLock::create(&n_rlock).unwrap();
    let sem = Semaphore::create(&n_sem, 2).unwrap();
    let _bsem = BoundedSemaphore::create(&n_bsem, 3).unwrap();
    let event = Event::create(&n_event).unwrap();
    let _cond = Condition::create_with_max_waiters(&n_cond, 5).unwrap();
    let barrier = Barrier::create(&n_barrier, 2).unwrap();
    let _mutex = ShmMutex::create(&n_mutex, 0u64).unwrap();
    assert!(matches!(
        Lock::create(&n_lock),
        Err(SyncError::Shm(ShmError::AlreadyExists { .. }))
    ));

    // Opened by name in another process, they are the same objects.
    let _ = lock.acquire().unwrap();
    let child = {
        let (n_lock, n_sem, n_event, n_barrier, n_cond, n_bsem, n_rlock) = (
            n_lock.clone(),
            n_sem.clone(),
            n_event.clone(),
            n_barrier.clone(),
            n_cond.clone(),
            n_bsem.clone(),
            n_rlock.clone(),
        );
        spawn(move || {
            let lock = Lock::open(&n_lock).unwrap();
            let sem = Semaphore::open(&n_sem).unwrap();
            let event = Event::open(&n_event).unwrap();
            let barrier = Barrier::open(&n_barrier).unwrap();
            let cond = Condition::open(&n_cond).unwrap();
            let bsem = BoundedSemaphore::open(&n_bsem).unwrap();
            let rlock = RLock::open(&n_rlock).unwrap();
            assert_eq!(cond.max_waiters(), 5);
            assert_eq!(bsem.limit(), 3);
            assert_eq!(barrier.parties(), 2);
            assert_eq!(sem.get_value(), 2);
            assert!(lock.try_acquire().unwrap().is_none(), "held by the parent");
            let _ = rlock.acquire().unwrap();
            rlock.release().unwrap();
            sem.acquire().unwrap();
            event.set();
            10 + barrier.wait_timeout(Duration::from_secs(10)).unwrap() as i32
        })
    };
    assert!(event.wait_timeout(Duration::from_secs(10)).unwrap());
    let mine = barrier.wait_timeout(Duration::from_secs(10)).unwrap();
    child.join_code(CHILD_BOUND, "opener", 10 + (1 - mine as i32));
    assert_eq!(sem.get_value(), 1);
    lock.release().unwrap();

    // Each kind opened as every other: WrongPrimitive naming both.
    type Opener = fn(&str) -> Result<(), SyncError>;
    let openers: [(&str, &str, Opener); 7] = [
        ("lock", &n_lock, |n| Lock::open(n).map(drop)),
        ("rlock", &n_rlock, |n| RLock::open(n).map(drop)),
        ("semaphore", &n_sem, |n| Semaphore::open(n).map(drop)),
        ("bounded semaphore", &n_bsem, |n| {
            BoundedSemaphore::open(n).map(drop)
        }),
        ("event", &n_event, |n| Event::open(n).map(drop)),
        ("condition", &n_cond, |n| Condition::open(n).map(drop)),
        ("barrier", &n_barrier, |n| Barrier::open(n).map(drop)),
    ];
    for (kind, _, open) in &openers {
        for (other, name, _) in &openers {
            match open(name) {
                Ok(()) => assert_eq!(kind, other, "a {other} opened as a {kind}"),
                Err(SyncError::WrongPrimitive {
                    found, expected, ..
                }) => {
                    assert_ne!(kind, other);
                    assert_eq!((found, expected), (*other, *kind));
                }
                Err(e) => panic!("a {other} opened as a {kind}: {e:?}"),
            }
        }
        // A ShmMutex is a sync object too, but no primitive: a layout mismatch.
        assert!(matches!(
            open(&n_mutex),
            Err(SyncError::Shm(ShmError::LayoutMismatch { .. }))
        ));
        assert!(matches!(
            open(&unique_name("missing")),
            Err(SyncError::Shm(ShmError::NotFound { .. }))
        ));
    }
    let e = Event::open(&n_sem).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("is a baozi semaphore, not a baozi event"),
        "{text}"
    );
    println!("    e.g. {text}");
}

fn main() {
    support::run(vec![
        case("lock_counter_10_processes", lock_counter_10_processes).timeout(180),
        case(
            "counter_without_lock_loses_updates",
            counter_without_lock_loses_updates,
        ),
        case("shm_mutex_and_rlock_counters", shm_mutex_and_rlock_counters).timeout(180),
        case("semaphore_admits_at_most_3", semaphore_admits_at_most_3),
        case(
            "bounded_semaphore_over_release",
            bounded_semaphore_over_release,
        ),
        case(
            "rlock_recursion_and_not_owner",
            rlock_recursion_and_not_owner,
        ),
        case("lock_release_rules", lock_release_rules),
        case("event_wakes_other_processes", event_wakes_other_processes),
        case("condition_producer_consumer", condition_producer_consumer).timeout(180),
        case("condition_notify_n_is_exact", condition_notify_n_is_exact),
        case("condition_too_many_waiters", condition_too_many_waiters),
        case("barrier_distinct_indices", barrier_distinct_indices),
        case("barrier_broken_abort_reset", barrier_broken_abort_reset),
        case(
            "lock_holder_killed_is_recovered",
            lock_holder_killed_is_recovered,
        ),
        case(
            "lock_wakeup_lost_to_killed_waiter",
            lock_wakeup_lost_to_killed_waiter,
        ),
        case(
            "rlock_and_condition_holder_killed",
            rlock_and_condition_holder_killed,
        ),
        case("event_waiter_killed", event_waiter_killed).timeout(120),
        case("condition_waiter_killed", condition_waiter_killed).timeout(120),
        case(
            "condition_notified_waiter_killed",
            condition_notified_waiter_killed,
        )
        .timeout(120),
        case("barrier_waiter_killed", barrier_waiter_killed).timeout(120),
        case("semaphore_waiter_killed", semaphore_waiter_killed),
        case("timeouts_are_bounded", timeouts_are_bounded),
        case("open_by_name_and_wrong_kind", open_by_name_and_wrong_kind),
    ]);
}

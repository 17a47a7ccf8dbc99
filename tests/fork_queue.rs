//! Queues, joinable queues and locks shared by forked processes.
//!
//! `harness = false`: every case runs in its own forked process group under a watchdog (see
//! `tests/support/mod.rs`); the binary ends with one `N passed, N failed` line.
//!
//! * N producers x M consumers (1x1, 2x2, 4x4; maxsize 1, 64 and none; fixed-size `Pod`
//!   messages, variable-size byte messages that wrap the ring, and batches): every message is
//!   delivered exactly once, untorn, and in per-producer order at every consumer.
//! * A `get` asleep in a child is woken by a `put` from the parent (and a `put` by a `get`).
//! * `close()` in one process wakes getters blocked in others; they drain, then see `Closed`.
//! * `JoinableQueue::join` in the parent returns only after the children called `task_done`
//!   for every item.
//! * `put_timeout` / `get_timeout` bounds, with the other side in another process.
//! * The Python docs' counter: 10 processes x 10 000 increments under a `ShmMutex` is exactly
//!   100 000; the same without the lock loses updates.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use baozi::shm::{Offset, Region};
use baozi::{
    GetError, JoinableQueue, Message, Pod, PutError, Queue, QueueError, QueueOptions, ShmMutex,
};
use support::{case, fork, join_all_ok, now_ns, proc_state, wait_until, Child, Gate, Ledger, Rng};

/// Bound on any single blocking operation in a child: far above what a healthy run needs.
const OP_BOUND: Duration = Duration::from_secs(20);
/// Bound on a group of children finishing.
const JOIN_BOUND: Duration = Duration::from_secs(45);

fn main() {
    support::run_main(vec![
        case("mpmc_1x1_maxsize1", || {
            mpmc::<PodMsg>(1, 1, 1, 4096, 20_000, false)
        }),
        case("mpmc_1x1_maxsize64", || {
            mpmc::<PodMsg>(1, 1, 64, 4096, 30_000, false)
        }),
        case("mpmc_2x2_maxsize1", || {
            mpmc::<PodMsg>(2, 2, 1, 4096, 10_000, false)
        }),
        case("mpmc_2x2_maxsize64", || {
            mpmc::<PodMsg>(2, 2, 64, 4096, 15_000, false)
        }),
        case("mpmc_4x4_maxsize1", || {
            mpmc::<PodMsg>(4, 4, 1, 4096, 4000, false)
        }),
        case("mpmc_4x4_maxsize64", || {
            mpmc::<PodMsg>(4, 4, 64, 4096, 6000, false)
        }),
        case("mpmc_4x4_unbounded_small_ring", || {
            mpmc::<PodMsg>(4, 4, 0, 256, 6000, false)
        }),
        case("mpmc_2x3_bytes_wrapping_ring", || {
            mpmc::<Vec<u8>>(2, 3, 0, 2048, 10_000, false)
        }),
        case("mpmc_3x2_bytes_maxsize1", || {
            mpmc::<Vec<u8>>(3, 2, 1, 2048, 4000, false)
        }),
        case("mpmc_2x2_put_many_get_many", || {
            mpmc::<PodMsg>(2, 2, 16, 4096, 15_000, true)
        }),
        case("mpmc_3x3_maxsize1_no_spinning", mpmc_no_spin),
        case("mpmc_2x2_bytes_batches", || {
            mpmc::<Vec<u8>>(2, 2, 8, 2048, 8000, true)
        }),
        case(
            "blocking_get_in_child_woken_by_parent_put",
            blocking_get_woken_by_put,
        ),
        case(
            "blocking_put_in_child_woken_by_parent_get",
            blocking_put_woken_by_get,
        ),
        case(
            "close_wakes_getters_blocked_in_other_processes",
            close_wakes_blocked_getters,
        ),
        case("closed_queue_is_drained_then_closed", close_then_drain),
        case("joinable_join_waits_for_every_task_done", joinable_join),
        case(
            "shutdown_immediate_wakes_get_put_join_in_other_processes",
            shutdown_wakes_other_processes,
        ),
        case(
            "shutdown_killed_after_its_discard_is_finished_by_the_next_consumer",
            shutdown_killed_after_discard,
        ),
        case(
            "producer_killed_ends_a_blocked_get_with_disconnected",
            producer_killed_disconnects_getter,
        ),
        case(
            "consumer_killed_ends_a_blocked_put_with_disconnected",
            consumer_killed_disconnects_putter,
        ),
        case(
            "put_timeout_get_timeout_across_processes",
            timeouts_across_processes,
        ),
        case("shm_mutex_counter_10_procs_x_10000", shm_mutex_counter),
        case("no_lock_counter_loses_updates", no_lock_loses_updates),
    ])
}

// ------------------------------------------------------------------------------------------
// Producers x consumers
// ------------------------------------------------------------------------------------------

/// A message that says who sent it and its sequence number, and detects tearing.
trait Wire: Message {
    fn make(producer: u64, seq: u64) -> Self;
    /// (producer, sequence); panics if the message is torn or foreign.
    fn parse(&self) -> (u64, u64);
}

type PodMsg = Pod<[u64; 3]>;

fn check_word(p: u64, s: u64) -> u64 {
    (p.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ s).rotate_left(17) ^ 0x0bad_0ba0
}

impl Wire for PodMsg {
    fn make(p: u64, s: u64) -> Self {
        Pod([p, s, check_word(p, s)])
    }
    fn parse(&self) -> (u64, u64) {
        let [p, s, k] = self.0;
        assert_eq!(k, check_word(p, s), "torn message {:?}", self.0);
        (p, s)
    }
}

/// Byte messages of 8..=300 bytes: producer (u32), sequence (u32), then a pattern.
impl Wire for Vec<u8> {
    fn make(p: u64, s: u64) -> Self {
        let len = 8 + (check_word(p, s) % 293) as usize;
        let mut v = Vec::with_capacity(len);
        v.extend_from_slice(&(p as u32).to_le_bytes());
        v.extend_from_slice(&(s as u32).to_le_bytes());
        v.extend((8..len).map(|i| (p as usize * 31 + s as usize * 7 + i) as u8));
        v
    }
    fn parse(&self) -> (u64, u64) {
        assert!(self.len() >= 8, "message of {} bytes", self.len());
        let p = u64::from(u32::from_le_bytes(self[0..4].try_into().unwrap()));
        let s = u64::from(u32::from_le_bytes(self[4..8].try_into().unwrap()));
        assert_eq!(
            *self,
            Self::make(p, s),
            "torn byte message from producer {p}, seq {s}"
        );
        (p, s)
    }
}

/// Where consumer `c` records what it received: a count, then (producer << 32 | seq) entries.
struct Logs {
    ledger: Ledger,
    stride: usize,
}

impl Logs {
    fn new(consumers: usize, max_entries: usize) -> Self {
        Logs {
            ledger: Ledger::new(consumers * (1 + max_entries)),
            stride: 1 + max_entries,
        }
    }

    /// Called only by consumer `c`: appends (p, s), entry first, then the count (Release).
    fn record(&self, c: usize, p: u64, s: u64) {
        let base = c * self.stride;
        let n = self.ledger.word(base).load(Ordering::Relaxed) as usize;
        assert!(
            n + 1 < self.stride,
            "consumer {c} received more messages than were sent"
        );
        self.ledger
            .word(base + 1 + n)
            .store((p << 32) | s, Ordering::Relaxed);
        self.ledger
            .word(base)
            .store(n as u64 + 1, Ordering::Release);
    }

    fn read(&self, c: usize) -> Vec<(u64, u64)> {
        let base = c * self.stride;
        let n = self.ledger.word(base).load(Ordering::Acquire) as usize;
        (0..n)
            .map(|i| {
                let e = self.ledger.word(base + 1 + i).load(Ordering::Relaxed);
                (e >> 32, e & 0xffff_ffff)
            })
            .collect()
    }
}

/// Checks every (producer, seq) for seq < per_producer was received exactly once over all
/// consumer logs, and that each consumer saw each producer's messages in increasing order.
fn verify_exactly_once(logs: &[Vec<(u64, u64)>], producers: usize, per_producer: u64) {
    let mut seen = vec![vec![0u32; per_producer as usize]; producers];
    for (c, log) in logs.iter().enumerate() {
        let mut last: Vec<Option<u64>> = vec![None; producers];
        for &(p, s) in log {
            assert!(
                (p as usize) < producers && s < per_producer,
                "consumer {c}: bogus ({p}, {s})"
            );
            if let Some(l) = last[p as usize] {
                assert!(
                    s > l,
                    "consumer {c}: producer {p}'s seq {s} came after {l}: order broken"
                );
            }
            last[p as usize] = Some(s);
            seen[p as usize][s as usize] += 1;
        }
    }
    for (p, counts) in seen.iter().enumerate() {
        let lost: Vec<usize> = (0..counts.len()).filter(|&s| counts[s] == 0).collect();
        let dup: Vec<usize> = (0..counts.len()).filter(|&s| counts[s] > 1).collect();
        assert!(
            lost.is_empty(),
            "producer {p}: {} lost, first {:?}",
            lost.len(),
            &lost[..lost.len().min(8)]
        );
        assert!(
            dup.is_empty(),
            "producer {p}: {} duplicated, first {:?}",
            dup.len(),
            &dup[..dup.len().min(8)]
        );
    }
}

/// Every blocked call sleeps in the kernel at once (no adaptive spinning): the futex path only.
fn mpmc_no_spin() {
    mpmc_with::<PodMsg>(
        QueueOptions::new().maxsize(1).capacity(4096).spin(false),
        3,
        3,
        3000,
        false,
    )
}

fn mpmc<W: Wire>(
    producers: usize,
    consumers: usize,
    maxsize: usize,
    capacity: usize,
    per_producer: u64,
    batches: bool,
) {
    let opts = QueueOptions::new().maxsize(maxsize).capacity(capacity);
    mpmc_with::<W>(opts, producers, consumers, per_producer, batches)
}

fn mpmc_with<W: Wire>(
    opts: QueueOptions,
    producers: usize,
    consumers: usize,
    per_producer: u64,
    batches: bool,
) {
    let q: Queue<W> = opts.anonymous().unwrap();
    let maxsize = q.maxsize();
    let logs = Logs::new(consumers, producers * per_producer as usize);
    let gate = Gate::new();
    let mut cons = Vec::new();
    for c in 0..consumers {
        let (q, logs, gate) = (&q, &logs, &gate);
        cons.push(fork(move || {
            gate.wait();
            loop {
                let got = if batches {
                    q.get_many_timeout(8, OP_BOUND)
                } else {
                    q.get_timeout(OP_BOUND).map(|m| vec![m])
                };
                match got {
                    Ok(msgs) => {
                        assert!(
                            !msgs.is_empty() && msgs.len() <= 8,
                            "get_many gave {}",
                            msgs.len()
                        );
                        for m in msgs {
                            let (p, s) = m.parse();
                            logs.record(c, p, s);
                        }
                    }
                    Err(GetError::Closed) => break,
                    Err(e) => panic!("consumer {c}: {e} (no message within {OP_BOUND:?})"),
                }
            }
        }));
    }
    let mut prods = Vec::new();
    for p in 0..producers {
        let (q, gate) = (&q, &gate);
        prods.push(fork(move || {
            gate.wait();
            let mut rng = Rng::new(p as u64 + 1);
            let limit = if maxsize == 0 { 8 } else { maxsize.min(8) } as u64;
            let mut s = 0;
            while s < per_producer {
                if batches {
                    let n = rng.range(1, limit).min(per_producer - s);
                    let batch: Vec<W> = (s..s + n).map(|i| W::make(p as u64, i)).collect();
                    q.put_many_timeout(batch, OP_BOUND)
                        .unwrap_or_else(|e| panic!("producer {p}: put_many at {s}: {e}"));
                    s += n;
                } else {
                    q.put_timeout(W::make(p as u64, s), OP_BOUND)
                        .unwrap_or_else(|e| panic!("producer {p}: put {s}: {e}"));
                    s += 1;
                }
            }
        }));
    }
    let start = Instant::now();
    gate.open();
    join_all_ok(prods, JOIN_BOUND, "producer");
    q.close().unwrap();
    join_all_ok(cons, JOIN_BOUND, "consumer");
    let all: Vec<Vec<(u64, u64)>> = (0..consumers).map(|c| logs.read(c)).collect();
    verify_exactly_once(&all, producers, per_producer);
    assert_eq!(q.qsize(), 0);
    assert_eq!(q.used_bytes(), 0);
    let total = producers as u64 * per_producer;
    let per_consumer: Vec<usize> = all.iter().map(Vec::len).collect();
    println!(
        "    {producers}x{consumers} maxsize {maxsize}: {total} messages exactly once in {:.2} s (per consumer {per_consumer:?})",
        start.elapsed().as_secs_f64()
    );
}

// ------------------------------------------------------------------------------------------
// Waking across processes
// ------------------------------------------------------------------------------------------

/// Waits until `child` sleeps in the kernel (state `S`): it is blocked, not spinning.
fn wait_asleep(child: &Child, what: &str) {
    assert!(
        wait_until(Duration::from_secs(10), || proc_state(child.pid())
            == Some('S')),
        "{what} (pid {}) never went to sleep (state {:?})",
        child.pid(),
        proc_state(child.pid())
    );
}

fn median_ms(mut ns: Vec<u64>) -> f64 {
    ns.sort_unstable();
    ns[ns.len() / 2] as f64 / 1e6
}

/// A get asleep in a child returns soon after the parent's put: the put's notify woke it,
/// rather than the waiter's own 100 ms re-check (a lost wake-up shows as a ~50 ms median).
fn blocking_get_woken_by_put() {
    let q: Queue<u64> = Queue::new(1, 4096).unwrap();
    // [0] child is about to get, [1] value received + 1, [2] CLOCK_MONOTONIC at return.
    let led = Ledger::new(3);
    let mut latencies = Vec::new();
    for round in 0..7u64 {
        led.clear();
        let child = fork(|| {
            led.word(0).store(1, Ordering::Release);
            let v = q.get().expect("blocking get");
            led.word(2).store(now_ns(), Ordering::Relaxed);
            led.word(1).store(v + 1, Ordering::Release);
        });
        assert!(wait_until(Duration::from_secs(10), || led
            .word(0)
            .load(Ordering::Acquire)
            == 1));
        wait_asleep(&child, "getter");
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            led.word(1).load(Ordering::Acquire),
            0,
            "get returned from an empty queue"
        );
        let t0 = now_ns();
        q.put(1000 + round).unwrap();
        child.join_ok(Duration::from_secs(10), "getter");
        assert_eq!(led.word(1).load(Ordering::Acquire), 1000 + round + 1);
        latencies.push(led.word(2).load(Ordering::Relaxed).saturating_sub(t0));
        assert_eq!(q.qsize(), 0);
    }
    let median = median_ms(latencies.clone());
    println!("    wake-up latency put -> get returned: median {median:.3} ms ({latencies:?} ns)");
    assert!(
        median < 50.0,
        "median wake-up {median:.1} ms: the notify does not wake the sleeper"
    );
}

/// A put asleep on a full queue in a child completes once the parent gets.
fn blocking_put_woken_by_get() {
    let q: Queue<u64> = Queue::new(1, 4096).unwrap();
    let led = Ledger::new(3);
    let mut latencies = Vec::new();
    for round in 0..5u64 {
        led.clear();
        q.put(round).unwrap();
        assert!(q.full());
        let child = fork(|| {
            led.word(0).store(1, Ordering::Release);
            q.put(500 + round).expect("blocking put");
            led.word(2).store(now_ns(), Ordering::Relaxed);
            led.word(1).store(1, Ordering::Release);
        });
        assert!(wait_until(Duration::from_secs(10), || led
            .word(0)
            .load(Ordering::Acquire)
            == 1));
        wait_asleep(&child, "putter");
        assert_eq!(
            led.word(1).load(Ordering::Acquire),
            0,
            "put returned on a full queue"
        );
        let t0 = now_ns();
        assert_eq!(q.get().unwrap(), round);
        child.join_ok(Duration::from_secs(10), "putter");
        latencies.push(led.word(2).load(Ordering::Relaxed).saturating_sub(t0));
        assert_eq!(q.get_timeout(Duration::from_secs(5)).unwrap(), 500 + round);
    }
    let median = median_ms(latencies);
    println!("    wake-up latency get -> put returned: median {median:.3} ms");
    assert!(
        median < 50.0,
        "median wake-up {median:.1} ms: the notify does not wake the sleeper"
    );
}

/// Outcome codes a getter child writes to the ledger.
const GOT_CLOSED: u64 = 1;
const GOT_ITEM: u64 = 2;
const GOT_ERROR: u64 = 3;

/// Three getters asleep on an empty queue; a fourth process closes it; all three wake at once
/// with `Closed` (not after a timeout), and a put afterwards hands its item back.
fn close_wakes_blocked_getters() {
    let q: Queue<u64> = Queue::new(0, 4096).unwrap();
    let led = Ledger::new(6); // [i] getter i started, [3 + i] its outcome
    let getters: Vec<Child> = (0..3)
        .map(|i| {
            let (q, led) = (&q, &led);
            fork(move || {
                led.word(i).store(1, Ordering::Release);
                let outcome = match q.get() {
                    Err(GetError::Closed) => GOT_CLOSED,
                    Ok(_) => GOT_ITEM,
                    Err(_) => GOT_ERROR,
                };
                led.word(3 + i).store(outcome, Ordering::Release);
            })
        })
        .collect();
    for (i, g) in getters.iter().enumerate() {
        assert!(wait_until(Duration::from_secs(10), || led
            .word(i)
            .load(Ordering::Acquire)
            == 1));
        wait_asleep(g, "getter");
    }
    let t0 = Instant::now();
    fork(|| q.close().expect("close")).join_ok(Duration::from_secs(10), "closer");
    join_all_ok(getters, Duration::from_secs(10), "getter");
    let woke_in = t0.elapsed();
    for i in 0..3 {
        assert_eq!(
            led.word(3 + i).load(Ordering::Acquire),
            GOT_CLOSED,
            "getter {i} outcome"
        );
    }
    println!("    three sleeping getters woke with Closed {woke_in:?} after close()");
    assert!(q.is_closed());
    assert!(
        matches!(q.put(5), Err(PutError::Closed(5))),
        "put after close must hand the item back"
    );
    assert!(matches!(q.get_nowait(), Err(GetError::Closed)));
}

/// A queue holding 30 items is closed by one process; getters in three others take all 30,
/// exactly once, and each then sees `Closed` (never `Empty`, never a hang).
fn close_then_drain() {
    let q: Queue<u64> = Queue::new(0, 4096).unwrap();
    for i in 0..30 {
        q.put(i).unwrap();
    }
    fork(|| {
        q.close().expect("close");
        assert!(matches!(q.put(99), Err(PutError::Closed(99))));
    })
    .join_ok(Duration::from_secs(10), "closer");
    let logs = Logs::new(3, 30);
    let getters: Vec<Child> = (0..3)
        .map(|c| {
            let (q, logs) = (&q, &logs);
            fork(move || loop {
                match q.get_timeout(OP_BOUND) {
                    Ok(v) => {
                        logs.record(c, 0, v);
                        std::thread::yield_now();
                    }
                    Err(GetError::Closed) => break,
                    Err(e) => panic!("getter {c}: {e}"),
                }
            })
        })
        .collect();
    join_all_ok(getters, JOIN_BOUND, "getter");
    let all: Vec<_> = (0..3).map(|c| logs.read(c)).collect();
    verify_exactly_once(&all, 1, 30);
    assert_eq!(q.qsize(), 0);
}

/// `join` returns only once every item got its `task_done`, which children call after they
/// count the item as processed: at the moment join returns, all 40 are counted.
fn joinable_join() {
    const N: u64 = 40;
    let q: JoinableQueue<u64> = JoinableQueue::new(0, 4096).unwrap();
    for i in 0..N {
        q.put(i).unwrap();
    }
    assert_eq!(q.unfinished_tasks(), N as usize);
    match q.join_timeout(Duration::from_millis(50)) {
        Err(QueueError::JoinTimeout { unfinished }) => assert_eq!(unfinished, N as u32),
        other => panic!("join_timeout with nothing done: {other:?}"),
    }
    let led = Ledger::new(2); // [0] processed, [1] sum of values
    let workers: Vec<Child> = (0..3)
        .map(|_| {
            let (q, led) = (&q, &led);
            fork(move || loop {
                match q.get_timeout(Duration::from_millis(300)) {
                    Ok(v) => {
                        std::thread::sleep(Duration::from_millis(2)); // the "work"
                        led.word(1).fetch_add(v, Ordering::AcqRel);
                        led.word(0).fetch_add(1, Ordering::AcqRel);
                        q.task_done().expect("task_done");
                    }
                    Err(GetError::Empty) => break, // all items were queued up front
                    Err(e) => panic!("worker: {e}"),
                }
            })
        })
        .collect();
    let t0 = Instant::now();
    q.join_timeout(Duration::from_secs(30)).expect("join");
    let processed = led.word(0).load(Ordering::Acquire);
    assert_eq!(
        processed, N,
        "join returned with only {processed} of {N} items processed"
    );
    assert_eq!(led.word(1).load(Ordering::Acquire), N * (N - 1) / 2);
    assert_eq!(q.unfinished_tasks(), 0);
    println!(
        "    join returned after {:?}, all {N} tasks done",
        t0.elapsed()
    );
    join_all_ok(workers, JOIN_BOUND, "worker");
    assert!(matches!(
        q.task_done(),
        Err(QueueError::TaskDoneTooManyTimes)
    ));
    q.join().expect("join with nothing unfinished");
}

fn assert_within(elapsed: Duration, lo: Duration, hi: Duration, what: &str) {
    assert!(
        elapsed >= lo && elapsed < hi,
        "{what} took {elapsed:?}, expected {lo:?}..{hi:?}"
    );
}

/// Timed operations give up after their timeout (not before, not much after), and succeed
/// when another process makes room or an item in time.
fn timeouts_across_processes() {
    let q: Queue<u64> = Queue::new(1, 4096).unwrap();
    let t = Duration::from_millis(150);
    let late = Duration::from_secs(3);

    // Full for the whole timeout: Full, with the item back.
    q.put(1).unwrap();
    let t0 = Instant::now();
    assert!(matches!(q.put_timeout(2, t), Err(PutError::Full(2))));
    assert_within(t0.elapsed(), t, late, "put_timeout on a full queue");

    // A child makes room after 200 ms: the put succeeds then.
    let child = fork(|| {
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(q.get_timeout(Duration::from_secs(5)).expect("child get"), 1);
    });
    let t0 = Instant::now();
    q.put_timeout(2, Duration::from_secs(10))
        .expect("put once the child made room");
    assert_within(
        t0.elapsed(),
        Duration::from_millis(150),
        Duration::from_secs(8),
        "put_timeout",
    );
    child.join_ok(Duration::from_secs(10), "getter");
    assert_eq!(q.get().unwrap(), 2);

    // Empty for the whole timeout: Empty.
    let t0 = Instant::now();
    assert!(matches!(q.get_timeout(t), Err(GetError::Empty)));
    assert_within(t0.elapsed(), t, late, "get_timeout on an empty queue");

    // A child puts after 200 ms: the get returns it then.
    let child = fork(|| {
        std::thread::sleep(Duration::from_millis(200));
        q.put_timeout(7, Duration::from_secs(5)).expect("child put");
    });
    let t0 = Instant::now();
    assert_eq!(
        q.get_timeout(Duration::from_secs(10))
            .expect("get once the child put"),
        7
    );
    assert_within(
        t0.elapsed(),
        Duration::from_millis(150),
        Duration::from_secs(8),
        "get_timeout",
    );
    child.join_ok(Duration::from_secs(10), "putter");

    // The same bounds inside a child, with the parent holding the other end idle.
    fork(|| {
        let t0 = Instant::now();
        assert!(matches!(q.get_timeout(t), Err(GetError::Empty)));
        assert_within(t0.elapsed(), t, late, "child get_timeout");
        q.put(3).unwrap();
        let t0 = Instant::now();
        assert!(matches!(q.put_timeout(4, t), Err(PutError::Full(4))));
        assert_within(t0.elapsed(), t, late, "child put_timeout");
        assert!(matches!(q.put_nowait(4), Err(PutError::Full(4))));
    })
    .join_ok(Duration::from_secs(10), "child with timeouts");
    assert_eq!(q.get_nowait().unwrap(), 3);
    assert!(matches!(q.get_nowait(), Err(GetError::Empty)));
}

// ------------------------------------------------------------------------------------------
// The counter from Python's multiprocessing docs
// ------------------------------------------------------------------------------------------

const PROCS: usize = 10;
const INCREMENTS: u64 = 10_000;

/// Ten processes each add 1 ten thousand times to a counter under a `ShmMutex`, yielding the
/// CPU between reading and writing it (while holding the lock): not one update is lost.
fn shm_mutex_counter() {
    let counter = ShmMutex::anonymous(0u64).unwrap();
    let gate = Gate::new();
    let children: Vec<Child> = (0..PROCS)
        .map(|_| {
            let (counter, gate) = (&counter, &gate);
            fork(move || {
                gate.wait();
                for _ in 0..INCREMENTS {
                    // The same read, yield, write as the unlocked variant below, under the lock.
                    let mut g = counter.lock().expect("lock");
                    let v = *g;
                    std::thread::yield_now();
                    *g = v + 1;
                }
            })
        })
        .collect();
    let t0 = Instant::now();
    gate.open();
    join_all_ok(children, Duration::from_secs(50), "incrementer");
    let total = *counter.lock().unwrap();
    println!(
        "    with the lock: {total} in {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(total, PROCS as u64 * INCREMENTS);
}

/// The same counter as a plain load and store (a non-atomic read-modify-write) on a word in a
/// shared region, with a yield in between so that ten processes on two cores interleave.
fn no_lock_loses_updates() {
    let region = Region::anonymous(4096).unwrap();
    let counter: &AtomicU64 = region.get(Offset::new(0)).unwrap();
    let gate = Gate::new();
    let children: Vec<Child> = (0..PROCS)
        .map(|_| {
            let gate = &gate;
            fork(move || {
                gate.wait();
                for _ in 0..INCREMENTS {
                    let v = counter.load(Ordering::Relaxed);
                    std::thread::yield_now();
                    counter.store(v + 1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    gate.open();
    join_all_ok(children, Duration::from_secs(50), "incrementer");
    let total = counter.load(Ordering::Relaxed);
    let expected = PROCS as u64 * INCREMENTS;
    println!(
        "    without the lock: {total} of {expected} ({} updates lost)",
        expected - total
    );
    assert!(
        total < expected,
        "no update was lost: the race did not happen"
    );
}

/// A getter asleep on an empty queue, a putter asleep on a full one, a joiner asleep on a
/// joinable queue with two unfinished items: a fourth process shuts all three down immediately,
/// and all three wake at once (get and put with `Closed`, join returning: the two items were
/// discarded, so nothing is unfinished).
fn shutdown_wakes_other_processes() {
    let empty: Queue<u64> = Queue::new(0, 4096).unwrap();
    let full: Queue<u64> = Queue::new(1, 4096).unwrap();
    let jobs: JoinableQueue<u64> = JoinableQueue::new(0, 4096).unwrap();
    full.put(1).unwrap();
    jobs.put(1).unwrap();
    jobs.put(2).unwrap();
    let led = Ledger::new(3);
    let getter = fork(|| {
        let outcome = match empty.get() {
            Err(GetError::Closed) => GOT_CLOSED,
            Ok(_) => GOT_ITEM,
            Err(_) => GOT_ERROR,
        };
        led.word(0).store(outcome, Ordering::Release);
    });
    let putter = fork(|| {
        let outcome = match full.put(2) {
            Err(PutError::Closed(2)) => GOT_CLOSED,
            Ok(()) => GOT_ITEM,
            Err(_) => GOT_ERROR,
        };
        led.word(1).store(outcome, Ordering::Release);
    });
    let joiner = fork(|| {
        jobs.join().expect("join");
        led.word(2).store(GOT_CLOSED, Ordering::Release);
    });
    for (child, what) in [
        (&getter, "getter"),
        (&putter, "putter"),
        (&joiner, "joiner"),
    ] {
        wait_asleep(child, what);
    }
    let t0 = Instant::now();
    fork(|| {
        empty.shutdown(true).expect("shutdown");
        full.shutdown(true).expect("shutdown");
        jobs.shutdown(true).expect("shutdown");
    })
    .join_ok(Duration::from_secs(10), "shutter");
    join_all_ok(
        vec![getter, putter, joiner],
        Duration::from_secs(10),
        "woken",
    );
    for i in 0..3 {
        assert_eq!(led.word(i).load(Ordering::Acquire), GOT_CLOSED, "party {i}");
    }
    println!(
        "    a sleeping get, put and join woke {:?} after shutdown(immediate)",
        t0.elapsed()
    );
    assert_eq!(
        (full.qsize(), jobs.qsize(), jobs.unfinished_tasks()),
        (0, 0, 0)
    );
}

/// A process killed right after its immediate shutdown committed the discard, before it moved the
/// head: the items are already gone for everyone (qsize, unfinished tasks, join), and the next
/// consumer, told the get lock's holder died, moves the head on; a get then says `Closed`.
fn shutdown_killed_after_discard() {
    let jobs: JoinableQueue<u64> = JoinableQueue::new(0, 4096).unwrap();
    // The crash hook reads BAOZI_CRASH_AT at a process's first queue operation (and a fork
    // inherits what it read): this process leaves every put and get to its children.
    fork(|| {
        for i in 0..3 {
            jobs.put(i).expect("put");
        }
    })
    .join_ok(OP_BOUND, "filler");
    let mut victim = fork(|| {
        std::env::set_var("BAOZI_CRASH_AT", "shutdown-after-discard:1");
        jobs.shutdown(true).expect("shutdown");
        unreachable!("killed at the crash point");
    });
    assert_eq!(
        victim.wait_timeout(OP_BOUND),
        Some(support::Exit::Signal(libc::SIGKILL))
    );
    assert!(jobs.is_closed());
    assert_eq!(jobs.qsize(), 0, "discarded before the head moved");
    assert!(
        jobs.used_bytes() > 0,
        "the victim died before moving the head"
    );
    assert_eq!(jobs.unfinished_tasks(), 0);
    jobs.join_timeout(OP_BOUND).expect("nothing unfinished");
    fork(|| {
        // Told the get lock's holder died, this get moves the head on, then sees the shutdown.
        assert!(matches!(jobs.get_timeout(OP_BOUND), Err(GetError::Closed)));
        assert!(matches!(jobs.put(7), Err(PutError::Closed(7))));
    })
    .join_ok(OP_BOUND, "next consumer");
    assert_eq!(
        jobs.used_bytes(),
        0,
        "the next consumer moved the head to the tail"
    );
    assert_eq!(jobs.qsize(), 0);
    assert_eq!(jobs.unfinished_tasks(), 0);
}

/// CPython's gh-87971, fixed: a consumer blocked in `get()` on a queue whose only producer is
/// SIGKILLed gets what was put, then `Disconnected`, within the stated bound (a wait slice and a
/// check period) instead of waiting for ever. A forked copy of an endpoint does not deregister
/// its parent's.
fn producer_killed_disconnects_getter() {
    let q: Queue<u64> = Queue::new(0, 4096).unwrap();
    let led = Ledger::new(2);
    let mut producer = fork(|| {
        let me = q.register_producer().expect("register");
        // A child's copy of the registration leaves it in place when the child exits.
        fork(|| drop(q.register_producer().map(|_| ()))).join_ok(OP_BOUND, "grandchild");
        let _copy = fork(|| {}); // inherits `me`; its exit must not deregister us
        for i in 0..3 {
            q.put(i).expect("put");
        }
        led.word(0).store(1, Ordering::Release);
        std::thread::sleep(Duration::from_secs(60)); // killed here
        drop(me);
    });
    assert!(wait_until(OP_BOUND, || led.word(0).load(Ordering::Acquire) == 1));
    assert_eq!(q.endpoints().producers, 1, "one live producer");
    let getter = fork(|| {
        for i in 0..3 {
            assert_eq!(q.get().expect("the items put before the kill"), i);
        }
        let t0 = Instant::now();
        led.word(1).store(1, Ordering::Release);
        assert!(matches!(q.get(), Err(GetError::Disconnected)));
        println!("    blocked get ended {:?} after it began", t0.elapsed());
    });
    assert!(wait_until(OP_BOUND, || led.word(1).load(Ordering::Acquire) == 1));
    wait_asleep(&getter, "getter");
    let t0 = Instant::now();
    producer.signal(libc::SIGKILL);
    assert!(producer.wait_timeout(OP_BOUND).unwrap().sigkilled());
    getter.join_ok(OP_BOUND, "getter");
    let took = t0.elapsed();
    println!("    the getter learned of the kill {took:?} after it");
    assert!(
        took < Duration::from_secs(2),
        "{took:?}: bound is a wait slice + a check period"
    );
    assert_eq!(
        q.endpoints().producers,
        0,
        "the dead producer's slot was freed"
    );
}

/// The same for a putter blocked on a full queue whose only consumer is killed: `Disconnected`
/// hands the item back.
fn consumer_killed_disconnects_putter() {
    let q: Queue<u64> = Queue::new(1, 4096).unwrap();
    let led = Ledger::new(1);
    let mut consumer = fork(|| {
        let _me = q.register_consumer().expect("register");
        led.word(0).store(1, Ordering::Release);
        std::thread::sleep(Duration::from_secs(60)); // killed here
    });
    assert!(wait_until(OP_BOUND, || led.word(0).load(Ordering::Acquire) == 1));
    let putter = fork(|| {
        q.put(1).expect("room for one");
        assert!(matches!(q.put(2), Err(PutError::Disconnected(2))));
    });
    wait_asleep(&putter, "putter");
    consumer.signal(libc::SIGKILL);
    assert!(consumer.wait_timeout(OP_BOUND).unwrap().sigkilled());
    putter.join_ok(OP_BOUND, "putter");
    assert_eq!(q.qsize(), 1);
}

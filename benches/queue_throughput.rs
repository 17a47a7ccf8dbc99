//! Throughput between processes: one producer to one consumer for every transport and size,
//! batches against single items, and N producers × M consumers on one queue.
//!
//! Producers and consumers are forked once per case; the parent only coordinates: for each
//! `iter_custom` call it hands the producers their share of `iters` messages (a round number
//! bumped in shared memory, a futex wake), and stops the clock when the consumers' counters
//! (one padded word each) add up to `iters` more. Criterion's time per iteration is therefore
//! the time per message; its throughput line is messages per second.
//!
//! * `one_way/{baozi_queue,spin_ring,futex_ring,pipe,unix,mq,naive_lock,crossbeam}/SIZE`, SIZE =
//!   8, 64, 1024, 16384: maxsize 1024 where the transport has one (baozi, the rings, the naive
//!   lock queue, crossbeam's bounded channel); the pipe and the Unix socket have their kernel
//!   buffers; the POSIX mq the system's default depth limit (`msg_max`, 10), which is what an
//!   unprivileged user gets. `spin_ring` and `futex_ring` are the floors: a lock-free
//!   single-producer single-consumer ring whose waiters spin, or sleep on a futex at once.
//!   `crossbeam` runs between two threads of one process.
//! * `batch/{baozi_single,baozi_batch64}/64`: a `Queue<Pod<[u8; 64]>>` of maxsize 1024, items one
//!   by one (`put`/`get`) or 64 at a time (`put_many_from`/`get_many_into`).
//! * `contention/{baozi_m1024,baozi_m1,naive_m1024,naive_m1,pipe}/NxM`, 64 B: N producers and M
//!   consumers on one channel, total messages per second, N×M = 1×1, 2×2, 4×4, and 8×8 / 16×16
//!   where `nproc` reaches 8 / 16.

#![allow(missing_docs)] // criterion's macros generate undocumented items

mod common;

use std::cell::RefCell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use baozi::shm::Region;
use baozi::{Pod, Queue, QueueOptions};
use common::{
    baozi_queue, fork_peer, futex_wait, futex_wake, message, mq_depth_limit, reap, stop_message,
    Channel, FdChannel, MqChannel, NaiveQueue, SpscRing, FILL, SIZES, STOP,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// The most producers and consumers of one case.
const MAX_SIDE: usize = 16;
/// Stride of the control block's words (two cache lines: no false sharing with the prefetcher).
const PAD: usize = 128;
/// A producer's quota that means "leave".
const QUIT: u64 = u64::MAX;

/// The shared control block: the round word, one quota per producer, one count per consumer.
struct Control {
    region: Region,
}

impl Control {
    fn new() -> Control {
        Control {
            region: Region::anonymous(PAD * (1 + 2 * MAX_SIDE)).expect("control region"),
        }
    }

    fn word<T>(&self, index: usize) -> &T {
        // SAFETY: index < 1 + 2 * MAX_SIDE, so the word is inside the region, 128-aligned, and
        // used only as the atomic type it is read as (round: AtomicU32, the rest AtomicU64); the
        // region lives as long as self.
        unsafe { &*self.region.as_ptr().add(index * PAD).cast::<T>() }
    }

    fn round(&self) -> &AtomicU32 {
        self.word(0)
    }

    fn quota(&self, producer: usize) -> &AtomicU64 {
        self.word(1 + producer)
    }

    fn received(&self, consumer: usize) -> &AtomicU64 {
        self.word(1 + MAX_SIDE + consumer)
    }

    fn total_received(&self, consumers: usize) -> u64 {
        (0..consumers)
            .map(|c| self.received(c).load(Ordering::Acquire))
            .sum()
    }

    /// Hands out `quotas` and starts a round.
    fn start_round(&self, quotas: impl Iterator<Item = u64>) {
        for (p, q) in quotas.enumerate() {
            self.quota(p).store(q, Ordering::Relaxed);
        }
        self.round().fetch_add(1, Ordering::Release);
        futex_wake(self.round(), i32::MAX);
    }
}

/// Runs one case with `producers` × `consumers` forked workers. `produce(n)` sends n messages;
/// `consume()` takes at least one and says how many, or `None` on a stop message;
/// `stop_one()` (from the parent, after the producers left) makes one consumer stop.
fn n_by_m(
    c: &mut Criterion,
    group: &str,
    id: BenchmarkId,
    (producers, consumers): (usize, usize),
    produce: &dyn Fn(u64),
    consume: &dyn Fn() -> Option<u64>,
    stop_one: &dyn Fn(),
) {
    assert!(producers <= MAX_SIDE && consumers <= MAX_SIDE);
    let ctl = Control::new();
    let mut pids = Vec::new();
    for p in 0..producers {
        let ctl = &ctl;
        pids.push(fork_peer(move || {
            let mut seen = 0;
            loop {
                let r = ctl.round().load(Ordering::Acquire);
                if r == seen {
                    futex_wait(ctl.round(), seen);
                    continue;
                }
                seen = r;
                match ctl.quota(p).load(Ordering::Relaxed) {
                    QUIT => break,
                    n => produce(n),
                }
            }
        }));
    }
    let mut consumer_pids = Vec::new();
    for k in 0..consumers {
        let ctl = &ctl;
        consumer_pids.push(fork_peer(move || {
            let mut n = 0;
            while let Some(got) = consume() {
                n += got;
                ctl.received(k).store(n, Ordering::Release);
            }
        }));
    }
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(1));
    g.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let target = ctl.total_received(consumers) + iters;
            let share = iters / producers as u64;
            let extra = iters % producers as u64;
            let start = Instant::now();
            ctl.start_round((0..producers as u64).map(|p| share + u64::from(p < extra)));
            while ctl.total_received(consumers) < target {
                std::thread::sleep(Duration::from_micros(20));
            }
            start.elapsed()
        })
    });
    g.finish();
    ctl.start_round(std::iter::repeat(QUIT).take(producers));
    pids.into_iter().for_each(reap);
    for _ in 0..consumers {
        stop_one();
    }
    consumer_pids.into_iter().for_each(reap);
}

/// [`n_by_m`] over a [`Channel`] of `size`-byte messages.
fn channel_case<C: Channel>(
    c: &mut Criterion,
    group: &str,
    id: BenchmarkId,
    shape: (usize, usize),
    size: usize,
    chan: C,
) {
    let msg = message(size);
    let buf = RefCell::new(Vec::with_capacity(size));
    n_by_m(
        c,
        group,
        id,
        shape,
        &|n| (0..n).for_each(|_| chan.send(&msg)),
        &|| {
            let mut buf = buf.borrow_mut();
            chan.recv(&mut buf);
            (buf[0] != STOP).then_some(1)
        },
        &|| chan.send(&stop_message(size)),
    );
}

/// The in-process reference: a producer and a consumer thread on a bounded `crossbeam-channel`
/// of `N`-byte arrays moved by value; the bench thread coordinates as in [`n_by_m`].
fn crossbeam_one_way<const N: usize>(c: &mut Criterion) {
    let (tx, rx) = crossbeam_channel::bounded::<[u8; N]>(1024);
    let (go_tx, go_rx) = crossbeam_channel::bounded::<u64>(1);
    let received = Arc::new(AtomicU64::new(0));
    let producer = {
        let tx = tx.clone();
        std::thread::spawn(move || {
            while let Ok(n) = go_rx.recv() {
                for _ in 0..n {
                    tx.send([FILL; N]).expect("send");
                }
            }
        })
    };
    let consumer = {
        let received = Arc::clone(&received);
        std::thread::spawn(move || {
            let mut n = 0;
            while let Ok(m) = rx.recv() {
                if m[0] == STOP {
                    break;
                }
                n += 1;
                received.store(n, Ordering::Release);
            }
        })
    };
    let mut g = c.benchmark_group("one_way");
    g.throughput(Throughput::Elements(1));
    g.bench_function(BenchmarkId::new("crossbeam", N), |b| {
        b.iter_custom(|iters| {
            let target = received.load(Ordering::Acquire) + iters;
            let start = Instant::now();
            go_tx.send(iters).expect("go");
            while received.load(Ordering::Acquire) < target {
                std::thread::sleep(Duration::from_micros(20));
            }
            start.elapsed()
        })
    });
    g.finish();
    drop(go_tx);
    producer.join().expect("crossbeam producer");
    let mut stop = [FILL; N];
    stop[0] = STOP;
    tx.send(stop).expect("stop");
    consumer.join().expect("crossbeam consumer");
}

fn one_way(c: &mut Criterion) {
    let one = (1, 1);
    for size in SIZES {
        let id = |name| BenchmarkId::new(name, size);
        let q = baozi_queue(1024, size, true);
        channel_case(c, "one_way", id("baozi_queue"), one, size, q);
        channel_case(
            c,
            "one_way",
            id("spin_ring"),
            one,
            size,
            SpscRing::new(1024, size, false),
        );
        channel_case(
            c,
            "one_way",
            id("futex_ring"),
            one,
            size,
            SpscRing::new(1024, size, true),
        );
        channel_case(c, "one_way", id("pipe"), one, size, FdChannel::pipe(size));
        channel_case(c, "one_way", id("unix"), one, size, FdChannel::unix(size));
        match MqChannel::new(mq_depth_limit(), size) {
            Ok(mq) => channel_case(c, "one_way", id("mq"), one, size, mq),
            Err(e) => eprintln!("one_way/mq/{size}: skipped ({e})"),
        }
        let naive = NaiveQueue::new(1024, size);
        channel_case(c, "one_way", id("naive_lock"), one, size, naive);
        match size {
            8 => crossbeam_one_way::<8>(c),
            64 => crossbeam_one_way::<64>(c),
            1024 => crossbeam_one_way::<1024>(c),
            _ => crossbeam_one_way::<16384>(c),
        }
    }
}

type Item = Pod<[u8; 64]>;

fn batches(c: &mut Criterion) {
    for batch in [1usize, 64] {
        let q: Queue<Item> = QueueOptions::new()
            .maxsize(1024)
            .capacity(1024 * 72)
            .anonymous()
            .expect("queue");
        let name = if batch == 1 {
            "baozi_single"
        } else {
            "baozi_batch64"
        };
        let out = RefCell::new(Vec::<Item>::with_capacity(batch));
        let items = vec![Pod([FILL; 64]); batch];
        n_by_m(
            c,
            "batch",
            BenchmarkId::new(name, 64),
            (1, 1),
            &|mut n| {
                while n > 0 {
                    let k = n.min(batch as u64);
                    if k == 1 {
                        q.put(Pod([FILL; 64])).expect("put");
                    } else {
                        q.put_many_from(&items[..k as usize], None)
                            .expect("put_many_from");
                    }
                    n -= k;
                }
            },
            &|| {
                let mut out = out.borrow_mut();
                out.clear();
                if batch == 1 {
                    out.push(q.get().expect("get"));
                } else {
                    q.get_many_into(&mut out, batch, None).expect("get_many");
                }
                let stops = out.iter().filter(|m| m.0[0] == STOP).count();
                assert!(
                    stops == 0 || out.len() == 1,
                    "stop only after the producers left"
                );
                (stops == 0).then_some(out.len() as u64)
            },
            &|| {
                let mut stop = [FILL; 64];
                stop[0] = STOP;
                q.put(Pod(stop)).expect("stop");
            },
        );
    }
}

fn contention(c: &mut Criterion) {
    let size = 64;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let shapes = [1usize, 2, 4, 8, 16]
        .into_iter()
        .filter(|&n| n <= 4 || n <= cores);
    for n in shapes {
        let shape = (n, n);
        let id = |name| BenchmarkId::new(name, format!("{n}x{n}"));
        for maxsize in [1024, 1] {
            let q = baozi_queue(maxsize, size, true);
            channel_case(
                c,
                "contention",
                id(format!("baozi_m{maxsize}")),
                shape,
                size,
                q,
            );
            let naive = NaiveQueue::new(maxsize, size);
            channel_case(
                c,
                "contention",
                id(format!("naive_m{maxsize}")),
                shape,
                size,
                naive,
            );
        }
        let pipe = FdChannel::pipe(size);
        channel_case(c, "contention", id("pipe".to_owned()), shape, size, pipe);
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = one_way, batches, contention
}
criterion_main!(benches);

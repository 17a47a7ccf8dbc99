//! put→get round-trip latency between two processes: the baozi queue next to its floors and the
//! usual transports, measured in the same run.
//!
//! Each case forks an echo peer once, then `iter_custom` times `iters` round trips: the parent
//! sends a message, the peer takes it and sends it back, the parent takes the echo.
//!
//! * `round_trip/{baozi_queue,pipe,unix,mq,naive_lock,crossbeam}/SIZE`, SIZE = 8, 64, 1024, 16384
//!   bytes. `unix` is a `SOCK_SEQPACKET` socket pair, `mq` a POSIX message queue, `naive_lock`
//!   a ring under raw-sync's process-shared mutex with condition variables
//!   ([`common::NaiveQueue`]), `crossbeam` a pair of `crossbeam-channel`s between two threads of
//!   one process (the in-process reference).
//! * `round_trip/{spin_floor,futex_floor}`: no data, the floors. The spin floor is two
//!   processes handing a counter back and forth through one shared atomic (both always
//!   running); the futex floor the same with a futex sleep on every wait (both always asleep,
//!   the floor for a blocking queue).
//! * `round_trip_asleep/...`: 64 B with the peer asleep in the kernel when the request comes:
//!   `baozi_nospin` (a queue built with `spin(false)`: every wait sleeps) against
//!   `futex_floor`, and, with a 500 µs pause before each request (untimed, long enough for the
//!   peer's adaptive spin to give up), the default `baozi_queue` against `futex_floor_idle`.

#![allow(missing_docs)] // criterion's macros generate undocumented items

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use baozi::shm::{Offset, Region};
use common::{
    baozi_queue, fork_peer, futex_wait, futex_wake, message, reap, stop_message, Channel,
    FdChannel, MqChannel, NaiveQueue, SIZES, STOP,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// The pause before each request in the idle-peer cases.
const IDLE_GAP: Duration = Duration::from_micros(500);

/// Times round trips over `request` and `reply` with a forked echo peer; `gap`, if any, is an
/// untimed pause before each request.
fn round_trip<C: Channel>(
    c: &mut Criterion,
    group: &str,
    id: BenchmarkId,
    size: usize,
    (request, reply): (C, C),
    gap: Option<Duration>,
) {
    let peer = fork_peer(|| {
        let mut buf = Vec::with_capacity(size);
        loop {
            request.recv(&mut buf);
            if buf[0] == STOP {
                break;
            }
            reply.send(&buf);
        }
    });
    let msg = message(size);
    let mut buf = Vec::with_capacity(size);
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(1));
    if gap.is_some() {
        idle_settings(&mut g);
    }
    g.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let start = Instant::now();
            for _ in 0..iters {
                if let Some(gap) = gap {
                    std::thread::sleep(gap);
                    let t = Instant::now();
                    request.send(&msg);
                    reply.recv(&mut buf);
                    total += t.elapsed();
                } else {
                    request.send(&msg);
                    reply.recv(&mut buf);
                }
            }
            if gap.is_some() {
                total
            } else {
                start.elapsed()
            }
        })
    });
    g.finish();
    request.send(&stop_message(size));
    reap(peer);
}

/// Criterion plans a sample from the timed part only; with an untimed pause 5–10× longer than
/// the timed one, keep the timed budget small so that a case takes seconds, not minutes.
fn idle_settings<M: criterion::measurement::Measurement>(g: &mut criterion::BenchmarkGroup<M>) {
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_millis(300));
}

/// Two processes hand a counter back and forth through one shared word: `blocking` false, each
/// spins for the other's store (the spin floor); true, each sleeps on the futex and is woken
/// (the futex floor).
fn floor(c: &mut Criterion, group: &str, name: &str, blocking: bool, gap: Option<Duration>) {
    let region = Region::anonymous(4096).expect("region");
    let word: &AtomicU32 = region.get(Offset::new(0)).expect("word");
    const FLOOR_STOP: u32 = u32::MAX;
    // Waits until the word leaves `seen`, spinning or sleeping; returns the new value.
    let wait_change = move |seen: u32| loop {
        let v = word.load(Ordering::Acquire);
        if v != seen {
            return v;
        }
        if blocking {
            futex_wait(word, seen);
        } else {
            std::hint::spin_loop();
        }
    };
    let hand = move |v: u32| {
        word.store(v, Ordering::Release);
        if blocking {
            futex_wake(word, 1);
        }
    };
    let peer = fork_peer(|| {
        let mut seen = 0;
        loop {
            let v = wait_change(seen);
            if v == FLOOR_STOP {
                break;
            }
            // The parent makes the word odd; answer with the next even value.
            hand(v + 1);
            seen = v + 1;
        }
    });
    let mut next = 0u32;
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(1));
    if gap.is_some() {
        idle_settings(&mut g);
    }
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let start = Instant::now();
            for _ in 0..iters {
                let t = gap.map(|gap| {
                    std::thread::sleep(gap);
                    Instant::now()
                });
                if next >= FLOOR_STOP - 4 {
                    // Never happens in a bench's lifetime; keeps the protocol honest.
                    panic!("floor counter wrapped");
                }
                hand(next + 1);
                let v = wait_change(next + 1);
                assert_eq!(v, next + 2);
                next += 2;
                if let Some(t) = t {
                    total += t.elapsed();
                }
            }
            if gap.is_some() {
                total
            } else {
                start.elapsed()
            }
        })
    });
    g.finish();
    hand(FLOOR_STOP);
    reap(peer);
}

/// The in-process reference: two threads, two `crossbeam-channel`s of capacity 1, messages of
/// `N` bytes moved by value.
fn crossbeam_round_trip<const N: usize>(c: &mut Criterion) {
    let (req_tx, req_rx) = crossbeam_channel::bounded::<[u8; N]>(1);
    let (rep_tx, rep_rx) = crossbeam_channel::bounded::<[u8; N]>(1);
    let peer = std::thread::spawn(move || {
        while let Ok(m) = req_rx.recv() {
            if m[0] == STOP {
                break;
            }
            rep_tx.send(m).expect("reply");
        }
    });
    let msg = [common::FILL; N];
    let mut g = c.benchmark_group("round_trip");
    g.throughput(Throughput::Elements(1));
    g.bench_function(BenchmarkId::new("crossbeam", N), |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                req_tx.send(msg).expect("send");
                std::hint::black_box(rep_rx.recv().expect("recv"));
            }
            start.elapsed()
        })
    });
    g.finish();
    let mut stop = [0u8; N];
    stop[0] = STOP;
    req_tx.send(stop).expect("stop");
    peer.join().expect("crossbeam peer");
}

fn round_trips(c: &mut Criterion) {
    floor(c, "round_trip", "spin_floor", false, None);
    floor(c, "round_trip", "futex_floor", true, None);
    for size in SIZES {
        let pair = (baozi_queue(64, size, true), baozi_queue(64, size, true));
        round_trip(
            c,
            "round_trip",
            BenchmarkId::new("baozi_queue", size),
            size,
            pair,
            None,
        );
        let pair = (FdChannel::pipe(size), FdChannel::pipe(size));
        round_trip(
            c,
            "round_trip",
            BenchmarkId::new("pipe", size),
            size,
            pair,
            None,
        );
        let pair = (FdChannel::unix(size), FdChannel::unix(size));
        round_trip(
            c,
            "round_trip",
            BenchmarkId::new("unix", size),
            size,
            pair,
            None,
        );
        match (MqChannel::new(1, size), MqChannel::new(1, size)) {
            (Ok(a), Ok(b)) => round_trip(
                c,
                "round_trip",
                BenchmarkId::new("mq", size),
                size,
                (a, b),
                None,
            ),
            (Err(e), _) | (_, Err(e)) => eprintln!("round_trip/mq/{size}: skipped ({e})"),
        }
        let pair = (NaiveQueue::new(1, size), NaiveQueue::new(1, size));
        round_trip(
            c,
            "round_trip",
            BenchmarkId::new("naive_lock", size),
            size,
            pair,
            None,
        );
        match size {
            8 => crossbeam_round_trip::<8>(c),
            64 => crossbeam_round_trip::<64>(c),
            1024 => crossbeam_round_trip::<1024>(c),
            _ => crossbeam_round_trip::<16384>(c),
        }
    }

    // The peer asleep in the kernel when the request comes.
    let size = 64;
    floor(c, "round_trip_asleep", "futex_floor", true, None);
    let pair = (baozi_queue(64, size, false), baozi_queue(64, size, false));
    let id = BenchmarkId::new("baozi_nospin", size);
    round_trip(c, "round_trip_asleep", id, size, pair, None);
    floor(
        c,
        "round_trip_asleep",
        "futex_floor_idle",
        true,
        Some(IDLE_GAP),
    );
    let pair = (baozi_queue(64, size, true), baozi_queue(64, size, true));
    let id = BenchmarkId::new("baozi_queue_idle", size);
    round_trip(c, "round_trip_asleep", id, size, pair, Some(IDLE_GAP));
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = round_trips
}
criterion_main!(benches);

//! put→get round-trip latency between two processes: the baozi queue next to a pipe and the
//! spin floor (two processes ping-ponging on an atomic), measured in the same run.

#![allow(missing_docs)] // criterion's macros generate undocumented items
//!
//! Each case forks an echo peer once, then `iter_custom` times `iters` round trips:
//! parent puts a message, the peer takes it and puts it back, the parent takes the echo.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use baozi::shm::{Offset, Region};
use baozi::Queue;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const SIZES: [usize; 4] = [8, 64, 1024, 16 * 1024];

/// Forks a peer that runs `work` and leaves with `_exit`.
fn fork_peer(work: impl FnOnce()) -> libc::pid_t {
    // SAFETY: criterion measures on this thread and starts no other; the child only runs the
    // echo loop on shared memory / fds and leaves with _exit.
    match unsafe { libc::fork() } {
        -1 => panic!("fork: {}", std::io::Error::last_os_error()),
        0 => {
            let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).is_ok();
            // SAFETY: ends the child without unwinding into criterion.
            unsafe { libc::_exit(if ok { 0 } else { 101 }) }
        }
        pid => pid,
    }
}

fn reap(pid: libc::pid_t) {
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
}

fn baozi_round_trip(c: &mut Criterion, size: usize) {
    let request: Queue<Vec<u8>> = Queue::new(64, 256 * 1024).expect("queue");
    let reply: Queue<Vec<u8>> = Queue::new(64, 256 * 1024).expect("queue");
    let peer = fork_peer(|| {
        let mut buf = Vec::with_capacity(size);
        loop {
            request.get_bytes_into(&mut buf, None).expect("peer get");
            if buf.is_empty() {
                break;
            }
            reply.put_bytes(&buf, None).expect("peer put");
        }
    });
    let msg = vec![7u8; size];
    let mut buf = Vec::with_capacity(size);
    let mut group = c.benchmark_group("round_trip");
    group.throughput(Throughput::Elements(1));
    group.bench_function(BenchmarkId::new("baozi_queue", size), |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                request.put_bytes(&msg, None).expect("put");
                reply.get_bytes_into(&mut buf, None).expect("get");
            }
            start.elapsed()
        })
    });
    group.finish();
    request.put_bytes(&[], None).expect("stop");
    reap(peer);
}

fn pipe_pair() -> (std::fs::File, std::fs::File) {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid 2-element array for pipe(2) to fill.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
    // SAFETY: both fds were just created by pipe(2) and are owned by nobody else.
    unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    }
}

fn pipe_round_trip(c: &mut Criterion, size: usize) {
    let (mut req_r, req_w) = pipe_pair();
    let (rep_r, mut rep_w) = pipe_pair();
    let parent_ends = [req_w.as_raw_fd(), rep_r.as_raw_fd()];
    let peer = {
        fork_peer(move || {
            // Close the child's copies of the parent's ends, so that EOF arrives when the parent
            // drops its write end.
            for fd in parent_ends {
                // SAFETY: these fds are this child's inherited copies, used by nothing here.
                unsafe { libc::close(fd) };
            }
            let mut buf = vec![0u8; size];
            while req_r.read_exact(&mut buf).is_ok() {
                rep_w.write_all(&buf).expect("peer write");
            }
        })
    };
    // The closure (with the parent's copies of the peer's ends) was dropped in the parent.
    let (mut req_w, mut rep_r) = (req_w, rep_r);
    let msg = vec![7u8; size];
    let mut buf = vec![0u8; size];
    let mut group = c.benchmark_group("round_trip");
    group.throughput(Throughput::Elements(1));
    group.bench_function(BenchmarkId::new("pipe", size), |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                req_w.write_all(&msg).expect("write");
                rep_r.read_exact(&mut buf).expect("read");
            }
            start.elapsed()
        })
    });
    group.finish();
    drop(req_w);
    reap(peer);
}

/// The floor: two processes hand a counter back and forth through one shared atomic.
fn spin_floor(c: &mut Criterion) {
    let region = Region::anonymous(4096).expect("region");
    let word: &AtomicU64 = region.get(Offset::new(0)).expect("word");
    let peer = fork_peer(|| loop {
        let v = word.load(Ordering::Acquire);
        if v == u64::MAX {
            break;
        }
        if v % 2 == 1 {
            word.store(v + 1, Ordering::Release);
        }
        std::hint::spin_loop();
    });
    let mut next = 0u64;
    let mut group = c.benchmark_group("round_trip");
    group.throughput(Throughput::Elements(1));
    group.bench_function("spin_floor", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                word.store(next + 1, Ordering::Release);
                while word.load(Ordering::Acquire) != next + 2 {
                    std::hint::spin_loop();
                }
                next += 2;
            }
            start.elapsed()
        })
    });
    group.finish();
    word.store(u64::MAX, Ordering::Release);
    reap(peer);
}

fn round_trips(c: &mut Criterion) {
    spin_floor(c);
    for size in SIZES {
        baozi_round_trip(c, size);
        pipe_round_trip(c, size);
    }
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

//! What a handle costs: a clone and a drop (no syscall), a serialise, and a deserialise that
//! attaches — from this process's own mapping (the common case in a pool worker that already
//! has the queue) and from scratch (another process holds the object: open its
//! `/proc/PID/fd/N`, check, map), against making a fresh anonymous region of the same size.
//!
//! * `handles/queue_clone_drop`, `handles/value_clone_drop`: `h.clone()` then drop it.
//! * `handles/serialise`: postcard of a `Queue` handle (a `RegionRef`).
//! * `handles/attach_mapped`: deserialise while this process maps the queue.
//! * `handles/attach_fresh`: deserialise a queue only a forked peer holds; each iteration maps it
//!   and drops it again, so the next one starts from scratch.
//! * `handles/region_anonymous`: `Region::anonymous` of the queue's size and its drop: the
//!   baseline of one fresh mapping.

#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::hint::black_box;
use std::time::Duration;

use baozi::shm::Region;
use baozi::{Queue, Value};
use criterion::{criterion_group, criterion_main, Criterion};

const RING: usize = 64 * 1024;

/// Forks a peer that makes a queue, sends its handle back, and waits to be killed.
fn peer_holding_a_queue() -> (libc::pid_t, Vec<u8>) {
    let back: Queue<Vec<u8>> = Queue::new(1, 4096).expect("queue");
    // SAFETY: forked from criterion's single-threaded setup; the child only makes a queue, puts
    // one message and sleeps until it is killed.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let q: Queue<u64> = Queue::new(0, RING).expect("queue");
        back.put(postcard::to_allocvec(&q).expect("ref"))
            .expect("put");
        loop {
            // SAFETY: pause has no preconditions; the parent ends the child with SIGKILL.
            unsafe { libc::pause() };
        }
    }
    let bytes = back.get().expect("the peer's handle");
    (pid, bytes)
}

fn handles(c: &mut Criterion) {
    let mut g = c.benchmark_group("handles");
    let q: Queue<u64> = Queue::new(0, RING).expect("queue");
    let v = Value::new(0u64).expect("value");
    g.bench_function("queue_clone_drop", |b| {
        b.iter(|| drop(black_box(q.clone())))
    });
    g.bench_function("value_clone_drop", |b| {
        b.iter(|| drop(black_box(v.clone())))
    });
    g.bench_function("serialise", |b| {
        b.iter(|| postcard::to_allocvec(black_box(&q)).expect("ref"))
    });
    let mine = postcard::to_allocvec(&q).expect("ref");
    g.bench_function("attach_mapped", |b| {
        b.iter(|| postcard::from_bytes::<Queue<u64>>(black_box(&mine)).expect("attach"))
    });
    let (peer, theirs) = peer_holding_a_queue();
    g.bench_function("attach_fresh", |b| {
        b.iter(|| drop(postcard::from_bytes::<Queue<u64>>(black_box(&theirs)).expect("attach")))
    });
    // SAFETY: our own child; it is reaped just below.
    unsafe { libc::kill(peer, libc::SIGKILL) };
    // SAFETY: waiting for our own child; a null status pointer is allowed.
    unsafe { libc::waitpid(peer, std::ptr::null_mut(), 0) };
    let len = q.region().len();
    g.bench_function("region_anonymous", |b| {
        b.iter(|| drop(Region::anonymous(black_box(len)).expect("region")))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = handles
}
criterion_main!(benches);

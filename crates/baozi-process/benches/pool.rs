//! Per-task overhead of the [`Pool`] with a trivial function, against the two ways to do the
//! same work without it, measured in the same run:
//!
//! * `pool/apply`: one `apply` (submit, run in a worker, result back), waited for each time;
//! * `pool/apply_async_1000`: 1000 `apply_async` then their `get`s; time per task;
//! * `pool/map_chunksize_{1,64}`: `map` over 10 000 items; time per item;
//! * `baseline/command_per_task`: `std::process::Command::new("true")` spawned and waited per
//!   task: what a pool saves, with a fresh process per task;
//! * `baseline/thread_spawn_per_task`: `std::thread::spawn` + `join` per task;
//! * `baseline/threads_map`: the 10 000 items over as many scoped threads as the pool has
//!   workers, chunks of 64 (the in-process floor); time per item.
//!
//! The pool has `cpu_count()` workers. Run: `cargo bench -p baozi-process --bench pool`.
#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use baozi_process::{cpu_count, Pool};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const ITEMS: u64 = 10_000;

fn inc(x: u64) -> u64 {
    x.wrapping_add(1)
}

fn pool_benches(c: &mut Criterion) {
    let workers = cpu_count();
    let pool = Pool::new(workers).expect("pool");
    // Let every worker come up before measuring.
    while pool.worker_pids().len() < workers {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut g = c.benchmark_group("pool");
    g.throughput(Throughput::Elements(1));
    g.bench_function("apply", |b| {
        b.iter(|| pool.apply(inc, black_box(7)).expect("apply"))
    });
    g.bench_function("apply_async_1000", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters.div_ceil(1000) {
                let t = Instant::now();
                let rs: Vec<_> = (0..1000)
                    .map(|i| pool.apply_async(inc, i).expect("submit"))
                    .collect();
                for r in rs {
                    black_box(r.get().expect("get"));
                }
                total += t.elapsed();
            }
            // Time per task: scale the batches' time to `iters` tasks.
            total.mul_f64(iters as f64 / (iters.div_ceil(1000) * 1000) as f64)
        })
    });
    g.throughput(Throughput::Elements(ITEMS));
    for chunksize in [1, 64] {
        g.bench_function(format!("map_chunksize_{chunksize}"), |b| {
            b.iter(|| {
                pool.with_chunksize(chunksize)
                    .map(inc, 0..ITEMS)
                    .expect("map")
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("baseline");
    g.throughput(Throughput::Elements(1));
    g.bench_function("command_per_task", |b| {
        b.iter(|| {
            std::process::Command::new("true")
                .status()
                .expect("spawn true")
        })
    });
    g.bench_function("thread_spawn_per_task", |b| {
        b.iter(|| {
            std::thread::spawn(|| inc(black_box(7)))
                .join()
                .expect("join")
        })
    });
    g.throughput(Throughput::Elements(ITEMS));
    g.bench_function("threads_map", |b| {
        let items: Vec<u64> = (0..ITEMS).collect();
        b.iter(|| {
            let next = AtomicUsize::new(0);
            let mut out = vec![0u64; items.len()];
            let chunks: Vec<&mut [u64]> = out.chunks_mut(64).collect();
            let slots: Vec<std::sync::Mutex<&mut [u64]>> =
                chunks.into_iter().map(std::sync::Mutex::new).collect();
            std::thread::scope(|s| {
                for _ in 0..workers {
                    s.spawn(|| loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(slot) = slots.get(i) else { break };
                        let mut slot = slot.lock().expect("slot");
                        for (j, o) in slot.iter_mut().enumerate() {
                            *o = inc(items[i * 64 + j]);
                        }
                    });
                }
            });
            black_box(out)
        })
    });
    g.finish();
    // The pool was forked before criterion's first thread (threads_map) and is dropped here.
    drop(pool);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = pool_benches
}
criterion_main!(benches);

//! Start cost of a child under each start method, and a pool's per-task overhead under each,
//! in one run (`harness = false`: main calls `main_guard`, as spawn needs). Compare with
//! CPython's three methods: `python3 benches/start_methods.py` (same machine, same shapes).
//!
//! * `start+join`: one `Process::task` of a trivial function, started and joined, one at a
//!   time; time per child (best of 3 passes of `CHILDREN`).
//! * `pool apply`: one `apply` of a trivial function at a time, after the workers are up.
//! * `pool map cs=1`: `map` over `ITEMS` items, chunksize 1; time per item.
//! * `pool start`: `Pool::new(2)` until its workers are up, then `terminate`.
//!
//! Run: `cargo bench -p baozi-process --bench start`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use baozi_process::{Pool, Process, StartMethod};

const CHILDREN: u32 = 200;
const APPLIES: u32 = 5_000;
const ITEMS: u64 = 20_000;
const PASSES: usize = 3;

fn nothing(_: ()) {}

fn inc(x: u64) -> u64 {
    x.wrapping_add(1)
}

/// The best of `PASSES` runs of `f`, which returns the time per unit.
fn best(mut f: impl FnMut() -> Duration) -> Duration {
    (0..PASSES).map(|_| f()).min().expect("passes")
}

fn start_join(m: StartMethod) -> Duration {
    best(|| {
        let t = Instant::now();
        for _ in 0..CHILDREN {
            let p = Process::builder()
                .start_method(m)
                .task(nothing, ())
                .expect("task");
            p.start().expect("start");
            assert_eq!(p.join().expect("join"), 0);
        }
        t.elapsed() / CHILDREN
    })
}

fn pool_of(m: StartMethod) -> Pool {
    let pool = Pool::builder()
        .processes(2)
        .start_method(m)
        .build()
        .expect("pool");
    while pool.worker_pids().len() < 2 {
        std::thread::sleep(Duration::from_millis(1));
    }
    pool
}

fn pool_start(m: StartMethod) -> Duration {
    best(|| {
        let t = Instant::now();
        for _ in 0..20 {
            let pool = pool_of(m);
            pool.terminate();
        }
        t.elapsed() / 20
    })
}

fn main() {
    baozi_process::main_guard();
    let methods = [
        StartMethod::Fork,
        StartMethod::Spawn,
        StartMethod::Forkserver,
    ];
    // [start+join, pool start, apply, map] per method: the best of every pass, the methods
    // interleaved in each pass so that a busy moment of the machine does not favour one.
    let mut results = [[Duration::MAX; 4]; 3];
    // Starts first, while this process has one thread (fork refuses more).
    for _ in 0..PASSES {
        for (i, &m) in methods.iter().enumerate() {
            results[i][0] = results[i][0].min(start_join(m));
            results[i][1] = results[i][1].min(pool_start(m));
        }
    }
    // The fork pool first, for the same reason; the others start clean from any process.
    let pools: Vec<Pool> = methods.iter().map(|&m| pool_of(m)).collect();
    for _ in 0..PASSES {
        for (i, pool) in pools.iter().enumerate() {
            let r = &mut results[i];
            r[2] = r[2].min(best(|| {
                let t = Instant::now();
                for i in 0..APPLIES {
                    black_box(pool.apply(inc, u64::from(i)).expect("apply"));
                }
                t.elapsed() / APPLIES
            }));
            r[3] = r[3].min(best(|| {
                let t = Instant::now();
                let out = pool.with_chunksize(1).map(inc, 0..ITEMS).expect("map");
                black_box(out);
                t.elapsed() / ITEMS as u32
            }));
        }
    }
    println!(
        "{:<11} {:>14} {:>14} {:>14} {:>16}",
        "method", "start+join", "pool start", "pool apply", "pool map cs=1"
    );
    for (m, r) in methods.iter().zip(results) {
        println!(
            "{:<11} {:>11.1} µs {:>11.1} µs {:>11.2} µs {:>13.2} µs",
            m.name(),
            r[0].as_secs_f64() * 1e6,
            r[1].as_secs_f64() * 1e6,
            r[2].as_secs_f64() * 1e6,
            r[3].as_secs_f64() * 1e6
        );
    }
}

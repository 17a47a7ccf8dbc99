//! The Pool across hosts (`RedisWorkers`) on a private localhost `redis-server`, beside the
//! shared-memory Pool, in one run: `apply` latency (one task at a time) and `map` throughput
//! (tasks per second, chunksize 1 and auto-chunked), with 2 workers each.
//!
//! `cargo bench -p baozi-redis --bench pool` (needs redis-server). This binary is its own
//! worker (`--baozi-worker`).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use baozi_process::Pool;
use baozi_redis::{LocalServer, RedisWorkers};

baozi_process::task! {
    fn square(x: u64) -> u64 { x.wrapping_mul(x) }
}

const WORKERS: usize = 2;

/// The median of 3 runs: the machine is shared.
fn median3(mut f: impl FnMut() -> f64) -> f64 {
    let mut v = [f(), f(), f()];
    v.sort_by(f64::total_cmp);
    v[1]
}

/// (apply latency in µs, map tasks/s with chunksize 1, map items/s auto-chunked).
fn measure(pool: &Pool) -> (f64, f64, f64) {
    // Warm up (and, for Redis, let the workers come).
    pool.map(square, 0..100).unwrap();
    let apply = median3(|| {
        let n = 500;
        let t = Instant::now();
        for i in 0..n {
            pool.apply(square, i).unwrap();
        }
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    });
    let one = median3(|| {
        let n = 2000;
        let t = Instant::now();
        pool.with_chunksize(1).map(square, 0..n).unwrap();
        n as f64 / t.elapsed().as_secs_f64()
    });
    let auto = median3(|| {
        let n = 200_000;
        let t = Instant::now();
        pool.map(square, 0..n).unwrap();
        n as f64 / t.elapsed().as_secs_f64()
    });
    (apply, one, auto)
}

fn main() {
    baozi_redis::main_guard();
    if !LocalServer::available() {
        eprintln!(
            "bench pool: redis-server not found ({})",
            baozi_redis::INSTALL_HINT
        );
        return;
    }
    let shm = Pool::new(WORKERS).unwrap();
    let local = measure(&shm);
    drop(shm);

    let server = LocalServer::start().unwrap();
    let url = server.url();
    let exe = std::env::current_exe().unwrap();
    let mut workers: Vec<Child> = (0..WORKERS)
        .map(|_| {
            Command::new(&exe)
                .args(["--baozi-worker", &url, "--baozi-pool", "bench"])
                .stdin(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let pool = Pool::builder()
        .processes(WORKERS)
        .backend(
            RedisWorkers::builder(&url)
                .namespace("bench")
                .connect()
                .unwrap(),
        )
        .build()
        .unwrap();
    let t = Instant::now();
    while pool.worker_pids().len() < WORKERS && t.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let remote = measure(&pool);
    drop(pool);
    for w in &mut workers {
        let _ = w.kill();
        let _ = w.wait();
    }
    drop(server);

    println!("| {WORKERS} workers | shm Pool | Redis pool (localhost) | Redis / shm |");
    println!("|---|---|---|---|");
    println!(
        "| `apply` latency (µs) | {:.1} | {:.1} | {:.1}× |",
        local.0,
        remote.0,
        remote.0 / local.0
    );
    println!(
        "| `map`, chunksize 1 (tasks/s) | {:.0} | {:.0} | {:.2} |",
        local.1,
        remote.1,
        remote.1 / local.1
    );
    println!(
        "| `map` of 200,000, auto chunks (items/s) | {:.0} | {:.0} | {:.2} |",
        local.2,
        remote.2,
        remote.2 / local.2
    );
}

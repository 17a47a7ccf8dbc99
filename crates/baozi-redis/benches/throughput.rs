//! Throughput and round trip of the Redis queue on a private localhost `redis-server`, beside
//! the shared-memory queue and `redis-benchmark` LPUSH/RPOP of the same message size, all in
//! one run (ratios within the run are what docs/BENCHMARKS.md records).
//!
//! `cargo bench -p baozi-redis --bench throughput` (needs redis-server and redis-benchmark).

use std::process::Command;
use std::time::{Duration, Instant};

use baozi_queue::{Queue, QueueContract};
use baozi_redis::{LocalServer, RedisOptions};

const SIZE: usize = 64;
const BATCH: usize = 100;

/// The median of 3 runs: the machine is shared, single runs swing by 2× and more.
fn median3(mut f: impl FnMut() -> f64) -> f64 {
    let mut v = [f(), f(), f()];
    v.sort_by(f64::total_cmp);
    v[1]
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// `producers` threads put `per` messages each (in batches of `batch`), `consumers` threads get
/// them all; messages per second.
fn flow<Q: QueueContract<Vec<u8>> + 'static>(
    q: Q,
    producers: usize,
    consumers: usize,
    per: usize,
    batch: usize,
) -> f64 {
    let total = producers * per;
    let start = Instant::now();
    let ps: Vec<_> = (0..producers)
        .map(|_| {
            let q = q.clone();
            std::thread::spawn(move || {
                let msg = vec![7u8; SIZE];
                let mut left = per;
                while left > 0 {
                    let n = batch.min(left);
                    if batch == 1 {
                        q.put(msg.clone()).unwrap();
                    } else {
                        q.put_many(vec![msg.clone(); n]).unwrap();
                    }
                    left -= n;
                }
            })
        })
        .collect();
    let cs: Vec<_> = (0..consumers)
        .map(|c| {
            let q = q.clone();
            let share = total / consumers + usize::from(c < total % consumers);
            std::thread::spawn(move || {
                let mut got = 0;
                while got < share {
                    if batch == 1 {
                        q.get().unwrap();
                        got += 1;
                    } else {
                        got += q.get_many(batch.min(share - got)).unwrap().len();
                    }
                }
            })
        })
        .collect();
    for t in ps.into_iter().chain(cs) {
        t.join().unwrap();
    }
    rate(total, start.elapsed())
}

/// One message there and back through two queues; microseconds per round trip.
fn round_trip<Q: QueueContract<Vec<u8>> + 'static>(a: Q, b: Q, n: usize) -> f64 {
    let (a2, b2) = (a.clone(), b.clone());
    let echo = std::thread::spawn(move || {
        for _ in 0..n {
            let m = a2.get().unwrap();
            b2.put(m).unwrap();
        }
    });
    let msg = vec![7u8; SIZE];
    let start = Instant::now();
    for _ in 0..n {
        a.put(msg.clone()).unwrap();
        b.get().unwrap();
    }
    let d = start.elapsed();
    echo.join().unwrap();
    d.as_secs_f64() * 1e6 / n as f64
}

fn redis_benchmark(port: u16, test: &str, pipeline: usize, clients: usize) -> f64 {
    let out = Command::new("redis-benchmark")
        .args([
            "-p",
            &port.to_string(),
            "-t",
            test,
            "-d",
            &SIZE.to_string(),
            "-n",
            "200000",
        ])
        .args([
            "-P",
            &pipeline.to_string(),
            "-c",
            &clients.to_string(),
            "-q",
            "--csv",
        ])
        .output()
        .expect("redis-benchmark");
    let text = String::from_utf8_lossy(&out.stdout);
    // "LPUSH","123456.79",...
    text.lines()
        .filter_map(|l| l.split(',').nth(1))
        .filter_map(|v| v.trim_matches('"').parse::<f64>().ok())
        .next()
        .unwrap_or(f64::NAN)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let server = LocalServer::start().expect("redis-server");
    let url = server.url();
    let mut n = 0;
    let mut rq = |maxsize: usize| {
        n += 1;
        RedisOptions::new()
            .maxsize(maxsize)
            .queue::<Vec<u8>>(&url, &format!("bench-{n}"))
            .unwrap()
    };
    let shm = || Queue::<Vec<u8>>::new(1024, 1 << 22).unwrap();
    println!("message {SIZE} bytes, batch {BATCH}; messages/s, median of 3 runs");
    println!(
        "redis-benchmark LPUSH -P 1 -c 1:   {:>12.0}",
        median3(|| redis_benchmark(server.port(), "lpush", 1, 1))
    );
    println!(
        "redis-benchmark RPOP  -P 1 -c 1:   {:>12.0}",
        median3(|| redis_benchmark(server.port(), "rpop", 1, 1))
    );
    let lpush_p = median3(|| redis_benchmark(server.port(), "lpush", BATCH, 1));
    println!("redis-benchmark LPUSH -P {BATCH} -c 1: {lpush_p:>12.0}");
    println!(
        "redis-benchmark RPOP  -P {BATCH} -c 1: {:>12.0}",
        median3(|| redis_benchmark(server.port(), "rpop", BATCH, 1))
    );
    println!(
        "redis-benchmark LPUSH -P 1 -c 8:   {:>12.0}",
        median3(|| redis_benchmark(server.port(), "lpush", 1, 8))
    );
    let put_only = median3(|| {
        let q = rq(0);
        let msgs = vec![vec![7u8; SIZE]; BATCH];
        let start = Instant::now();
        for _ in 0..200 {
            q.put_many(msgs.clone()).unwrap();
        }
        rate(200 * BATCH, start.elapsed())
    });
    println!(
        "redis put_many({BATCH}) alone:        {put_only:>12.0}  ({:.0}% of LPUSH -P {BATCH})",
        100.0 * put_only / lpush_p
    );
    println!(
        "redis 1P->1C single:            {:>12.0}",
        median3(|| flow(rq(1024), 1, 1, 20_000, 1))
    );
    println!(
        "redis 1P->1C batched:           {:>12.0}",
        median3(|| flow(rq(1024), 1, 1, 200_000, BATCH))
    );
    println!(
        "redis 4P->4C single:            {:>12.0}",
        median3(|| flow(rq(1024), 4, 4, 10_000, 1))
    );
    println!(
        "redis 4P->4C batched:           {:>12.0}",
        median3(|| flow(rq(1024), 4, 4, 50_000, BATCH))
    );
    println!(
        "shm   1P->1C single:            {:>12.0}",
        median3(|| flow(shm(), 1, 1, 1_000_000, 1))
    );
    println!(
        "shm   1P->1C batched:           {:>12.0}",
        median3(|| flow(shm(), 1, 1, 2_000_000, BATCH))
    );
    println!(
        "shm   4P->4C single:            {:>12.0}",
        median3(|| flow(shm(), 4, 4, 250_000, 1))
    );
    println!(
        "shm   4P->4C batched:           {:>12.0}",
        median3(|| flow(shm(), 4, 4, 500_000, BATCH))
    );
    println!(
        "round trip redis: {:.1} us",
        median3(|| round_trip(rq(0), rq(0), 5_000))
    );
    println!(
        "round trip shm:   {:.1} us",
        median3(|| round_trip(shm(), shm(), 100_000))
    );
}

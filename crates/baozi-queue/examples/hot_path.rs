//! The queue's hot path in one process, for instruction counts under callgrind
//! (`scripts/callgrind-queue` runs it twice with different counts and takes the difference, so
//! start-up and warm-up cancel out).
//!
//! `cargo run --release -p baozi-queue --example hot_path -- pair 1000` does 1000 64-byte
//! `put_bytes` + `get_bytes_into` pairs on a byte queue of maxsize 1024; `batch 1000` does 1000
//! batches of 64 `Pod<[u8; 64]>` items through `put_many_from` + `get_many_into`; `idle 10` blocks
//! in one `get_timeout` of 10 s on an empty queue, to measure (with `/usr/bin/time`) what a
//! sleeping get costs while nothing comes.

use std::hint::black_box;

use baozi_queue::{Pod, Queue};

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(mode), Some(n)) = (args.next(), args.next()) else {
        eprintln!("usage: hot_path pair|batch|idle N");
        std::process::exit(2);
    };
    let Ok(n) = n.parse::<u64>() else {
        eprintln!("hot_path: N must be a number, got {n:?}");
        std::process::exit(2);
    };
    match mode.as_str() {
        "pair" => pairs(n),
        "batch" => batches(n),
        "idle" => idle(n),
        other => {
            eprintln!("hot_path: unknown mode {other:?} (pair, batch or idle)");
            std::process::exit(2);
        }
    }
}

fn pairs(n: u64) {
    let q: Queue<Vec<u8>> = Queue::new(1024, 1 << 20).expect("queue");
    let msg = [7u8; 64];
    let mut buf = Vec::with_capacity(64);
    for _ in 0..n {
        q.put_bytes(black_box(&msg), None).expect("put");
        q.get_bytes_into(&mut buf, None).expect("get");
        black_box(&buf);
    }
}

fn batches(n: u64) {
    let q: Queue<Pod<[u8; 64]>> = Queue::new(1024, 1 << 20).expect("queue");
    let items = vec![Pod([7u8; 64]); 64];
    let mut out = Vec::with_capacity(64);
    for _ in 0..n {
        q.put_many_from(black_box(&items), None).expect("put_many");
        out.clear();
        q.get_many_into(&mut out, 64, None).expect("get_many");
        black_box(&out);
    }
}

fn idle(seconds: u64) {
    let q: Queue<Vec<u8>> = Queue::new(1024, 1 << 20).expect("queue");
    let got = q.get_timeout(std::time::Duration::from_secs(seconds));
    assert!(got.is_err(), "nobody puts");
}

//! Properties over forked processes:
//!
//! * for random splits of a random workload — producers, consumers, maxsize, message counts and
//!   sizes — every message put arrives exactly once, and each consumer sees each producer's
//!   messages in the order they were put;
//! * for random numbers of processes, increments and array lengths, read-modify-write under a
//!   shared `Value`'s or `Array`'s lock loses no update: every cell ends at exactly the sum of
//!   what was added to it.
//!
//! `harness = false`: proptest's runner is driven by hand, and each generated case runs inside a
//! forked process group under the support module's watchdog, so a hang fails instead of wedging.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use baozi::{Array, GetError, Heap, Pod, Queue, QueueOptions, Value};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use support::{case, fork, join_all_ok};

const BOUND: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
struct Workload {
    /// Messages per producer, and each producer's message sizes (cycled).
    producers: Vec<(u32, Vec<u16>)>,
    consumers: usize,
    maxsize: usize,
    capacity: usize,
    batch: usize,
}

fn workload() -> impl Strategy<Value = Workload> {
    (
        prop::collection::vec((0u32..300, prop::collection::vec(0u16..400, 1..5)), 1..4),
        1usize..4,
        0usize..9,
        prop_oneof![Just(512usize), Just(2048), Just(65536)],
        1usize..5,
    )
        .prop_map(
            |(producers, consumers, maxsize, capacity, batch)| Workload {
                producers,
                consumers,
                maxsize,
                capacity,
                batch,
            },
        )
}

/// Runs one workload across processes; returns what each consumer received, in order.
fn run(w: &Workload) -> Result<(), TestCaseError> {
    let work: Queue<Vec<u8>> = QueueOptions::new()
        .maxsize(w.maxsize)
        .capacity(w.capacity)
        .anonymous()
        .expect("work queue");
    // (consumer, producer, seq) for every delivery, sent back to the parent.
    let results: Queue<Pod<[u32; 3]>> = Queue::new(0, 1 << 20).expect("results queue");
    let mut consumers = Vec::new();
    for c in 0..w.consumers {
        let (work, results, batch) = (&work, &results, w.batch);
        consumers.push(fork(move || loop {
            let got = if batch == 1 {
                work.get().map(|m| vec![m])
            } else {
                work.get_many(batch)
            };
            match got {
                Ok(msgs) => {
                    for m in msgs {
                        let p = u32::from_le_bytes(m[0..4].try_into().unwrap());
                        let seq = u32::from_le_bytes(m[4..8].try_into().unwrap());
                        results.put(Pod([c as u32, p, seq])).expect("report");
                    }
                }
                Err(GetError::Closed) => return,
                Err(e) => panic!("consumer {c}: {e}"),
            }
        }));
    }
    let mut producers = Vec::new();
    for (p, (count, sizes)) in w.producers.iter().enumerate() {
        let work = &work;
        producers.push(fork(move || {
            for seq in 0..*count {
                let size = (sizes[seq as usize % sizes.len()] as usize).max(8);
                let mut m = vec![0xabu8; size];
                m[0..4].copy_from_slice(&(p as u32).to_le_bytes());
                m[4..8].copy_from_slice(&seq.to_le_bytes());
                work.put(m).expect("put");
            }
        }));
    }
    join_all_ok(producers, BOUND, "producers");
    work.close().expect("close");
    join_all_ok(consumers, BOUND, "consumers");

    let mut seen: HashMap<(u32, u32), u32> = HashMap::new();
    let mut last: HashMap<(u32, u32), u32> = HashMap::new();
    while let Ok(Pod([c, p, seq])) = results.get_nowait() {
        *seen.entry((p, seq)).or_default() += 1;
        if let Some(prev) = last.insert((c, p), seq) {
            prop_assert!(
                prev < seq,
                "consumer {c} saw producer {p}'s {seq} after {prev}"
            );
        }
    }
    for (p, (count, _)) in w.producers.iter().enumerate() {
        for seq in 0..*count {
            let n = seen.remove(&(p as u32, seq)).unwrap_or(0);
            prop_assert_eq!(n, 1, "producer {} message {} delivered {} times", p, seq, n);
        }
    }
    prop_assert!(
        seen.is_empty(),
        "deliveries of messages never put: {:?}",
        seen
    );
    prop_assert!(work.empty());
    Ok(())
}

/// Runs a property for `BAOZI_PROPERTY_CASES` cases (default `default_cases`); panics with the
/// shrunk counterexample.
fn check_property<S: Strategy>(
    default_cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let cases = std::env::var("BAOZI_PROPERTY_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{e}");
    }
}

fn property() {
    check_property(32, workload(), |w| run(&w));
}

/// One process's share of the increments: `(cell, amount)` pairs, from a seed, so the parent
/// can recompute what each cell must hold.
fn increments(seed: u64, count: u32, cells: usize) -> impl Iterator<Item = (usize, u64)> {
    let mut x = seed | 1;
    (0..count).map(move |_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        ((x % cells as u64) as usize, x % 7 + 1)
    })
}

#[derive(Clone, Debug)]
struct Counters {
    /// Per process: (seed, increments).
    processes: Vec<(u64, u32)>,
    cells: usize,
}

fn counters() -> impl Strategy<Value = Counters> {
    (
        prop::collection::vec((any::<u64>(), 0u32..3000), 1..7),
        1usize..17,
    )
        .prop_map(|(processes, cells)| Counters { processes, cells })
}

fn run_counters(w: &Counters) -> Result<(), TestCaseError> {
    let heap = Heap::anonymous(1 << 20).expect("heap");
    let total = Value::new_in(&heap, 0u64).expect("value");
    let cells = Array::<u64>::zeroed_in(&heap, w.cells).expect("array");
    let kids: Vec<_> = w
        .processes
        .iter()
        .map(|&(seed, count)| {
            let (total, cells, n) = (&total, &cells, w.cells);
            fork(move || {
                for (i, amount) in increments(seed, count, n) {
                    cells.lock().expect("array lock")[i] += amount;
                    *total.lock().expect("value lock") += amount;
                }
            })
        })
        .collect();
    join_all_ok(kids, BOUND, "incrementers");
    let mut want = vec![0u64; w.cells];
    for &(seed, count) in &w.processes {
        for (i, amount) in increments(seed, count, w.cells) {
            want[i] += amount;
        }
    }
    let got = cells.to_vec().expect("array read");
    prop_assert_eq!(&got, &want, "cells lost updates");
    prop_assert_eq!(total.get().expect("value read"), want.iter().sum::<u64>());
    Ok(())
}

fn counters_property() {
    check_property(24, counters(), |w| run_counters(&w));
}

fn main() {
    support::run_main(vec![
        case("split_workloads_deliver_exactly_once_in_order", property)
            .timeout(Duration::from_secs(300)),
        case(
            "values_and_arrays_lose_no_locked_increment",
            counters_property,
        )
        .timeout(Duration::from_secs(300)),
    ]);
}

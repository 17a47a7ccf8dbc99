//! kill -9 torture of the shared [`Heap`]: 2 or 3 processes churn (alloc and free, 1..=70000
//! bytes, alignments up to 4096), one of them is SIGKILLed at a random instant, and everyone
//! else must go on without deadlock and account for every byte afterwards.
//!
//! `harness = false`: each case runs in its own forked process group under a watchdog (the
//! runner of `tests/support/mod.rs`); the binary ends with one `N passed, N failed` line.
//!
//! Cases:
//! * `value_lock_holder_killed_is_recovered`: a process dies (SIGKILL) holding a `Value`'s and
//!   an `Array`'s locks; the next locker gets them at once with `recovered()`;
//! * `value_counter_with_kills`: 4 incrementers of a `Value<u64>` under its lock, one killed at
//!   random 50 times and replaced; the total is exact to within one addition per kill;
//! * `kill9_alloc_torture`: the loop below.
//!
//! # One iteration
//! 1. Fork 2 or 3 churners; one is the victim. It dies by a SIGKILL from the parent a random
//!    number of microseconds after the start, or (one iteration in three) by a kernel timer it
//!    arms itself (`timer_create` + `SIGEV_SIGNAL` SIGKILL, as `tests/kill9_torture.rs`), which
//!    lands precisely even when the parent does not get the CPU in time.
//!    In one iteration in four ("solo") the victim starts alone: the others (and the parent's
//!    churn) wait until it is dead, so the parent can look at the heap's lock words and journals
//!    exactly as the kill left them and report where kills landed (reporting only, never
//!    asserted: it reads private offsets of the heap layout, see [`peek`]).
//! 2. Meanwhile the parent churns as well. After the victim is dead, the survivors must each do
//!    [`POST_KILL_OPS`] more operations (so locks the victim held are taken again), then stop,
//!    free everything they own and exit 0; every operation is bounded ([`ITER_BOUND`] for the
//!    whole iteration).
//! 3. The parent frees its own blocks and the blocks the victim owned at death (see the slot
//!    protocol below), then a probe process allocates and frees one block of every size class
//!    and two large sizes within [`PROBE_BOUND`].
//! 4. Accounting: `used + free + overhead + leaked_suspect == capacity`, and the growth of
//!    `used + leaked_suspect` over the iteration is at most the block of the one heap call the
//!    victim had in flight (0 if it had none) — "a process killed anywhere costs at most the one
//!    block it was moving".
//!
//! # Slot protocol (what the victim owned at death)
//! Each churner records its blocks in shared slots (`tests/common`'s packed `Rec`):
//! * alloc: `pending := bound(size)`; `alloc`; `slot := rec`; write the pattern;
//!   `slot |= FILLED`; `pending := 0`;
//! * free: check the pattern; `slot |= FREEING`; `pending := bound`; `free`; `slot := 0`;
//!   `pending := 0`.
//!
//! After everyone else has freed everything, the parent frees each recorded block of the dead
//! victim (checking its pattern when `FILLED`); a `FREEING` one only if `usable_size` says it is
//! still allocated (the free may have committed). What the victim cannot have recorded — a block
//! whose alloc committed just before the kill, or one moved half-way — is the `pending` bound.
//!
//! Environment: `BAOZI_KILL_ITERS` (default 200), `BAOZI_KILL_SEED` (replays the random
//! choices), `BAOZI_KILL_DEBUG` (one line per iteration).

extern crate self as baozi;

/// The shared-memory crate under the path `tests/support` expects (`baozi::shm`).
mod shm {
    pub(crate) use baozi_shm::*;
}

#[path = "../../../tests/support/mod.rs"]
mod support;

mod common;

use std::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use baozi_alloc::{AllocError, Heap, HeapStats};
use baozi_shm::Offset;
use common::{layout, random_align, Rec, CHUNK, FILLED, FREEING};
use support::{case, fork, Child, Exit, Gate, Ledger, Rng};

const DEFAULT_ITERS: u64 = 200;
/// Bound on one iteration (a deadlock fails it with the processes still running).
const ITER_BOUND: Duration = Duration::from_secs(30);
/// Bound on the probe of every class after an iteration.
const PROBE_BOUND: Duration = Duration::from_secs(10);
/// Operations each survivor must complete after the victim's death.
const POST_KILL_OPS: u64 = 300;
/// Slots (owned blocks) per churner.
const SLOTS: usize = 48;
/// A fresh heap every this many iterations (early iterations of a heap refill often).
const HEAP_EVERY: u64 = 8;
const HEAP_BYTES: usize = 8 << 20;
/// Sizes the churners pick from: a few classes each, so that they meet on the same locks.
const SIZES: [usize; 12] = [
    8, 16, 48, 100, 256, 1000, 3000, 4096, 9000, 16384, 20000, 70000,
];
/// What a "large-only" victim picks from (one iteration in five): most of its time is then
/// spent under the chunk lock, whose windows (the run's map entries, the chunk journal) are
/// otherwise rarely hit.
const LARGE_SIZES: [usize; 3] = [16385, 70000, 131072];
/// One block of every small class (the heap's table), and two large ones, for the probe.
const PROBE_SIZES: [usize; 38] = [
    16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 896, 1024,
    1280, 1536, 1792, 2048, 2560, 3072, 3584, 4096, 5120, 6144, 7168, 8192, 10240, 12288, 14336,
    16384, 65536, 131072,
];

fn iterations() -> u64 {
    std::env::var("BAOZI_KILL_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_ITERS)
}

fn main() {
    let bound = Duration::from_secs(120 + iterations());
    support::run_main(vec![
        case("value_lock_holder_killed_is_recovered", value_holder_killed),
        case("value_counter_with_kills", value_counter_with_kills),
        case("kill9_alloc_torture", torture).timeout(bound),
    ])
}

// ------------------------------------------------------------------------------------------
// Value / Array locks
// ------------------------------------------------------------------------------------------

/// A process SIGKILLed while holding a `Value`'s or an `Array`'s lock: the next locker gets the
/// lock at once, `recovered()` says so, and it sees what the dead holder wrote; later lockers
/// see `recovered() == false`.
fn value_holder_killed() {
    let heap = Heap::anonymous(1 << 20).unwrap();
    let v = baozi_alloc::Value::new_in(&heap, 1u64).unwrap();
    let a = baozi_alloc::Array::from_slice_in(&heap, &[1u32, 2, 3]).unwrap();
    let holder = fork(|| {
        let mut g = v.lock().unwrap();
        let mut h = a.lock().unwrap();
        *g = 42;
        h[1] = 20;
        // SAFETY: raise has no memory-safety preconditions; we die holding both locks.
        unsafe { libc::raise(libc::SIGKILL) };
        unreachable!();
    });
    let exit = holder.join(Duration::from_secs(10), "holder");
    assert!(exit.sigkilled(), "{exit:?}");
    let t = Instant::now();
    {
        let g = v.lock().unwrap();
        assert!(g.recovered(), "the dead holder's lock was not reported");
        assert_eq!(*g, 42);
        let h = a.lock().unwrap();
        assert!(h.recovered());
        assert_eq!(&h[..], &[1, 20, 3]);
    }
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "recovery took {:?}",
        t.elapsed()
    );
    assert!(!v.lock().unwrap().recovered());
    assert!(!a.lock().unwrap().recovered());
    v.set(7).unwrap();
    assert_eq!(v.get().unwrap(), 7);
    assert_eq!(a.to_vec().unwrap(), [1, 20, 3]);
}

/// 4 processes add 1 to a `Value<u64>` under its lock, each also counting its own additions in
/// shared memory (inside the lock, right after the addition); one in turn is SIGKILLed at a
/// random instant, 50 times, and replaced. The total is the sum of the counts, plus at most one
/// per kill (an addition made, its count not yet).
fn value_counter_with_kills() {
    const KILLS: u64 = 50;
    let heap = Heap::anonymous(1 << 20).unwrap();
    let v = baozi_alloc::Value::new_in(&heap, 0u64).unwrap();
    let (mut rng, seed) = Rng::from_env("BAOZI_KILL_SEED");
    println!("    BAOZI_KILL_SEED={seed}");
    // Word 0: stop; then one count per process ever started.
    let book = Ledger::new(1 + 4 + KILLS as usize);
    let spawn = |slot: usize| {
        let (v, book) = (&v, &book);
        fork(move || {
            while book.word(0).load(Ordering::Relaxed) == 0 {
                let mut g = v.lock().unwrap();
                *g += 1;
                book.word(1 + slot).fetch_add(1, Ordering::SeqCst);
                drop(g);
            }
        })
    };
    let mut procs: Vec<Child> = (0..4).map(spawn).collect();
    let mut next = 4;
    let mut recovered = 0;
    for _ in 0..KILLS {
        std::thread::sleep(Duration::from_micros(rng.range(100, 3000)));
        let i = rng.below(procs.len() as u64) as usize;
        let exit = procs[i].kill_and_reap();
        assert!(exit.sigkilled(), "{exit:?}");
        // The parent takes the lock too, within a bound, between kills.
        let t = Instant::now();
        recovered += u64::from(v.lock().unwrap().recovered());
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "lock took {:?}",
            t.elapsed()
        );
        procs[i] = spawn(next);
        next += 1;
    }
    book.word(0).store(1, Ordering::Relaxed);
    for p in procs {
        p.join_ok(Duration::from_secs(10), "incrementer");
    }
    let counted: u64 = (1..=next)
        .map(|i| book.word(i).load(Ordering::SeqCst))
        .sum();
    let total = v.get().unwrap();
    println!(
        "    {KILLS} kills: value {total}, counted {counted}, {} additions made but not counted, the parent found {recovered} locks left by the dead",
        total - counted
    );
    assert!(
        (counted..=counted + KILLS).contains(&total),
        "value {total}, counted {counted}, {KILLS} kills"
    );
}

/// The most bytes one heap call for `size` can move: a whole small block (at most 16 KiB, the
/// largest class), or the run of chunks.
fn bound(size: usize) -> u64 {
    if size <= 16384 {
        16384
    } else {
        (size.div_ceil(CHUNK) * CHUNK) as u64
    }
}

/// The largest block any churner here can hold.
fn max_block() -> u64 {
    SIZES
        .iter()
        .chain(&LARGE_SIZES)
        .map(|&s| bound(s))
        .max()
        .unwrap()
}

/// Makes the kernel SIGKILL this process `after` from now (as in `tests/kill9_torture.rs`).
fn arm_kill_timer(after: Duration) {
    // SAFETY: an all-zero sigevent is a valid value of this plain C struct.
    let mut ev: libc::sigevent = unsafe { std::mem::zeroed() };
    ev.sigev_notify = libc::SIGEV_SIGNAL;
    ev.sigev_signo = libc::SIGKILL;
    let mut timer: libc::timer_t = std::ptr::null_mut();
    // SAFETY: ev and timer are valid for reads and writes for the duration of the call.
    let rc = unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &mut ev, &mut timer) };
    assert_eq!(rc, 0, "timer_create: {}", std::io::Error::last_os_error());
    let at = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: after.as_secs() as libc::time_t,
            // A zero it_value disarms: make it at least 1 ns.
            tv_nsec: libc::c_long::from(after.subsec_nanos().max(1)),
        },
    };
    // SAFETY: timer was just created; `at` is valid; the old value is not asked for.
    let rc = unsafe { libc::timer_settime(timer, 0, &at, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "timer_settime: {}", std::io::Error::last_os_error());
}

// ------------------------------------------------------------------------------------------
// Shared book of an iteration
// ------------------------------------------------------------------------------------------

/// Ledger layout: word 0 = stop; then per churner: pending, ops, panicked, SLOTS slots.
const PER_PROC: usize = 3 + SLOTS;
const MAX_PROCS: usize = 3;

struct Book {
    ledger: Ledger,
}

impl Book {
    fn new() -> Self {
        Book {
            ledger: Ledger::new(1 + MAX_PROCS * PER_PROC),
        }
    }
    fn stop(&self) -> &AtomicU64 {
        self.ledger.word(0)
    }
    fn pending(&self, p: usize) -> &AtomicU64 {
        self.ledger.word(1 + p * PER_PROC)
    }
    fn ops(&self, p: usize) -> &AtomicU64 {
        self.ledger.word(2 + p * PER_PROC)
    }
    fn panicked(&self, p: usize) -> &AtomicU64 {
        self.ledger.word(3 + p * PER_PROC)
    }
    fn slot(&self, p: usize, i: usize) -> &AtomicU64 {
        self.ledger.word(4 + p * PER_PROC + i)
    }
}

/// Stores with a full fence after, so that the heap call that follows cannot be seen to start
/// before it (the kill can land anywhere).
fn mark(word: &AtomicU64, v: u64) {
    word.store(v, Ordering::SeqCst);
    fence(Ordering::SeqCst);
}

fn pick_layout(rng: &mut Rng, sizes: &[usize]) -> (usize, usize) {
    let size = sizes[rng.below(sizes.len() as u64) as usize];
    (size, random_align(rng.next_u64()))
}

/// A churner: alloc and free, recording its blocks in its slots, until told to stop; then
/// frees everything.
fn churner(
    heap: &Heap,
    book: &Book,
    gate: &Gate,
    p: usize,
    seed: u64,
    timer: Option<Duration>,
    sizes: &[usize],
) {
    // A victim that panics may be killed while printing the panic, which would pass for a plain
    // kill: the hook marks the churner as failed before anything else.
    static PANICKED: AtomicUsize = AtomicUsize::new(0);
    PANICKED.store(
        std::ptr::from_ref::<AtomicU64>(book.panicked(p)) as usize,
        Ordering::SeqCst,
    );
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let at = PANICKED.load(Ordering::SeqCst) as *const AtomicU64;
        // SAFETY: the word lives in the book's shared mapping, which outlives this process.
        unsafe { (*at).store(1, Ordering::SeqCst) };
        previous(info);
    }));
    let mut rng = Rng::new(seed);
    gate.wait();
    if let Some(d) = timer {
        arm_kill_timer(d);
    }
    let pending = book.pending(p);
    let free_slot = |i: usize| {
        let w = book.slot(p, i).load(Ordering::SeqCst);
        let rec = Rec::unpack(w);
        rec.check(heap, true)
            .unwrap_or_else(|e| panic!("churner {p}: {e}"));
        mark(book.slot(p, i), w | FREEING);
        mark(pending, bound(rec.size));
        heap.free(Offset::new(rec.off))
            .unwrap_or_else(|e| panic!("churner {p}: free of owned {rec:?}: {e}"));
        mark(book.slot(p, i), 0);
        mark(pending, 0);
    };
    while book.stop().load(Ordering::Relaxed) == 0 {
        let empty = (0..SLOTS).find(|&i| book.slot(p, i).load(Ordering::Relaxed) == 0);
        match empty {
            Some(i) if rng.chance(55, 100) => {
                let (size, align) = pick_layout(&mut rng, sizes);
                mark(pending, bound(size));
                match heap.alloc(layout(size, align)) {
                    Ok(off) => {
                        let rec = Rec {
                            off: off.get(),
                            size,
                            fill: rng.range(1, 255) as u8,
                        };
                        mark(book.slot(p, i), rec.pack());
                        assert_eq!(
                            heap.ptr(off).unwrap().as_ptr() as usize % align,
                            0,
                            "churner {p}: misaligned block"
                        );
                        rec.write(heap, true);
                        mark(book.slot(p, i), rec.pack() | FILLED);
                        mark(pending, 0);
                    }
                    Err(AllocError::OutOfMemory { .. }) => {
                        mark(pending, 0);
                        if let Some(j) =
                            (0..SLOTS).find(|&j| book.slot(p, j).load(Ordering::Relaxed) != 0)
                        {
                            free_slot(j);
                        }
                    }
                    Err(e) => panic!("churner {p}: alloc({size}, {align}): {e}"),
                }
            }
            _ => {
                let start = rng.below(SLOTS as u64) as usize;
                if let Some(j) = (0..SLOTS)
                    .map(|k| (start + k) % SLOTS)
                    .find(|&j| book.slot(p, j).load(Ordering::Relaxed) != 0)
                {
                    free_slot(j);
                }
            }
        }
        book.ops(p).fetch_add(1, Ordering::Relaxed);
    }
    for i in 0..SLOTS {
        if book.slot(p, i).load(Ordering::Relaxed) != 0 {
            free_slot(i);
        }
    }
}

// ------------------------------------------------------------------------------------------
// The loop
// ------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Kill {
    /// SIGKILL from the parent this long after the start.
    Random { delay_us: u64 },
    /// SIGKILL from a kernel timer the victim arms as it starts.
    Timer { delay_us: u64 },
}

#[derive(Debug, Default)]
struct Stats {
    iterations: u64,
    random_kills: u64,
    timer_kills: u64,
    /// Kills that found the victim inside a heap call (`pending` set).
    in_call: u64,
    /// Iterations whose `leaked_suspect` grew: killed between a free list's commit and the
    /// bitmap's.
    leaked_iters: u64,
    leaked_bytes: u64,
    /// Iterations where an allocated block stayed unrecorded: killed after an alloc committed.
    unrecorded_iters: u64,
    unrecorded_bytes: u64,
    /// Recorded blocks the parent freed for the dead victim.
    freed_for_victim: u64,
    /// Of those, `FREEING` ones whose free had already committed.
    freeing_committed: u64,
    parent_ops: u64,
    /// Iterations whose victim allocated only large blocks.
    large_victims: u64,
    /// Solo iterations, and where their kills were found (see [`peek`]).
    solo: u64,
    solo_in_call: u64,
    dead_holding_class_lock: u64,
    dead_holding_chunk_lock: u64,
    dead_mid_refill: u64,
    dead_mid_large: u64,
    survivor_ops_after_kill: u64,
    slowest_iteration: Duration,
    slowest_parent_op: Duration,
    /// Per heap: (final used, final leaked_suspect, kills on that heap).
    heaps: Vec<(usize, usize, u64)>,
}

fn torture() {
    let iters = iterations();
    let (mut rng, seed) = Rng::from_env("BAOZI_KILL_SEED");
    println!("    {iters} iterations, BAOZI_KILL_SEED={seed}");
    let mut stats = Stats::default();
    let t0 = Instant::now();
    let mut heap = None;
    let mut kills_on_heap = 0;
    for it in 0..iters {
        if it % HEAP_EVERY == 0 {
            if let Some(h) = heap.take() {
                finish_heap(&h, kills_on_heap, &mut stats);
            }
            heap = Some(Heap::anonymous(HEAP_BYTES).unwrap());
            kills_on_heap = 0;
        }
        let h = heap.as_ref().unwrap();
        let start = Instant::now();
        let procs = 2 + rng.below(2) as usize;
        let victim = rng.below(procs as u64) as usize;
        let delay_us = if rng.chance(7, 10) {
            rng.below(1500)
        } else {
            rng.range(1500, 20_000)
        };
        let kill = if rng.chance(1, 3) {
            Kill::Timer { delay_us }
        } else {
            Kill::Random { delay_us }
        };
        let solo = rng.chance(1, 4);
        let large_victim = rng.chance(1, 5);
        stats.large_victims += u64::from(large_victim);
        if let Err(why) = iteration(
            h,
            &mut rng,
            (procs, victim),
            kill,
            (solo, large_victim),
            &mut stats,
        ) {
            panic!(
                "iteration {it} failed: {why}\n    {procs} churners, victim {victim}, {kill:?}, solo {solo}, large-only victim {large_victim}\n    replay with BAOZI_KILL_SEED={seed}"
            );
        }
        kills_on_heap += 1;
        stats.iterations += 1;
        stats.slowest_iteration = stats.slowest_iteration.max(start.elapsed());
    }
    if let Some(h) = heap.take() {
        finish_heap(&h, kills_on_heap, &mut stats);
    }
    let kills = stats.random_kills + stats.timer_kills;
    println!(
        "    {} iterations in {:.1} s: {kills} kills ({} by the parent at a random time, {} by the victim's own timer), {} inside a heap call",
        stats.iterations,
        t0.elapsed().as_secs_f64(),
        stats.random_kills,
        stats.timer_kills,
        stats.in_call,
    );
    println!(
        "    leaked_suspect grew in {} iterations ({} B in all); an allocated block stayed unrecorded in {} ({} B); the parent freed {} blocks for dead victims ({} more were mid-free and already free)",
        stats.leaked_iters,
        stats.leaked_bytes,
        stats.unrecorded_iters,
        stats.unrecorded_bytes,
        stats.freed_for_victim,
        stats.freeing_committed,
    );
    println!(
        "    solo kills (the victim alone, the heap inspected as the kill left it): {} of {} inside a heap call; the victim died holding a class lock {} times, the chunk lock {}, mid-refill {}, mid large alloc/free {} ({} iterations with a large-only victim)",
        stats.solo_in_call,
        stats.solo,
        stats.dead_holding_class_lock,
        stats.dead_holding_chunk_lock,
        stats.dead_mid_refill,
        stats.dead_mid_large,
        stats.large_victims,
    );
    println!(
        "    parent ops {}, survivor ops after the kill {}, slowest iteration {:?}, slowest parent op {:?}",
        stats.parent_ops,
        stats.survivor_ops_after_kill,
        stats.slowest_iteration,
        stats.slowest_parent_op
    );
    let (used, leaked): (usize, usize) = stats
        .heaps
        .iter()
        .fold((0, 0), |(u, l), h| (u + h.0, l + h.1));
    println!(
        "    at the end, over {} heaps: used {used} B, leaked_suspect {leaked} B (bound: {kills} kills x {} B)",
        stats.heaps.len(),
        max_block()
    );
    for &(u, l, k) in &stats.heaps {
        assert!(
            (u + l) as u64 <= k * max_block(),
            "heap with {k} kills: used {u} + leaked {l} > {k} x {}",
            max_block()
        );
        assert!(
            l as u64 <= k * 16384,
            "heap with {k} kills: leaked_suspect {l} > {k} x 16384 (only small blocks can leak)"
        );
    }
    assert!(
        stats.in_call > 0 || iters < 50,
        "no kill ever landed inside a heap call: the test does not reach the windows it is for"
    );
}

fn finish_heap(heap: &Heap, kills: u64, stats: &mut Stats) {
    let s = checked_stats(heap).unwrap_or_else(|e| panic!("{e}"));
    stats.heaps.push((s.used, s.leaked_suspect, kills));
}

fn checked_stats(heap: &Heap) -> Result<HeapStats, String> {
    let s = heap.stats().map_err(|e| format!("stats: {e}"))?;
    if s.used + s.free + s.overhead + s.leaked_suspect != s.capacity {
        return Err(format!(
            "used + free + overhead + leaked_suspect != capacity: {s:?}"
        ));
    }
    Ok(s)
}

/// One operation of the parent's own churn; how long it took.
fn parent_op(heap: &Heap, rng: &mut Rng, own: &mut Vec<Rec>) -> Result<Duration, String> {
    let t = Instant::now();
    if own.len() < SLOTS && rng.chance(55, 100) {
        let (size, align) = pick_layout(rng, &SIZES);
        match heap.alloc(layout(size, align)) {
            Ok(off) => {
                let rec = Rec {
                    off: off.get(),
                    size,
                    fill: rng.range(1, 255) as u8,
                };
                rec.write(heap, true);
                own.push(rec);
            }
            Err(AllocError::OutOfMemory { .. }) => {
                if let Some(rec) = own.pop() {
                    parent_free(heap, rec)?;
                }
            }
            Err(e) => return Err(format!("parent alloc({size}, {align}): {e}")),
        }
    } else if !own.is_empty() {
        let i = rng.below(own.len() as u64) as usize;
        parent_free(heap, own.swap_remove(i))?;
    }
    Ok(t.elapsed())
}

fn parent_free(heap: &Heap, rec: Rec) -> Result<(), String> {
    rec.check(heap, true).map_err(|e| format!("parent: {e}"))?;
    heap.free(Offset::new(rec.off))
        .map_err(|e| format!("parent: free of owned {rec:?}: {e}"))
}

/// Where a kill left the heap, read from its metadata before anyone else touched it.
#[derive(Debug, Default)]
struct Seen {
    class_lock: bool,
    chunk_lock: bool,
    refill: bool,
    large: bool,
}

/// Reads the heap's lock words and journals (reporting only). This depends on private parts
/// of the layout in `src/heap.rs` (lines of `CACHE_LINE` bytes: chunk lock at line 2, chunk journal at line 3, one line per
/// class from line 4 with its lock first and its carving journal at byte 68) and on glibc's
/// robust mutex keeping its futex word (the owner's TID, or FUTEX_OWNER_DIED) first; if either changes, the counts go
/// wrong, nothing fails.
fn peek(heap: &Heap, pid: libc::pid_t) -> Seen {
    const LINE: usize = baozi_shm::CACHE_LINE;
    let base = heap.region().as_ptr();
    let word = |at: usize| {
        // SAFETY: `at` is inside the heap's metadata (a few lines from the start), 4-aligned;
        // the region is mapped for as long as `heap` lives; read as an atomic.
        unsafe { (*base.add(at).cast::<std::sync::atomic::AtomicU32>()).load(Ordering::SeqCst) }
    };
    // The kernel rewrites a dead holder's robust futex word to FUTEX_OWNER_DIED (keeping only
    // the waiters bit); a holder not yet noticed dead still has its TID there.
    let owned_by = |at: usize| {
        let w = word(at);
        w & 0x4000_0000 != 0 || (w & 0x3fff_ffff) as libc::pid_t == pid
    };
    let mut seen = Seen {
        chunk_lock: owned_by(2 * LINE),
        large: word(3 * LINE) != 0 || word(3 * LINE + 4) != 0,
        ..Seen::default()
    };
    for c in 0..36 {
        let line = (4 + c) * LINE;
        seen.class_lock |= owned_by(line);
        seen.refill |= word(line + 68) != 0;
    }
    seen
}

struct Proc {
    child: Child,
    exit: Option<Exit>,
}

fn iteration(
    heap: &Heap,
    rng: &mut Rng,
    (procs, victim): (usize, usize),
    kill: Kill,
    (solo, large_victim): (bool, bool),
    stats: &mut Stats,
) -> Result<(), String> {
    let before = checked_stats(heap)?;
    let book = Book::new();
    let gate = Gate::new();
    // Survivors start at `gate`, or (solo) at `late` once the victim is dead.
    let late = Gate::new();
    let mut kids: Vec<Proc> = (0..procs)
        .map(|p| {
            let timer = match kill {
                Kill::Timer { delay_us } if p == victim => Some(Duration::from_micros(delay_us)),
                _ => None,
            };
            let seed = rng.next_u64();
            let (heap, book) = (heap, &book);
            let gate = if solo && p != victim { &late } else { &gate };
            Proc {
                child: fork(move || {
                    let sizes: &[usize] = if large_victim && p == victim {
                        &LARGE_SIZES
                    } else {
                        &SIZES
                    };
                    churner(heap, book, gate, p, seed, timer, sizes);
                }),
                exit: None,
            }
        })
        .collect();
    let mut own: Vec<Rec> = Vec::new();
    let start = Instant::now();
    gate.open();
    let kill_at = match kill {
        Kill::Random { delay_us } => Some(start + Duration::from_micros(delay_us)),
        Kill::Timer { .. } => None,
    };
    let mut kill_sent = false;
    // Survivors' op counts when the victim was seen dead.
    let mut ops_at_death: Option<Vec<u64>> = None;
    let mut pending_at_death = 0;
    loop {
        if !solo || ops_at_death.is_some() {
            let took = parent_op(heap, rng, &mut own)?;
            stats.parent_ops += 1;
            stats.slowest_parent_op = stats.slowest_parent_op.max(took);
        } else {
            std::thread::yield_now();
        }
        if !kill_sent && kill_at.is_some_and(|at| Instant::now() >= at) {
            kids[victim].child.signal(libc::SIGKILL);
            kill_sent = true;
        }
        for (p, k) in kids.iter_mut().enumerate() {
            if k.exit.is_some() {
                continue;
            }
            if let Some(exit) = k.child.try_wait() {
                k.exit = Some(exit);
                if p != victim {
                    return Err(format!("survivor {p} ended early with {exit:?}"));
                }
                if !exit.sigkilled() {
                    return Err(format!("the victim ended with {exit:?}, not SIGKILL"));
                }
                pending_at_death = book.pending(victim).load(Ordering::SeqCst);
                if solo {
                    let seen = peek(heap, k.child.pid());
                    stats.solo += 1;
                    stats.solo_in_call += u64::from(pending_at_death != 0);
                    stats.dead_holding_class_lock += u64::from(seen.class_lock);
                    stats.dead_holding_chunk_lock += u64::from(seen.chunk_lock);
                    stats.dead_mid_refill += u64::from(seen.refill);
                    stats.dead_mid_large += u64::from(seen.large);
                    if std::env::var_os("BAOZI_KILL_DEBUG").is_some() {
                        println!("      solo kill: pending {pending_at_death}, {seen:?}");
                    }
                    late.open();
                }
                ops_at_death = Some(
                    (0..procs)
                        .map(|q| book.ops(q).load(Ordering::Relaxed))
                        .collect(),
                );
            }
        }
        if let Some(at_death) = &ops_at_death {
            let done = (0..procs)
                .filter(|&q| q != victim)
                .all(|q| book.ops(q).load(Ordering::Relaxed) >= at_death[q] + POST_KILL_OPS);
            if done {
                for q in (0..procs).filter(|&q| q != victim) {
                    stats.survivor_ops_after_kill +=
                        book.ops(q).load(Ordering::Relaxed) - at_death[q];
                }
                break;
            }
        }
        if start.elapsed() > ITER_BOUND {
            let stuck: Vec<String> = (0..procs)
                .map(|q| {
                    format!(
                        "churner {q}{}: {} ops, exit {:?}",
                        if q == victim { " (victim)" } else { "" },
                        book.ops(q).load(Ordering::Relaxed),
                        kids[q].exit
                    )
                })
                .collect();
            return Err(format!(
                "DEADLOCK or lost kill: still going after {ITER_BOUND:?} (kill sent: {kill_sent}): {stuck:?}"
            ));
        }
    }
    if let Some(p) = (0..procs).find(|&p| book.panicked(p).load(Ordering::SeqCst) != 0) {
        return Err(format!("churner {p} panicked (its message is above)"));
    }
    match kill {
        Kill::Random { .. } => stats.random_kills += 1,
        Kill::Timer { .. } => stats.timer_kills += 1,
    }
    if pending_at_death != 0 {
        stats.in_call += 1;
    }
    // Survivors stop, free what they own, and exit 0, within the bound.
    book.stop().store(1, Ordering::Relaxed);
    for (p, k) in kids.iter_mut().enumerate() {
        if p == victim {
            continue;
        }
        let left = ITER_BOUND
            .saturating_sub(start.elapsed())
            .max(Duration::from_secs(1));
        match k.child.wait_timeout(left) {
            Some(e) if e.success() => {}
            Some(e) => return Err(format!("survivor {p} ended with {e:?}")),
            None => {
                return Err(format!(
                    "DEADLOCK: survivor {p} did not finish within {ITER_BOUND:?} of the start"
                ))
            }
        }
    }
    for rec in own.drain(..) {
        parent_free(heap, rec)?;
    }
    // What the victim owned at death.
    for i in 0..SLOTS {
        let w = book.slot(victim, i).load(Ordering::SeqCst);
        if w == 0 {
            continue;
        }
        let rec = Rec::unpack(w);
        if w & FREEING != 0 {
            match heap.usable_size(Offset::new(rec.off)) {
                Ok(_) => {}
                Err(AllocError::DoubleFree { .. }) => {
                    stats.freeing_committed += 1;
                    continue;
                }
                // A large block whose free committed (the next chunk-lock holder finished it)
                // gave its chunks back; a survivor may have carved one into a slab since, so
                // its first byte is no block start any more.
                Err(AllocError::ForeignOffset { .. }) if rec.size > 16384 => {
                    stats.freeing_committed += 1;
                    continue;
                }
                Err(e) => return Err(format!("victim's block {rec:?} mid-free: {e}")),
            }
        }
        // A block handed to `free` is the heap's from that moment: a free that died before its
        // commit may already have written the heap's own marker into it (the thread cache tags
        // a block before it joins the cache), so only blocks not being freed are checked.
        if w & FILLED != 0 && w & FREEING == 0 {
            rec.check(heap, true)
                .map_err(|e| format!("victim's recorded block: {e}"))?;
        }
        heap.free(Offset::new(rec.off))
            .map_err(|e| format!("freeing the dead victim's {rec:?} (slot {w:#x}): {e}"))?;
        stats.freed_for_victim += 1;
    }
    // Every class still works, within a bound (a wedged lock would hang the probe).
    let probe = fork(|| {
        for size in PROBE_SIZES {
            match heap.alloc(layout(size, 8)) {
                Ok(o) => heap.free(o).unwrap(),
                Err(AllocError::OutOfMemory { .. }) => {
                    // Only when no chunk is left for a class that has no slab yet.
                    let s = heap.stats().unwrap();
                    assert_eq!(s.free_chunks, 0, "probe {size}: OutOfMemory with {s:?}");
                }
                Err(e) => panic!("probe {size}: {e}"),
            }
        }
    });
    match probe.join(PROBE_BOUND, "probe") {
        e if e.success() => {}
        e => return Err(format!("the probe of every class ended with {e:?}")),
    }
    let after = checked_stats(heap)?;
    let grew_used = after.used.saturating_sub(before.used) as u64;
    let grew_leaked = after.leaked_suspect.saturating_sub(before.leaked_suspect) as u64;
    if after.used < before.used || after.leaked_suspect < before.leaked_suspect {
        return Err(format!(
            "stats went down: before {before:?}, after {after:?}"
        ));
    }
    if grew_used + grew_leaked > pending_at_death {
        return Err(format!(
            "the kill cost {grew_used} B used + {grew_leaked} B leaked, more than the victim's call in flight could move ({pending_at_death} B)\n    before {before:?}\n    after {after:?}"
        ));
    }
    if grew_leaked > 0 {
        stats.leaked_iters += 1;
        stats.leaked_bytes += grew_leaked;
    }
    if grew_used > 0 {
        stats.unrecorded_iters += 1;
        stats.unrecorded_bytes += grew_used;
    }
    if std::env::var_os("BAOZI_KILL_DEBUG").is_some() {
        println!(
            "      {procs} churners, victim {victim}, {kill:?}: pending {pending_at_death}, +used {grew_used}, +leaked {grew_leaked}, {:?}",
            start.elapsed()
        );
    }
    Ok(())
}

//! Allocation speed and fragmentation of the shared [`Heap`], in one process and in two,
//! against the system allocator (`std::alloc::System`, glibc malloc here) in the same run.
//!
//! * `alloc_free/{baozi,system}/SIZE`: one alloc and its free, SIZE = 16, 64, 256, 1024,
//!   4096 B (align 8): the hot path (the block comes straight back from the free list).
//! * `alloc_free_2proc/{baozi,system}/SIZE`: the same while a forked second process does the same
//!   on the same heap (baozi) or on its own malloc (system, which is per process).
//! * `alloc100_free100/{baozi,system}/SIZE`: 100 allocs then their 100 frees; the time is per
//!   alloc+free pair, so it is comparable with the line above.
//! * `churn/{baozi,system}`: a steady state of 2 000 live blocks of mixed sizes (60% 1..=256 B,
//!   30% up to 16 KiB, 10% up to 70 000 B, alignments up to 4096): each step frees a random
//!   live block and allocates a new one; the time is per step.
//!
//! At the end it prints `fragmentation after churn: ...`, measured after 1 000 000 churn steps
//! on a fresh heap of 256 MiB:
//!
//! ```text
//! footprint     = capacity - free_chunks * 64 KiB   (chunks given to slabs or large runs;
//!                                                    slabs are never given back, so this is
//!                                                    what the heap has taken for good)
//! requested     = sum of the sizes asked for by the live blocks
//! fragmentation = (footprint - requested) / footprint
//! ```
//!
//! with its three parts: rounding (`used - requested`: size classes, whole chunks for large
//! blocks), free blocks stranded in slabs (`free - free_chunks * 64 KiB`), and slab overhead
//! (bitmaps and tails).
//!
//! Kept short (sample size 20, 1 s of measurement each): about 40 s in all.
#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use baozi_alloc::{AllocError, Heap};
use baozi_shm::{Offset, Region};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

const SIZES: [usize; 5] = [16, 64, 256, 1024, 4096];
const CHUNK: usize = 64 * 1024;

fn alloc_free(c: &mut Criterion) {
    let heap = Heap::anonymous(64 << 20).unwrap();
    let mut g = c.benchmark_group("alloc_free");
    for size in SIZES {
        let layout = Layout::from_size_align(size, 8).unwrap();
        g.bench_with_input(BenchmarkId::new("baozi", size), &layout, |b, &l| {
            b.iter(|| baozi_pair(&heap, l));
        });
        g.bench_with_input(BenchmarkId::new("system", size), &layout, |b, &l| {
            b.iter(|| system_pair(l));
        });
    }
    g.finish();
}

/// One alloc and its free from the heap.
fn baozi_pair(heap: &Heap, l: Layout) {
    let o = heap.alloc(black_box(l)).unwrap();
    heap.free(black_box(o)).unwrap();
}

/// One alloc and its free from the system allocator.
fn system_pair(l: Layout) {
    // SAFETY: l has a non-zero size; the pointer is freed with the same layout.
    unsafe {
        let p = System.alloc(black_box(l));
        assert!(!p.is_null());
        System.dealloc(black_box(p), l);
    }
}

/// Forks a child that runs `churn` until `stop` is set, then leaves with `_exit`.
fn churning_peer(stop: &AtomicU32, mut churn: impl FnMut()) -> libc::pid_t {
    // SAFETY: criterion runs on this thread and starts no other (no rayon: default features
    // off); the child only churns on shared memory or its own malloc and leaves with _exit.
    match unsafe { libc::fork() } {
        -1 => panic!("fork: {}", std::io::Error::last_os_error()),
        0 => {
            while stop.load(Ordering::Relaxed) == 0 {
                churn();
            }
            // SAFETY: ends the child without unwinding into criterion.
            unsafe { libc::_exit(0) }
        }
        pid => pid,
    }
}

/// `alloc_free` with a second process doing the same on the same heap at the same time (and,
/// for the system allocator, on its own heap: malloc is per process).
fn alloc_free_two_processes(c: &mut Criterion) {
    let heap = Heap::anonymous(64 << 20).unwrap();
    let flag = Region::anonymous(4096).unwrap();
    let stop: &AtomicU32 = flag.get(Offset::new(0)).unwrap();
    let mut g = c.benchmark_group("alloc_free_2proc");
    for size in SIZES {
        let layout = Layout::from_size_align(size, 8).unwrap();
        stop.store(0, Ordering::Relaxed);
        let peer = churning_peer(stop, || baozi_pair(&heap, layout));
        g.bench_with_input(BenchmarkId::new("baozi", size), &layout, |b, &l| {
            b.iter(|| baozi_pair(&heap, l));
        });
        stop.store(1, Ordering::Relaxed);
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(peer, std::ptr::null_mut(), 0) };
        stop.store(0, Ordering::Relaxed);
        let peer = churning_peer(stop, || system_pair(layout));
        g.bench_with_input(BenchmarkId::new("system", size), &layout, |b, &l| {
            b.iter(|| system_pair(l));
        });
        stop.store(1, Ordering::Relaxed);
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(peer, std::ptr::null_mut(), 0) };
    }
    g.finish();
}

fn batch(c: &mut Criterion) {
    const N: usize = 100;
    let heap = Heap::anonymous(64 << 20).unwrap();
    let mut g = c.benchmark_group("alloc100_free100");
    for size in SIZES {
        let layout = Layout::from_size_align(size, 8).unwrap();
        let mut offs: Vec<Offset<u8>> = Vec::with_capacity(N);
        g.bench_with_input(BenchmarkId::new("baozi", size), &layout, |b, &l| {
            b.iter_custom(|iters| {
                let start = std::time::Instant::now();
                for _ in 0..iters {
                    for _ in 0..N {
                        offs.push(heap.alloc(black_box(l)).unwrap());
                    }
                    for o in offs.drain(..) {
                        heap.free(black_box(o)).unwrap();
                    }
                }
                start.elapsed() / N as u32
            });
        });
        let mut ptrs: Vec<*mut u8> = Vec::with_capacity(N);
        g.bench_with_input(BenchmarkId::new("system", size), &layout, |b, &l| {
            b.iter_custom(|iters| {
                let start = std::time::Instant::now();
                for _ in 0..iters {
                    for _ in 0..N {
                        // SAFETY: non-zero size.
                        ptrs.push(unsafe { System.alloc(black_box(l)) });
                    }
                    for p in ptrs.drain(..) {
                        // SAFETY: p came from System.alloc with this layout.
                        unsafe { System.dealloc(black_box(p), l) };
                    }
                }
                start.elapsed() / N as u32
            });
        });
    }
    g.finish();
}

// ------------------------------------------------------------------------------------------
// Mixed-size churn
// ------------------------------------------------------------------------------------------

const LIVE: usize = 2000;

/// xorshift64*: the same size sequence for both allocators.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn layout(&mut self) -> Layout {
        let r = self.next();
        let x = (r >> 16) as usize;
        let size = match r % 100 {
            0..=59 => 1 + x % 256,
            60..=89 => 257 + x % (16384 - 256),
            _ => 16385 + x % (70000 - 16384),
        };
        let align = if (r >> 8) % 4 != 0 {
            8
        } else {
            1 << ((r >> 10) % 13)
        };
        Layout::from_size_align(size, align).unwrap()
    }
}

/// A steady live set in a heap.
struct HeapChurn<'h> {
    heap: &'h Heap,
    live: Vec<(Offset<u8>, usize)>,
    rng: Rng,
    ooms: u64,
}

impl<'h> HeapChurn<'h> {
    fn new(heap: &'h Heap, seed: u64) -> Self {
        let mut me = HeapChurn {
            heap,
            live: Vec::with_capacity(LIVE),
            rng: Rng(seed),
            ooms: 0,
        };
        while me.live.len() < LIVE {
            me.alloc_one();
        }
        me
    }

    fn alloc_one(&mut self) {
        loop {
            let l = self.rng.layout();
            match self.heap.alloc(l) {
                Ok(o) => {
                    self.live.push((o, l.size()));
                    return;
                }
                Err(AllocError::OutOfMemory { .. }) => {
                    self.ooms += 1;
                    self.free_one();
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    fn free_one(&mut self) {
        if self.live.is_empty() {
            return;
        }
        let i = (self.rng.next() % self.live.len() as u64) as usize;
        let (o, _) = self.live.swap_remove(i);
        self.heap.free(o).unwrap();
    }

    fn step(&mut self) {
        self.free_one();
        self.alloc_one();
    }
}

/// The same with the system allocator.
struct SysChurn {
    live: Vec<(*mut u8, Layout)>,
    rng: Rng,
}

impl SysChurn {
    fn new(seed: u64) -> Self {
        let mut me = SysChurn {
            live: Vec::with_capacity(LIVE),
            rng: Rng(seed),
        };
        while me.live.len() < LIVE {
            me.alloc_one();
        }
        me
    }

    fn alloc_one(&mut self) {
        let l = self.rng.layout();
        // SAFETY: non-zero size.
        let p = unsafe { System.alloc(l) };
        assert!(!p.is_null());
        self.live.push((p, l));
    }

    fn step(&mut self) {
        let i = (self.rng.next() % self.live.len() as u64) as usize;
        let (p, l) = self.live.swap_remove(i);
        // SAFETY: p came from System.alloc with l.
        unsafe { System.dealloc(p, l) };
        self.alloc_one();
    }
}

impl Drop for SysChurn {
    fn drop(&mut self) {
        for (p, l) in self.live.drain(..) {
            // SAFETY: p came from System.alloc with l.
            unsafe { System.dealloc(p, l) };
        }
    }
}

fn churn(c: &mut Criterion) {
    let heap = Heap::anonymous(256 << 20).unwrap();
    let mut g = c.benchmark_group("churn");
    let mut hc = HeapChurn::new(&heap, 0x9e37_79b9_7f4a_7c15);
    g.bench_function("baozi", |b| b.iter(|| hc.step()));
    let mut sc = SysChurn::new(0x9e37_79b9_7f4a_7c15);
    g.bench_function("system", |b| b.iter(|| sc.step()));
    g.finish();
    drop(sc);
    fragmentation();
}

/// A long churn on a fresh heap, then the fragmentation figure (defined in the module doc).
fn fragmentation() {
    const STEPS: u64 = 1_000_000;
    let heap = Heap::anonymous(256 << 20).unwrap();
    let mut hc = HeapChurn::new(&heap, 0x2545_f491_4f6c_dd1d);
    for _ in 0..STEPS {
        hc.step();
    }
    let s = heap.stats().unwrap();
    let requested: usize = hc.live.iter().map(|&(_, size)| size).sum();
    let footprint = s.capacity - s.free_chunks * CHUNK;
    let pct = |x: usize| 100.0 * x as f64 / footprint as f64;
    let stranded = s.free - s.free_chunks * CHUNK;
    println!(
        "fragmentation after churn: {:.1}% ({STEPS} steps, {LIVE} live blocks, {} OutOfMemory): footprint {:.1} MiB ({} of {} chunks), requested {:.1} MiB; rounding {:.1}%, free blocks stranded in slabs {:.1}%, slab overhead {:.1}%",
        pct(footprint - requested),
        hc.ooms,
        footprint as f64 / (1 << 20) as f64,
        footprint / CHUNK,
        s.capacity / CHUNK,
        requested as f64 / (1 << 20) as f64,
        pct(s.used - requested),
        pct(stranded),
        pct(s.overhead),
    );
    for (o, _) in hc.live.drain(..) {
        heap.free(o).unwrap();
    }
    assert_eq!(heap.stats().unwrap().used, 0);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = alloc_free, alloc_free_two_processes, batch, churn
}
criterion_main!(benches);

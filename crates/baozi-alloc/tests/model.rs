//! Model test of [`Heap`], single process: random alloc/free sequences checked against a plain
//! map of the live blocks, then unit tests of the error cases and of the typed handles.
//!
//! The property (`heap_matches_model`), after every step of a random sequence on a heap of
//! 16..=32 chunks (1..=2 MiB, so `OutOfMemory` is common):
//! * no two live blocks overlap, each taken as `[offset, offset + usable_size)`;
//!   `usable_size >= size` asked for;
//! * the block's absolute address (`heap.ptr`) is aligned as asked (1..=4096);
//! * the whole usable area of a block keeps the byte written at alloc until it is freed
//!   (checked before each free and at the end);
//! * `stats()`: `used` == the sum of the live blocks' usable sizes, `leaked_suspect` == 0, and
//!   `used + free + overhead == capacity` exactly (the identity the code keeps: every chunk is
//!   free, a large run counted in `used`, or a slab whose blocks are allocated, free or leaked
//!   and whose bitmap and tail are `overhead`);
//! * `OutOfMemory` changes nothing (`stats()` before and after are equal) and is justified: a
//!   small request's only when no chunk is free, a large one's only when the model (chunks of
//!   live large blocks, and chunks that ever held a small block, as slabs are kept for ever)
//!   has no run of free chunks long enough; and the heap stays usable: freeing a live block
//!   and asking again for that block's layout succeeds;
//! * right after a free, the same offset is reported `DoubleFree` by both `free` and
//!   `usable_size`, and that failed free changes nothing;
//! * after freeing everything, `used == 0` and `free + overhead == capacity`.
//!
//! Unit tests: `DoubleFree` (small and large) and `ForeignOffset` (outside, metadata, inside a
//! slab block, slab bitmap and tail, inside a large run, a run's tail chunk) leave the heap
//! unchanged; align 8192 is `InvalidLayout`; size 0 works; a full heap answers `OutOfMemory`
//! to every request and recovers; a free run of chunks across the next-fit hint is found (a
//! bug this file found); `ShmBox`, `Value`, `RawValue`, `Array`, `RawArray` round trips and
//! index errors; named heaps (`open` sees `create`'s blocks, a queue is `WrongKind`, garbage
//! is `WrongMagic`); handles dropped in a forked child leave the parent's blocks allocated.
//! `PROPTEST_CASES` (default 128) sets the number of random sequences.

use std::alloc::Layout;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};

use baozi_alloc::{AllocError, Array, Heap, HeapStats, RawArray, RawValue, ShmBox, Value};
use baozi_shm::{ObjectKind, Offset, Region, ShmError};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

const CHUNK: usize = 64 * 1024;

fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).expect("valid layout")
}

fn off(o: u64) -> Offset<u8> {
    Offset::new(o)
}

/// Fills `len` bytes of a live block with `byte`.
///
/// # Safety
/// `o` must be a live block of `heap` of at least `len` bytes that nobody else uses meanwhile.
unsafe fn fill_block(heap: &Heap, o: u64, len: usize, byte: u8) {
    let p = heap.ptr(off(o)).expect("ptr of a live block");
    // SAFETY: the caller's contract.
    unsafe { std::ptr::write_bytes(p.as_ptr(), byte, len) };
}

/// The first `len` bytes of a live block.
///
/// # Safety
/// `o` must be a live block of `heap` of at least `len` bytes that nobody writes meanwhile.
unsafe fn block_bytes(heap: &Heap, o: u64, len: usize) -> &[u8] {
    let p = heap.ptr(off(o)).expect("ptr of a live block");
    // SAFETY: the caller's contract.
    unsafe { std::slice::from_raw_parts(p.as_ptr(), len) }
}

// ------------------------------------------------------------------------------------------
// The property
// ------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Alloc { size: usize, align_log: u32 },
    Free { pick: usize },
}

fn op() -> impl Strategy<Value = Op> {
    let size = prop_oneof![
        4 => 1usize..=256,
        3 => 257usize..=16384,
        2 => 16385usize..=70000,
    ];
    prop_oneof![
        3 => (size, 0u32..=12).prop_map(|(size, align_log)| Op::Alloc { size, align_log }),
        2 => any::<usize>().prop_map(|pick| Op::Free { pick }),
    ]
}

/// A live block in the model.
#[derive(Clone, Copy, Debug)]
struct Live {
    size: usize,
    align: usize,
    usable: usize,
    fill: u8,
}

struct Model<'h> {
    heap: &'h Heap,
    live: BTreeMap<u64, Live>,
    next_fill: u8,
    /// Absolute chunk numbers (offset / CHUNK) of the data area.
    chunks: std::ops::Range<u64>,
    /// Chunks that ever held a small block: slabs (a slab is never given back today; if that
    /// changes, this over-counts slabs, which only makes the OutOfMemory check below lenient).
    slabs: BTreeSet<u64>,
}

fn fail(msg: String) -> TestCaseError {
    TestCaseError::fail(msg)
}

impl<'h> Model<'h> {
    fn check_stats(&self) -> Result<HeapStats, TestCaseError> {
        let s = self.heap.stats().map_err(|e| fail(format!("stats: {e}")))?;
        let live_usable: usize = self.live.values().map(|l| l.usable).sum();
        prop_assert_eq!(s.used, live_usable, "used vs live usable sizes: {:?}", s);
        prop_assert_eq!(s.leaked_suspect, 0, "{:?}", s);
        prop_assert_eq!(
            s.used + s.free + s.overhead,
            s.capacity,
            "used + free + overhead vs capacity: {:?}",
            s
        );
        prop_assert!(s.free >= s.free_chunks * CHUNK, "{:?}", s);
        Ok(s)
    }

    /// Alloc and check everything about the new block; `Ok(None)` for `OutOfMemory`.
    fn alloc(&mut self, size: usize, align: usize) -> Result<Option<u64>, TestCaseError> {
        let o = match self.heap.alloc(layout(size, align)) {
            Ok(o) => o.get(),
            Err(AllocError::OutOfMemory {
                requested,
                align: a,
            }) => {
                prop_assert_eq!((requested, a), (size, align));
                return Ok(None);
            }
            Err(e) => return Err(fail(format!("alloc({size}, {align}): {e}"))),
        };
        let usable = self
            .heap
            .usable_size(off(o))
            .map_err(|e| fail(format!("usable_size of a fresh block {o}: {e}")))?;
        prop_assert!(usable >= size, "usable {} < size {}", usable, size);
        let addr = self.heap.ptr(off(o)).unwrap().as_ptr() as usize;
        prop_assert_eq!(
            addr % align,
            0,
            "block {} at {:#x} not aligned to {}",
            o,
            addr,
            align
        );
        if let Some((&p, l)) = self.live.range(..=o).next_back() {
            prop_assert!(
                p + l.usable as u64 <= o,
                "new block [{}, +{}) overlaps live [{}, +{})",
                o,
                usable,
                p,
                l.usable
            );
        }
        if let Some((&n, l)) = self.live.range(o + 1..).next() {
            prop_assert!(
                o + usable as u64 <= n,
                "new block [{}, +{}) overlaps live [{}, +{})",
                o,
                usable,
                n,
                l.usable
            );
        }
        if usable < CHUNK {
            self.slabs.insert(o / CHUNK as u64);
        }
        self.next_fill = self.next_fill.wrapping_add(1).max(1);
        let fill = self.next_fill;
        // SAFETY: o is a fresh live block of `usable` bytes, ours alone.
        unsafe { fill_block(self.heap, o, usable, fill) };
        self.live.insert(
            o,
            Live {
                size,
                align,
                usable,
                fill,
            },
        );
        Ok(Some(o))
    }

    fn verify(&self, o: u64) -> Result<(), TestCaseError> {
        let l = self.live[&o];
        // SAFETY: o is live and ours.
        let bytes = unsafe { block_bytes(self.heap, o, l.usable) };
        if let Some(i) = bytes.iter().position(|&b| b != l.fill) {
            return Err(fail(format!(
                "block {o} ({l:?}) byte {i} is {:#x}, written {:#x}",
                bytes[i], l.fill
            )));
        }
        Ok(())
    }

    fn free(&mut self, o: u64) -> Result<(), TestCaseError> {
        self.verify(o)?;
        self.heap
            .free(off(o))
            .map_err(|e| fail(format!("free({o}): {e}")))?;
        self.live.remove(&o);
        let before = self.heap.stats().unwrap();
        prop_assert!(
            matches!(
                self.heap.usable_size(off(o)),
                Err(AllocError::DoubleFree { .. })
            ),
            "usable_size of freed {}",
            o
        );
        prop_assert!(
            matches!(self.heap.free(off(o)), Err(AllocError::DoubleFree { .. })),
            "second free of {}",
            o
        );
        prop_assert_eq!(
            self.heap.stats().unwrap(),
            before,
            "a refused free changed the heap"
        );
        Ok(())
    }

    /// The longest run of chunks that are neither slabs nor in a live large block.
    fn longest_free_run(&self) -> usize {
        let mut taken = self.slabs.clone();
        for (&o, l) in &self.live {
            if l.usable >= CHUNK {
                let first = o / CHUNK as u64;
                taken.extend(first..first + (l.usable / CHUNK) as u64);
            }
        }
        let (mut best, mut run) = (0, 0);
        for c in self.chunks.clone() {
            if taken.contains(&c) {
                run = 0;
            } else {
                run += 1;
                best = best.max(run);
            }
        }
        best
    }

    fn nth_live(&self, pick: usize) -> Option<u64> {
        if self.live.is_empty() {
            None
        } else {
            self.live.keys().nth(pick % self.live.len()).copied()
        }
    }
}

fn run_model(chunks: usize, ops: &[Op]) -> Result<(), TestCaseError> {
    let heap = Heap::anonymous(chunks * CHUNK).unwrap();
    // The data area starts at a multiple of CHUNK: its first chunk is the first that ptr accepts.
    let first = (0..1024u64)
        .find(|&k| heap.ptr(off(k * CHUNK as u64)).is_ok())
        .expect("a data area");
    let mut m = Model {
        heap: &heap,
        live: BTreeMap::new(),
        next_fill: 0,
        chunks: first..first + chunks as u64,
        slabs: BTreeSet::new(),
    };
    let mut last = m.check_stats()?;
    prop_assert_eq!(last.capacity, chunks * CHUNK);
    for op in ops {
        match *op {
            Op::Alloc { size, align_log } => {
                let align = 1usize << align_log;
                if m.alloc(size, align)?.is_none() {
                    let now = m.check_stats()?;
                    prop_assert_eq!(&now, &last, "OutOfMemory changed the heap");
                    if size <= 16384 {
                        // Small requests take a new chunk only when their class is empty.
                        prop_assert_eq!(now.free_chunks, 0, "small OOM with free chunks");
                    } else {
                        let need = size.div_ceil(CHUNK);
                        let run = m.longest_free_run();
                        prop_assert!(
                            run < need,
                            "OutOfMemory for {} chunks with a run of {} free chunks: {:?}",
                            need,
                            run,
                            now
                        );
                    }
                    // The heap stays usable: free a live block, then its layout fits again.
                    if let Some(victim) = m.nth_live(size) {
                        let l = m.live[&victim];
                        m.free(victim)?;
                        let again = m.alloc(l.size, l.align)?;
                        prop_assert!(
                            again.is_some(),
                            "after OOM, freeing {:?} and asking its layout again failed",
                            l
                        );
                    }
                }
            }
            Op::Free { pick } => {
                if let Some(o) = m.nth_live(pick) {
                    m.free(o)?;
                }
            }
        }
        last = m.check_stats()?;
    }
    let all: Vec<u64> = m.live.keys().copied().collect();
    for &o in &all {
        m.verify(o)?;
    }
    for o in all {
        m.free(o)?;
    }
    let s = m.check_stats()?;
    prop_assert_eq!(s.used, 0);
    prop_assert_eq!(s.free + s.overhead, s.capacity);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(128),
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn heap_matches_model(chunks in 16usize..=32, ops in prop::collection::vec(op(), 1..250)) {
        run_model(chunks, &ops)?;
    }
}

// ------------------------------------------------------------------------------------------
// Errors
// ------------------------------------------------------------------------------------------

fn small_heap() -> Heap {
    Heap::anonymous(1 << 20).unwrap()
}

#[test]
fn double_free_small_and_large_is_reported() {
    let heap = small_heap();
    for (size, align) in [(1, 1), (24, 8), (100, 64), (5000, 4096), (16384, 8)] {
        let a = heap.alloc(layout(size, align)).unwrap();
        heap.free(a).unwrap();
        let before = heap.stats().unwrap();
        assert!(
            matches!(heap.free(a), Err(AllocError::DoubleFree { offset }) if offset == a.get()),
            "small {size}/{align}"
        );
        assert_eq!(heap.stats().unwrap(), before);
    }
    for size in [16385, CHUNK, CHUNK + 1, 3 * CHUNK] {
        let a = heap.alloc(layout(size, 8)).unwrap();
        heap.free(a).unwrap();
        let before = heap.stats().unwrap();
        assert!(
            matches!(heap.free(a), Err(AllocError::DoubleFree { offset }) if offset == a.get()),
            "large {size}"
        );
        assert_eq!(heap.stats().unwrap(), before);
    }
    assert_eq!(heap.stats().unwrap().used, 0);
}

#[test]
fn foreign_offsets_are_reported() {
    let heap = small_heap();
    let small = heap.alloc(layout(48, 16)).unwrap().get();
    let large = heap.alloc(layout(3 * CHUNK, 8)).unwrap().get();
    let cap = heap.stats().unwrap().capacity as u64;
    let before = heap.stats().unwrap();
    let foreign = |o: u64, what: &str| {
        let r = heap.free(off(o));
        assert!(
            matches!(r, Err(AllocError::ForeignOffset { offset }) if offset == o),
            "{what} ({o}): {r:?}"
        );
    };
    // Outside the heap.
    foreign(u64::MAX, "u64::MAX");
    foreign(1 << 40, "far beyond");
    foreign(large + cap, "beyond the last chunk");
    // Metadata: the header, the locks, the chunk map.
    for o in [0, 8, 64, 128, 192, 256, 1024, 4096] {
        foreign(o, "metadata");
    }
    // Inside a slab, not at a block start (and in its bitmap).
    foreign(small + 8, "inside a small block");
    foreign(small + 1, "odd offset in a small block");
    let slab_start = small & !(CHUNK as u64 - 1);
    // The data starts at a multiple of 64 KiB, so the slab's chunk start is its bitmap.
    foreign(slab_start, "slab bitmap");
    // A 48-byte class slab ends with a tail too small for a block: 1361 blocks after a
    // 176-byte bitmap leave 32 bytes.
    foreign(
        slab_start + CHUNK as u64 - 32,
        "slab tail, on the block grid",
    );
    foreign(slab_start + CHUNK as u64 - 16, "slab tail, off the grid");
    // Inside a large run: after its start, and at a tail chunk's start.
    foreign(large + 16, "inside a large run");
    foreign(large + CHUNK as u64, "tail chunk of a large run");
    foreign(
        large + 2 * CHUNK as u64 + 4096,
        "inside the last chunk of a run",
    );
    assert_eq!(
        heap.stats().unwrap(),
        before,
        "refused frees changed the heap"
    );
    // The same offsets are refused by usable_size and ptr checks too.
    assert!(matches!(
        heap.usable_size(off(small + 8)),
        Err(AllocError::ForeignOffset { .. })
    ));
    assert!(matches!(
        heap.usable_size(off(large + CHUNK as u64)),
        Err(AllocError::ForeignOffset { .. })
    ));
    assert!(matches!(
        heap.ptr(off(0)),
        Err(AllocError::ForeignOffset { .. })
    ));
    assert!(matches!(
        heap.ptr(off(u64::MAX)),
        Err(AllocError::ForeignOffset { .. })
    ));
    heap.free(off(small)).unwrap();
    heap.free(off(large)).unwrap();
    assert_eq!(heap.stats().unwrap().used, 0);
}

#[test]
fn alignment_above_a_page_is_invalid_layout() {
    let heap = small_heap();
    for align in [8192usize, 16384, 1 << 20] {
        for size in [1usize, 100, 8192, 100_000] {
            match heap.alloc(layout(size, align)) {
                Err(AllocError::InvalidLayout {
                    size: s, align: a, ..
                }) => assert_eq!((s, a), (size, align)),
                other => panic!("align {align} size {size}: {other:?}"),
            }
        }
    }
    let page = heap.alloc(layout(1, 4096)).unwrap();
    assert_eq!(heap.ptr(page).unwrap().as_ptr() as usize % 4096, 0);
    heap.free(page).unwrap();
    assert_eq!(heap.stats().unwrap().used, 0);
}

#[test]
fn size_zero_works() {
    let heap = small_heap();
    let mut got = Vec::new();
    for align in [1usize, 8, 16, 64, 4096] {
        let a = heap.alloc(layout(0, align)).unwrap();
        assert!(heap.usable_size(a).unwrap() >= 1);
        assert_eq!(heap.ptr(a).unwrap().as_ptr() as usize % align, 0);
        got.push(a);
    }
    let mut sorted: Vec<u64> = got.iter().map(|o| o.get()).collect();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        got.len(),
        "two zero-size blocks at one offset"
    );
    for a in got {
        heap.free(a).unwrap();
    }
    assert_eq!(heap.stats().unwrap().used, 0);
}

#[test]
fn full_heap_returns_out_of_memory_and_recovers() {
    let heap = Heap::anonymous(8 * CHUNK).unwrap();
    // Large runs until full.
    let mut large = Vec::new();
    loop {
        match heap.alloc(layout(CHUNK, 8)) {
            Ok(o) => large.push(o),
            Err(AllocError::OutOfMemory { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(large.len(), 8);
    // Now nothing fits: small, large, bigger than the heap, absurd.
    for (size, align) in [
        (1, 1),
        (16, 16),
        (4000, 4096),
        (16384, 8),
        (16385, 8),
        (8 * CHUNK, 8),
        (9 * CHUNK, 8),
        (1 << 40, 8),
        (isize::MAX as usize - 4096, 4096),
    ] {
        let before = heap.stats().unwrap();
        assert!(
            matches!(
                heap.alloc(layout(size, align)),
                Err(AllocError::OutOfMemory { .. })
            ),
            "{size}/{align}"
        );
        assert_eq!(heap.stats().unwrap(), before);
    }
    // Free one chunk: a small class takes it as a slab, and fills it up to OutOfMemory.
    heap.free(large.pop().unwrap()).unwrap();
    let mut small = Vec::new();
    loop {
        match heap.alloc(layout(16, 8)) {
            Ok(o) => small.push(o),
            Err(AllocError::OutOfMemory { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        small.len() > 3000,
        "{} 16-byte blocks in one chunk",
        small.len()
    );
    let s = heap.stats().unwrap();
    assert_eq!(s.used, 7 * CHUNK + small.len() * 16);
    assert_eq!(s.used + s.free + s.overhead, s.capacity);
    for o in small.into_iter().chain(large) {
        heap.free(o).unwrap();
    }
    let s = heap.stats().unwrap();
    assert_eq!((s.used, s.leaked_suspect), (0, 0));
    // The freed blocks serve their own sizes again.
    heap.free(heap.alloc(layout(16, 8)).unwrap()).unwrap();
    let big: Vec<_> = (0..7)
        .map(|_| heap.alloc(layout(CHUNK, 8)).unwrap())
        .collect();
    for o in big {
        heap.free(o).unwrap();
    }
}

/// Found while writing these tests: the next-fit search for a run of free chunks scanned
/// `hint..total`, then `0..hint`, restarting the count at the hint, so a free run that straddles
/// the hint was never found: two adjacent free chunks, and a 2-chunk alloc said OutOfMemory.
#[test]
fn a_free_run_across_the_next_fit_hint_is_found() {
    let heap = Heap::anonymous(4 * CHUNK).unwrap();
    let one = layout(CHUNK, 8);
    let x: Vec<_> = (0..4).map(|_| heap.alloc(one).unwrap()).collect();
    heap.free(x[1]).unwrap();
    heap.free(x[2]).unwrap();
    // Take chunk 1 again and give it back: the hint is now at chunk 2.
    let again = heap.alloc(one).unwrap();
    assert_eq!(again, x[1]);
    heap.free(again).unwrap();
    let s = heap.stats().unwrap();
    assert_eq!(s.free_chunks, 2);
    let two = heap.alloc(layout(2 * CHUNK, 8));
    assert_eq!(
        two.ok(),
        Some(x[1]),
        "chunks 1 and 2 are free and adjacent: {s:?}"
    );
    heap.free(x[1]).unwrap();
    heap.free(x[0]).unwrap();
    heap.free(x[3]).unwrap();
    // The same with the run wrapping no further than the end: every run length, every hint.
    let heap = Heap::anonymous(8 * CHUNK).unwrap();
    for n in 1..=8usize {
        for hint in 0..8usize {
            // Move the hint: take `hint` single chunks from chunk 0 and give them back.
            let t: Vec<_> = (0..hint).map(|_| heap.alloc(one).unwrap()).collect();
            t.into_iter().for_each(|o| heap.free(o).unwrap());
            let r = heap.alloc(layout(n * CHUNK, 8));
            assert!(
                r.is_ok(),
                "{n} chunks of an empty 8-chunk heap, hint near {hint}: {r:?}"
            );
            heap.free(r.unwrap()).unwrap();
        }
    }
}

/// Found while writing these tests: a slab, once carved, stays with its size class for ever,
/// even when all its blocks are free. So a heap whose chunks all went to small classes can no
/// longer serve a large block even when it is completely empty. Ignored until slabs are given
/// back (see the report that came with this file).
#[test]
#[ignore = "known limitation: empty slabs are never returned to the chunk pool"]
fn an_empty_heap_serves_a_large_block_after_small_churn() {
    let heap = Heap::anonymous(4 * CHUNK).unwrap();
    let blocks: Vec<_> = [16usize, 32, 48, 64]
        .iter()
        .map(|&s| heap.alloc(layout(s, 8)).unwrap())
        .collect();
    for o in blocks {
        heap.free(o).unwrap();
    }
    let s = heap.stats().unwrap();
    assert_eq!(s.used, 0);
    assert!(
        heap.alloc(layout(CHUNK, 8)).is_ok(),
        "an empty heap refused one chunk: {s:?}"
    );
}

// ------------------------------------------------------------------------------------------
// Typed handles
// ------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Point {
    x: f64,
    y: f64,
    tag: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(4096))]
struct Page([u8; 4096]);

#[test]
fn shm_box_round_trip() {
    let heap = small_heap();
    let mut b = ShmBox::new_in(
        &heap,
        Point {
            x: 1.0,
            y: 2.0,
            tag: 3,
        },
    )
    .unwrap();
    b.tag += 1;
    assert_eq!(
        *b,
        Point {
            x: 1.0,
            y: 2.0,
            tag: 4
        }
    );
    assert!(heap.stats().unwrap().used > 0);
    let o = b.into_offset();
    assert!(
        heap.stats().unwrap().used > 0,
        "into_offset freed the block"
    );
    // SAFETY: o came from into_offset of a ShmBox<Point> of this heap, and nobody else owns it.
    let b = unsafe { ShmBox::<Point>::from_offset(&heap, o) }.unwrap();
    assert_eq!(b.tag, 4);
    assert_eq!(b.offset(), o);
    drop(b);
    assert_eq!(heap.stats().unwrap().used, 0);
    // A stale offset is refused, not trusted.
    // SAFETY: the offset is stale on purpose: from_offset must report it.
    let stale = unsafe { ShmBox::<Point>::from_offset(&heap, o) };
    assert!(
        matches!(stale, Err(AllocError::DoubleFree { .. })),
        "{stale:?}"
    );
    // A block too small for T is refused.
    let tiny = ShmBox::new_in(&heap, 7u8).unwrap().into_offset();
    // SAFETY: on purpose of the wrong type: from_offset must report it.
    let wrong = unsafe { ShmBox::<[u64; 64]>::from_offset(&heap, tiny) };
    assert!(
        matches!(wrong, Err(AllocError::ForeignOffset { .. })),
        "{wrong:?}"
    );
    heap.free(tiny).unwrap();
    // Page-aligned types and zero-sized ones.
    let p = ShmBox::new_in(&heap, Page([9; 4096])).unwrap();
    assert_eq!(std::ptr::addr_of!(*p) as usize % 4096, 0);
    assert!(p.0.iter().all(|&b| b == 9));
    drop(p);
    let unit = ShmBox::new_in(&heap, ()).unwrap();
    drop(unit);
    assert_eq!(heap.stats().unwrap().used, 0);
}

#[test]
fn value_and_raw_value_round_trip() {
    let heap = small_heap();
    let v = Value::new_in(&heap, 5u64).unwrap();
    assert_eq!(v.get().unwrap(), 5);
    v.set(6).unwrap();
    {
        let mut g = v.lock().unwrap();
        assert!(!g.recovered());
        *g *= 7;
    }
    assert_eq!(v.get().unwrap(), 42);
    let p = Value::new_in(
        &heap,
        Point {
            x: 0.5,
            y: -0.5,
            tag: 1,
        },
    )
    .unwrap();
    p.lock().unwrap().tag = 9;
    assert_eq!(p.get().unwrap().tag, 9);
    let r = RawValue::new_in(&heap, 1.5f64).unwrap();
    assert_eq!(r.get(), 1.5);
    r.set(-2.25);
    assert_eq!(r.get(), -2.25);
    assert_ne!(v.offset(), r.offset());
    assert_ne!(v.offset(), p.offset());
    let _ = format!("{v:?} {p:?} {r:?}");
    drop((v, p, r));
    assert_eq!(heap.stats().unwrap().used, 0);
}

#[test]
fn array_and_raw_array_round_trip_and_range_errors() {
    let heap = small_heap();
    let a = Array::from_slice_in(&heap, &[1i32, 2, 3]).unwrap();
    assert_eq!((a.len(), a.is_empty()), (3, false));
    assert_eq!(a.to_vec().unwrap(), [1, 2, 3]);
    a.set(2, 30).unwrap();
    assert_eq!(a.get(2).unwrap(), 30);
    {
        let mut g = a.lock().unwrap();
        g.iter_mut().for_each(|x| *x *= 2);
    }
    assert_eq!(a.to_vec().unwrap(), [2, 4, 60]);
    assert!(matches!(
        a.get(3),
        Err(AllocError::IndexOutOfRange { index: 3, len: 3 })
    ));
    assert!(matches!(
        a.set(usize::MAX, 0),
        Err(AllocError::IndexOutOfRange { .. })
    ));
    assert_eq!(a.to_vec().unwrap(), [2, 4, 60], "a refused set wrote");

    let z = Array::<u64>::zeroed_in(&heap, 1000).unwrap();
    assert!(z.to_vec().unwrap().iter().all(|&x| x == 0));
    let empty = Array::<u8>::zeroed_in(&heap, 0).unwrap();
    assert!(empty.is_empty());
    assert!(matches!(
        empty.get(0),
        Err(AllocError::IndexOutOfRange { .. })
    ));

    let r = RawArray::<u16>::zeroed_in(&heap, 4).unwrap();
    assert_eq!((r.len(), r.is_empty()), (4, false));
    r.set(3, 7).unwrap();
    assert_eq!(r.get(3).unwrap(), 7);
    assert_eq!(r.to_vec(), [0, 0, 0, 7]);
    assert!(matches!(
        r.get(4),
        Err(AllocError::IndexOutOfRange { index: 4, len: 4 })
    ));
    assert!(matches!(
        r.set(4, 1),
        Err(AllocError::IndexOutOfRange { .. })
    ));
    let big = RawArray::<u8>::zeroed_in(&heap, 200_000).unwrap();
    big.set(199_999, 1).unwrap();
    assert_eq!(big.get(199_999).unwrap(), 1);
    let re = RawArray::<u8>::zeroed_in(&heap, 0).unwrap();
    assert!(re.is_empty() && re.to_vec().is_empty());
    let _ = format!("{a:?} {r:?}");
    assert!(Array::<u64>::zeroed_in(&heap, usize::MAX / 4).is_err());
    assert!(RawArray::<u64>::zeroed_in(&heap, 1 << 30).is_err());
    drop((a, z, empty, r, big, re));
    assert_eq!(heap.stats().unwrap().used, 0);
}

// ------------------------------------------------------------------------------------------
// Named heaps
// ------------------------------------------------------------------------------------------

static NAMES: AtomicU64 = AtomicU64::new(0);

fn unique(tag: &str) -> String {
    format!(
        "test-alloc-{tag}-{}-{}",
        std::process::id(),
        NAMES.fetch_add(1, Ordering::Relaxed)
    )
}

#[test]
fn create_and_open_share_blocks() {
    let name = unique("share");
    let creator = Heap::create(&name, 1 << 20).unwrap();
    let a = creator.alloc(layout(1000, 8)).unwrap();
    let big = creator.alloc(layout(100_000, 4096)).unwrap();
    // SAFETY: both blocks are ours.
    unsafe {
        fill_block(&creator, a.get(), 1000, 0xa5);
        fill_block(&creator, big.get(), 100_000, 0x5a);
    }
    let opener = Heap::open(&name).unwrap();
    assert_eq!(
        opener.usable_size(a).unwrap(),
        creator.usable_size(a).unwrap()
    );
    assert_eq!(opener.stats().unwrap(), creator.stats().unwrap());
    // SAFETY: the blocks are live; nobody writes them meanwhile.
    unsafe {
        assert!(block_bytes(&opener, a.get(), 1000)
            .iter()
            .all(|&b| b == 0xa5));
        assert!(block_bytes(&opener, big.get(), 100_000)
            .iter()
            .all(|&b| b == 0x5a));
    }
    // What the opener allocates is not what the creator holds; frees cross over.
    let b = opener.alloc(layout(1000, 8)).unwrap();
    assert_ne!(a, b);
    opener.free(a).unwrap();
    creator.free(b).unwrap();
    assert!(matches!(
        creator.free(a),
        Err(AllocError::DoubleFree { .. })
    ));
    opener.free(big).unwrap();
    assert_eq!(creator.stats().unwrap().used, 0);
    drop(opener);
    drop(creator);
    assert!(matches!(
        Heap::open(&name),
        Err(AllocError::Shm(ShmError::NotFound { .. }))
    ));
}

#[test]
fn open_a_queue_as_a_heap_is_wrong_kind() {
    let name = unique("kind");
    let region = Region::create(&name, 1 << 16).unwrap();
    let h = region.header().unwrap();
    h.begin(ObjectKind::QUEUE, 1 << 16, 0x1234, std::process::id());
    h.publish();
    let r = Heap::open(&name);
    assert!(
        matches!(r, Err(AllocError::Shm(ShmError::WrongKind { .. }))),
        "{r:?}"
    );
}

#[test]
fn open_garbage_is_wrong_magic() {
    let name = unique("garbage");
    let region = Region::create(&name, 1 << 16).unwrap();
    // SAFETY: the region is ours, 64 KiB long, and nobody else maps it yet.
    unsafe { std::ptr::write_bytes(region.as_ptr(), 0x77, 4096) };
    let r = Heap::open(&name);
    assert!(
        matches!(r, Err(AllocError::Shm(ShmError::WrongMagic { .. }))),
        "{r:?}"
    );
}

// ------------------------------------------------------------------------------------------
// Fork
// ------------------------------------------------------------------------------------------

/// A child's copies of the parent's handles do not free the parent's blocks when dropped.
/// The child does nothing but drop them, read shared memory and `_exit` (this test binary is
/// multi-threaded, so the child must not allocate or print).
#[test]
fn handle_dropped_in_forked_child_does_not_free_parent_block() {
    let heap = small_heap();
    let b = ShmBox::new_in(&heap, 0xfeed_u64).unwrap();
    let v = Value::new_in(&heap, 7u32).unwrap();
    let rv = RawValue::new_in(&heap, 8u32).unwrap();
    let a = Array::from_slice_in(&heap, &[1u8, 2, 3]).unwrap();
    let ra = RawArray::<u64>::zeroed_in(&heap, 100).unwrap();
    let used = heap.stats().unwrap().used;
    // SAFETY: the child only drops handles (a pid comparison, no free), reads shared memory and
    // leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let ok = *b == 0xfeed && rv.get() == 8 && ra.get(99).ok() == Some(0);
        drop(b);
        drop(v);
        drop(rv);
        drop(a);
        drop(ra);
        // SAFETY: leaves the child without running the parent's destructors.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) }
    }
    let mut status = 0;
    // SAFETY: pid is our child; status is writable.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{status}"
    );
    assert_eq!(
        heap.stats().unwrap().used,
        used,
        "the child's drops freed blocks"
    );
    assert_eq!(*b, 0xfeed);
    assert_eq!(v.get().unwrap(), 7);
    assert_eq!(a.to_vec().unwrap(), [1, 2, 3]);
    for o in [b.offset(), v.offset(), rv.offset(), a.offset(), ra.offset()] {
        assert!(heap.usable_size(o).is_ok());
    }
    drop((b, v, rv, a, ra));
    assert_eq!(heap.stats().unwrap().used, 0);
}

//! [`Heap`]: a crash-safe allocator inside a shared region.
//!
//! # Layout
//!
//! ```text
//! 0           Header (baozi-shm)
//! 1 line      Meta { chunks, data_at }
//! 2 lines     chunk lock (RawRobustMutex)
//! 3 lines     chunk journal (large alloc/free in progress), next-fit hint
//! 4 lines     one line per size class: lock, free-list head, carving journal
//! ...         64 thread-cache slots: owner, start time, pid namespace, per cached class a
//!             stack of up to 16 free blocks (see `cache.rs`)
//! ...         chunk map: one u32 per chunk (FREE, SLAB(class), LARGE_HEAD(n), LARGE_TAIL)
//! data_at     chunks of 64 KiB (data_at is a multiple of 64 KiB)
//! ```
//!
//! A slab chunk starts with its allocation bitmap (1 = allocated), then its blocks. A free block
//! holds the link to the next free block of its class in its first four bytes (offset / 16).
//!
//! # Commit points (each update is invisible until one store, complete after it)
//!
//! | operation | under | steps | killed before the commit | after |
//! |---|---|---|---|---|
//! | cached alloc (≤ 1 KiB) | none: the thread's own slot | read top, **store count - 1**, clear the block's tag | nothing happened | block leaked (its bit stays set: counted "used") |
//! | cached free | none | bit set and no confirmed tag (else double free), write tag and entry, **store count + 1** | block leaked ("used"), its first bytes overwritten | cached (bit still set) |
//! | cache refill / flush | class lock | per block: **take it out of the source** (head or count), set or clear its bit, **put it in the destination** | nothing happened | that block leaked until the second store |
//! | small alloc | class lock | read head, **store head = next**, set bitmap bit | nothing happened | block leaked if the bit is not yet set ("leaked suspect") |
//! | small free | class lock | clear bitmap bit (detects double free), link, **store head** | block leaked if the bit was cleared | freed |
//! | refill | class lock, then chunk lock | carving := chunk, **map[chunk] := SLAB**, carve, **store head**, carving := 0 | carving names a chunk that is not a slab: cleared | repair re-carves, or only clears the journal if the head already points into the chunk |
//! | large alloc/free | chunk lock | journal := (op, start, n), write the map run, journal := 0 | | repair sets the run FREE: an alloc never returned, a free is finished |
//!
//! So a process killed anywhere costs at most the one block it was moving.

use std::alloc::Layout;
use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use baozi_shm::{
    LayoutHash, ObjectKind, Offset, Region, ShmError, ShmSafe, CACHE_LINE, DEFAULT_READY_WAIT,
};
use baozi_sync::{Acquired, RawRobustMutex};

use crate::error::AllocError;
use crate::size_class::{self, Route, SlabGeometry, CHUNK, CHUNK_SHIFT, CLASSES, MAX_ALIGN};

mod cache;

const META_AT: usize = CACHE_LINE;
const CHUNK_LOCK_AT: usize = 2 * CACHE_LINE;
const JOURNAL_AT: usize = 3 * CACHE_LINE;
const CLASSES_AT: usize = 4 * CACHE_LINE;
const SLOTS_AT: usize = CLASSES_AT + CLASSES * CACHE_LINE;
const MAP_AT: usize = SLOTS_AT + cache::SLOTS * cache::SLOT_SIZE;

/// Offsets inside a class line.
const CLASS_HEAD: usize = 64;
const CLASS_CARVING: usize = 68;

/// Chunk map values.
const MAP_FREE: u32 = 0;
const MAP_LARGE_HEAD: u32 = 0x8000_0000;
const MAP_LARGE_TAIL: u32 = 0x4000_0000;

/// Free-list link meaning "no block".
const NIL: u32 = u32::MAX;

/// Journal operations (top two bits of the journal word).
const JOURNAL_ALLOC: u64 = 1;
const JOURNAL_FREE: u64 = 2;

/// The largest heap accepted: 32 GiB (links are offsets / 16 in a u32).
pub const MAX_HEAP: usize = 32 << 30;

/// Meta: fixed at creation.
#[repr(C)]
#[derive(Debug)]
struct Meta {
    chunks: AtomicU32,
    _reserved: AtomicU32,
    data_at: AtomicU64,
    /// A block the creator named the heap's root (0: none), for objects opened by name.
    root: AtomicU64,
}

// SAFETY: repr(C), atomics only; values are validated at open.
unsafe impl ShmSafe for Meta {}

fn layout_hash(chunks: u32, data_at: u64) -> u64 {
    let mut h = LayoutHash::new(ObjectKind::HEAP)
        .u64(u64::from(chunks))
        .u64(data_at)
        .u64(CHUNK as u64)
        .u64(std::mem::size_of::<RawRobustMutex>() as u64)
        .u64(cache::SLOTS as u64)
        .u64(cache::CACHED as u64)
        .u64(u64::from(cache::DEPTH))
        .u64(cache::SLOT_SIZE as u64);
    for s in size_class::CLASS_SIZES {
        h = h.u64(u64::from(s));
    }
    h.finish()
}

fn metadata_len(chunks: usize) -> usize {
    (MAP_AT + 4 * chunks).div_ceil(CHUNK) * CHUNK
}

/// What a heap holds, by bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeapStats {
    /// Bytes of chunks (the heap's capacity for data).
    pub capacity: usize,
    /// Bytes in allocated blocks and large runs (block sizes, not requested sizes).
    pub used: usize,
    /// Bytes ready to hand out: free blocks in slabs and free chunks.
    pub free: usize,
    /// Bytes in blocks that are neither allocated nor free: a process died while moving them.
    pub leaked_suspect: usize,
    /// Bytes of slab bitmaps and slab tails too small for a block.
    pub overhead: usize,
    /// Chunks not given to any slab or large run.
    pub free_chunks: usize,
    /// Per size class: (block size, blocks allocated, blocks free).
    pub classes: Vec<(usize, usize, usize)>,
}

/// A heap in a shared region: any process allocates and frees, blocks allocated in one process
/// can be freed in another, and every reference is an [`Offset`].
///
/// * Blocks up to 1 KiB come from the calling thread's cache, a small stack per size class kept
///   in the heap's own metadata: no lock, no syscall, about 2× glibc's malloc/free in
///   instructions. A cache is refilled from, and flushed to, the class lists half a stack at
///   a time. What a dead thread or process had cached is adopted by the next thread that needs a
///   slot, or swept back when an allocation runs out of memory.
/// * Other small blocks (≤ 16 KiB, alignment ≤ 4 KiB) come from per-class free lists: O(1), one
///   uncontended robust-mutex lock, no syscall.
/// * Larger blocks take runs of 64 KiB chunks.
/// * [`free`](Self::free) of an offset that is already free, or that the heap never handed
///   out, is an error ([`AllocError::DoubleFree`], [`AllocError::ForeignOffset`]), not undefined
///   behaviour.
/// * A process killed in the middle of alloc or free leaves the heap consistent for the others:
///   at worst the one block it was moving leaks, and [`stats`](Self::stats) counts it as
///   `leaked_suspect`.
/// * The heap keeps no per-process state (no caches, no cached pid), so a child forked at any
///   moment never hands out memory its parent also thinks it owns.
///
/// ```
/// use baozi_alloc::Heap;
/// use std::alloc::Layout;
///
/// let heap = Heap::anonymous(1 << 20)?;
/// let a = heap.alloc(Layout::from_size_align(100, 8).unwrap())?;
/// let b = heap.alloc(Layout::from_size_align(5000, 4096).unwrap())?;
/// assert_eq!(heap.ptr(b)?.as_ptr() as usize % 4096, 0);
/// heap.free(a)?;
/// assert!(matches!(heap.free(a), Err(baozi_alloc::AllocError::DoubleFree { .. })));
/// heap.free(b)?;
/// # Ok::<(), baozi_alloc::AllocError>(())
/// ```
///
/// A `Heap` is a handle: a clone is another handle to the same heap (one atomic count, no
/// syscall), sharing this process's mapping and thread caches. With the `serde` feature a handle
/// is a serde value that any process of the machine can deserialise to attach to the heap.
#[derive(Clone)]
pub struct Heap {
    s: Arc<HeapState>,
}

/// What every clone of a [`Heap`] handle in this process shares.
struct HeapState {
    region: Region,
    base: NonNull<u8>,
    chunks: u32,
    data_at: usize,
    geometry: [SlabGeometry; CLASSES],
    /// Process-unique: keys this heap's thread-cache slots in each thread.
    id: u64,
}

// SAFETY: `base` points into `region`, owned by the state and valid in every thread; shared
// state is reached through atomics or under process-shared locks.
unsafe impl Send for HeapState {}
// SAFETY: as above: every method may be called from several threads at once.
unsafe impl Sync for HeapState {}

impl fmt::Debug for Heap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Heap")
            .field("region", &self.s.region.describe())
            .field("chunks", &self.s.chunks)
            .finish()
    }
}

impl Drop for Heap {
    /// When the last handle in the process goes, gives this thread's cache slot back to the heap
    /// (its blocks return to the class lists).
    fn drop(&mut self) {
        if Arc::strong_count(&self.s) == 1 {
            self.release_my_slot();
        }
    }
}

/// Holds one of the heap's locks; unlocks on drop.
struct Locked<'a> {
    lock: &'a RawRobustMutex,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // SAFETY: a Locked exists only while this thread holds the lock.
        unsafe { self.lock.unlock() };
    }
}

impl Heap {
    fn chunks_for(size: usize) -> Result<usize, AllocError> {
        if size == 0 || size > MAX_HEAP {
            return Err(ShmError::InvalidSize {
                what: "heap size",
                requested: size as u64,
                reason: format!("must be between 1 and {MAX_HEAP} bytes"),
            }
            .into());
        }
        Ok(size.div_ceil(CHUNK))
    }

    /// A heap of at least `size` bytes of data (rounded up to 64 KiB chunks), shared with
    /// children forked after this call. Pages are touched only as they are used.
    ///
    /// # Errors
    /// [`AllocError::Shm`] for a size of 0 or above [`MAX_HEAP`], or a failed mapping.
    pub fn new(size: usize) -> Result<Heap, AllocError> {
        Self::anonymous(size)
    }

    /// The same as [`new`](Self::new).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn anonymous(size: usize) -> Result<Heap, AllocError> {
        let chunks = Self::chunks_for(size)?;
        let region = Region::anonymous(metadata_len(chunks) + chunks * CHUNK)?;
        Heap::build(region, chunks)
    }

    /// Creates the named heap `/dev/shm/baozi-NAME`, owned by this handle (unlinked on drop
    /// unless [`persist`](Self::persist)ed).
    ///
    /// # Errors
    /// As [`anonymous`](Self::anonymous), plus the naming errors of [`Region::create`].
    pub fn create(name: &str, size: usize) -> Result<Heap, AllocError> {
        let chunks = Self::chunks_for(size)?;
        let region = Region::create(name, metadata_len(chunks) + chunks * CHUNK)?;
        Heap::build(region, chunks)
    }

    /// Opens a named heap made by [`create`](Self::create).
    ///
    /// # Errors
    /// [`AllocError::Shm`] with the precise cause (not found, foreign object, wrong version or
    /// kind, truncated, layout mismatch, not ready).
    pub fn open(name: &str) -> Result<Heap, AllocError> {
        Self::from_region(Region::open(name)?, DEFAULT_READY_WAIT)
    }

    /// [`open`](Self::open), waiting at most `ready_wait` for the name to appear and for its
    /// creator to build it.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_timeout(name: &str, ready_wait: std::time::Duration) -> Result<Heap, AllocError> {
        let start = std::time::Instant::now();
        let region = Region::open_timeout(name, ready_wait)?;
        Self::from_region(region, ready_wait.saturating_sub(start.elapsed()))
    }

    /// Creates the named heap, or opens it if it exists: of several processes racing here,
    /// exactly one creates it (with `size`) and the others open what it made.
    ///
    /// # Errors
    /// As [`create`](Self::create) and [`open`](Self::open).
    pub fn create_or_open(name: &str, size: usize) -> Result<Heap, AllocError> {
        let chunks = Self::chunks_for(size)?;
        let (region, created) =
            Region::create_or_open(name, metadata_len(chunks) + chunks * CHUNK)?;
        if created {
            Heap::build(region, chunks)
        } else {
            Self::from_region(region, DEFAULT_READY_WAIT)
        }
    }

    /// Attaches to the heap a serialised handle refers to (what `Deserialize` does with the
    /// `serde` feature).
    ///
    /// # Errors
    /// [`ShmError::Gone`] when no process holds the heap any more, and the checks of
    /// [`open`](Self::open).
    pub fn attach(r: &baozi_shm::RegionRef) -> Result<Heap, AllocError> {
        Self::from_region(Region::attach(r)?, DEFAULT_READY_WAIT)
    }

    fn from_region(region: Region, ready_wait: std::time::Duration) -> Result<Heap, AllocError> {
        let who = region.describe();
        let snap =
            region
                .header()?
                .wait_ready(&who, region.len() as u64, ObjectKind::HEAP, ready_wait)?;
        let meta: &Meta = region.get(Offset::new(META_AT as u64))?;
        let chunks = meta.chunks.load(Ordering::Relaxed);
        let data_at = meta.data_at.load(Ordering::Relaxed);
        snap.check_layout(&who, layout_hash(chunks, data_at))?;
        let expected_data_at = metadata_len(chunks as usize) as u64;
        let total = expected_data_at + u64::from(chunks) * CHUNK as u64;
        if chunks == 0
            || data_at != expected_data_at
            || snap.total_size != total
            || (region.len() as u64) < total
        {
            return Err(ShmError::Truncated {
                name: who,
                size: region.len() as u64,
                needed: total,
            }
            .into());
        }
        Ok(Heap::wrap(region, chunks as usize))
    }

    fn wrap(region: Region, chunks: usize) -> Heap {
        let base = NonNull::new(region.as_ptr()).expect("a mapped region is never at address 0");
        let geometry = std::array::from_fn(size_class::geometry);
        Heap {
            s: Arc::new(HeapState {
                region,
                base,
                chunks: chunks as u32,
                data_at: metadata_len(chunks),
                geometry,
                id: cache::new_heap_id(),
            }),
        }
    }

    fn build(region: Region, chunks: usize) -> Result<Heap, AllocError> {
        let data_at = metadata_len(chunks);
        region.header()?.begin(
            ObjectKind::HEAP,
            (data_at + chunks * CHUNK) as u64,
            layout_hash(chunks as u32, data_at as u64),
            std::process::id(),
        );
        region.header()?.set_identity(region.id(), None);
        let heap = Heap::wrap(region, chunks);
        let meta: &Meta = heap.at(META_AT);
        meta.chunks.store(chunks as u32, Ordering::Relaxed);
        meta.data_at.store(data_at as u64, Ordering::Relaxed);
        // SAFETY: each lock lies inside the metadata (checked by the layout constants), is
        // 8-aligned, and the region is unpublished, so nobody else can reach it yet.
        unsafe {
            RawRobustMutex::init(heap.s.base.as_ptr().add(CHUNK_LOCK_AT).cast())?;
            for c in 0..CLASSES {
                RawRobustMutex::init(heap.s.base.as_ptr().add(CLASSES_AT + c * CACHE_LINE).cast())?;
            }
        }
        for c in 0..CLASSES {
            heap.class_head(c).store(NIL, Ordering::Relaxed);
        }
        // The chunk map and journals start at zero (FREE, none) as the fresh region is.
        heap.s.region.header()?.publish();
        Ok(heap)
    }

    // --- shared parts ---

    fn at<P: ShmSafe>(&self, off: usize) -> &P {
        debug_assert!(off + std::mem::size_of::<P>() <= self.s.region.len());
        // SAFETY: `off` comes from the layout constants (inside the metadata, which build/open
        // sized) or from chunk/block arithmetic bounded by `chunks`; it is aligned for P (every
        // constant and block offset is a multiple of 8 or more); P is ShmSafe; the reference
        // borrows self, which owns the mapping.
        unsafe { &*self.s.base.as_ptr().add(off).cast::<P>() }
    }

    fn chunk_lock(&self) -> &RawRobustMutex {
        self.at(CHUNK_LOCK_AT)
    }
    fn journal(&self) -> &AtomicU64 {
        self.at(JOURNAL_AT)
    }
    fn hint(&self) -> &AtomicU32 {
        self.at(JOURNAL_AT + 8)
    }
    fn class_lock(&self, c: usize) -> &RawRobustMutex {
        self.at(CLASSES_AT + c * CACHE_LINE)
    }
    fn class_head(&self, c: usize) -> &AtomicU32 {
        self.at(CLASSES_AT + c * CACHE_LINE + CLASS_HEAD)
    }
    fn class_carving(&self, c: usize) -> &AtomicU32 {
        self.at(CLASSES_AT + c * CACHE_LINE + CLASS_CARVING)
    }
    fn map(&self, chunk: usize) -> &AtomicU32 {
        debug_assert!(chunk < self.s.chunks as usize);
        self.at(MAP_AT + 4 * chunk)
    }
    fn chunk_at(&self, chunk: usize) -> usize {
        self.s.data_at + (chunk << CHUNK_SHIFT)
    }
    fn bitmap_word(&self, chunk: usize, word: usize) -> &AtomicU64 {
        self.at(self.chunk_at(chunk) + 8 * word)
    }
    /// The free-list link stored in a free block.
    fn link(&self, block: usize) -> &AtomicU32 {
        self.at(block)
    }

    fn corrupt(&self, detail: String) -> AllocError {
        AllocError::Corrupt {
            name: self.s.region.describe(),
            detail,
        }
    }

    /// Decodes a free-list link into a block offset, checking it points at a block.
    fn block_of_link(&self, link: u32) -> Result<usize, AllocError> {
        let off = link as usize * 16;
        if off < self.s.data_at || off >= self.chunk_at(self.s.chunks as usize) {
            return Err(self.corrupt(format!("free-list link {link:#x} points outside the heap")));
        }
        Ok(off)
    }

    // --- locks and their repair ---

    fn lock_chunks(&self) -> Result<Locked<'_>, AllocError> {
        let lock = self.chunk_lock();
        let acquired = lock.lock(None)?;
        let guard = Locked { lock };
        if acquired == Acquired::OwnerDied {
            // A large alloc or free was in flight: either way, its run ends up FREE (an alloc
            // never returned to its dead caller; a free is finished).
            let j = self.journal().load(Ordering::Acquire);
            if j != 0 {
                let (start, n) = (
                    (j & 0xffff_ffff) as usize,
                    ((j >> 32) & 0x3fff_ffff) as usize,
                );
                if start + n > self.s.chunks as usize || n == 0 {
                    return Err(self.corrupt(format!("chunk journal {j:#x}")));
                }
                for chunk in start..start + n {
                    self.map(chunk).store(MAP_FREE, Ordering::Relaxed);
                }
                self.journal().store(0, Ordering::Release);
            }
            // SAFETY: we hold the lock, acquired with OwnerDied.
            unsafe { lock.mark_consistent() };
        }
        Ok(guard)
    }

    fn lock_class(&self, c: usize) -> Result<Locked<'_>, AllocError> {
        let lock = self.class_lock(c);
        let acquired = lock.lock(None)?;
        let guard = Locked { lock };
        if acquired == Acquired::OwnerDied {
            self.repair_class(c)?;
            // SAFETY: we hold the lock, acquired with OwnerDied.
            unsafe { lock.mark_consistent() };
        }
        Ok(guard)
    }

    /// After a class lock's holder died: finish or undo a refill it was making. Pops and pushes
    /// need nothing (one store each). Idempotent: a repairer killed here leaves the same state.
    fn repair_class(&self, c: usize) -> Result<(), AllocError> {
        let carving = self.class_carving(c).load(Ordering::Acquire);
        if carving == 0 {
            return Ok(());
        }
        let chunk = carving as usize - 1;
        if chunk >= self.s.chunks as usize {
            return Err(self.corrupt(format!("class {c} carving journal {carving}")));
        }
        if self.map(chunk).load(Ordering::Acquire) == 1 + c as u32 {
            let first = self.chunk_at(chunk) + self.s.geometry[c].data_start as usize;
            let head = self.class_head(c).load(Ordering::Acquire);
            // We are the first to hold the lock since the death, so nobody popped since: the
            // head points at the chunk's first block exactly when the carve was pushed.
            if head as usize * 16 != first {
                self.carve(c, chunk);
            }
        }
        self.class_carving(c).store(0, Ordering::Release);
        Ok(())
    }

    // --- allocation ---

    /// Allocates a block for `layout`. The contents are unspecified (zero the first time a
    /// page is used, whatever was freed there after).
    ///
    /// # Errors
    /// [`AllocError::OutOfMemory`] when the heap is full (never a panic, never a wait);
    /// [`AllocError::InvalidLayout`] for an alignment above 4096.
    pub fn alloc(&self, layout: Layout) -> Result<Offset<u8>, AllocError> {
        if layout.align() > MAX_ALIGN {
            return Err(AllocError::InvalidLayout {
                size: layout.size(),
                align: layout.align(),
                reason: "alignments above 4096 (the page size) are not supported",
            });
        }
        match size_class::route(layout.size(), layout.align()) {
            Route::Small(c) => self.alloc_small(c, layout),
            Route::Large(n) => self.alloc_large(n, layout),
        }
    }

    fn alloc_small(&self, c: usize, layout: Layout) -> Result<Offset<u8>, AllocError> {
        if c < cache::CACHED {
            if let Some(slot) = self.my_slot() {
                return self.alloc_cached(slot, c, layout);
            }
        }
        let _guard = self.lock_class(c)?;
        let Some((_, block)) = self.pop_free(c, layout, true)? else {
            return Err(self.corrupt(format!("class {c} is empty right after a refill")));
        };
        let (chunk, index) = self.locate_small(block, c)?;
        self.mark_taken(block, chunk, index)?;
        Ok(Offset::new(block as u64))
    }

    /// Takes the first block off class `c`'s free list (class lock held): its link and offset.
    /// An empty list is refilled with a fresh slab when `carve`, else gives `None`.
    fn pop_free(
        &self,
        c: usize,
        layout: Layout,
        carve: bool,
    ) -> Result<Option<(u32, usize)>, AllocError> {
        let mut head = self.class_head(c).load(Ordering::Relaxed);
        if head == NIL {
            if !carve {
                return Ok(None);
            }
            self.refill(c, layout)?;
            head = self.class_head(c).load(Ordering::Relaxed);
        }
        let block = self.block_of_link(head)?;
        let next = self.link(block).load(Ordering::Relaxed);
        if next != NIL {
            self.block_of_link(next)?;
        }
        // COMMIT: the block leaves the free list.
        self.class_head(c).store(next, Ordering::Release);
        Ok(Some((head, block)))
    }

    /// Gives class `c` a fresh slab. Called with the class lock held and its list empty.
    #[cold]
    fn refill(&self, c: usize, layout: Layout) -> Result<(), AllocError> {
        let chunk = {
            let _chunks = self.lock_chunks()?;
            let Some(chunk) = self.find_free_run(1) else {
                return Err(AllocError::OutOfMemory {
                    requested: layout.size(),
                    align: layout.align(),
                });
            };
            // The journal first, so that a death after the claim is finished by the next
            // holder of this class's lock.
            self.class_carving(c)
                .store(chunk as u32 + 1, Ordering::Release);
            // COMMIT of the claim.
            self.map(chunk).store(1 + c as u32, Ordering::Release);
            chunk
        };
        self.carve(c, chunk);
        self.class_carving(c).store(0, Ordering::Release);
        Ok(())
    }

    /// Cuts `chunk` into blocks of class `c` and pushes them all onto the class's free list
    /// with one store. Class lock held.
    fn carve(&self, c: usize, chunk: usize) {
        let g = self.s.geometry[c];
        for w in 0..g.bitmap_words as usize {
            self.bitmap_word(chunk, w).store(0, Ordering::Relaxed);
        }
        let first = self.chunk_at(chunk) + g.data_start as usize;
        let old_head = self.class_head(c).load(Ordering::Relaxed);
        for i in 0..g.blocks as usize {
            let block = first + i * g.block as usize;
            let next = if i + 1 == g.blocks as usize {
                old_head
            } else {
                ((block + g.block as usize) / 16) as u32
            };
            self.link(block).store(next, Ordering::Relaxed);
        }
        // COMMIT: the whole slab joins the free list.
        self.class_head(c)
            .store((first / 16) as u32, Ordering::Release);
    }

    /// First run of `n` free chunks, searching from the next-fit hint. Chunk lock held.
    fn find_free_run(&self, n: usize) -> Option<usize> {
        let total = self.s.chunks as usize;
        if n > total {
            return None;
        }
        let hint = (self.hint().load(Ordering::Relaxed) as usize).min(total - 1);
        // The second pass goes n - 1 chunks past the hint, to find runs across it too.
        for pass in [hint..total, 0..(hint + n - 1).min(total)] {
            let mut run = 0;
            for chunk in pass {
                if self.map(chunk).load(Ordering::Relaxed) == MAP_FREE {
                    run += 1;
                    if run == n {
                        let start = chunk + 1 - n;
                        self.hint()
                            .store((chunk + 1) as u32 % total as u32, Ordering::Relaxed);
                        return Some(start);
                    }
                } else {
                    run = 0;
                }
            }
        }
        None
    }

    fn alloc_large(&self, n: usize, layout: Layout) -> Result<Offset<u8>, AllocError> {
        if n > self.s.chunks as usize {
            return Err(AllocError::OutOfMemory {
                requested: layout.size(),
                align: layout.align(),
            });
        }
        let _chunks = self.lock_chunks()?;
        let Some(start) = self.find_free_run(n) else {
            return Err(AllocError::OutOfMemory {
                requested: layout.size(),
                align: layout.align(),
            });
        };
        self.journal().store(
            (JOURNAL_ALLOC << 62) | ((n as u64) << 32) | start as u64,
            Ordering::Release,
        );
        for chunk in start + 1..start + n {
            self.map(chunk).store(MAP_LARGE_TAIL, Ordering::Relaxed);
        }
        self.map(start)
            .store(MAP_LARGE_HEAD | n as u32, Ordering::Relaxed);
        // COMMIT: the run is allocated once the journal no longer names it.
        self.journal().store(0, Ordering::Release);
        Ok(Offset::new(self.chunk_at(start) as u64))
    }

    // --- free ---

    /// Which slab chunk and block index `block` is, for class `c`; errors for a non-block.
    #[inline]
    fn locate_small(&self, block: usize, c: usize) -> Result<(usize, usize), AllocError> {
        let chunk = (block - self.s.data_at) >> CHUNK_SHIFT;
        let g = self.s.geometry[c];
        let rel = block - self.chunk_at(chunk);
        let foreign = || AllocError::ForeignOffset {
            offset: block as u64,
        };
        if rel < g.data_start as usize {
            return Err(foreign());
        }
        let d = rel - g.data_start as usize;
        let index = g.index_of(d);
        if index * g.block as usize != d || index >= g.blocks as usize {
            return Err(foreign());
        }
        Ok((chunk, index))
    }

    /// The chunk holding `off`, or ForeignOffset.
    fn chunk_of(&self, off: usize) -> Result<usize, AllocError> {
        if off < self.s.data_at || off >= self.chunk_at(self.s.chunks as usize) {
            return Err(AllocError::ForeignOffset { offset: off as u64 });
        }
        Ok((off - self.s.data_at) >> CHUNK_SHIFT)
    }

    /// Frees a block from [`alloc`](Self::alloc), in this process or any other.
    ///
    /// # Errors
    /// [`AllocError::DoubleFree`] if it is already free; [`AllocError::ForeignOffset`] if the
    /// heap never handed it out. The heap is unchanged in both cases.
    pub fn free(&self, offset: Offset<u8>) -> Result<(), AllocError> {
        let off = usize::try_from(offset.get()).map_err(|_| AllocError::ForeignOffset {
            offset: offset.get(),
        })?;
        let chunk = self.chunk_of(off)?;
        match self.map(chunk).load(Ordering::Acquire) {
            m @ 1..=36 => self.free_small(off, m as usize - 1),
            _ => self.free_large(off, chunk),
        }
    }

    fn free_small(&self, block: usize, c: usize) -> Result<(), AllocError> {
        let (chunk, index) = self.locate_small(block, c)?;
        if c < cache::CACHED {
            if let Some(slot) = self.my_slot() {
                return self.free_cached(slot, block, c, chunk, index);
            }
            if self.freeing_a_cached_block(block, c) {
                return Err(AllocError::DoubleFree {
                    offset: block as u64,
                });
            }
        }
        let _guard = self.lock_class(c)?;
        self.mark_free(block, chunk, index)?;
        let head = self.class_head(c).load(Ordering::Relaxed);
        self.link(block).store(head, Ordering::Relaxed);
        // COMMIT: the block joins the free list.
        self.class_head(c)
            .store((block / 16) as u32, Ordering::Release);
        Ok(())
    }

    /// Sets the allocation bit of a block just taken off a free list; a bit already set means
    /// the list held an allocated block (corruption).
    #[inline]
    fn mark_taken(&self, block: usize, chunk: usize, index: usize) -> Result<(), AllocError> {
        let mask = 1u64 << (index % 64);
        let was = self
            .bitmap_word(chunk, index / 64)
            .fetch_or(mask, Ordering::AcqRel);
        if was & mask != 0 {
            return Err(self.corrupt(format!(
                "block at {block} was on the free list while allocated"
            )));
        }
        Ok(())
    }

    /// Clears a block's allocation bit; a bit already clear is a double free (nothing changed).
    #[inline]
    fn mark_free(&self, block: usize, chunk: usize, index: usize) -> Result<(), AllocError> {
        let mask = 1u64 << (index % 64);
        let was = self
            .bitmap_word(chunk, index / 64)
            .fetch_and(!mask, Ordering::AcqRel);
        if was & mask == 0 {
            return Err(AllocError::DoubleFree {
                offset: block as u64,
            });
        }
        Ok(())
    }

    fn free_large(&self, off: usize, chunk: usize) -> Result<(), AllocError> {
        if off != self.chunk_at(chunk) {
            return Err(AllocError::ForeignOffset { offset: off as u64 });
        }
        let _chunks = self.lock_chunks()?;
        let m = self.map(chunk).load(Ordering::Acquire);
        if m == MAP_FREE {
            return Err(AllocError::DoubleFree { offset: off as u64 });
        }
        if m & MAP_LARGE_HEAD == 0 {
            return Err(AllocError::ForeignOffset { offset: off as u64 });
        }
        let n = (m & !MAP_LARGE_HEAD) as usize;
        if n == 0 || chunk + n > self.s.chunks as usize {
            return Err(self.corrupt(format!("chunk map {m:#x} at {chunk}")));
        }
        self.journal().store(
            (JOURNAL_FREE << 62) | ((n as u64) << 32) | chunk as u64,
            Ordering::Release,
        );
        for c in chunk..chunk + n {
            self.map(c).store(MAP_FREE, Ordering::Relaxed);
        }
        // COMMIT: the free is done once the journal is clear (a repair finishes it otherwise).
        self.journal().store(0, Ordering::Release);
        Ok(())
    }

    // --- access ---

    /// The address of `offset` in this process, checked to lie inside the heap's data.
    ///
    /// # Errors
    /// [`AllocError::ForeignOffset`] outside the data area.
    pub fn ptr(&self, offset: Offset<u8>) -> Result<NonNull<u8>, AllocError> {
        let off = usize::try_from(offset.get()).map_err(|_| AllocError::ForeignOffset {
            offset: offset.get(),
        })?;
        self.chunk_of(off)?;
        // SAFETY: off is inside the mapping (chunk_of checked it against the data area).
        Ok(unsafe { NonNull::new_unchecked(self.s.base.as_ptr().add(off)) })
    }

    /// The usable size of the allocated block at `offset`.
    ///
    /// # Errors
    /// [`AllocError::ForeignOffset`], [`AllocError::DoubleFree`] (not allocated).
    pub fn usable_size(&self, offset: Offset<u8>) -> Result<usize, AllocError> {
        let off = usize::try_from(offset.get()).map_err(|_| AllocError::ForeignOffset {
            offset: offset.get(),
        })?;
        let chunk = self.chunk_of(off)?;
        match self.map(chunk).load(Ordering::Acquire) {
            m @ 1..=36 => {
                let c = m as usize - 1;
                let (chunk, index) = self.locate_small(off, c)?;
                let word = self.bitmap_word(chunk, index / 64).load(Ordering::Acquire);
                // Free: on a list (bit clear), or in a thread cache (bit set). The caches are
                // scanned rather than the block's tag read: the block may be in use, and its
                // owner writing it.
                if word & (1 << (index % 64)) == 0 || (c < cache::CACHED && self.in_a_cache(off, c))
                {
                    return Err(AllocError::DoubleFree { offset: off as u64 });
                }
                Ok(self.s.geometry[c].block as usize)
            }
            m if m & MAP_LARGE_HEAD != 0 && off == self.chunk_at(chunk) => {
                Ok((m & !MAP_LARGE_HEAD) as usize * CHUNK)
            }
            MAP_FREE if off == self.chunk_at(chunk) => {
                Err(AllocError::DoubleFree { offset: off as u64 })
            }
            _ => Err(AllocError::ForeignOffset { offset: off as u64 }),
        }
    }

    /// Counts what the heap holds, taking each lock in turn. Exact when no other process is
    /// allocating; a snapshot otherwise.
    ///
    /// # Errors
    /// [`AllocError::Corrupt`] if a free list is malformed; lock failures.
    pub fn stats(&self) -> Result<HeapStats, AllocError> {
        let mut s = HeapStats {
            capacity: self.s.chunks as usize * CHUNK,
            ..HeapStats::default()
        };
        let map: Vec<u32> = {
            let _chunks = self.lock_chunks()?;
            (0..self.s.chunks as usize)
                .map(|c| self.map(c).load(Ordering::Relaxed))
                .collect()
        };
        for &m in &map {
            if m == MAP_FREE {
                s.free_chunks += 1;
            } else if m & MAP_LARGE_HEAD != 0 {
                s.used += (m & !MAP_LARGE_HEAD) as usize * CHUNK;
            }
        }
        s.free += s.free_chunks * CHUNK;
        for c in 0..CLASSES {
            let g = self.s.geometry[c];
            if !map.contains(&(1 + c as u32)) && self.class_head(c).load(Ordering::Acquire) == NIL {
                continue;
            }
            // Read this class's slabs under its lock: a chunk becomes one of them only under it
            // (and never stops being one), so the list walk below cannot outgrow them.
            let _guard = self.lock_class(c)?;
            let slabs: Vec<usize> = (0..self.s.chunks as usize)
                .filter(|&x| self.map(x).load(Ordering::Acquire) == 1 + c as u32)
                .collect();
            if slabs.is_empty() {
                continue;
            }
            let total = slabs.len() * g.blocks as usize;
            let mut allocated = 0;
            for &x in &slabs {
                for w in 0..g.bitmap_words as usize {
                    allocated +=
                        self.bitmap_word(x, w).load(Ordering::Relaxed).count_ones() as usize;
                }
            }
            let mut free = 0;
            let mut link = self.class_head(c).load(Ordering::Relaxed);
            while link != NIL {
                free += 1;
                if free > total {
                    return Err(self.corrupt(format!("class {c} free list has a cycle")));
                }
                link = self.link(self.block_of_link(link)?).load(Ordering::Relaxed);
            }
            // Cached blocks keep their bits set: count them free, not allocated.
            let cached: usize = (0..cache::SLOTS).map(|i| self.cached_blocks(i, c)).sum();
            let leaked = total.saturating_sub(allocated + free);
            let allocated = allocated.saturating_sub(cached);
            let free = free + cached;
            let block = g.block as usize;
            s.used += allocated * block;
            s.free += free * block;
            s.leaked_suspect += leaked * block;
            s.overhead += slabs.len() * (CHUNK - g.blocks as usize * block);
            s.classes.push((block, allocated, free));
        }
        Ok(s)
    }

    /// Names `offset` the heap's root block: what a process that opens the heap by name finds
    /// with [`root`](Self::root). Named `Value`s and `Array`s keep their block there.
    pub fn set_root(&self, offset: Offset<u8>) {
        let meta: &Meta = self.at(META_AT);
        // Release: the block's contents, written before, are visible to whoever reads the root.
        meta.root.store(offset.get(), Ordering::Release);
    }

    /// The root block set by [`set_root`](Self::set_root), if any.
    pub fn root(&self) -> Option<Offset<u8>> {
        let meta: &Meta = self.at(META_AT);
        match meta.root.load(Ordering::Acquire) {
            0 => None,
            at => Some(Offset::new(at)),
        }
    }

    /// The region holding the heap.
    pub fn region(&self) -> &Region {
        &self.s.region
    }

    /// Keeps the name in `/dev/shm` after this creator drops the heap.
    pub fn persist(&self) {
        self.s.region.persist();
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for Heap {
    /// Writes a reference to the heap (see [`Heap::attach`]).
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.s.region.to_ref().serialize(s)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Heap {
    /// Attaches to the heap the reference names.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = baozi_shm::RegionRef::deserialize(d)?;
        Heap::attach(&r).map_err(baozi_shm::attach_failed)
    }
}

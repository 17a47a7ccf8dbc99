//! Thread caches: the alloc/free fast path for small blocks, without a lock.
//!
//! Each thread that uses a heap owns one *slot* of the heap's metadata: per cached size class,
//! a little stack of free blocks. `alloc` pops from it and `free` pushes onto it with plain
//! stores and no lock; only an empty or full stack takes the class lock, to move half a stack
//! of blocks at once. The glibc robust mutex costs about 220 instructions per lock/unlock pair,
//! most of an uncached alloc+free; the cache skips it on all but one call in eight.
//!
//! A cached block keeps its allocation bit set, so the cache's alloc and free write no line
//! that another thread or process writes (the bitmap words are shared by 64 blocks); what tells
//! a double free of a cached block is a tag in the block's own first bytes, confirmed by a scan
//! of the caches.
//!
//! # Crash safety
//!
//! The slot lives in shared memory, so nothing is lost with a process: a block is always in a
//! class list, in some slot's stack, or allocated (its bitmap bit set), except for the one a
//! process is moving, and every move takes the block out of its source with one store before
//! putting it in its destination with another. A process killed between the two leaks that one
//! block (`leaked_suspect`), as the locked path does. Never is a block in two places.
//!
//! # Ownership
//!
//! `owner` holds the thread's identity (`pid << 32 | tid`), `start` its start time and `ns` its
//! pid namespace. Only the owner touches its stacks. A slot whose owner is provably dead (its
//! `/proc/<pid>/task/<tid>` is gone or a zombie, or its start time differs: the tid was reused)
//! is adopted whole by the next thread that needs a slot, or emptied into the class lists by an
//! allocation that ran out of memory. A claim writes `owner` with [`CLAIMING`] first, then
//! `start` and `ns`, then `owner` without it: a checker that sees a slot mid-claim treats it as
//! alive. After `fork`, the child's threads have new identities and claim slots of their own;
//! the parent's stay the parent's.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::*;
use crate::sys::{self, ThreadState};

/// Slots per heap: threads beyond this many use the locked path.
pub(super) const SLOTS: usize = 64;
/// Classes with a thread cache: 0..CACHED, blocks up to 1 KiB.
pub(super) const CACHED: usize = 20;
/// Blocks a stack holds; refills and flushes move half of it.
pub(super) const DEPTH: u32 = 16;

const OWNER: usize = 0;
const START: usize = 8;
const NS: usize = 16;
const COUNTS: usize = 24;
const ENTRIES: usize = COUNTS + 4 * CACHED;
/// Bytes per slot, whole cache lines.
pub(super) const SLOT_SIZE: usize =
    (ENTRIES + 4 * CACHED * DEPTH as usize).div_ceil(CACHE_LINE) * CACHE_LINE;

/// Set in `owner` while a claim writes `start` and `ns` (identities use bits 0..63 only for
/// pids below 2^31).
const CLAIMING: u64 = 1 << 63;
/// The first 8 bytes of a block while it sits in a thread cache (cleared when it is handed out).
const CACHED_TAG: u64 = 0xB0A2_1CAC_4EDB_10C5;

/// "No slot" in the thread-local table.
const NO_SLOT: u32 = u32::MAX;

static NEXT_HEAP_ID: AtomicU64 = AtomicU64::new(1);

/// A process-unique id for a heap handle: the thread-local table is keyed by it, so an entry
/// left by a dropped handle can never be mistaken for a later handle's.
pub(super) fn new_heap_id() -> u64 {
    NEXT_HEAP_ID.fetch_add(1, Ordering::Relaxed)
}

thread_local! {
    /// (heap id, fork generation when claimed, slot or NO_SLOT), per heap handle used. The fork
    /// generation tells a child's copy of this table from its parent's.
    static MINE: RefCell<Vec<(u64, u64, u32)>> = const { RefCell::new(Vec::new()) };
    /// The entry of `MINE` used last: one load to find it on the hot path.
    static LAST: Cell<(u64, u64, u32)> = const { Cell::new((0, u64::MAX, NO_SLOT)) };
}

impl Heap {
    fn slot_word(&self, slot: usize, field: usize) -> &AtomicU64 {
        self.at(SLOTS_AT + slot * SLOT_SIZE + field)
    }

    fn slot_count(&self, slot: usize, c: usize) -> &AtomicU32 {
        self.at(SLOTS_AT + slot * SLOT_SIZE + COUNTS + 4 * c)
    }

    fn slot_entry(&self, slot: usize, c: usize, k: u32) -> &AtomicU32 {
        self.at(SLOTS_AT + slot * SLOT_SIZE + ENTRIES + 4 * (c * DEPTH as usize + k as usize))
    }

    /// Blocks of class `c` in `slot`'s stack (for stats: a garbage count reads as full).
    pub(super) fn cached_blocks(&self, slot: usize, c: usize) -> usize {
        if c >= CACHED {
            return 0;
        }
        self.slot_count(slot, c).load(Ordering::Acquire).min(DEPTH) as usize
    }

    /// This thread's slot for this handle, claimed on first use; `None` when every slot is
    /// taken by a live thread (the caller takes the locked path).
    #[inline]
    pub(super) fn my_slot(&self) -> Option<usize> {
        if let (Some(generation), Ok((id, g, slot))) =
            (baozi_sync::fork_generation(), LAST.try_with(Cell::get))
        {
            if id == self.s.id && g == generation {
                return (slot != NO_SLOT).then_some(slot as usize);
            }
        }
        self.my_slot_slow()
    }

    /// Finds this handle's entry in the thread's table, or claims a slot.
    #[cold]
    fn my_slot_slow(&self) -> Option<usize> {
        // Registers the fork handler on first use, so the generation below is meaningful.
        let me = baozi_sync::thread_identity();
        let generation = baozi_sync::fork_generation()?;
        // In a thread-local destructor the table may be gone: take the locked path then.
        let known = MINE
            .try_with(|m| {
                m.borrow()
                    .iter()
                    .find(|e| e.0 == self.s.id && e.1 == generation)
                    .map(|e| e.2)
            })
            .ok()?;
        let slot = match known {
            Some(slot) => slot,
            None => self.claim_slot(me, generation)?,
        };
        let _ = LAST.try_with(|l| l.set((self.s.id, generation, slot)));
        (slot != NO_SLOT).then_some(slot as usize)
    }

    /// Claims a slot for this thread and records it (or NO_SLOT) in the thread's table; `None`
    /// when the table is gone (thread exit).
    fn claim_slot(&self, me: u64, generation: u64) -> Option<u32> {
        let slot = self.find_slot(me);
        let entry = slot.map_or(NO_SLOT, |s| s as u32);
        let recorded = MINE.try_with(|m| {
            let mut m = m.borrow_mut();
            m.retain(|e| e.0 != self.s.id);
            m.push((self.s.id, generation, entry));
        });
        if recorded.is_err() {
            if let Some(s) = slot {
                self.slot_word(s, OWNER).store(0, Ordering::Release);
            }
            return None;
        }
        Some(entry)
    }

    fn find_slot(&self, me: u64) -> Option<usize> {
        let ns = baozi_sync::pid_namespace();
        let mine = (0..SLOTS).find(|&i| {
            self.slot_word(i, OWNER)
                .compare_exchange(0, me | CLAIMING, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        });
        let mine = mine.or_else(|| {
            (0..SLOTS).find(|&i| {
                let o = self.slot_word(i, OWNER).load(Ordering::Acquire);
                o != 0
                    && self.owner_is_dead(i, o, ns)
                    && self
                        .slot_word(i, OWNER)
                        .compare_exchange(o, me | CLAIMING, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
            })
        })?;
        let start = match sys::thread_state((me >> 32) as u32, me as u32) {
            ThreadState::Alive { start } => start,
            _ => 0,
        };
        self.slot_word(mine, START).store(start, Ordering::Relaxed);
        self.slot_word(mine, NS).store(ns, Ordering::Relaxed);
        // Publishes start and ns with the owner.
        self.slot_word(mine, OWNER).store(me, Ordering::Release);
        Some(mine)
    }

    /// Whether the owner `o` of `slot` is provably dead, seen from pid namespace `ns`. Anything
    /// uncertain (mid-claim, another namespace, unreadable /proc) reads as alive.
    fn owner_is_dead(&self, slot: usize, o: u64, ns: u64) -> bool {
        if o & CLAIMING != 0 || ns == 0 || self.slot_word(slot, NS).load(Ordering::Acquire) != ns {
            return false;
        }
        let start = self.slot_word(slot, START).load(Ordering::Acquire);
        if self.slot_word(slot, OWNER).load(Ordering::Acquire) != o {
            return false; // changed under us: someone claimed it
        }
        match sys::thread_state((o >> 32) as u32, o as u32) {
            ThreadState::Dead => true,
            ThreadState::Alive { start: now } => start != 0 && now != start,
            ThreadState::Unknown => false,
        }
    }

    /// Pops a block of class `c` (cached) from `slot`, refilling the stack when it is empty.
    #[inline]
    pub(super) fn alloc_cached(
        &self,
        slot: usize,
        c: usize,
        layout: Layout,
    ) -> Result<Offset<u8>, AllocError> {
        let count = self.slot_count(slot, c);
        let mut n = count.load(Ordering::Relaxed);
        if n == 0 {
            match self.refill_cache(slot, c, layout) {
                Err(AllocError::OutOfMemory { .. }) if self.sweep_dead_slots(slot)? > 0 => {
                    self.refill_cache(slot, c, layout)?
                }
                other => other?,
            }
            n = count.load(Ordering::Relaxed);
        }
        if n == 0 || n > DEPTH {
            return Err(self.corrupt(format!("thread cache {slot} class {c} count {n}")));
        }
        let link = self.slot_entry(slot, c, n - 1).load(Ordering::Relaxed);
        // COMMIT: the block leaves the cache.
        count.store(n - 1, Ordering::Release);
        let block = self.cached_block(link, c)?;
        let (chunk, index) = self.locate_small(block, c)?;
        // A cached block keeps its bit set (see `free_cached`): a clear one is on a free list.
        let word = self.bitmap_word(chunk, index / 64).load(Ordering::Acquire);
        if word & (1u64 << (index % 64)) == 0 {
            return Err(self.corrupt(format!("cached block at {block} is also free")));
        }
        self.tag(block).store(0, Ordering::Relaxed);
        Ok(Offset::new(block as u64))
    }

    /// The first 8 bytes of a block: [`CACHED_TAG`] while it sits in a thread cache.
    fn tag(&self, block: usize) -> &AtomicU64 {
        self.at(block)
    }

    /// Whether `block` (of class `c`) sits in any thread cache: the confirmation behind a
    /// [`CACHED_TAG`] found in a block being freed (user data may hold the same bytes).
    #[cold]
    pub(super) fn in_a_cache(&self, block: usize, c: usize) -> bool {
        let link = (block / 16) as u32;
        (0..SLOTS).any(|slot| {
            let n = self.slot_count(slot, c).load(Ordering::Acquire).min(DEPTH);
            (0..n).any(|k| self.slot_entry(slot, c, k).load(Ordering::Relaxed) == link)
        })
    }

    /// Whether freeing `block` would free a block that sits in a thread cache: a double free.
    #[inline]
    pub(super) fn freeing_a_cached_block(&self, block: usize, c: usize) -> bool {
        self.tag(block).load(Ordering::Relaxed) == CACHED_TAG && self.in_a_cache(block, c)
    }

    /// A cache entry as a block of class `c`, checked: a slot is shared memory like the rest.
    #[inline]
    fn cached_block(&self, link: u32, c: usize) -> Result<usize, AllocError> {
        let block = self.block_of_link(link)?;
        let chunk = (block - self.s.data_at) >> CHUNK_SHIFT;
        if self.map(chunk).load(Ordering::Acquire) != 1 + c as u32 {
            return Err(self.corrupt(format!(
                "thread cache entry {link:#x} is not a class {c} block"
            )));
        }
        Ok(block)
    }

    /// Pushes a freed block onto `slot`'s stack, first flushing half of a full stack to the
    /// class list. The block's bitmap bit stays set (a cached block is not on a free list), so
    /// alloc and free from the cache write no shared line at all; a double free is told by the
    /// bit (clear: the block is on a list) or by [`CACHED_TAG`] (confirmed by a scan of the
    /// caches: user data could hold those bytes).
    #[inline]
    pub(super) fn free_cached(
        &self,
        slot: usize,
        block: usize,
        c: usize,
        chunk: usize,
        index: usize,
    ) -> Result<(), AllocError> {
        let word = self.bitmap_word(chunk, index / 64).load(Ordering::Acquire);
        if word & (1u64 << (index % 64)) == 0 || self.freeing_a_cached_block(block, c) {
            return Err(AllocError::DoubleFree {
                offset: block as u64,
            });
        }
        let count = self.slot_count(slot, c);
        let mut n = count.load(Ordering::Relaxed);
        if n >= DEPTH {
            self.flush_cache(slot, c, DEPTH / 2)?;
            n = count.load(Ordering::Relaxed);
        }
        self.tag(block).store(CACHED_TAG, Ordering::Relaxed);
        self.slot_entry(slot, c, n)
            .store((block / 16) as u32, Ordering::Relaxed);
        // COMMIT: the block joins the cache.
        count.store(n + 1, Ordering::Release);
        Ok(())
    }

    /// Moves blocks from class `c`'s list to `slot`'s stack until it is half full (carving a
    /// new slab if the list is empty and the stack has none).
    #[cold]
    fn refill_cache(&self, slot: usize, c: usize, layout: Layout) -> Result<(), AllocError> {
        let _guard = self.lock_class(c)?;
        let count = self.slot_count(slot, c);
        let mut n = count.load(Ordering::Relaxed).min(DEPTH);
        while n < DEPTH / 2 {
            // COMMIT 1 (in pop_free): off the list; a death before COMMIT 2 leaks this block.
            // A fresh slab is carved only for an empty stack.
            let Some((link, block)) = self.pop_free(c, layout, n == 0)? else {
                break;
            };
            // A cached block counts as taken in the bitmap (a death from here to COMMIT 2
            // leaves it "used": still one block).
            let (chunk, index) = self.locate_small(block, c)?;
            self.mark_taken(block, chunk, index)?;
            self.tag(block).store(CACHED_TAG, Ordering::Relaxed);
            self.slot_entry(slot, c, n).store(link, Ordering::Relaxed);
            // COMMIT 2: into the cache.
            count.store(n + 1, Ordering::Release);
            n += 1;
        }
        Ok(())
    }

    /// Moves blocks from `slot`'s stack of class `c` to the class list until `keep` remain.
    fn flush_cache(&self, slot: usize, c: usize, keep: u32) -> Result<(), AllocError> {
        let _guard = self.lock_class(c)?;
        let count = self.slot_count(slot, c);
        let mut n = count.load(Ordering::Relaxed).min(DEPTH);
        while n > keep {
            let link = self.slot_entry(slot, c, n - 1).load(Ordering::Relaxed);
            let block = self.cached_block(link, c)?;
            let (chunk, index) = self.locate_small(block, c)?;
            // COMMIT 1: off the cache (a death before COMMIT 2 leaks this one block).
            count.store(n - 1, Ordering::Release);
            n -= 1;
            self.bitmap_word(chunk, index / 64)
                .fetch_and(!(1u64 << (index % 64)), Ordering::AcqRel);
            let head = self.class_head(c).load(Ordering::Relaxed);
            self.link(block).store(head, Ordering::Relaxed);
            // COMMIT 2: onto the list.
            self.class_head(c).store(link, Ordering::Release);
        }
        Ok(())
    }

    /// Empties the stacks of slots whose owners are dead into the class lists and frees the
    /// slots (when an allocation ran out of memory). Returns how many slots it emptied.
    #[cold]
    fn sweep_dead_slots(&self, mine: usize) -> Result<usize, AllocError> {
        let ns = baozi_sync::pid_namespace();
        let me = baozi_sync::thread_identity();
        let mut swept = 0;
        for i in (0..SLOTS).filter(|&i| i != mine) {
            let o = self.slot_word(i, OWNER).load(Ordering::Acquire);
            if o == 0 || !self.owner_is_dead(i, o, ns) {
                continue;
            }
            // Take it as if to claim it, so that no one else sweeps or adopts it meanwhile.
            if self
                .slot_word(i, OWNER)
                .compare_exchange(o, me | CLAIMING, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            for c in 0..CACHED {
                self.flush_cache(i, c, 0)?;
            }
            self.slot_word(i, OWNER).store(0, Ordering::Release);
            swept += 1;
        }
        Ok(swept)
    }

    /// Gives this thread's slot for this handle back (its stacks emptied into the class
    /// lists), when the handle is dropped. Other threads' slots for this handle stay theirs
    /// until they die (then the next claimer adopts them).
    pub(super) fn release_my_slot(&self) {
        let Some(generation) = baozi_sync::fork_generation() else {
            return; // no slot was ever claimed in this process
        };
        let _ = LAST.try_with(|l| {
            if l.get().0 == self.s.id {
                l.set((0, u64::MAX, NO_SLOT));
            }
        });
        let entry = MINE
            .try_with(|m| {
                let mut m = m.borrow_mut();
                let pos = m.iter().position(|e| e.0 == self.s.id)?;
                Some(m.swap_remove(pos))
            })
            .ok()
            .flatten();
        let Some((_, g, slot)) = entry else { return };
        if g != generation || slot == NO_SLOT {
            return;
        }
        let slot = slot as usize;
        for c in 0..CACHED {
            if self.flush_cache(slot, c, 0).is_err() {
                return; // keep the slot (and what it holds) rather than drop blocks
            }
        }
        self.slot_word(slot, OWNER).store(0, Ordering::Release);
    }
}

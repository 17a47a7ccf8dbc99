//! What the standalone primitives (Lock, RLock, Semaphore, BoundedSemaphore, Event, Condition,
//! Barrier) share: making and opening a region with the baozi header, and telling one primitive
//! from another on open.
//!
//! Every primitive is an [`ObjectKind::SYNC`] object whose layout checksum mixes in a subkind
//! constant of its own and the sizes of its body's parts. So opening an event as a semaphore
//! fails the checksum, and because each primitive's checksum is fixed (none is generic), the
//! opener can tell which primitive it found and say so ([`SyncError::WrongPrimitive`]).
//!
//! Layout: the 64-byte header at 0, the body from [`BODY_AT`] (one cache line in) onwards.

use baozi_shm::{
    HeaderSnapshot, LayoutHash, ObjectKind, Region, RegionRef, ShmError, CACHE_LINE,
    DEFAULT_READY_WAIT,
};

use crate::error::SyncError;
use crate::raw_mutex::RawRobustMutex;

/// Where every primitive's body starts: the first cache line after the header's.
pub(crate) const BODY_AT: usize = CACHE_LINE;

/// One kind of primitive: its subkind constant (1 is [`ShmMutex`](crate::ShmMutex)'s), its
/// name in errors, and its layout checksum.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Primitive {
    /// Mixed into the layout checksum; distinct per primitive.
    pub(crate) subkind: u64,
    /// How errors name it ("event").
    pub(crate) name: &'static str,
    /// The sizes and alignments of the body's parts, mixed into the checksum.
    pub(crate) layout_facts: fn() -> [u64; 4],
}

impl Primitive {
    /// The layout checksum of this primitive in this build.
    pub(crate) fn layout_hash(&self) -> u64 {
        let mut h = LayoutHash::new(ObjectKind::SYNC).u64(self.subkind);
        for fact in (self.layout_facts)() {
            h = h.u64(fact);
        }
        h.finish()
    }
}

/// Where an existing primitive is found: by name, or by a reference a handle wrote.
pub(crate) trait Source {
    /// Maps the region.
    fn region(self) -> Result<Region, ShmError>;
}

impl Source for &str {
    fn region(self) -> Result<Region, ShmError> {
        Region::open(self)
    }
}

impl Source for &RegionRef {
    fn region(self) -> Result<Region, ShmError> {
        Region::attach(self)
    }
}

/// Every primitive with a fixed layout checksum, to name the one found on a mismatch.
fn known() -> [&'static Primitive; 7] {
    [
        &crate::lock::PRIMITIVE,
        &crate::rlock::PRIMITIVE,
        &crate::semaphore::SEMAPHORE,
        &crate::semaphore::BOUNDED_SEMAPHORE,
        &crate::event::PRIMITIVE,
        &crate::condition::PRIMITIVE,
        &crate::barrier::PRIMITIVE,
    ]
}

/// Builds a primitive in a fresh `region` of `total` bytes: header begun, `init` writes the
/// body (nobody else can see it yet), then the header is published — the single sync point
/// after which openers may use the object.
pub(crate) fn build(
    region: Region,
    prim: &Primitive,
    total: usize,
    init: impl FnOnce(&Region) -> Result<(), SyncError>,
) -> Result<Region, SyncError> {
    debug_assert!(region.len() >= total);
    let header = region.header()?;
    header.begin(
        ObjectKind::SYNC,
        total as u64,
        prim.layout_hash(),
        std::process::id(),
    );
    header.set_identity(region.id(), None);
    init(&region)?;
    header.publish();
    Ok(region)
}

/// Opens the named object `name` and checks that it is a published `prim` of this build. The
/// caller then checks `total_size` against what the body says.
///
/// # Errors
/// [`SyncError::Shm`] (not found, foreign, wrong version or kind, truncated, not ready, layout
/// mismatch), [`SyncError::WrongPrimitive`] when it is another baozi-sync primitive.
pub(crate) fn open(
    src: impl Source,
    prim: &Primitive,
) -> Result<(Region, HeaderSnapshot), SyncError> {
    let region = src.region()?;
    let describe = region.describe();
    let snap = region.header()?.wait_ready(
        &describe,
        region.len() as u64,
        ObjectKind::SYNC,
        DEFAULT_READY_WAIT,
    )?;
    let expected = prim.layout_hash();
    if snap.layout_hash != expected {
        if let Some(found) = known()
            .into_iter()
            .find(|p| p.subkind != prim.subkind && p.layout_hash() == snap.layout_hash)
        {
            return Err(SyncError::WrongPrimitive {
                name: describe,
                found: found.name,
                expected: prim.name,
            });
        }
        snap.check_layout(&describe, expected)?;
    }
    if (snap.total_size as usize) < BODY_AT {
        return Err(truncated(&region, snap.total_size, BODY_AT));
    }
    Ok((region, snap))
}

/// A fixed-size primitive's check that the header's size is exactly its own.
pub(crate) fn check_size(
    region: &Region,
    snap: &HeaderSnapshot,
    total: usize,
) -> Result<(), SyncError> {
    if snap.total_size == total as u64 {
        Ok(())
    } else {
        Err(truncated(region, snap.total_size, total))
    }
}

fn truncated(region: &Region, size: u64, needed: usize) -> SyncError {
    ShmError::Truncated {
        name: region.describe(),
        size,
        needed: needed as u64,
    }
    .into()
}

/// `size_of` and `align_of` of `T`, for layout facts.
pub(crate) fn size_align<T>() -> [u64; 2] {
    [
        std::mem::size_of::<T>() as u64,
        std::mem::align_of::<T>() as u64,
    ]
}

/// The [`UnmapCheck`](baozi_shm::UnmapCheck) of the primitives with a robust mutex at
/// [`BODY_AT`] (`Lock`, `RLock`, `Condition`, `ShmMutex`): their mapping must stay while a thread
/// of this process holds that mutex, which glibc keeps on the thread's robust list (a lock
/// taken with `acquire` and never released, or a forgotten guard, when the last handle goes).
pub(crate) fn keep_while_held(base: *const u8, len: usize) -> bool {
    if len < BODY_AT + std::mem::size_of::<RawRobustMutex>() {
        return false;
    }
    // SAFETY: `base..base + len` is the mapping being dropped, still mapped; BODY_AT lies inside
    // it (checked above) and is aligned for the mutex; the object was published with the mutex
    // initialised (the check is registered only then).
    let mutex = unsafe { &*base.add(BODY_AT).cast::<RawRobustMutex>() };
    let tid = mutex.holder_tid();
    tid != 0 && std::path::Path::new(&format!("/proc/self/task/{tid}")).exists()
}

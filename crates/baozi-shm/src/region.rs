//! [`Region`]: a shared mapping that any process of the machine can reach: inherited across fork,
//! met by name, or attached from a [`RegionRef`] that travelled (in a message, a pool task, a
//! spawned process's arguments).
//!
//! # How a process that did not inherit a mapping reaches it
//!
//! Every region is backed by a file: a `memfd` for anonymous regions, a `/dev/shm` file for
//! named ones. Each process that maps a region keeps one descriptor of that file open for as long
//! as it has a handle. A [`RegionRef`] names the file by its identity (device and inode, plus the
//! name for named regions) and by where one holder keeps it open (pid and descriptor number).
//! [`Region::attach`] opens `/proc/<pid>/fd/<fd>` (or the name), checks that the file it got has
//! exactly that identity, and maps it. If that holder has gone, it looks through `/proc/*/fd` for
//! any other process holding the same file.
//!
//! The kernel counts the holders: an anonymous region's memory is freed when the last process
//! holding it exits or drops it, whatever killed it. So a `kill -9` of any holder, the creator
//! included, never makes the object unreachable for those still holding it, and an anonymous
//! object never leaves anything behind in `/dev/shm`.

use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::attach::{
    attached, cached, check_file, file_in_use, file_key, linger, lock_bounded, open_proc_fd,
    scan_holders,
};
use crate::error::ShmError;
use crate::header::{Header, HEADER_SIZE};
use crate::identity::ObjectId;
use crate::offset::Offset;
use crate::shm_safe::ShmSafe;
use crate::sys;

/// Every named object lives in `/dev/shm` as `baozi-NAME`, so leftovers are easy to find.
pub const NAME_PREFIX: &str = "baozi-";

/// The longest name accepted (the prefix and a slash are added; Linux allows 255 bytes).
pub const MAX_NAME_LEN: usize = 200;

/// The largest region baozi maps (1 TiB): far above any sane queue or heap, and it keeps every
/// offset and size comfortably inside `u64` and `isize` arithmetic.
pub const MAX_REGION_LEN: u64 = 1 << 40;

/// The prefix of an anonymous region's memfd name (`/proc/PID/fd/N -> /memfd:baozi:ID (deleted)`).
const MEMFD_PREFIX: &str = "baozi:";

/// A mapping of shared memory, read and written by several processes at once.
///
/// * [`Region::anonymous`]: shared with children forked after it is made, and with any process
///   given a [`RegionRef`] to it ([`Region::to_ref`], [`Region::attach`]). It disappears when the
///   last process holding it lets go.
/// * [`Region::create`] / [`Region::open`]: a named POSIX shared-memory object in `/dev/shm`, so
///   that unrelated programs meet by name. The creator owns the name and unlinks it when its last
///   handle is dropped, unless told to [`persist`](Region::persist); a forked child that inherited
///   the owner never unlinks.
///
/// `Region` is a cheap handle: a clone is another handle to the same mapping (an atomic count,
/// no syscall), and the mapping is unmapped when the last handle in the process is dropped.
///
/// A region hands out only `&T` for [`ShmSafe`] types, at bounds-checked [`Offset`]s.
///
/// ```
/// use baozi_shm::Region;
/// let region = Region::anonymous(4096)?;
/// let again = region.clone();
/// assert_eq!(again.as_ptr(), region.as_ptr());
/// assert_eq!(region.len(), 4096);
/// # Ok::<(), baozi_shm::ShmError>(())
/// ```
#[derive(Clone)]
pub struct Region {
    map: Arc<Mapping>,
    /// For the handles of the process that created the name: unlinks it when the last of them
    /// goes (a lingering mapping does not keep the name, see `to_ref`).
    owner: Option<Arc<NameOwner>>,
}

/// The creator's claim on a name; unlinks it on drop, in the creating process only.
struct NameOwner {
    /// `baozi-NAME`.
    name: String,
    pid: u32,
    unlink_on_drop: AtomicBool,
}

impl Drop for NameOwner {
    fn drop(&mut self) {
        // A forked child inherits the owner handle but not the ownership of the name.
        if self.unlink_on_drop.load(Ordering::Relaxed) && self.pid == sys::getpid() {
            let _ = sys::shm_unlink(&c_name(&self.name));
        }
    }
}

/// One mapping in this process, shared by every clone of a [`Region`].
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    pub(crate) len: usize,
    /// The backing file (memfd or `/dev/shm`), kept open so that other processes can reach it
    /// through `/proc/<our pid>/fd/<fd>`.
    fd: OwnedFd,
    /// Device and inode of the backing file: what a [`RegionRef`] is checked against.
    file: FileKey,
    id: ObjectId,
    /// `baozi-NAME` for named regions (without the leading slash); `None` when anonymous.
    name: Option<String>,
    /// Whether unmapping could leave a robust mutex that a thread of this process holds
    /// unreachable (see [`Region::set_unmap_check`]); such a mapping is kept until exit.
    unmap_check: OnceLock<UnmapCheck>,
}

/// Says whether a mapping (its base and length) must stay mapped: see
/// [`Region::set_unmap_check`].
pub type UnmapCheck = fn(base: *const u8, len: usize) -> bool;

/// Device and inode: a file's identity while it exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct FileKey {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
}

// SAFETY: the mapping is plain memory valid for the Mapping's lifetime in every thread; all access
// to its contents goes through `&T` with `T: ShmSafe` (Sync, atomics) or through raw pointers whose
// users uphold their own synchronisation.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` exposes no unsynchronised interior mutability of its own.
unsafe impl Sync for Mapping {}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Region")
            .field("object", &self.describe())
            .field("id", &self.map.id)
            .field("len", &self.map.len)
            .finish()
    }
}

/// A reference to a region that any process of the same machine (and user) can
/// [`attach`](Region::attach) to: what a handle writes when it is serialised.
///
/// It holds no resource: it does not keep the region alive. A reference to an anonymous region
/// attaches while at least one process still holds the region.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RegionRef {
    /// The region's identity (also the memfd's name for an anonymous region).
    pub id: u128,
    /// The `/dev/shm` name (`baozi-NAME`) of a named region.
    pub name: Option<String>,
    /// Device of the backing file.
    pub dev: u64,
    /// Inode of the backing file.
    pub ino: u64,
    /// A process that held the region when the reference was made.
    pub holder_pid: u32,
    /// The descriptor of the backing file in that process.
    pub holder_fd: i32,
}

fn check_len(len: u64) -> Result<usize, ShmError> {
    if len == 0 || len > MAX_REGION_LEN {
        return Err(ShmError::InvalidSize {
            what: "region length",
            requested: len,
            reason: format!("must be between 1 and {MAX_REGION_LEN} bytes"),
        });
    }
    Ok(len as usize)
}

/// Checks a user's name and returns the `/dev/shm` file name for it (`baozi-NAME`).
pub fn os_name(name: &str) -> Result<String, ShmError> {
    let bad = |reason| {
        Err(ShmError::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    let name = name.strip_prefix('/').unwrap_or(name);
    let name = name.strip_prefix(NAME_PREFIX).unwrap_or(name);
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("it is longer than 200 bytes");
    }
    if name == "." || name == ".." {
        return bad("it is a directory name");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-+@".contains(&b))
    {
        return bad("use only ASCII letters, digits and . _ - + @");
    }
    Ok(format!("{NAME_PREFIX}{name}"))
}

pub(crate) fn c_name(os_name: &str) -> CString {
    // Cannot fail: os_name() admits no NUL bytes.
    CString::new(format!("/{os_name}")).expect("validated name has no NUL")
}

impl Mapping {
    /// Maps `fd` (whose identity is `file`) and registers the mapping in [`attached`].
    fn map(
        fd: OwnedFd,
        file: FileKey,
        len: usize,
        id: ObjectId,
        name: Option<String>,
        display: &str,
    ) -> Result<Arc<Mapping>, ShmError> {
        let ptr = sys::mmap_shared(&fd, len).map_err(|e| ShmError::from_io("mmap", display, e))?;
        let map = Arc::new(Mapping {
            ptr,
            len,
            fd,
            file,
            id,
            name,
            unmap_check: OnceLock::new(),
        });
        if let Some(mut table) = lock_bounded(attached()) {
            table.retain(|_, w| w.strong_count() > 0);
            table.insert(file, Arc::downgrade(&map));
        }
        Ok(map)
    }
}

impl Region {
    /// Maps `len` zeroed bytes, shared with children forked after this call and with any process
    /// that [attaches](Self::attach) a [`RegionRef`] to it.
    ///
    /// # Errors
    /// [`ShmError::InvalidSize`] for 0 or more than [`MAX_REGION_LEN`]; [`ShmError::Io`] when
    /// the kernel refuses (`EMFILE`: this process has too many files open; raise `ulimit -n`).
    pub fn anonymous(len: usize) -> Result<Region, ShmError> {
        let len = check_len(len as u64)?;
        let id = ObjectId::new();
        let display = "anonymous region";
        let memfd_name = CString::new(format!("{MEMFD_PREFIX}{id}")).expect("hex has no NUL");
        let fd = sys::memfd_create(&memfd_name)
            .map_err(|e| ShmError::from_io("memfd_create", display, e))?;
        sys::ftruncate(&fd, len as u64).map_err(|e| ShmError::from_io("ftruncate", display, e))?;
        let file = file_key(&fd, display)?;
        let map = Mapping::map(fd, file, len, id, None, display)?;
        Ok(Region { map, owner: None })
    }

    /// Creates the named object `/dev/shm/baozi-NAME` of `len` zeroed bytes, exclusively.
    ///
    /// The region is unlinked when its creator drops its last handle, unless
    /// [`persist`](Self::persist)ed.
    ///
    /// # Errors
    /// [`ShmError::InvalidName`], [`ShmError::InvalidSize`], [`ShmError::AlreadyExists`],
    /// [`ShmError::PermissionDenied`], [`ShmError::Io`].
    pub fn create(name: &str, len: usize) -> Result<Region, ShmError> {
        let os = os_name(name)?;
        let len = check_len(len as u64)?;
        let cname = c_name(&os);
        let display = format!("/dev/shm/{os}");
        let fd = sys::shm_open(&cname, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL, 0o600)
            .map_err(|e| ShmError::from_io("shm_open", &display, e))?;
        let made = sys::ftruncate(&fd, len as u64)
            .map_err(|e| ShmError::from_io("ftruncate", &display, e))
            .and_then(|()| file_key(&fd, &display))
            .and_then(|file| {
                Mapping::map(fd, file, len, ObjectId::new(), Some(os.clone()), &display)
            });
        match made {
            Ok(map) => Ok(Region {
                map,
                owner: Some(Arc::new(NameOwner {
                    name: os,
                    pid: sys::getpid(),
                    unlink_on_drop: AtomicBool::new(true),
                })),
            }),
            Err(e) => {
                let _ = sys::shm_unlink(&cname);
                Err(e)
            }
        }
    }

    /// Creates `/dev/shm/baozi-NAME` if it does not exist, or opens it if it does: of several
    /// processes racing here, exactly one creates (and gets `true`); the others open what it made.
    ///
    /// The creator must then build the object in it; an opener sees a region that may still be
    /// empty, so objects above this layer wait for the header to be published.
    ///
    /// # Errors
    /// As [`create`](Self::create) and [`open`](Self::open).
    pub fn create_or_open(name: &str, len: usize) -> Result<(Region, bool), ShmError> {
        loop {
            match Region::create(name, len) {
                Ok(region) => return Ok((region, true)),
                Err(ShmError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
            match Region::open(name) {
                Ok(region) => return Ok((region, false)),
                // Unlinked between our create and our open (its owner dropped it): try again.
                Err(ShmError::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Opens the named object `/dev/shm/baozi-NAME` made by [`create`](Self::create).
    ///
    /// A missing name is an error at once; a region whose creator has not yet sized it is
    /// waited for up to [`DEFAULT_READY_WAIT`](crate::DEFAULT_READY_WAIT).
    ///
    /// # Errors
    /// [`ShmError::NotFound`], [`ShmError::PermissionDenied`], [`ShmError::NotReady`] (still empty
    /// after the wait), [`ShmError::InvalidName`], [`ShmError::Io`].
    pub fn open(name: &str) -> Result<Region, ShmError> {
        Self::open_inner(name, Duration::ZERO, crate::header::DEFAULT_READY_WAIT)
    }

    /// [`open`](Self::open), waiting at most `wait` for the name to appear *and* for its creator
    /// to size it: for a process that may start before the one that creates the object.
    ///
    /// # Errors
    /// As [`open`](Self::open); [`ShmError::NotFound`] when the name did not appear in time.
    pub fn open_timeout(name: &str, wait: Duration) -> Result<Region, ShmError> {
        Self::open_inner(name, wait, wait)
    }

    /// [`open`](Self::open) with both waits chosen: up to `name_wait` for the name to appear,
    /// then up to `size_wait` for its creator to size it.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_with(
        name: &str,
        name_wait: Duration,
        size_wait: Duration,
    ) -> Result<Region, ShmError> {
        Self::open_inner(name, name_wait, size_wait)
    }

    fn open_inner(
        name: &str,
        name_wait: Duration,
        size_wait: Duration,
    ) -> Result<Region, ShmError> {
        let os = os_name(name)?;
        let cname = c_name(&os);
        let display = format!("/dev/shm/{os}");
        let start = Instant::now();
        let mut pause = Duration::from_micros(100);
        let fd = loop {
            match sys::shm_open(&cname, libc::O_RDWR, 0) {
                Ok(fd) => break fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) && start.elapsed() < name_wait => {
                    std::thread::sleep(pause.min(name_wait.saturating_sub(start.elapsed())));
                    pause = (pause * 2).min(Duration::from_millis(10));
                }
                Err(e) => return Err(ShmError::from_io("shm_open", &display, e)),
            }
        };
        let start = Instant::now();
        let size = loop {
            let (_, size) =
                sys::file_stat(&fd).map_err(|e| ShmError::from_io("fstat", &display, e))?;
            if size > 0 {
                break size;
            }
            if start.elapsed() >= size_wait {
                return Err(ShmError::NotReady {
                    name: display,
                    waited: size_wait,
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let len = check_len(size)?;
        let file = file_key(&fd, &display)?;
        if let Some(map) = cached(file, len) {
            return Ok(Region { map, owner: None });
        }
        let map = Mapping::map(fd, file, len, ObjectId::from_raw(0), Some(os), &display)?;
        Ok(Region { map, owner: None })
    }

    /// A reference to this region that another process can [`attach`](Self::attach) to.
    ///
    /// Making a reference keeps this process's mapping for at least [`LINGER`](crate::LINGER) more (of at most
    /// [`LINGER_MAX`](crate::LINGER_MAX) recent objects), even if every handle here is dropped meanwhile: so a
    /// handle that is sent and then dropped (a pool task's result, a message put by a process
    /// that then lets go) still attaches on the other side, while this process lives.
    pub fn to_ref(&self) -> RegionRef {
        linger(&self.map);
        RegionRef {
            id: self.map.id.raw(),
            name: self.map.name.clone(),
            dev: self.map.file.dev,
            ino: self.map.file.ino,
            holder_pid: sys::getpid(),
            holder_fd: self.map.fd.as_raw_fd(),
        }
    }

    /// Maps the region `r` refers to, in this process: the same mapping if this process already
    /// has it, else through its name, the holder named in `r`, or any other process holding it.
    ///
    /// # Errors
    /// [`ShmError::Gone`] when no process holds it any more (and its name, if any, is gone);
    /// [`ShmError::PermissionDenied`] when its holders belong to another user;
    /// [`ShmError::Io`].
    pub fn attach(r: &RegionRef) -> Result<Region, ShmError> {
        let file = FileKey {
            dev: r.dev,
            ino: r.ino,
        };
        let display = match &r.name {
            Some(n) => format!("/dev/shm/{n}"),
            None => "anonymous region".to_owned(),
        };
        if let Some(map) = cached(file, 0) {
            return Ok(Region { map, owner: None });
        }
        let mut denied = None;
        let mut found = None;
        if let Some(name) = &r.name {
            if let Ok(fd) = sys::shm_open(&c_name(name), libc::O_RDWR, 0) {
                found = check_file(fd, file);
            }
        }
        if found.is_none() {
            let path = format!("/proc/{}/fd/{}", r.holder_pid, r.holder_fd);
            match open_proc_fd(&path, file) {
                Ok(fd) => found = fd,
                Err(e) => denied = Some(e),
            }
        }
        if found.is_none() {
            let wanted = match &r.name {
                Some(n) => format!("/dev/shm/{n}"),
                None => format!("/memfd:{MEMFD_PREFIX}{}", ObjectId::from_raw(r.id)),
            };
            found = scan_holders(&wanted, file, &mut denied);
        }
        let Some(fd) = found else {
            return Err(match denied {
                Some(source) => ShmError::PermissionDenied {
                    name: display,
                    source,
                },
                None => ShmError::Gone {
                    name: display,
                    id: ObjectId::from_raw(r.id),
                },
            });
        };
        let (_, size) = sys::file_stat(&fd).map_err(|e| ShmError::from_io("fstat", &display, e))?;
        let len = check_len(size)?;
        let map = Mapping::map(
            fd,
            file,
            len,
            ObjectId::from_raw(r.id),
            r.name.clone(),
            &display,
        )?;
        Ok(Region { map, owner: None })
    }

    /// Removes the name `/dev/shm/baozi-NAME`. Processes that have it mapped keep using it; the
    /// memory is freed when the last one unmaps.
    ///
    /// # Errors
    /// [`ShmError::NotFound`], [`ShmError::PermissionDenied`], [`ShmError::InvalidName`].
    pub fn unlink(name: &str) -> Result<(), ShmError> {
        let os = os_name(name)?;
        sys::shm_unlink(&c_name(&os))
            .map_err(|e| ShmError::from_io("shm_unlink", &format!("/dev/shm/{os}"), e))
    }

    /// Removes `/dev/shm/baozi-NAME` if it is a leftover: no process has it mapped or open (its
    /// creator was killed before it could unlink it, say by Ctrl-C). Returns whether it removed
    /// it; an object in use is kept (`Ok(false)`). This is how a program replaces a leftover of
    /// an earlier run before [`create`](Self::create); objects above this layer offer it as a
    /// `replace_stale` option.
    ///
    /// A process that opens the name between the check and the unlink keeps its mapping; the
    /// name is then gone for newcomers, as with any unlink.
    ///
    /// # Errors
    /// [`ShmError::InvalidName`], [`ShmError::PermissionDenied`], [`ShmError::Io`] (reading
    /// `/proc`).
    pub fn unlink_if_stale(name: &str) -> Result<bool, ShmError> {
        let os = os_name(name)?;
        let path = format!("/dev/shm/{os}");
        let file = match std::fs::metadata(&path) {
            Ok(m) => {
                use std::os::unix::fs::MetadataExt;
                FileKey {
                    dev: m.dev(),
                    ino: m.ino(),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(ShmError::from_io("stat", &path, e)),
        };
        if file_in_use(&path, file) {
            return Ok(false);
        }
        match Region::unlink(name) {
            Ok(()) => Ok(true),
            Err(ShmError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Keeps the name after this creator drops its last handle (it stays in `/dev/shm` until
    /// [`Region::unlink`]). Has no effect on regions that were opened, not created.
    pub fn persist(&self) {
        if let Some(owner) = &self.owner {
            owner.unlink_on_drop.store(false, Ordering::Relaxed);
        }
    }

    /// Registers the object's check for what must not be unmapped: when the last handle in this
    /// process goes, `must_stay(base, len)` is asked first, and a `true` keeps the mapping until
    /// the process ends. baozi-sync registers one that is true while a thread of this process
    /// holds one of the object's robust mutexes (glibc keeps held robust mutexes on a per-thread
    /// list, which must never point into unmapped memory). The first registration wins.
    pub fn set_unmap_check(&self, must_stay: UnmapCheck) {
        let _ = self.map.unmap_check.set(must_stay);
    }

    /// Whether this handle created the name (and so unlinks it on drop unless persisted).
    pub fn is_owner(&self) -> bool {
        self.owner.is_some()
    }

    /// The region's identity: set at creation for regions this process made or attached; 0 for
    /// a named region opened by name (the object's header holds its identity).
    pub fn id(&self) -> ObjectId {
        self.map.id
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.map.len
    }

    /// Always false: regions have at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The `/dev/shm` file name (`baozi-NAME`), or `None` for an anonymous region.
    pub fn os_name(&self) -> Option<&str> {
        self.map.name.as_deref()
    }

    /// The name without the prefix, as given to [`create`](Self::create).
    pub fn name(&self) -> Option<&str> {
        self.map.name.as_deref().map(|n| &n[NAME_PREFIX.len()..])
    }

    /// How errors and logs name this region: `/dev/shm/baozi-NAME` or `anonymous region`.
    pub fn describe(&self) -> String {
        match &self.map.name {
            Some(n) => format!("/dev/shm/{n}"),
            None => "anonymous region".to_owned(),
        }
    }

    /// Whether two handles share one mapping.
    pub fn same_mapping(&self, other: &Region) -> bool {
        Arc::ptr_eq(&self.map, &other.map)
    }

    /// The base address in this process. Valid only here and only while a handle to the region
    /// lives: store [`Offset`]s in shared memory, never this pointer.
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.ptr.as_ptr()
    }

    /// Checks that `len` bytes at `offset` lie inside the region and are aligned to `align`.
    ///
    /// # Errors
    /// [`ShmError::OutOfBounds`].
    pub fn check_range(&self, offset: u64, len: u64, align: usize) -> Result<(), ShmError> {
        let end = offset.checked_add(len);
        let aligned = (self.as_ptr() as usize).wrapping_add(offset as usize) % align == 0;
        match end {
            Some(end) if end <= self.map.len as u64 && aligned => Ok(()),
            _ => Err(ShmError::OutOfBounds {
                offset,
                len,
                region_len: self.map.len as u64,
            }),
        }
    }

    /// Resolves `offset` to a reference, after checking bounds and alignment.
    ///
    /// # Errors
    /// [`ShmError::OutOfBounds`].
    pub fn get<T: ShmSafe>(&self, offset: Offset<T>) -> Result<&T, ShmError> {
        self.check_range(
            offset.get(),
            std::mem::size_of::<T>() as u64,
            std::mem::align_of::<T>(),
        )?;
        // SAFETY: (1) the range is inside our live mapping and aligned (checked above);
        // (2) T: ShmSafe, so any bytes there are a valid T and shared access through &T is sound;
        // (3) the reference borrows self, which keeps the mapping alive.
        Ok(unsafe { &*self.as_ptr().add(offset.get() as usize).cast::<T>() })
    }

    /// The [`Header`] at offset 0.
    ///
    /// # Errors
    /// [`ShmError::Truncated`] if the region is smaller than a header.
    pub fn header(&self) -> Result<&Header, ShmError> {
        if self.map.len < HEADER_SIZE {
            return Err(ShmError::Truncated {
                name: self.describe(),
                size: self.map.len as u64,
                needed: HEADER_SIZE as u64,
            });
        }
        self.get(Offset::new(0))
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // A robust mutex in the region that a thread of this process holds is on that thread's
        // robust list in glibc: unmapping it would leave the list pointing at unmapped memory,
        // and the thread's next lock would fault. Such a mapping stays until the process ends.
        let keep = self
            .unmap_check
            .get()
            .is_some_and(|must_stay| must_stay(self.ptr.as_ptr(), self.len));
        if !keep {
            // SAFETY: ptr/len is the mapping made in `Mapping::map`; every reference handed out
            // borrowed a Region holding this Mapping, so none is alive now.
            let unmapped = unsafe { sys::munmap(self.ptr, self.len) };
            debug_assert!(
                unmapped.is_ok() || std::thread::panicking(),
                "munmap: {unmapped:?}"
            );
        }
        // try_lock: a forked child of a threaded parent may find the table locked for ever; a
        // dead entry left behind is harmless (it no longer upgrades) and pruned later.
        if let Ok(mut table) = attached().try_lock() {
            if table.get(&self.file).is_some_and(|w| w.strong_count() == 0) {
                table.remove(&self.file);
            }
        }
    }
}

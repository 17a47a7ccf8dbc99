//! [`Region`]: a shared mapping, anonymous (inherited across fork) or named (met by name).

use std::ffi::CString;
use std::io;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use crate::error::ShmError;
use crate::header::{Header, ObjectKind, HEADER_SIZE, MAGIC};
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

/// A mapping of shared memory, read and written by several processes at once.
///
/// * [`Region::anonymous`]: shared with children forked *after* it is made (`MAP_SHARED |
///   MAP_ANONYMOUS`). It disappears when the last process unmaps it.
/// * [`Region::create`] / [`Region::open`]: a named POSIX shared-memory object in `/dev/shm`, so
///   that unrelated programs meet by name. The creator owns the name and unlinks it on drop unless
///   told to [`persist`](Region::persist); a forked child that inherited the owner never unlinks.
///
/// A region hands out only `&T` for [`ShmSafe`] types, at bounds-checked [`Offset`]s.
///
/// ```
/// use baozi_shm::Region;
/// let region = Region::anonymous(4096)?;
/// assert_eq!(region.len(), 4096);
/// # Ok::<(), baozi_shm::ShmError>(())
/// ```
#[derive(Debug)]
pub struct Region {
    ptr: NonNull<u8>,
    len: usize,
    /// `baozi-NAME` for named regions (without the leading slash); `None` when anonymous.
    name: Option<String>,
    /// The process that created the name; only it unlinks on drop.
    owner_pid: Option<u32>,
    unlink_on_drop: bool,
}

// SAFETY: the mapping is plain memory valid for the Region's lifetime in every thread; all access
// to its contents goes through `&T` with `T: ShmSafe` (Sync, atomics) or through raw pointers whose
// users uphold their own synchronisation.
unsafe impl Send for Region {}
// SAFETY: as above; `&Region` exposes no unsynchronised interior mutability of its own.
unsafe impl Sync for Region {}

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

fn c_name(os_name: &str) -> CString {
    // Cannot fail: os_name() admits no NUL bytes.
    CString::new(format!("/{os_name}")).expect("validated name has no NUL")
}

impl Region {
    /// Maps `len` zeroed bytes shared with children forked after this call.
    ///
    /// # Errors
    /// [`ShmError::InvalidSize`] for 0 or more than [`MAX_REGION_LEN`]; [`ShmError::Io`] when
    /// the kernel refuses the mapping.
    pub fn anonymous(len: usize) -> Result<Region, ShmError> {
        let len = check_len(len as u64)?;
        let ptr = sys::mmap_shared(None, len)
            .map_err(|e| ShmError::from_io("mmap", "anonymous region", e))?;
        Ok(Region {
            ptr,
            len,
            name: None,
            owner_pid: None,
            unlink_on_drop: false,
        })
    }

    /// Creates the named object `/dev/shm/baozi-NAME` of `len` zeroed bytes, exclusively.
    ///
    /// The region is unlinked when dropped by its creator, unless [`persist`](Self::persist)ed.
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
            .and_then(|()| {
                sys::mmap_shared(Some(&fd), len).map_err(|e| ShmError::from_io("mmap", &display, e))
            });
        match made {
            Ok(ptr) => Ok(Region {
                ptr,
                len,
                name: Some(os),
                owner_pid: Some(sys::getpid()),
                unlink_on_drop: true,
            }),
            Err(e) => {
                let _ = sys::shm_unlink(&cname);
                Err(e)
            }
        }
    }

    /// Opens the named object `/dev/shm/baozi-NAME` made by [`create`](Self::create).
    ///
    /// A region whose creator has not yet sized it is waited for up to
    /// [`DEFAULT_READY_WAIT`](crate::DEFAULT_READY_WAIT).
    ///
    /// # Errors
    /// [`ShmError::NotFound`], [`ShmError::PermissionDenied`], [`ShmError::NotReady`] (still empty
    /// after the wait), [`ShmError::InvalidName`], [`ShmError::Io`].
    pub fn open(name: &str) -> Result<Region, ShmError> {
        Self::open_timeout(name, crate::header::DEFAULT_READY_WAIT)
    }

    /// [`open`](Self::open), waiting at most `wait` for a creator that has not sized it yet.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_timeout(name: &str, wait: Duration) -> Result<Region, ShmError> {
        let os = os_name(name)?;
        let cname = c_name(&os);
        let display = format!("/dev/shm/{os}");
        let fd = sys::shm_open(&cname, libc::O_RDWR, 0)
            .map_err(|e| ShmError::from_io("shm_open", &display, e))?;
        let start = Instant::now();
        let size = loop {
            let size = sys::file_size(&fd).map_err(|e| ShmError::from_io("fstat", &display, e))?;
            if size > 0 {
                break size;
            }
            if start.elapsed() >= wait {
                return Err(ShmError::NotReady {
                    name: display,
                    waited: wait,
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let len = check_len(size)?;
        let ptr =
            sys::mmap_shared(Some(&fd), len).map_err(|e| ShmError::from_io("mmap", &display, e))?;
        Ok(Region {
            ptr,
            len,
            name: Some(os),
            owner_pid: None,
            unlink_on_drop: false,
        })
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

    /// Keeps the name after this creator drops the region (it stays in `/dev/shm` until
    /// [`Region::unlink`]). Has no effect on regions that were opened, not created.
    pub fn persist(&mut self) {
        self.unlink_on_drop = false;
    }

    /// Whether this handle created the name (and so unlinks it on drop unless persisted).
    pub fn is_owner(&self) -> bool {
        self.owner_pid.is_some()
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: regions have at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The `/dev/shm` file name (`baozi-NAME`), or `None` for an anonymous region.
    pub fn os_name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The name without the prefix, as given to [`create`](Self::create).
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref().map(|n| &n[NAME_PREFIX.len()..])
    }

    /// How errors and logs name this region: `/dev/shm/baozi-NAME` or `anonymous region`.
    pub fn describe(&self) -> String {
        match &self.name {
            Some(n) => format!("/dev/shm/{n}"),
            None => "anonymous region".to_owned(),
        }
    }

    /// The base address in this process. Valid only here and only while `self` lives: store
    /// [`Offset`]s in shared memory, never this pointer.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Checks that `len` bytes at `offset` lie inside the region and are aligned to `align`.
    ///
    /// # Errors
    /// [`ShmError::OutOfBounds`].
    pub fn check_range(&self, offset: u64, len: u64, align: usize) -> Result<(), ShmError> {
        let end = offset.checked_add(len);
        let aligned = (self.ptr.as_ptr() as usize).wrapping_add(offset as usize) % align == 0;
        match end {
            Some(end) if end <= self.len as u64 && aligned => Ok(()),
            _ => Err(ShmError::OutOfBounds {
                offset,
                len,
                region_len: self.len as u64,
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
        // (3) the reference borrows self, so it cannot outlive the mapping.
        Ok(unsafe { &*self.ptr.as_ptr().add(offset.get() as usize).cast::<T>() })
    }

    /// The [`Header`] at offset 0.
    ///
    /// # Errors
    /// [`ShmError::Truncated`] if the region is smaller than a header.
    pub fn header(&self) -> Result<&Header, ShmError> {
        if self.len < HEADER_SIZE {
            return Err(ShmError::Truncated {
                name: self.describe(),
                size: self.len as u64,
                needed: HEADER_SIZE as u64,
            });
        }
        self.get(Offset::new(0))
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: ptr/len is the mapping made in the constructor; every reference handed out
        // borrowed `self`, so none is alive now.
        let unmapped = unsafe { sys::munmap(self.ptr, self.len) };
        debug_assert!(
            unmapped.is_ok() || std::thread::panicking(),
            "munmap: {unmapped:?}"
        );
        if let (Some(name), Some(pid)) = (&self.name, self.owner_pid) {
            // A forked child inherits the owner handle but not the ownership of the name.
            if self.unlink_on_drop && pid == sys::getpid() {
                let _ = sys::shm_unlink(&c_name(name));
            }
        }
    }
}

/// One baozi object found in `/dev/shm` by [`list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShmEntry {
    /// The name as passed to `open` (without the `baozi-` prefix).
    pub name: String,
    /// Size of the file in bytes.
    pub size: u64,
    /// The object's kind, when it has a valid baozi header.
    pub kind: Option<ObjectKind>,
    /// The creator's pid, when it has a valid baozi header.
    pub creator_pid: Option<u32>,
    /// Whether a process with the creator's pid still exists.
    pub creator_alive: bool,
    /// Pids of the processes that have it mapped now (from `/proc/*/maps`; only those this user
    /// may read).
    pub mapped_by: Vec<u32>,
}

impl ShmEntry {
    /// No process maps it, so nobody can be using it: safe to [`Region::unlink`].
    pub fn is_orphan(&self) -> bool {
        self.mapped_by.is_empty()
    }
}

/// Lists the baozi objects in `/dev/shm` (names starting with [`NAME_PREFIX`]), to find and
/// remove leftovers.
///
/// ```
/// for entry in baozi_shm::list()? {
///     if entry.is_orphan() && !entry.creator_alive {
///         println!("leftover: {} ({} bytes)", entry.name, entry.size);
///     }
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
/// The `io::Error` of reading `/dev/shm`.
pub fn list() -> io::Result<Vec<ShmEntry>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir("/dev/shm")? {
        let entry = entry?;
        if let Some(n) = entry.file_name().to_str() {
            if let Some(rest) = n.strip_prefix(NAME_PREFIX) {
                names.push((rest.to_owned(), n.to_owned()));
            }
        }
    }
    names.sort();
    let maps = mapped_shm_files();
    let mut out = Vec::with_capacity(names.len());
    for (name, os) in names {
        let mut header = [0u8; HEADER_SIZE];
        let (size, kind, creator_pid) = match sys::shm_open(&c_name(&os), libc::O_RDONLY, 0) {
            Ok(fd) => {
                let size = sys::file_size(&fd).unwrap_or(0);
                let n = sys::pread(&fd, &mut header, 0).unwrap_or(0);
                let magic = u64::from_le_bytes(header[0..8].try_into().unwrap_or([0; 8]));
                if n == HEADER_SIZE && magic == MAGIC {
                    let kind = u32::from_le_bytes(header[12..16].try_into().unwrap_or([0; 4]));
                    let pid = u32::from_le_bytes(header[32..36].try_into().unwrap_or([0; 4]));
                    (size, Some(ObjectKind::from_raw(kind)), Some(pid))
                } else {
                    (size, None, None)
                }
            }
            Err(_) => (0, None, None),
        };
        let path = format!("/dev/shm/{os}");
        let mapped_by = maps
            .iter()
            .filter(|(_, p)| *p == path)
            .map(|(pid, _)| *pid)
            .collect();
        out.push(ShmEntry {
            name,
            size,
            kind,
            creator_alive: creator_pid.is_some_and(sys::pid_exists),
            creator_pid,
            mapped_by,
        });
    }
    Ok(out)
}

/// (pid, path) for every `/dev/shm/baozi-*` mapping in `/proc/*/maps` that we may read.
fn mapped_shm_files() -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(maps) = std::fs::read_to_string(entry.path().join("maps")) else {
            continue;
        };
        for line in maps.lines() {
            if let Some(at) = line.find("/dev/shm/baozi-") {
                let path = line[at..].trim_end_matches(" (deleted)").to_owned();
                if !out.iter().any(|(p, q)| *p == pid && *q == path) {
                    out.push((pid, path));
                }
            }
        }
    }
    out
}

/// Why [`ShmEntry::check_removable`] keeps an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeepReason {
    /// The header could not be read or is not a complete baozi header (garbage, a foreign file,
    /// or an object whose creator has not finished writing it): nothing proves it is ours.
    HeaderInvalid(String),
    /// The creator is still running.
    CreatorAlive(u32),
    /// Live processes map it (from `/proc/*/maps`).
    Mapped(Vec<u32>),
    /// Live processes hold it open (from `/proc/*/fd`).
    Open(Vec<u32>),
}

impl std::fmt::Display for KeepReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeepReason::HeaderInvalid(why) => write!(f, "header not valid: {why}"),
            KeepReason::CreatorAlive(pid) => write!(f, "creator {pid} is alive"),
            KeepReason::Mapped(pids) => write!(f, "mapped by {pids:?}"),
            KeepReason::Open(pids) => write!(f, "open in {pids:?}"),
        }
    }
}

/// What [`ShmEntry::read_valid_header`] found in a complete, valid header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValidHeader {
    /// The object's kind.
    pub kind: ObjectKind,
    /// Its total size in bytes, header included.
    pub total_size: u64,
    /// The pid of the process that created it.
    pub creator_pid: u32,
}

impl ShmEntry {
    /// Pids of live processes that hold the object open (from `/proc/*/fd`; only those this
    /// user may read).
    pub fn open_by(&self) -> Vec<u32> {
        let path = format!("/dev/shm/{NAME_PREFIX}{}", self.name);
        let mut out = Vec::new();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return out;
        };
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
                continue;
            };
            let holds = fds.flatten().any(|fd| {
                std::fs::read_link(fd.path()).is_ok_and(|target| {
                    let t = target.to_string_lossy();
                    t.trim_end_matches(" (deleted)") == path
                })
            });
            if holds {
                out.push(pid);
            }
        }
        out
    }

    /// Reads the object's header again and checks it is a complete baozi header (magic, format
    /// version, ready state, a size that fits the file, a creator pid).
    ///
    /// # Errors
    /// What is wrong with it, in words.
    pub fn read_valid_header(&self) -> Result<ValidHeader, String> {
        use std::io::Read;
        let path = format!("/dev/shm/{NAME_PREFIX}{}", self.name);
        let mut file = std::fs::File::open(&path).map_err(|e| format!("cannot open: {e}"))?;
        let size = file.metadata().map_err(|e| e.to_string())?.len();
        let mut h = [0u8; HEADER_SIZE];
        file.read_exact(&mut h)
            .map_err(|_| format!("{size} bytes, shorter than a header"))?;
        let u64_at = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().expect("8 bytes"));
        let u32_at = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().expect("4 bytes"));
        let (magic, version) = (u64_at(0), u32_at(8));
        let snap = ValidHeader {
            kind: ObjectKind::from_raw(u32_at(12)),
            total_size: u64_at(16),
            creator_pid: u32_at(32),
        };
        if magic != MAGIC {
            return Err(format!("magic {magic:#x} is not baozi's"));
        }
        if version != crate::header::FORMAT_VERSION {
            return Err(format!("format version {version}"));
        }
        // The state word of header.rs: "REDY" once the creator has published the object.
        const READY_WORD: u32 = 0x5245_4459;
        if u32_at(36) != READY_WORD {
            return Err("its creator has not finished writing it".to_owned());
        }
        if snap.total_size < HEADER_SIZE as u64 || snap.total_size > size {
            return Err(format!(
                "total size {} does not fit the file of {size} bytes",
                snap.total_size
            ));
        }
        if snap.creator_pid == 0 {
            return Err("no creator pid".to_owned());
        }
        Ok(snap)
    }

    /// Whether `shm clean` may remove the object: its header reads back valid, its creator is
    /// gone, and no live process maps it or holds it open. Checked afresh at each call.
    ///
    /// # Errors
    /// The reason to keep it.
    pub fn check_removable(&self) -> Result<(), KeepReason> {
        let snap = self
            .read_valid_header()
            .map_err(KeepReason::HeaderInvalid)?;
        if sys::pid_exists(snap.creator_pid) {
            return Err(KeepReason::CreatorAlive(snap.creator_pid));
        }
        let path = format!("/dev/shm/{NAME_PREFIX}{}", self.name);
        let mapped: Vec<u32> = mapped_shm_files()
            .into_iter()
            .filter(|(_, p)| *p == path)
            .map(|(pid, _)| pid)
            .collect();
        if !mapped.is_empty() {
            return Err(KeepReason::Mapped(mapped));
        }
        let open = self.open_by();
        if !open.is_empty() {
            return Err(KeepReason::Open(open));
        }
        Ok(())
    }
}

//! How a process reaches a region it did not make: the table of mappings this process has, the
//! linger that keeps a sent region reachable, the search of `/proc` for a holder, and the
//! reason a handle did not attach (kept for serde formats that drop it). See the module doc of
//! `region.rs` for the design.

use std::collections::HashMap;
#[cfg(feature = "serde")]
use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use crate::error::ShmError;
use crate::list::mapped_shm_files;
use crate::region::{FileKey, Mapping};
#[cfg(feature = "serde")]
use crate::region::{Region, RegionRef};
use crate::sys;

/// Locks one of this module's process-wide tables, giving up after 100 ms.
///
/// The tables are held for microseconds, so a lock still taken after 100 ms was taken by a thread
/// that does not exist here: this is the child of a fork made while another thread of the parent
/// held it. Such a child goes on without the table (no sharing of mappings, no linger) instead of
/// hanging.
pub(crate) fn lock_bounded<T>(m: &Mutex<T>) -> Option<std::sync::MutexGuard<'_, T>> {
    let start = Instant::now();
    loop {
        match m.try_lock() {
            Ok(g) => return Some(g),
            Err(std::sync::TryLockError::Poisoned(p)) => return Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => {
                if start.elapsed() > Duration::from_millis(100) {
                    return None;
                }
                std::thread::yield_now();
            }
        }
    }
}

/// How long a process keeps a region it made a [`RegionRef`](crate::RegionRef) to: see [`Region::to_ref`](crate::Region::to_ref).
pub const LINGER: Duration = Duration::from_secs(10);

/// The most regions a process keeps lingering; the oldest goes first.
pub const LINGER_MAX: usize = 256;

/// Keeps `map` alive for [`LINGER`] (refreshing it if it is already lingering).
pub(crate) fn linger(map: &Arc<Mapping>) {
    use std::collections::VecDeque;
    static LINGERING: Mutex<VecDeque<(Instant, Arc<Mapping>)>> = Mutex::new(VecDeque::new());
    let now = Instant::now();
    let Some(mut list) = lock_bounded(&LINGERING) else {
        return;
    };
    list.retain(|(at, m)| now.duration_since(*at) < LINGER && !Arc::ptr_eq(m, map));
    if list.len() >= LINGER_MAX {
        list.pop_front();
    }
    list.push_back((now, Arc::clone(map)));
}

/// The mappings this process has, by backing file, so that attaching an object the process
/// already maps (a queue passed to the same worker twice) shares the mapping instead of making
/// another.
pub(crate) fn attached() -> &'static Mutex<HashMap<FileKey, Weak<Mapping>>> {
    static ATTACHED: OnceLock<Mutex<HashMap<FileKey, Weak<Mapping>>>> = OnceLock::new();
    ATTACHED.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The mapping of `file` this process already has, if any (and at least `min_len` long).
pub(crate) fn cached(file: FileKey, min_len: usize) -> Option<Arc<Mapping>> {
    let table = lock_bounded(attached())?;
    table
        .get(&file)
        .and_then(Weak::upgrade)
        .filter(|m| m.len >= min_len)
}

pub(crate) fn file_key(fd: &OwnedFd, display: &str) -> Result<FileKey, ShmError> {
    let ((dev, ino), _) = sys::file_stat(fd).map_err(|e| ShmError::from_io("fstat", display, e))?;
    Ok(FileKey { dev, ino })
}

/// `fd` if it is the file `want`.
pub(crate) fn check_file(fd: OwnedFd, want: FileKey) -> Option<OwnedFd> {
    match sys::file_stat(&fd) {
        Ok(((dev, ino), _)) if FileKey { dev, ino } == want => Some(fd),
        _ => None,
    }
}

/// Opens a `/proc/PID/fd/N` link and keeps it if it is the file `want`. A permission refusal is
/// an error (to report if nothing else works); a missing process or descriptor is `Ok(None)`.
pub(crate) fn open_proc_fd(path: &str, want: FileKey) -> io::Result<Option<OwnedFd>> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
    {
        Ok(file) => Ok(check_file(OwnedFd::from(file), want)),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Err(e),
        Err(_) => Ok(None),
    }
}

thread_local! {
    static ATTACH_ERROR: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Why the last handle this thread tried to deserialise did not attach, if one failed since the
/// last call (and clears it).
///
/// Serde formats may drop a custom error's text (postcard's `SerdeDeCustom` does), so the typed
/// reason — [`ShmError::Gone`](crate::ShmError::Gone), [`ShmError::TypeMismatch`](crate::ShmError::TypeMismatch), ... — would be lost on the way out of
/// `Deserialize`. baozi's own codecs (queue messages, pool arguments and results) add it to the
/// error they report; code that deserialises handles with another format can ask here.
pub fn take_attach_error() -> Option<String> {
    ATTACH_ERROR.with(|e| e.borrow_mut().take())
}

/// Records `e` as the reason a handle did not attach (see [`take_attach_error`]) and turns it
/// into the deserialiser's error: what every handle's `Deserialize` returns on failure.
#[cfg(feature = "serde")]
pub fn attach_failed<E: serde::de::Error>(e: impl fmt::Display) -> E {
    let text = e.to_string();
    ATTACH_ERROR.with(|slot| *slot.borrow_mut() = Some(text.clone()));
    E::custom(text)
}

#[cfg(feature = "serde")]
impl serde::Serialize for Region {
    /// Writes a [`RegionRef`](crate::RegionRef) (see [`Region::to_ref`](crate::Region::to_ref)).
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_ref().serialize(s)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Region {
    /// Attaches to the region (see [`Region::attach`]).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = RegionRef::deserialize(d)?;
        Region::attach(&r).map_err(attach_failed)
    }
}

/// Every `/proc/PID/fd/N` whose link target is `wanted` (or `wanted (deleted)`), as (pid, path).
pub(crate) fn holders_of(wanted: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let target = target.to_string_lossy();
            if target.strip_suffix(" (deleted)").unwrap_or(&target) == wanted {
                out.push((pid, fd.path().to_string_lossy().into_owned()));
            }
        }
    }
    out
}

/// Looks through every process's descriptors for one holding `file` (named `wanted`).
pub(crate) fn scan_holders(
    wanted: &str,
    file: FileKey,
    denied: &mut Option<io::Error>,
) -> Option<OwnedFd> {
    for (_, path) in holders_of(wanted) {
        match open_proc_fd(&path, file) {
            Ok(Some(fd)) => return Some(fd),
            Ok(None) => {}
            Err(e) => *denied = Some(e),
        }
    }
    None
}

/// Whether any process (this one included) has `path` mapped or open.
pub(crate) fn file_in_use(path: &str, file: FileKey) -> bool {
    if !holders_of(path).is_empty() {
        return true;
    }
    mapped_shm_files().iter().any(|(_, p)| p == path)
        || lock_bounded(attached())
            .map_or(true, |t| t.get(&file).is_some_and(|w| w.strong_count() > 0))
}

//! [`list`]: the baozi objects in `/dev/shm`, who maps and holds them, and whether one may be
//! removed as a leftover.

use std::io;

use crate::attach::holders_of;
use crate::header::{ObjectKind, HEADER_SIZE, MAGIC};
use crate::region::{c_name, NAME_PREFIX};
use crate::sys;

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
    /// No process maps it, so nobody can be using it: safe to [`Region::unlink`](crate::Region::unlink).
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
pub(crate) fn mapped_shm_files() -> Vec<(u32, String)> {
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
        let mut pids: Vec<u32> = holders_of(&path).into_iter().map(|(pid, _)| pid).collect();
        pids.dedup();
        pids
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

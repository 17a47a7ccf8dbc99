//! Linux: `shm_open`, `memfd_create`, `ftruncate`, `fstat`, `mmap`, `munmap`, `shm_unlink`,
//! through nix.
//!
//! Thin wrappers with POSIX names that turn errno into `io::Error` at once. The one `unsafe`
//! left is `mmap`/`munmap` themselves: a mapping is memory Rust cannot check, and nix leaves
//! them unsafe too.
//!
//! memmap2 is not used: its shared maps are `MmapMut` values that own the mapping and unmap it
//! on drop, while a region's mapping is owned by the `Arc` every handle shares and must outlive
//! the descriptor it came from in some cases (a kept mapping, see `Region::set_unmap_check`);
//! the two calls it would replace are these.

use std::ffi::CString;
use std::io;
use std::num::NonZeroUsize;
use std::os::fd::OwnedFd;
use std::ptr::NonNull;

use nix::fcntl::OFlag;
use nix::sys::memfd::MFdFlags;
use nix::sys::mman::{MapFlags, ProtFlags};
use nix::sys::stat::Mode;

fn io_err(e: nix::errno::Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// `shm_open(name, flags | O_CLOEXEC, mode)`.
pub(crate) fn shm_open(
    name: &CString,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_CLOEXEC;
    nix::sys::mman::shm_open(name.as_c_str(), flags, Mode::from_bits_truncate(mode)).map_err(io_err)
}

/// `shm_unlink(name)`.
pub(crate) fn shm_unlink(name: &CString) -> io::Result<()> {
    nix::sys::mman::shm_unlink(name.as_c_str()).map_err(io_err)
}

/// `ftruncate(fd, len)`.
pub(crate) fn ftruncate(fd: &OwnedFd, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    nix::unistd::ftruncate(fd, len).map_err(io_err)
}

/// The size of the file behind `fd`, from `fstat`.
pub(crate) fn file_size(fd: &OwnedFd) -> io::Result<u64> {
    file_stat(fd).map(|(_, size)| size)
}

/// `((device, inode), size)` of the file behind `fd`, from `fstat`.
pub(crate) fn file_stat(fd: &OwnedFd) -> io::Result<((u64, u64), u64)> {
    let st = nix::sys::stat::fstat(fd).map_err(io_err)?;
    Ok(((st.st_dev, st.st_ino), st.st_size as u64))
}

/// `memfd_create(name, MFD_CLOEXEC)`: an anonymous file, shareable by descriptor.
pub(crate) fn memfd_create(name: &CString) -> io::Result<OwnedFd> {
    nix::sys::memfd::memfd_create(name.as_c_str(), MFdFlags::MFD_CLOEXEC).map_err(io_err)
}

/// `mmap(NULL, len, PROT_READ|PROT_WRITE, MAP_SHARED, fd, 0)`.
pub(crate) fn mmap_shared(fd: &OwnedFd, len: usize) -> io::Result<NonNull<u8>> {
    let len = NonZeroUsize::new(len).ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: a fresh mapping at an address the kernel picks: it aliases no Rust object.
    let ptr = unsafe {
        nix::sys::mman::mmap(
            None,
            len,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED,
            fd,
            0,
        )
    }
    .map_err(io_err)?;
    Ok(ptr.cast::<u8>())
}

/// `munmap(ptr, len)`.
///
/// # Safety
/// `ptr..ptr+len` must be a mapping made by [`mmap_shared`] that no live reference points into.
pub(crate) unsafe fn munmap(ptr: NonNull<u8>, len: usize) -> io::Result<()> {
    // SAFETY: the caller guarantees the range is our mapping and is no longer referenced.
    unsafe { nix::sys::mman::munmap(ptr.cast(), len) }.map_err(io_err)
}

/// This process's id.
pub(crate) fn getpid() -> u32 {
    nix::unistd::getpid().as_raw() as u32
}

/// Whether a process with this pid exists (it may be a zombie, or a new process that reused the pid).
pub(crate) fn pid_exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // Signal 0 only checks that the process exists and may be signalled.
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) | Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    }
}

/// Read up to `buf.len()` bytes at `offset` from `fd`.
pub(crate) fn pread(fd: &OwnedFd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let offset =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    nix::sys::uio::pread(fd, buf, offset).map_err(io_err)
}

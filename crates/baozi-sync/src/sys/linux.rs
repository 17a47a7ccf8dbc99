//! Linux: shared futexes (never `FUTEX_PRIVATE_FLAG`: it does not work across processes),
//! robust process-shared pthread mutexes, `CLOCK_MONOTONIC`.

use std::cell::Cell;
use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// A pthread mutex, as glibc lays it out.
pub(crate) type PthreadMutex = libc::pthread_mutex_t;

extern "C" {
    // glibc ≥ 2.30; the libc crate does not declare it yet. Like pthread_mutex_timedlock, but the
    // deadline is on the clock we name (CLOCK_MONOTONIC), so wall-clock jumps change nothing.
    fn pthread_mutex_clocklock(
        mutex: *mut libc::pthread_mutex_t,
        clockid: libc::clockid_t,
        abstime: *const libc::timespec,
    ) -> libc::c_int;
}

/// Nanoseconds on `CLOCK_MONOTONIC` (a vDSO call: no syscall).
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// A normalised timespec (`0 <= tv_nsec < 1e9`) for `ns` nanoseconds.
pub(crate) fn timespec(ns: u64) -> libc::timespec {
    libc::timespec {
        tv_sec: (ns / 1_000_000_000).min(i64::MAX as u64) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    }
}

/// Sleeps while `*word == expected`, until woken or until the absolute `CLOCK_MONOTONIC` time
/// `deadline_ns` (None: no limit). Returns Ok(()) on wake, value change or signal; Err(TimedOut).
pub(crate) fn futex_wait(
    word: &AtomicU32,
    expected: u32,
    deadline_ns: Option<u64>,
) -> io::Result<()> {
    futex_wait_at(word.as_ptr(), expected, deadline_ns)
}

/// [`futex_wait`] on an address: the 4 aligned bytes at `addr` must stay mapped for the call
/// (they are only read, by the kernel, atomically).
fn futex_wait_at(addr: *mut u32, expected: u32, deadline_ns: Option<u64>) -> io::Result<()> {
    let ts = deadline_ns.map(timespec);
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), std::ptr::from_ref::<libc::timespec>);
    // SAFETY: `addr` is a live, aligned u32 for the duration of the call (the callers pass a
    // field of a live atomic); FUTEX_WAIT_BITSET reads it and sleeps; the timespec (absolute,
    // CLOCK_MONOTONIC since no FUTEX_CLOCK_REALTIME) lives on our stack across the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_futex,
            addr,
            libc::FUTEX_WAIT_BITSET,
            expected,
            ts_ptr,
            std::ptr::null::<u32>(),
            libc::FUTEX_BITSET_MATCH_ANY,
        )
    };
    if ret == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(()),
        Some(libc::ETIMEDOUT) => Err(io::ErrorKind::TimedOut.into()),
        _ => Err(err),
    }
}

/// [`futex_wait`] on the low 32 bits of a 64-bit word (little-endian: its first four bytes), for
/// a word changed by 64-bit stores and CAS only: the kernel compares those 4 bytes. No Rust
/// reference to a u32 inside the word is ever made: the kernel gets the address.
pub(crate) fn futex_wait_low(
    word: &AtomicU64,
    expected: u32,
    deadline_ns: Option<u64>,
) -> io::Result<()> {
    futex_wait_at(word.as_ptr().cast::<u32>(), expected, deadline_ns)
}

/// [`futex_wake`] for a word waited on with [`futex_wait_low`].
pub(crate) fn futex_wake_low(word: &AtomicU64, n: i32) -> usize {
    futex_wake_at(word.as_ptr().cast::<u32>(), n)
}

#[cfg(not(target_endian = "little"))]
compile_error!("futex_wait_low assumes a little-endian target");

/// What `/proc` says of a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessState {
    /// It exists and is not a zombie.
    Alive {
        /// When it started: clock ticks since boot (`/proc/PID/stat` field 22).
        start: u64,
    },
    /// It is gone, or a zombie: it will never run user code again.
    Dead,
    /// `/proc` could not tell (not mounted, `hidepid`): `kill(pid, 0)` says it exists.
    Unknown,
}

/// Process `pid`, from `/proc/<pid>/stat`, or `kill(pid, 0)` when that cannot be read.
pub(crate) fn process_state(pid: u32) -> ProcessState {
    if pid == 0 || pid > i32::MAX as u32 {
        return ProcessState::Dead;
    }
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ppid ...": comm may hold anything, so split after the last ')'.
        if let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) {
            let mut fields = rest.split_whitespace();
            let state = fields.next().and_then(|s| s.chars().next());
            if matches!(state, Some('Z' | 'X' | 'x')) {
                return ProcessState::Dead;
            }
            // Field 22 is the start time: after the state (field 3), the 19th more.
            if let Some(start) = fields.nth(18).and_then(|s| s.parse().ok()) {
                return ProcessState::Alive { start };
            }
        }
    }
    // SAFETY: signal 0 sends nothing; it only checks that the process exists.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    if r != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
        ProcessState::Dead
    } else {
        ProcessState::Unknown
    }
}

fn read_process_stamp() -> (u32, u64) {
    let pid = std::process::id();
    match process_state(pid) {
        ProcessState::Alive { start } => (pid, start),
        _ => (pid, 0),
    }
}

/// This process's [`RawOwnerLock`](crate::RawOwnerLock) word, once computed; 0 before, and
/// again in the child of every `fork()` (the `pthread_atfork` handler clears it).
static OWNER_WORD: AtomicU64 = AtomicU64::new(0);

/// This process's owner word, `encode(pid, start time)` (start time in clock ticks since boot,
/// 0 when `/proc` cannot tell). Cached process-wide and cleared in a forked child, so after the
/// first call it is one load: the owner lock's fast path pays nothing for it.
#[inline]
pub(crate) fn owner_word(encode: fn(u32, u64) -> u64) -> u64 {
    let w = OWNER_WORD.load(Ordering::Relaxed);
    if w != 0 {
        return w;
    }
    owner_word_slow(encode)
}

#[cold]
#[inline(never)]
fn owner_word_slow(encode: fn(u32, u64) -> u64) -> u64 {
    // Registered first: a fork after this point clears the cache in its child, so a cached
    // word never outlives the process it names. (A store made by another thread after a fork
    // happens in the parent only: that thread does not exist in the child.)
    let registered = fork_generation_registered().is_some();
    let (pid, start) = read_process_stamp();
    let w = encode(pid, start);
    if registered {
        OWNER_WORD.store(w, Ordering::Relaxed);
    }
    w
}

/// Wakes up to `n` processes sleeping on `word`; returns how many were woken.
pub(crate) fn futex_wake(word: &AtomicU32, n: i32) -> usize {
    futex_wake_at(word.as_ptr(), n)
}

fn futex_wake_at(addr: *mut u32, n: i32) -> usize {
    // SAFETY: FUTEX_WAKE only uses the address as a key (it never dereferences it in our
    // address space beyond looking up the mapping); callers pass a field of a live atomic.
    let ret = unsafe { libc::syscall(libc::SYS_futex, addr, libc::FUTEX_WAKE, n) };
    ret.max(0) as usize
}

/// Bumped in the child of every `fork()` by the `pthread_atfork` handler below: a thread's cached
/// identity from before the fork is then stale. Process-private (never in shared memory).
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

/// `pthread_atfork` registration: 0 not yet, 1 being registered, 2 registered. While it is not 2
/// nothing is cached, so a fork racing the registration can never leave a stale identity.
static ATFORK_STATE: AtomicU32 = AtomicU32::new(0);

extern "C" fn after_fork_in_child() {
    // Async-signal-safe: an atomic add and atomic stores.
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
    OWNER_WORD.store(0, Ordering::Relaxed);
    PID_NAMESPACE.store(0, Ordering::Relaxed);
}

/// This process's pid namespace once read; 0 before, and again in a forked child (a child of a
/// process that called `unshare(CLONE_NEWPID)` is in another namespace than its parent).
static PID_NAMESPACE: AtomicU64 = AtomicU64::new(0);

/// The inode of this process's pid namespace (`/proc/self/ns/pid` → `pid:[N]`), or 0 when it
/// cannot be read. Cached, and cleared in a forked child.
#[inline]
pub(crate) fn pid_namespace() -> u64 {
    match PID_NAMESPACE.load(Ordering::Relaxed) {
        0 => read_pid_namespace(),
        ns => ns,
    }
}

#[cold]
fn read_pid_namespace() -> u64 {
    let registered = fork_generation_registered().is_some();
    let ns = std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .and_then(|p| {
            let s = p.to_string_lossy().into_owned();
            s.strip_prefix("pid:[")?.strip_suffix(']')?.parse().ok()
        })
        .unwrap_or(0);
    if registered {
        PID_NAMESPACE.store(ns, Ordering::Relaxed);
    }
    ns
}

thread_local! {
    /// (fork generation the identity was read in, identity); identity 0 = not read yet.
    static THREAD_IDENTITY: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

fn read_thread_identity() -> u64 {
    // SAFETY: getpid and gettid have no preconditions and cannot fail.
    let (pid, tid) = unsafe { (libc::getpid(), libc::syscall(libc::SYS_gettid)) };
    (u64::from(pid as u32) << 32) | u64::from(tid as u32)
}

/// The calling thread, as `(pid << 32) | tid`: unique among the live threads of every process
/// in this pid namespace, and never 0. Cached per thread and re-read after `fork()` (a
/// `pthread_atfork` child handler invalidates the cache), so it costs no syscall after the
/// first call in a thread. A child made with a raw `clone`/`SYS_fork` syscall bypasses the
/// handler and must not use this.
pub(crate) fn thread_identity() -> u64 {
    let Some(generation) = fork_generation_registered() else {
        return read_thread_identity();
    };
    THREAD_IDENTITY.with(|cell| {
        let (cached_generation, id) = cell.get();
        if id != 0 && cached_generation == generation {
            return id;
        }
        let id = read_thread_identity();
        cell.set((generation, id));
        id
    })
}

/// The fork generation, registering the `pthread_atfork` handler first if nobody has: `None`
/// while it is not registered (then nothing may be cached: callers ask the kernel each time).
#[inline]
fn fork_generation_registered() -> Option<u64> {
    if ATFORK_STATE.load(Ordering::Acquire) != 2 {
        if ATFORK_STATE
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            // SAFETY: registers a handler that only does an atomic add; glibc keeps the pointer.
            let r = unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
            if r == 0 {
                ATFORK_STATE.store(2, Ordering::Release);
            }
            // On failure (ENOMEM) the state stays 1: never cache, always ask the kernel.
        }
        return None;
    }
    Some(FORK_GENERATION.load(Ordering::Relaxed))
}

/// How many forks this process's line of ancestors has made since the `pthread_atfork` handler
/// was registered (by the first [`thread_identity`]): per-thread state stamped with it is stale
/// in a forked child. `None` until the handler is registered.
#[inline]
pub(crate) fn fork_generation() -> Option<u64> {
    (ATFORK_STATE.load(Ordering::Acquire) == 2).then(|| FORK_GENERATION.load(Ordering::Relaxed))
}

/// Gives the CPU to another runnable thread, if any.
pub(crate) fn sched_yield() {
    // SAFETY: no preconditions.
    unsafe { libc::sched_yield() };
}

/// What a lock call returned.
pub(crate) enum LockResult {
    Acquired,
    OwnerDied,
    TimedOut,
    NotRecoverable,
    Busy,
}

#[inline]
fn lock_result(ret: libc::c_int, op: &'static str) -> io::Result<LockResult> {
    match ret {
        0 => Ok(LockResult::Acquired),
        libc::EOWNERDEAD => Ok(LockResult::OwnerDied),
        libc::ETIMEDOUT => Ok(LockResult::TimedOut),
        libc::ENOTRECOVERABLE => Ok(LockResult::NotRecoverable),
        libc::EBUSY => Ok(LockResult::Busy),
        e => Err(lock_error(e, op)),
    }
}

#[cold]
fn lock_error(e: libc::c_int, op: &'static str) -> io::Error {
    io::Error::new(
        io::Error::from_raw_os_error(e).kind(),
        format!("{op}: {}", io::Error::from_raw_os_error(e)),
    )
}

/// Initialises a robust, process-shared mutex in place.
///
/// # Safety
/// `m` must be valid for writes, aligned, and not in use by anyone (a fresh, private region).
pub(crate) unsafe fn robust_mutex_init(m: *mut PthreadMutex) -> io::Result<()> {
    let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
    // SAFETY: `attr` is valid for writes; each call below gets the attr initialised by the first.
    unsafe {
        let check = |r: libc::c_int| {
            if r == 0 {
                Ok(())
            } else {
                Err(io::Error::from_raw_os_error(r))
            }
        };
        check(libc::pthread_mutexattr_init(attr.as_mut_ptr()))?;
        let res = check(libc::pthread_mutexattr_setpshared(
            attr.as_mut_ptr(),
            libc::PTHREAD_PROCESS_SHARED,
        ))
        .and_then(|()| {
            check(libc::pthread_mutexattr_setrobust(
                attr.as_mut_ptr(),
                libc::PTHREAD_MUTEX_ROBUST,
            ))
        })
        .and_then(|()| check(libc::pthread_mutex_init(m, attr.as_ptr())));
        libc::pthread_mutexattr_destroy(attr.as_mut_ptr());
        res
    }
}

/// `pthread_mutex_trylock`.
///
/// # Safety
/// `m` must point to a mutex initialised by [`robust_mutex_init`] in a live mapping.
#[inline]
pub(crate) unsafe fn mutex_trylock(m: *mut PthreadMutex) -> io::Result<LockResult> {
    // SAFETY: per the caller's guarantee.
    lock_result(
        unsafe { libc::pthread_mutex_trylock(m) },
        "pthread_mutex_trylock",
    )
}

/// `pthread_mutex_clocklock(CLOCK_MONOTONIC)`: waits until `deadline_ns` at most. (There is no
/// untimed form: callers sleep in slices, see `RawRobustMutex::lock_slow`.)
///
/// # Safety
/// `m` must point to a mutex initialised by [`robust_mutex_init`] in a live mapping.
pub(crate) unsafe fn mutex_lock(m: *mut PthreadMutex, deadline_ns: u64) -> io::Result<LockResult> {
    let ts = timespec(deadline_ns);
    // SAFETY: per the caller's guarantee; `ts` is a normalised timespec on our stack.
    let r = unsafe { pthread_mutex_clocklock(m, libc::CLOCK_MONOTONIC, &ts) };
    lock_result(r, "pthread_mutex_clocklock")
}

/// `pthread_mutex_unlock`.
///
/// # Safety
/// `m` must be locked by the calling thread.
pub(crate) unsafe fn mutex_unlock(m: *mut PthreadMutex) {
    // SAFETY: per the caller's guarantee.
    let r = unsafe { libc::pthread_mutex_unlock(m) };
    debug_assert_eq!(r, 0, "pthread_mutex_unlock");
}

/// The kernel thread id in a robust mutex's lock word: 0 when it is free or its owner died.
///
/// The robust-futex ABI (the kernel's `Documentation/locking/robust-futex-ABI.rst`) has the low
/// 30 bits of the lock word hold the owner's TID; the kernel clears them and sets
/// `FUTEX_OWNER_DIED` when the owner dies. glibc keeps that word (`__data.__lock`) first in
/// `pthread_mutex_t` on every architecture.
///
/// # Safety
/// `m` must point to a mutex initialised by [`robust_mutex_init`] in a live mapping.
pub(crate) unsafe fn robust_mutex_owner_tid(m: *mut PthreadMutex) -> u32 {
    // SAFETY: the lock word is an aligned 4-byte int at offset 0 of the live mutex (caller's
    // guarantee), which glibc and the kernel only ever change with atomic instructions.
    let word = unsafe { &*m.cast::<AtomicU32>() };
    word.load(Ordering::Relaxed) & FUTEX_TID_MASK
}

/// `FUTEX_TID_MASK` from `<linux/futex.h>`: the owner-TID bits of a robust lock word.
const FUTEX_TID_MASK: u32 = 0x3fff_ffff;

/// `pthread_mutex_consistent`.
///
/// # Safety
/// `m` must be locked by the calling thread after an EOWNERDEAD.
pub(crate) unsafe fn mutex_consistent(m: *mut PthreadMutex) {
    // SAFETY: per the caller's guarantee.
    let r = unsafe { libc::pthread_mutex_consistent(m) };
    debug_assert_eq!(r, 0, "pthread_mutex_consistent");
}

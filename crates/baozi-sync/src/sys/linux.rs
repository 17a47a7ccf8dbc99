//! Linux: shared futexes (never `FUTEX_PRIVATE_FLAG`: it does not work across processes),
//! robust process-shared pthread mutexes, `CLOCK_MONOTONIC`.

use std::io;
use std::sync::atomic::AtomicU32;

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
    let ts = deadline_ns.map(timespec);
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a live, aligned u32 for the duration of the call; FUTEX_WAIT_BITSET reads
    // it and sleeps; the timespec (absolute, CLOCK_MONOTONIC since no FUTEX_CLOCK_REALTIME) lives
    // on our stack across the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
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

/// Wakes up to `n` processes sleeping on `word`; returns how many were woken.
pub(crate) fn futex_wake(word: &AtomicU32, n: i32) -> usize {
    // SAFETY: FUTEX_WAKE only uses the address as a key; `word` is live and aligned.
    let ret = unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, n) };
    ret.max(0) as usize
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

fn lock_result(ret: libc::c_int, op: &'static str) -> io::Result<LockResult> {
    match ret {
        0 => Ok(LockResult::Acquired),
        libc::EOWNERDEAD => Ok(LockResult::OwnerDied),
        libc::ETIMEDOUT => Ok(LockResult::TimedOut),
        libc::ENOTRECOVERABLE => Ok(LockResult::NotRecoverable),
        libc::EBUSY => Ok(LockResult::Busy),
        e => Err(io::Error::new(
            io::Error::from_raw_os_error(e).kind(),
            format!("{op}: {}", io::Error::from_raw_os_error(e)),
        )),
    }
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
pub(crate) unsafe fn mutex_trylock(m: *mut PthreadMutex) -> io::Result<LockResult> {
    // SAFETY: per the caller's guarantee.
    lock_result(
        unsafe { libc::pthread_mutex_trylock(m) },
        "pthread_mutex_trylock",
    )
}

/// `pthread_mutex_lock`, or `pthread_mutex_clocklock(CLOCK_MONOTONIC)` with a deadline.
///
/// # Safety
/// `m` must point to a mutex initialised by [`robust_mutex_init`] in a live mapping.
pub(crate) unsafe fn mutex_lock(
    m: *mut PthreadMutex,
    deadline_ns: Option<u64>,
) -> io::Result<LockResult> {
    match deadline_ns {
        // SAFETY: per the caller's guarantee.
        None => lock_result(unsafe { libc::pthread_mutex_lock(m) }, "pthread_mutex_lock"),
        Some(ns) => {
            let ts = timespec(ns);
            // SAFETY: per the caller's guarantee; `ts` is a normalised timespec on our stack.
            let r = unsafe { pthread_mutex_clocklock(m, libc::CLOCK_MONOTONIC, &ts) };
            lock_result(r, "pthread_mutex_clocklock")
        }
    }
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

/// `pthread_mutex_consistent`.
///
/// # Safety
/// `m` must be locked by the calling thread after an EOWNERDEAD.
pub(crate) unsafe fn mutex_consistent(m: *mut PthreadMutex) {
    // SAFETY: per the caller's guarantee.
    let r = unsafe { libc::pthread_mutex_consistent(m) };
    debug_assert_eq!(r, 0, "pthread_mutex_consistent");
}

//! What the benches share: forking and reaping peers, futex calls, and the baselines each baozi
//! figure is compared with, all behind one fixed-size message [`Channel`] so that the round-trip
//! and throughput drivers run the same loop over every transport.
//!
//! Every channel is built in the parent before the peers are forked; peers use their inherited
//! copy and leave with `_exit`, so nothing here is dropped twice. Nothing is left behind: POSIX
//! message queues are unlinked as soon as they are open, shared regions are anonymous, and peers
//! die with the bench (`PR_SET_PDEATHSIG`) if it panics before reaping them.

// Each bench binary compiles this module and uses a part of it.
#![allow(dead_code)]

use std::cell::Cell;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use baozi::{Queue, Region};
use raw_sync::locks::{LockImpl, LockInit, Mutex as RawSyncMutex};

/// The message sizes of the latency and throughput tables.
pub(crate) const SIZES: [usize; 4] = [8, 64, 1024, 16 * 1024];

/// First byte of an ordinary message.
pub(crate) const FILL: u8 = 7;

/// First byte of the message that tells a peer to leave.
pub(crate) const STOP: u8 = 0xFF;

/// An ordinary message of `size` bytes.
pub(crate) fn message(size: usize) -> Vec<u8> {
    vec![FILL; size]
}

/// A stop message of `size` bytes.
pub(crate) fn stop_message(size: usize) -> Vec<u8> {
    let mut m = vec![FILL; size];
    m[0] = STOP;
    m
}

/// Forks a peer that runs `work` and leaves with `_exit` (status 101 if `work` panicked). The
/// peer is killed if the bench process dies first.
pub(crate) fn fork_peer(work: impl FnOnce()) -> libc::pid_t {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the benches fork only from a single-threaded point (criterion measures on the main
    // thread; the in-process crossbeam baselines join their threads before returning); the child
    // only runs `work` on memory and fds made before the fork and leaves with _exit.
    match unsafe { libc::fork() } {
        -1 => panic!("fork: {}", io::Error::last_os_error()),
        0 => {
            // SAFETY: prctl(PR_SET_PDEATHSIG) and getppid only change / read this process's state.
            // If the parent died before the prctl, getppid no longer names it: leave at once.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if libc::getppid() != parent {
                    libc::_exit(102);
                }
            }
            let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).is_ok();
            // SAFETY: ends the child without unwinding into criterion or running its destructors.
            unsafe { libc::_exit(if ok { 0 } else { 101 }) }
        }
        pid => pid,
    }
}

/// Waits for a peer and panics unless it exited with status 0.
pub(crate) fn reap(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waiting for our own child; status is a valid out-pointer.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid, "waitpid: {}", io::Error::last_os_error());
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "bench peer {pid} failed (wait status {status:#x})"
    );
}

/// Sleeps while `word` holds `expected` (a shared futex: no PRIVATE flag, it crosses processes).
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32) {
    // SAFETY: the word is a live, aligned u32; a null timeout means no deadline. The kernel only
    // reads the word; EAGAIN (value changed) and EINTR just return to the caller's loop.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            std::ptr::null::<libc::timespec>(),
        );
    }
}

/// Wakes up to `n` sleepers on `word`.
pub(crate) fn futex_wake(word: &AtomicU32, n: i32) {
    // SAFETY: the word is a live, aligned u32; FUTEX_WAKE does not touch memory.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, n);
    }
}

/// A one-way channel of fixed-size messages, usable from any process forked after it was made.
pub(crate) trait Channel {
    /// Sends `msg`, blocking while the channel is full.
    fn send(&self, msg: &[u8]);
    /// Receives one message into `buf` (its length becomes the message's), blocking while empty.
    fn recv(&self, buf: &mut Vec<u8>);
}

impl Channel for Queue<Vec<u8>> {
    fn send(&self, msg: &[u8]) {
        self.put_bytes(msg, None).expect("baozi put");
    }
    fn recv(&self, buf: &mut Vec<u8>) {
        self.get_bytes_into(buf, None).expect("baozi get");
    }
}

/// A baozi queue sized for `maxsize` messages of `size` bytes.
pub(crate) fn baozi_queue(maxsize: usize, size: usize, spin: bool) -> Queue<Vec<u8>> {
    let capacity = (maxsize.max(64) * (size.next_multiple_of(8) + 8)).max(64 * 1024);
    baozi::QueueOptions::new()
        .maxsize(maxsize)
        .capacity(capacity)
        .spin(spin)
        .anonymous()
        .expect("baozi queue")
}

/// A pipe or a Unix socket pair: the write end and the read end of one direction.
pub(crate) struct FdChannel {
    write: RawFd,
    read: RawFd,
    size: usize,
}

impl FdChannel {
    /// A pipe. Messages of at most `PIPE_BUF` (4 KiB) bytes are written atomically, so several
    /// writers and readers may share it; larger ones only between one writer and one reader.
    pub(crate) fn pipe(size: usize) -> FdChannel {
        let mut fds = [0; 2];
        // SAFETY: fds is a valid 2-element array for pipe2(2) to fill.
        let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
        assert_eq!(r, 0, "pipe2: {}", io::Error::last_os_error());
        FdChannel {
            read: fds[0],
            write: fds[1],
            size,
        }
    }

    /// A Unix `SOCK_SEQPACKET` socket pair: message boundaries are kept.
    pub(crate) fn unix(size: usize) -> FdChannel {
        let mut fds = [0; 2];
        // SAFETY: fds is a valid 2-element array for socketpair(2) to fill.
        let r = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        assert_eq!(r, 0, "socketpair: {}", io::Error::last_os_error());
        FdChannel {
            write: fds[0],
            read: fds[1],
            size,
        }
    }
}

impl Channel for FdChannel {
    fn send(&self, msg: &[u8]) {
        let mut done = 0;
        while done < msg.len() {
            // SAFETY: the range is inside msg; the fd is open for the channel's lifetime.
            let n =
                unsafe { libc::write(self.write, msg[done..].as_ptr().cast(), msg.len() - done) };
            if n < 0 {
                let e = io::Error::last_os_error();
                assert_eq!(e.kind(), io::ErrorKind::Interrupted, "write: {e}");
                continue;
            }
            done += n as usize;
        }
    }

    fn recv(&self, buf: &mut Vec<u8>) {
        buf.resize(self.size, 0);
        let mut done = 0;
        while done < self.size {
            // SAFETY: the range is inside buf; the fd is open for the channel's lifetime.
            let n =
                unsafe { libc::read(self.read, buf[done..].as_mut_ptr().cast(), self.size - done) };
            if n < 0 {
                let e = io::Error::last_os_error();
                assert_eq!(e.kind(), io::ErrorKind::Interrupted, "read: {e}");
                continue;
            }
            assert!(n > 0, "unexpected end of stream");
            done += n as usize;
        }
    }
}

impl Drop for FdChannel {
    fn drop(&mut self) {
        // SAFETY: both fds were made for this channel and are closed only here.
        unsafe {
            libc::close(self.write);
            libc::close(self.read);
        }
    }
}

/// A POSIX message queue, unlinked as soon as it is open (its descriptor is inherited across fork).
pub(crate) struct MqChannel {
    mq: libc::mqd_t,
    size: usize,
}

/// The system's default depth limit for POSIX message queues (`/proc/sys/fs/mqueue/msg_max`,
/// 10 unless tuned): the depth an unprivileged user can ask for.
pub(crate) fn mq_depth_limit() -> usize {
    std::fs::read_to_string("/proc/sys/fs/mqueue/msg_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(10)
}

impl MqChannel {
    /// A queue of at most `depth` messages of `size` bytes; an error where the system refuses it
    /// (a size above `msgsize_max` for an unprivileged user, or the `RLIMIT_MSGQUEUE` bytes).
    pub(crate) fn new(depth: usize, size: usize) -> io::Result<MqChannel> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "/baozi-bench-{}-{}\0",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        // SAFETY: mq_attr is plain data; all-zero is a valid value to fill in.
        let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
        attr.mq_maxmsg = depth as libc::c_long;
        attr.mq_msgsize = size as libc::c_long;
        // SAFETY: name is NUL-terminated; attr is a valid mq_attr for the duration of the call;
        // the variadic mode is passed as the unsigned int mq_open reads.
        let mq = unsafe {
            libc::mq_open(
                name.as_ptr().cast(),
                libc::O_CREAT | libc::O_EXCL | libc::O_RDWR | libc::O_CLOEXEC,
                0o600 as libc::c_uint,
                std::ptr::addr_of_mut!(attr),
            )
        };
        if mq == -1 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: name is NUL-terminated; the open descriptor stays valid after the unlink.
        unsafe { libc::mq_unlink(name.as_ptr().cast()) };
        Ok(MqChannel { mq, size })
    }
}

impl Channel for MqChannel {
    fn send(&self, msg: &[u8]) {
        loop {
            // SAFETY: msg is a live slice; the descriptor is open for the channel's lifetime.
            let r = unsafe { libc::mq_send(self.mq, msg.as_ptr().cast(), msg.len(), 0) };
            if r == 0 {
                return;
            }
            let e = io::Error::last_os_error();
            assert_eq!(e.kind(), io::ErrorKind::Interrupted, "mq_send: {e}");
        }
    }

    fn recv(&self, buf: &mut Vec<u8>) {
        buf.resize(self.size, 0);
        loop {
            // SAFETY: buf holds size bytes, the queue's message size; the descriptor is open.
            let n = unsafe {
                libc::mq_receive(
                    self.mq,
                    buf.as_mut_ptr().cast(),
                    self.size,
                    std::ptr::null_mut(),
                )
            };
            if n >= 0 {
                buf.truncate(n as usize);
                return;
            }
            let e = io::Error::last_os_error();
            assert_eq!(e.kind(), io::ErrorKind::Interrupted, "mq_receive: {e}");
        }
    }
}

impl Drop for MqChannel {
    fn drop(&mut self) {
        // SAFETY: the descriptor was opened for this channel and is closed only here.
        unsafe { libc::mq_close(self.mq) };
    }
}

/// The ring's bookkeeping, guarded by the mutex.
#[repr(C)]
struct NaiveHeader {
    head: usize,
    tail: usize,
    count: usize,
}

const NAIVE_NOT_EMPTY: usize = 64;
const NAIVE_NOT_FULL: usize = 128;
const NAIVE_HEADER: usize = 192;
const NAIVE_SLOTS: usize = 256;

/// The "plain lock-based" reference: a ring of fixed slots in shared memory under raw-sync's
/// process-shared pthread mutex, with two process-shared condition variables (not empty, not
/// full), signalled on every put and get. What one writes first, without baozi's design.
pub(crate) struct NaiveQueue {
    region: Region,
    lock: Box<dyn LockImpl>,
    maxsize: usize,
    slot: usize,
}

impl NaiveQueue {
    /// A queue of `maxsize` slots of `slot` bytes.
    pub(crate) fn new(maxsize: usize, slot: usize) -> NaiveQueue {
        assert!(RawSyncMutex::size_of(None) <= NAIVE_NOT_EMPTY);
        assert!(std::mem::size_of::<libc::pthread_cond_t>() <= NAIVE_NOT_FULL - NAIVE_NOT_EMPTY);
        let region = Region::anonymous(NAIVE_SLOTS + maxsize * slot).expect("region");
        let base = region.as_ptr();
        // SAFETY: the region is fresh, zeroed, page-aligned and large enough for the mutex at
        // offset 0, the two condition variables and the header, which start zeroed (empty ring).
        let lock = unsafe {
            let (lock, _) =
                RawSyncMutex::new(base, base.add(NAIVE_HEADER)).expect("raw-sync mutex");
            let mut attr: libc::pthread_condattr_t = std::mem::zeroed();
            libc::pthread_condattr_init(&mut attr);
            libc::pthread_condattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED);
            for off in [NAIVE_NOT_EMPTY, NAIVE_NOT_FULL] {
                let r = libc::pthread_cond_init(base.add(off).cast(), &attr);
                assert_eq!(r, 0, "pthread_cond_init");
            }
            libc::pthread_condattr_destroy(&mut attr);
            lock
        };
        NaiveQueue {
            region,
            lock,
            maxsize,
            slot,
        }
    }

    fn at<T>(&self, offset: usize) -> *mut T {
        // SAFETY: every offset used is inside the region (checked at construction).
        unsafe { self.region.as_ptr().add(offset).cast() }
    }

    fn mutex(&self) -> *mut libc::pthread_mutex_t {
        self.lock.as_raw().cast()
    }
}

impl Channel for NaiveQueue {
    fn send(&self, msg: &[u8]) {
        assert!(msg.len() <= self.slot);
        let guard = self.lock.lock().expect("lock");
        let h: *mut NaiveHeader = self.at(NAIVE_HEADER);
        // SAFETY: the mutex is held (the condition wait gives it back before returning), so the
        // header and the slot at tail are this process's alone; all pointers are in the region.
        unsafe {
            // The condition wait changes the header through the lock (other processes' puts).
            while std::ptr::read_volatile(std::ptr::addr_of!((*h).count)) == self.maxsize {
                libc::pthread_cond_wait(self.at(NAIVE_NOT_FULL), self.mutex());
            }
            let tail = (*h).tail;
            let dst: *mut u8 = self.at(NAIVE_SLOTS + tail * self.slot);
            std::ptr::copy_nonoverlapping(msg.as_ptr(), dst, msg.len());
            (*h).tail = (tail + 1) % self.maxsize;
            (*h).count += 1;
            libc::pthread_cond_signal(self.at(NAIVE_NOT_EMPTY));
        }
        drop(guard);
    }

    fn recv(&self, buf: &mut Vec<u8>) {
        buf.resize(self.slot, 0);
        let guard = self.lock.lock().expect("lock");
        let h: *mut NaiveHeader = self.at(NAIVE_HEADER);
        // SAFETY: as in send: the mutex is held, the pointers are in the region, buf holds a slot.
        unsafe {
            while std::ptr::read_volatile(std::ptr::addr_of!((*h).count)) == 0 {
                libc::pthread_cond_wait(self.at(NAIVE_NOT_EMPTY), self.mutex());
            }
            let head = (*h).head;
            let src: *const u8 = self.at(NAIVE_SLOTS + head * self.slot);
            std::ptr::copy_nonoverlapping(src, buf.as_mut_ptr(), self.slot);
            (*h).head = (head + 1) % self.maxsize;
            (*h).count -= 1;
            libc::pthread_cond_signal(self.at(NAIVE_NOT_FULL));
        }
        drop(guard);
    }
}

const RING_HEAD: usize = 0;
const RING_TAIL: usize = 128;
const RING_PRODUCER_ASLEEP: usize = 256;
const RING_CONSUMER_ASLEEP: usize = 384;
const RING_SLOTS: usize = 512;

/// The throughput floors: a single-producer single-consumer ring of fixed slots in shared memory,
/// no lock, one release store per message, the other side's index cached. `blocking` false: waiters spin (the spin floor);
/// true: a waiter sleeps on a futex at once and the other side wakes it (the futex floor).
pub(crate) struct SpscRing {
    region: Region,
    slots: u32,
    size: usize,
    blocking: bool,
    /// This process's last look at the other side's index (head for the producer, tail for the
    /// consumer), so that the shared word is read only when the cached one says wait.
    seen: Cell<u32>,
}

impl SpscRing {
    /// A ring of `slots` messages of `size` bytes.
    pub(crate) fn new(slots: u32, size: usize, blocking: bool) -> SpscRing {
        let region = Region::anonymous(RING_SLOTS + slots as usize * size).expect("region");
        SpscRing {
            region,
            slots,
            size,
            blocking,
            seen: Cell::new(0),
        }
    }

    fn word(&self, offset: usize) -> &AtomicU32 {
        // SAFETY: the offsets are 4-aligned, inside the region, and only ever used as atomics;
        // the region lives as long as self.
        unsafe { &*self.region.as_ptr().add(offset).cast::<AtomicU32>() }
    }

    /// Waits until `ready` holds, sleeping on `word` if blocking. The waiter announces in
    /// `asleep` the value it sleeps on (with [`ARMED`]); a waker that stored a later value
    /// takes the announcement and wakes it.
    ///
    /// A waker whose store the waiter has already seen must not take it: its wake-up would come
    /// before the waiter sleeps and be lost, and the next waker would find no announcement (a
    /// hang seen in this bench's first version, which cleared a plain flag).
    fn wait(&self, word: &AtomicU32, asleep: &AtomicU64, ready: impl Fn(u32) -> bool) -> u32 {
        loop {
            let v = word.load(Ordering::Acquire);
            if ready(v) {
                return v;
            }
            if self.blocking {
                let mine = ARMED | u64::from(v);
                asleep.store(mine, Ordering::SeqCst);
                if word.load(Ordering::SeqCst) == v {
                    futex_wait(word, v);
                }
                let _ = asleep.compare_exchange(mine, 0, Ordering::SeqCst, Ordering::Relaxed);
            } else {
                std::hint::spin_loop();
            }
        }
    }

    /// Publishes `value` in `word`, waking the other side if it sleeps on an older value.
    fn publish(&self, word: &AtomicU32, asleep: &AtomicU64, value: u32) {
        if self.blocking {
            word.store(value, Ordering::SeqCst);
            let f = asleep.load(Ordering::SeqCst);
            // Wrapping order: `value` is later than the value slept on.
            let later = (value.wrapping_sub(f as u32) as i32) > 0;
            if f & ARMED != 0
                && later
                && asleep
                    .compare_exchange(f, 0, Ordering::SeqCst, Ordering::Relaxed)
                    .is_ok()
            {
                futex_wake(word, 1);
            }
        } else {
            word.store(value, Ordering::Release);
        }
    }

    fn flag(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: as in `word`; these offsets are 8-aligned and only used as AtomicU64.
        unsafe { &*self.region.as_ptr().add(offset).cast::<AtomicU64>() }
    }
}

/// Marks an announcement in [`SpscRing`]'s `asleep` words (the low half is the value slept on).
const ARMED: u64 = 1 << 32;

impl Channel for SpscRing {
    fn send(&self, msg: &[u8]) {
        assert!(msg.len() <= self.size);
        let (head, tail) = (self.word(RING_HEAD), self.word(RING_TAIL));
        let t = tail.load(Ordering::Relaxed);
        if t.wrapping_sub(self.seen.get()) >= self.slots {
            let h = self.wait(head, self.flag(RING_PRODUCER_ASLEEP), |h| {
                t.wrapping_sub(h) < self.slots
            });
            self.seen.set(h);
        }
        let at = RING_SLOTS + (t % self.slots) as usize * self.size;
        // SAFETY: the slot is inside the region and free (the consumer is past it); only this
        // producer writes it until the release store of tail below.
        unsafe {
            std::ptr::copy_nonoverlapping(msg.as_ptr(), self.region.as_ptr().add(at), msg.len())
        };
        self.publish(tail, self.flag(RING_CONSUMER_ASLEEP), t.wrapping_add(1));
    }

    fn recv(&self, buf: &mut Vec<u8>) {
        buf.resize(self.size, 0);
        let (head, tail) = (self.word(RING_HEAD), self.word(RING_TAIL));
        let h = head.load(Ordering::Relaxed);
        if self.seen.get() == h {
            let t = self.wait(tail, self.flag(RING_CONSUMER_ASLEEP), |t| t != h);
            self.seen.set(t);
        }
        let at = RING_SLOTS + (h % self.slots) as usize * self.size;
        // SAFETY: the slot is inside the region and was published by the producer's release
        // store of tail (acquired in wait, now or when `seen` was cached); it is not rewritten
        // until head moves past it.
        unsafe {
            std::ptr::copy_nonoverlapping(self.region.as_ptr().add(at), buf.as_mut_ptr(), self.size)
        };
        self.publish(head, self.flag(RING_PRODUCER_ASLEEP), h.wrapping_add(1));
    }
}

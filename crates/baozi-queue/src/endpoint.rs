//! Producers and consumers that say so: a registry of a queue's endpoints, so that a blocked
//! `get` learns when no producer is left (and a blocked `put` when no consumer is), instead of
//! waiting for ever for a process that was killed (CPython's gh-87971).
//!
//! # The registry
//!
//! [`SLOTS`] words after the ring. A word is 0 (free) or an endpoint:
//!
//! ```text
//! bits 63..62  role (1 producer, 2 consumer)
//! bits 61..40  pid (pid_max is at most 2^22)
//! bits 39..0   the process's start time (clock ticks since boot, /proc/PID/stat field 22)
//! ```
//!
//! Registering is one CAS from 0 to the word; leaving is one CAS from the word back to 0. A
//! process killed while registered leaves its word: whoever next counts the endpoints finds that
//! no process with that pid *and* start time exists (a reused pid has another start time) and
//! frees the word with a CAS from exactly that value. Nothing here is on the put/get fast path:
//! a blocked call counts at most once per [`CHECK_EVERY`], and only once the other role has ever
//! registered (a bit in the queue's meta line), so a program that never registers an endpoint
//! keeps Python's behaviour: `get` waits for ever.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use baozi_shm::{Offset, Region};
use baozi_sync::{process_state, ProcessState, WaitWord};

/// Endpoint slots per queue.
pub(crate) const SLOTS: usize = 64;

/// Bytes the registry takes after the ring.
pub(crate) const LEN: usize = SLOTS * 8;

/// How often, at most, a blocked call counts the other side's endpoints.
pub const CHECK_EVERY: Duration = Duration::from_millis(50);

/// A role: what an endpoint does with the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Producer = 1,
    Consumer = 2,
}

impl Role {
    /// The bit in the meta line's `peers_ever` word.
    pub(crate) fn ever_bit(self) -> u32 {
        self as u32
    }
}

const PID_BITS: u32 = 22;
const START_BITS: u32 = 40;

fn pack(role: Role, pid: u32, start: u64) -> u64 {
    ((role as u64) << 62)
        | ((u64::from(pid) & ((1 << PID_BITS) - 1)) << START_BITS)
        | (start & ((1 << START_BITS) - 1))
}

fn unpack(word: u64) -> (u64, u32, u64) {
    (
        word >> 62,
        ((word >> START_BITS) & ((1 << PID_BITS) - 1)) as u32,
        word & ((1 << START_BITS) - 1),
    )
}

/// This process's pid and start time (0 when `/proc` cannot tell).
fn me() -> (u32, u64) {
    let pid = std::process::id();
    match process_state(pid) {
        ProcessState::Alive { start } => (pid, start),
        _ => (pid, 0),
    }
}

/// Whether the process registered as (`pid`, `start`) may still run: a reused pid has another
/// start time, and a zombie or an unknown state (no readable `/proc`) is decided the safe way
/// for a count of the living (a zombie never runs again; an unknown one may).
fn registered_alive(pid: u32, start: u64) -> bool {
    match process_state(pid) {
        ProcessState::Alive { start: s } => start == 0 || s & ((1 << START_BITS) - 1) == start,
        ProcessState::Dead => false,
        ProcessState::Unknown => true,
    }
}

/// The registry's words in `region`, from `at`.
pub(crate) fn slots(region: &Region, at: usize) -> &[AtomicU64] {
    debug_assert!(at + LEN <= region.len() && at % 8 == 0);
    // SAFETY: `at..at + LEN` lies inside the region (the layout puts the registry after the
    // ring and the open path checked the region's length), is 8-aligned (the ring's length is a
    // multiple of 8), and AtomicU64 accepts any bytes; the slice borrows `region`.
    unsafe { std::slice::from_raw_parts(region.as_ptr().add(at).cast::<AtomicU64>(), SLOTS) }
}

/// Claims a free slot for `role`; the index, or None when every slot is taken.
pub(crate) fn register(slots: &[AtomicU64], role: Role) -> Option<(usize, u64)> {
    let (pid, start) = me();
    let word = pack(role, pid, start);
    for attempt in 0..2 {
        for (i, slot) in slots.iter().enumerate() {
            if slot
                .compare_exchange(0, word, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                return Some((i, word));
            }
        }
        if attempt == 0 {
            count(slots); // frees the slots of dead processes
        }
    }
    None
}

/// Live producers and consumers, freeing the slots of processes that no longer exist.
pub(crate) fn count(slots: &[AtomicU64]) -> Endpoints {
    let mut live = Endpoints::default();
    for slot in slots {
        let word = slot.load(Ordering::Acquire);
        if word == 0 {
            continue;
        }
        let (role, pid, start) = unpack(word);
        let alive = registered_alive(pid, start);
        if !alive {
            // Only this exact registration: a slot reused meanwhile is left alone.
            let _ = slot.compare_exchange(word, 0, Ordering::AcqRel, Ordering::Relaxed);
            continue;
        }
        match role {
            1 => live.producers += 1,
            2 => live.consumers += 1,
            _ => {}
        }
    }
    live
}

/// How many producers and consumers are registered and alive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Endpoints {
    /// Processes registered with [`Queue::register_producer`](crate::Queue::register_producer).
    pub producers: usize,
    /// Processes registered with [`Queue::register_consumer`](crate::Queue::register_consumer).
    pub consumers: usize,
}

/// A registration as a producer or consumer of a queue; dropping it deregisters (and wakes the
/// other side, which may now be disconnected). A process killed while registered is found dead
/// by the next count. A copy inherited by a forked child does not deregister its parent.
#[must_use = "the registration ends when this is dropped"]
pub struct Endpoint {
    region: Region,
    at: usize,
    index: usize,
    word: u64,
    pid: u32,
    /// The wait word the other side sleeps on, woken when this endpoint leaves.
    wake_at: usize,
}

impl Endpoint {
    pub(crate) fn new(region: Region, at: usize, index: usize, word: u64, wake_at: usize) -> Self {
        Endpoint {
            region,
            at,
            index,
            word,
            pid: std::process::id(),
            wake_at,
        }
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (role, pid, _) = unpack(self.word);
        f.debug_struct("Endpoint")
            .field("queue", &self.region.describe())
            .field("role", &if role == 1 { "producer" } else { "consumer" })
            .field("pid", &pid)
            .field("slot", &self.index)
            .finish()
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if self.pid != std::process::id() {
            return; // a forked child's copy: the registration is the parent's
        }
        let slot = &slots(&self.region, self.at)[self.index];
        let _ = slot.compare_exchange(self.word, 0, Ordering::AcqRel, Ordering::Relaxed);
        if let Ok(word) = self
            .region
            .get::<WaitWord>(Offset::new(self.wake_at as u64))
        {
            word.notify();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        let w = pack(Role::Consumer, 4_194_303, 123_456_789);
        assert_eq!(unpack(w), (2, 4_194_303, 123_456_789));
        assert_ne!(w, 0);
    }

    #[test]
    #[cfg_attr(miri, ignore)] // reads /proc
    fn this_process_is_alive_and_a_dead_or_reused_pid_is_not() {
        let (pid, start) = me();
        assert_ne!(start, 0);
        assert!(registered_alive(pid, start));
        assert!(!registered_alive(pid, start + 1)); // our pid, another start: a reused pid
        assert!(!registered_alive(u32::MAX >> 10, 5)); // no such process
    }
}

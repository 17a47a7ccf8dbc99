//! Taking one of the queue's two owner locks, and the repair after a holder that died
//! ([`Acquired::OwnerDied`]): every update commits with one store, so the repair only redoes the
//! two multi-store steps (a restart, an immediate shutdown's discard) and checks the invariants.

use std::sync::atomic::Ordering;

use baozi_sync::{Acquired, Deadline, RawOwnerLock, WaitWord};

use crate::crash::{self, Point};

use super::Queue;
use crate::error::QueueError;
use crate::ring;

/// Holds one of the queue's two locks; unlocks on drop, and wakes everyone if it repaired a
/// dead holder's state (the dead process may have been about to notify). A repair that failed
/// (corruption) gives the lock up instead: every later taker gets an error, not the corruption.
pub(super) struct Locked<'a, T> {
    queue: &'a Queue<T>,
    lock: &'a RawOwnerLock,
    repaired: bool,
    repair_failed: bool,
}

impl<T> Drop for Locked<'_, T> {
    #[inline]
    fn drop(&mut self) {
        if self.repaired {
            self.release_after_repair();
        } else {
            // SAFETY: a Locked exists only while this process holds `lock`.
            unsafe { self.lock.unlock() };
        }
    }
}

impl<T> Locked<'_, T> {
    /// Releases the lock, then wakes the other side's sleepers on `wait`, with one fence for
    /// both: the lock word is released with a plain store, and `notify_sleepers`'s fence orders
    /// it before the lock's own sleepers flag is read. A process killed at `point` (between the
    /// two) leaves the lock free and its sleepers to wake by themselves within their slice.
    #[inline]
    pub(super) fn release_and_notify(self, wait: &WaitWord, point: Point) {
        let this = std::mem::ManuallyDrop::new(self);
        if this.repaired {
            this.release_after_repair();
            crash::point(point);
            wait.notify_sleepers();
            return;
        }
        // SAFETY: a Locked exists only while this process holds `lock`; ManuallyDrop keeps
        // Drop from releasing it again.
        unsafe { this.lock.unlock_unfenced() };
        crash::point(point);
        wait.notify_sleepers();
        this.lock.wake_sleepers();
    }

    #[cold]
    #[inline(never)]
    fn release_after_repair(&self) {
        if self.repair_failed {
            // SAFETY: a Locked exists only while this process holds `lock`.
            unsafe { self.lock.give_up() };
        } else {
            // SAFETY: as above.
            unsafe { self.lock.unlock() };
        }
        self.queue.tail().wait.notify();
        self.queue.head().wait.notify();
        self.queue.tasks().all_done.notify();
    }
}

impl<T> Queue<T> {
    #[inline]
    pub(super) fn lock<'a>(
        &'a self,
        lock: &'a RawOwnerLock,
        deadline: Option<Deadline>,
    ) -> Result<Locked<'a, T>, QueueError> {
        // A holder that /proc says is dead is taken over unless processes of another pid
        // namespace share the queue (their pids mean other processes here).
        let may_take_over = || self.meta().mixed_ns.load(Ordering::Relaxed) == 0;
        match lock.lock_with(deadline, &may_take_over)? {
            Acquired::Clean => Ok(Locked {
                queue: self,
                lock,
                repaired: false,
                repair_failed: false,
            }),
            Acquired::OwnerDied => self.recover(lock),
        }
    }

    /// The lock was acquired from a holder that died: repair, then declare it consistent.
    #[cold]
    #[inline(never)]
    fn recover<'a>(&'a self, lock: &'a RawOwnerLock) -> Result<Locked<'a, T>, QueueError> {
        let mut guard = Locked {
            queue: self,
            lock,
            repaired: true,
            repair_failed: true,
        };
        self.repair(std::ptr::eq(lock, self.put_lock()))?;
        guard.repair_failed = false;
        Ok(guard)
    }

    /// Called with a lock held after its holder died; idempotent (the repairer may die too).
    ///
    /// Every update commits with one store of a cursor, so there is nothing to roll back: a
    /// frame written but not committed lies beyond the tail, unseen. Two things are redone:
    /// * with the put lock, a restart killed between moving the head to 0 and its commit left
    ///   an empty ring whose tail is elsewhere: the tail joins the head (same count, so nobody
    ///   sees a frame), and the producers' bounds are read afresh;
    /// * with the get lock, the consumers' copy of the tail is read afresh.
    ///
    /// And the invariants are checked, so that corruption is reported instead of followed.
    /// Tail first, then head (the order consumers use): the pair is a state the ring was in.
    fn repair(&self, put_side: bool) -> Result<(), QueueError> {
        let mut tail = self.tail_cursor();
        let head = self.head_cursor();
        if !ring::consistent(self.cap, head, tail) {
            return Err(QueueError::Corrupt {
                name: self.region.describe(),
                detail: format!("after a holder died: head {head:?}, tail {tail:?}"),
            });
        }
        if put_side {
            if ring::items(head, tail) == 0 && head.off != tail.off {
                tail.off = head.off;
                self.tail().cursor.store(tail.pack(), Ordering::Release);
            }
            self.refresh_room(tail);
        } else {
            // An immediate shutdown killed between its discard's commit and moving the head:
            // finish moving it (the tail is final, the queue being closed).
            let (_, upto) = self.discard();
            if upto != 0
                && ring::items(head, tail) != 0
                && head.count.wrapping_sub(upto) > u32::MAX / 2
            {
                self.head().cursor.store(tail.pack(), Ordering::Release);
            }
            self.head().seen_tail.store(tail.pack(), Ordering::Relaxed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An opener from another pid namespace (here: a recorded namespace that is not ours) marks
    /// the queue, and from then on no lock is taken over on `/proc`'s word; an opener from the
    /// creator's namespace leaves it unmarked.
    #[test]
    #[cfg_attr(miri, ignore)] // shared memory and /proc
    fn an_opener_from_another_pid_namespace_turns_takeovers_off() {
        let name = format!("test-q-ns-{}", std::process::id());
        let created: Queue<u64> = Queue::create(&name, 4, 4096).unwrap();
        let same: Queue<u64> = Queue::open(&name).unwrap();
        assert_eq!(same.meta().mixed_ns.load(Ordering::Relaxed), 0);
        created.meta().pid_ns.fetch_add(1, Ordering::Relaxed);
        let other: Queue<u64> = Queue::open(&name).unwrap();
        assert_eq!(created.meta().mixed_ns.load(Ordering::Relaxed), 1);
        drop((same, other));
        Queue::<u64>::unlink(&name).unwrap();
    }
}

//! The shared ledger: what producers committed and what consumers received, in shared memory so
//! that it survives any worker being killed.
//!
//! * per producer slot: `committed` = one past the last sequence whose send returned Ok, stored
//!   right after the send returns; the pid of the slot's current process.
//! * per consumer slot: messages taken, reorderings seen, garbage seen, max latency, pid, and a
//!   latency histogram.
//! * per producer: one delivery counter per sequence number, bumped by whichever consumer took it.
//! * the "maybe" list, written by the parent: (producer, seq) pairs whose send was in flight when
//!   the producer was killed, so may or may not have been delivered.
//! * per consumer slot: a receive area that starts with the *mark*: producer id and sequence of
//!   the message the consumer is taking, written **before** the transport commits the take
//!   (the baozi queue: in `Queue::get_bytes_with`, under the queue's get lock, before the head
//!   moves; the kernel transports: the kernel copies the message into the area in the same
//!   syscall that consumes it) and cleared after the delivery is recorded. When the parent kills
//!   a consumer it reads the mark: a message named there and never recorded was taken by the
//!   killed process, which is measured, not inferred. Redis is the exception: its server pops
//!   the message before the consumer sees which one, so the consumer marks "getting" before the
//!   take and names the message right after the reply; a consumer killed while "getting" may
//!   have taken one message that no one can name, and the verdict counts at most one missing
//!   message per such kill as in flight (bounded, not measured).

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

use baozi_shm::{Offset, Region};

use crate::histogram::{self, BUCKETS};
use crate::message::Stamp;

const LINE: usize = 128;
/// Bytes of a consumer's mark: the stamp of the message it is taking.
pub(crate) const MARK_LEN: usize = crate::message::STAMP_LEN;
/// A cleared mark: all ones, which names no producer and no sequence.
const MARK_CLEAR: u64 = u64::MAX;
/// The producer word of a consumer that is inside a take whose message it cannot name before
/// the take commits (Redis: the server pops the message, the consumer learns which one when the
/// reply arrives). Names no producer either.
const MARK_GETTING: u64 = u64::MAX - 1;
/// The most producer kills the ledger can record.
pub(crate) const MAX_MAYBE: usize = 1 << 16;

/// A consumer's mark: producer id and sequence number of the message it is taking, as the first
/// two words of its receive area (laid out as a message's stamp, so that a kernel copy of the
/// message writes it too). The producer word is written last and cleared alone: a mark with an
/// all-ones producer word is empty, whatever the sequence word holds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mark<'a> {
    producer: &'a AtomicU64,
    seq: &'a AtomicU64,
}

impl Mark<'_> {
    /// Marks the message whose first bytes are `stamp`. Called before the take commits.
    pub(crate) fn set(&self, stamp: &[u8]) {
        let word = |o: usize| {
            stamp.get(o..o + 8).map_or(MARK_CLEAR, |b| {
                u64::from_le_bytes(b.try_into().expect("8 bytes"))
            })
        };
        // Sequence first: until the producer word is written the mark is empty, so a kill
        // between the two stores never names a mixture of two messages.
        self.seq.store(word(8), Ordering::Relaxed);
        self.producer.store(word(0), Ordering::Release);
    }

    /// Marks "inside a take, message not known yet": for a transport that learns which message
    /// it took only after the take committed (Redis). A consumer killed with this mark may have
    /// taken one message that nobody can name.
    pub(crate) fn set_getting(&self) {
        self.producer.store(MARK_GETTING, Ordering::Release);
    }

    /// Clears the mark (after the delivery was recorded).
    pub(crate) fn clear(&self) {
        self.producer.store(MARK_CLEAR, Ordering::Relaxed);
    }
}

/// Offsets of the ledger's parts.
#[derive(Debug)]
pub(crate) struct Ledger {
    region: Region,
    producers: usize,
    consumers: usize,
    per_producer: u64,
    producer_at: usize,
    consumer_at: usize,
    maybe_at: usize,
    hist_at: usize,
    area_at: usize,
    area_len: usize,
    deliveries_at: usize,
}

/// What one consumer slot recorded.
#[derive(Clone, Debug, Default)]
pub(crate) struct ConsumerTally {
    pub(crate) reordered: u64,
    pub(crate) garbage: u64,
    pub(crate) max_latency_ns: u64,
}

impl Ledger {
    /// A ledger for `producers` × `consumers`; each consumer gets a receive area of `area` bytes
    /// (at least the mark).
    pub(crate) fn new(
        producers: usize,
        consumers: usize,
        per_producer: u64,
        area: usize,
    ) -> Result<Self, String> {
        let producer_at = LINE;
        let consumer_at = producer_at + producers * LINE;
        let maybe_at = consumer_at + consumers * LINE;
        let hist_at = maybe_at + 8 * (MAX_MAYBE + 1);
        let area_at = hist_at + consumers * BUCKETS * 8;
        let area_len = area.max(MARK_LEN).div_ceil(LINE) * LINE;
        let deliveries_at = area_at + consumers * area_len;
        let len = deliveries_at as u64 + producers as u64 * per_producer;
        let len =
            usize::try_from(len).map_err(|_| "the ledger would not fit in memory".to_owned())?;
        let region = Region::anonymous(len).map_err(|e| format!("ledger: {e}"))?;
        let ledger = Ledger {
            region,
            producers,
            consumers,
            per_producer,
            producer_at,
            consumer_at,
            maybe_at,
            hist_at,
            area_at,
            area_len,
            deliveries_at,
        };
        for c in 0..consumers {
            ledger.clear_mark(c);
        }
        Ok(ledger)
    }

    /// Where the run started (CLOCK_MONOTONIC ns): the fixed-rate schedule counts from it.
    pub(crate) fn start_ns(&self) -> &AtomicU64 {
        self.u64_at(8)
    }

    fn mark_word(&self, c: usize, i: usize) -> &AtomicU64 {
        self.u64_at(self.area_at + c * self.area_len + i * 8)
    }

    /// Consumer `c`'s mark, looked up once (the hot path then makes no bounds check).
    pub(crate) fn mark_of(&self, c: usize) -> Mark<'_> {
        Mark {
            producer: self.mark_word(c, 0),
            seq: self.mark_word(c, 1),
        }
    }

    /// Clears consumer `c`'s mark (after its delivery was recorded, or by the parent once it has
    /// read a killed consumer's mark).
    pub(crate) fn clear_mark(&self, c: usize) {
        self.mark_of(c).clear();
        self.mark_word(c, 1).store(MARK_CLEAR, Ordering::Relaxed);
    }

    /// The (producer, seq) named by consumer `c`'s mark, if it names a message of this run.
    /// Read by the parent only after consumer `c`'s process is dead.
    pub(crate) fn read_mark(&self, c: usize) -> Option<(usize, u64)> {
        let w0 = self.mark_word(c, 0).load(Ordering::Acquire);
        let seq = self.mark_word(c, 1).load(Ordering::Acquire);
        let p = (w0 & 0xffff_ffff) as usize;
        (p < self.producers && seq < self.per_producer).then_some((p, seq))
    }

    /// Whether consumer `c` was killed inside a take it could not name (see
    /// [`Mark::set_getting`]). Read by the parent only after consumer `c`'s process is dead.
    pub(crate) fn mark_is_getting(&self, c: usize) -> bool {
        self.mark_word(c, 0).load(Ordering::Acquire) == MARK_GETTING
    }

    /// Consumer `c`'s receive area, for transports whose kernel copies the message in during the
    /// syscall that consumes it (so the mark is written before the take is visible to anyone).
    ///
    /// # Safety
    /// Call at most once per process, only in consumer `c`'s own process, and do not call
    /// [`mark`](Self::mark) or [`clear_mark`](Self::clear_mark) for `c` from that process while
    /// the slice lives: the slice must be the only access to the area in this process. (The
    /// parent reads the mark only after this process is dead.)
    #[allow(clippy::mut_from_ref)] // the contract above makes the slice the area's only user
    pub(crate) unsafe fn receive_area(&self, c: usize) -> &mut [u8] {
        assert!(c < self.consumers);
        let off = self.area_at + c * self.area_len;
        self.region
            .check_range(off as u64, self.area_len as u64, 8)
            .expect("the area is inside the ledger");
        // SAFETY: the range was checked to lie inside the mapping, which lives as long as
        // `self`; by the caller's contract nothing else in this process touches these bytes
        // while the slice lives, and other processes only read them after this one is dead.
        unsafe { std::slice::from_raw_parts_mut(self.region.as_ptr().add(off), self.area_len) }
    }

    fn u64_at(&self, off: usize) -> &AtomicU64 {
        self.region
            .get(Offset::new(off as u64))
            .expect("ledger offsets are in bounds")
    }

    fn u32_at(&self, off: usize) -> &AtomicU32 {
        self.region
            .get(Offset::new(off as u64))
            .expect("ledger offsets are in bounds")
    }

    /// How many sequence numbers each producer may use.
    pub(crate) fn per_producer(&self) -> u64 {
        self.per_producer
    }

    pub(crate) fn stop_flag(&self) -> &AtomicU32 {
        self.u32_at(0)
    }

    pub(crate) fn committed(&self, p: usize) -> &AtomicU64 {
        self.u64_at(self.producer_at + p * LINE)
    }

    pub(crate) fn producer_pid(&self, p: usize) -> &AtomicU32 {
        self.u32_at(self.producer_at + p * LINE + 8)
    }

    pub(crate) fn consumer_pid(&self, c: usize) -> &AtomicU32 {
        self.u32_at(self.consumer_at + c * LINE + 32)
    }

    fn consumer_u64(&self, c: usize, field: usize) -> &AtomicU64 {
        self.u64_at(self.consumer_at + c * LINE + field * 8)
    }

    fn delivery(&self, p: usize, seq: u64) -> &AtomicU8 {
        let off = self.deliveries_at as u64 + p as u64 * self.per_producer + seq;
        self.region
            .get(Offset::new(off))
            .expect("delivery index is in bounds")
    }

    /// Records that consumer `c` took `stamp`; `last` is the consumer's own last sequence per
    /// producer, for the order check.
    pub(crate) fn deliver(&self, c: usize, stamp: Stamp, last: &mut [u64], now_ns: u64) {
        let p = stamp.producer as usize;
        if p >= self.producers || stamp.seq >= self.per_producer {
            self.garbage(c);
            return;
        }
        self.delivery(p, stamp.seq).fetch_add(1, Ordering::Relaxed);
        if last[p] != u64::MAX && stamp.seq <= last[p] {
            self.consumer_u64(c, 0).fetch_add(1, Ordering::Relaxed);
        }
        last[p] = stamp.seq;
        let latency = now_ns.saturating_sub(stamp.sent_ns);
        let b = histogram::bucket(latency);
        self.u64_at(self.hist_at + (c * BUCKETS + b) * 8)
            .fetch_add(1, Ordering::Relaxed);
        self.consumer_u64(c, 2)
            .fetch_max(latency, Ordering::Relaxed);
        self.count_taken(c);
    }

    /// Bumps slot `c`'s taken count. One process at a time works a consumer slot (a replacement
    /// starts after its predecessor was reaped), so a plain load and store do, without the cost
    /// of a locked read-modify-write on the hot path.
    fn count_taken(&self, c: usize) {
        let taken = self.consumer_u64(c, 3);
        taken.store(taken.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// Messages consumer slot `c` has taken and recorded so far (every process in the slot).
    pub(crate) fn taken(&self, c: usize) -> u64 {
        self.consumer_u64(c, 3).load(Ordering::Relaxed)
    }

    /// Records a message that does not parse.
    pub(crate) fn garbage(&self, c: usize) {
        self.consumer_u64(c, 1).fetch_add(1, Ordering::Relaxed);
        self.count_taken(c);
    }

    pub(crate) fn tally(&self, c: usize) -> ConsumerTally {
        ConsumerTally {
            reordered: self.consumer_u64(c, 0).load(Ordering::Acquire),
            garbage: self.consumer_u64(c, 1).load(Ordering::Acquire),
            max_latency_ns: self.consumer_u64(c, 2).load(Ordering::Acquire),
        }
    }

    /// The latency histogram of consumer slot `c`.
    pub(crate) fn histogram(&self, c: usize) -> Vec<u64> {
        (0..BUCKETS)
            .map(|b| {
                self.u64_at(self.hist_at + (c * BUCKETS + b) * 8)
                    .load(Ordering::Acquire)
            })
            .collect()
    }

    /// Notes that producer `p`'s send of `seq` was in flight when it was killed.
    pub(crate) fn add_maybe(&self, p: usize, seq: u64) -> Result<(), String> {
        let count = self.u64_at(self.maybe_at);
        let n = count.load(Ordering::Relaxed) as usize;
        if n >= MAX_MAYBE {
            return Err(format!(
                "more than {MAX_MAYBE} producer kills: raise --kill-every"
            ));
        }
        self.u64_at(self.maybe_at + 8 * (n + 1))
            .store(((p as u64) << 40) | seq, Ordering::Relaxed);
        count.store(n as u64 + 1, Ordering::Release);
        Ok(())
    }

    /// Every (producer, seq) in flight at a producer kill.
    pub(crate) fn maybes(&self) -> Vec<(usize, u64)> {
        let n = self.u64_at(self.maybe_at).load(Ordering::Acquire) as usize;
        (0..n)
            .map(|i| {
                let v = self
                    .u64_at(self.maybe_at + 8 * (i + 1))
                    .load(Ordering::Relaxed);
                ((v >> 40) as usize, v & ((1 << 40) - 1))
            })
            .collect()
    }

    /// How many times producer `p`'s message `seq` was delivered.
    pub(crate) fn deliveries(&self, p: usize, seq: u64) -> u8 {
        self.delivery(p, seq).load(Ordering::Acquire)
    }

    pub(crate) fn consumers(&self) -> usize {
        self.consumers
    }
}

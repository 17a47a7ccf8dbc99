//! Pure ring-buffer arithmetic: cursors, frame sizes, where frames go, how they are read back.
//!
//! No unsafe and no shared memory here, so it is unit- and property-tested on plain memory.
//!
//! The ring is `cap` bytes (a multiple of 8). A *frame* is an 8-byte header — payload length,
//! then its bitwise complement as a check — and the payload, padded to 8 bytes. A frame never
//! straddles the end: when it does not fit before the end, a *wrap marker* (length `u32::MAX`)
//! is written where it would have started and the frame goes at offset 0.
//!
//! Producer and consumer each own one 64-bit *cursor*: the byte offset of the next frame (low
//! half) and the count of frames put or taken (high half, wrapping). One aligned store of a
//! cursor is the commit point of a put or a get: everything written before it is invisible until
//! the store, and complete after it.

/// Bytes of a frame header: length and check.
pub(crate) const FRAME_HEADER: u32 = 8;
/// The length word that says "the next frame is at offset 0".
pub(crate) const WRAP_MARKER: u32 = u32::MAX;
/// The smallest ring accepted.
pub(crate) const MIN_CAPACITY: u32 = 64;
/// The largest ring accepted (1 GiB): keeps every offset sum inside `u32`.
pub(crate) const MAX_CAPACITY: u32 = 1 << 30;

/// The check word stored after a frame's length.
pub(crate) fn check_word(len: u32) -> u32 {
    !len ^ 0x5a5a_5a5a
}

/// Bytes a frame with `payload` bytes occupies, or None if it cannot exist.
pub(crate) fn frame_len(payload: usize) -> Option<u32> {
    let p = u32::try_from(payload).ok()?;
    if p >= MAX_CAPACITY {
        return None;
    }
    Some(FRAME_HEADER + ((p + 7) & !7))
}

/// The largest payload a ring of `cap` bytes can ever hold.
pub(crate) fn max_payload(cap: u32) -> usize {
    (cap - FRAME_HEADER) as usize
}

/// One side's position: the offset of the next frame and how many frames passed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub(crate) off: u32,
    pub(crate) count: u32,
}

impl Cursor {
    pub(crate) fn pack(self) -> u64 {
        (u64::from(self.count) << 32) | u64::from(self.off)
    }

    pub(crate) fn unpack(word: u64) -> Self {
        Cursor {
            off: word as u32,
            count: (word >> 32) as u32,
        }
    }
}

/// Frames in the ring.
pub(crate) fn items(head: Cursor, tail: Cursor) -> u32 {
    tail.count.wrapping_sub(head.count)
}

/// Bytes in use (frames and wrap padding).
pub(crate) fn used(cap: u32, head: Cursor, tail: Cursor) -> u32 {
    if items(head, tail) == 0 {
        return 0;
    }
    let d = (tail.off + cap - head.off) % cap;
    if d == 0 {
        cap
    } else {
        d
    }
}

/// Whether head and tail describe a state a correct ring can be in.
pub(crate) fn consistent(cap: u32, head: Cursor, tail: Cursor) -> bool {
    let n = items(head, tail);
    head.off < cap
        && tail.off < cap
        && head.off % 8 == 0
        && tail.off % 8 == 0
        && n <= cap / FRAME_HEADER
        && (n == 0 || used(cap, head, tail) >= n * FRAME_HEADER)
}

/// Where one frame goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Placement {
    /// Offset of the frame header.
    pub(crate) at: u32,
    /// Where a wrap marker must be written first, if the frame wrapped.
    pub(crate) marker_at: Option<u32>,
}

/// Places a batch of frames, from the producer's view under the put lock: the tail's offset
/// `pos` and an upper bound `used` on the bytes in use (a head read at some earlier time gives
/// one: the head only moves on, which frees room).
///
/// The ring goes on at the tail, wrapping with a marker when a frame does not fit before the end.
/// An empty ring whose next frame does not fit before the end *restarts* at offset 0 instead
/// ([`Appender::restart`]), so any batch of up to `cap` bytes fits an empty ring (a put never
/// waits for room that cannot come) and an empty ring never wastes its end on a marker.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Appender {
    cap: u32,
    pos: u32,
    used: u32,
    /// The consumer cursor must be moved to offset 0 before the commit.
    pub(crate) reset_head: bool,
}

impl Appender {
    /// Goes on at `pos` with at most `used` bytes in use.
    pub(crate) fn at(cap: u32, pos: u32, used: u32) -> Self {
        Appender {
            cap,
            pos,
            used,
            reset_head: false,
        }
    }

    /// Starts an empty ring over at offset 0. The producer stores the head cursor with offset 0
    /// (same count) before its commit: consumers read the tail before the head, so one that sees
    /// the commit sees the moved head, and one that does not sees an empty ring. A producer
    /// killed between the two stores leaves an empty ring whose head (0) and tail disagree; the
    /// next holder of the put lock, told the holder died, moves the tail to the head.
    pub(crate) fn restart(cap: u32) -> Self {
        Appender {
            cap,
            pos: 0,
            used: 0,
            reset_head: true,
        }
    }

    /// Whether a frame of `len` bytes would need a wrap marker here.
    pub(crate) fn wraps(&self, len: u32) -> bool {
        self.cap - self.pos < len
    }

    /// The bound on bytes in use after the placed frames.
    pub(crate) fn used(&self) -> u32 {
        self.used
    }

    /// Places a frame of `len` bytes, or None if there is no room now.
    pub(crate) fn place(&mut self, len: u32) -> Option<Placement> {
        let to_end = self.cap - self.pos;
        let (at, marker_at, need) = if to_end >= len {
            (self.pos, None, len)
        } else {
            (0, Some(self.pos), to_end + len)
        };
        if u64::from(self.used) + u64::from(need) > u64::from(self.cap) {
            return None;
        }
        self.used += need;
        self.pos = if at + len == self.cap { 0 } else { at + len };
        Some(Placement { at, marker_at })
    }

    /// The producer cursor's offset after the placed frames.
    pub(crate) fn end(&self) -> u32 {
        self.pos
    }
}

/// Why a frame could not be read back.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BadFrame {
    pub(crate) at: u32,
    pub(crate) len: u32,
    pub(crate) check: u32,
}

/// Finds the frame at the consumer's offset `off`: returns (payload offset, payload length,
/// offset after the frame), following a wrap marker. `read_u32(o)` reads the word at offset `o`.
///
/// Every length is validated against the ring's bounds, so even a corrupt ring never makes a
/// reader copy outside it.
pub(crate) fn locate(
    cap: u32,
    off: u32,
    read_u32: impl Fn(u32) -> u32,
) -> Result<(u32, u32, u32), BadFrame> {
    let mut at = off;
    let mut len = read_u32(at);
    if len == WRAP_MARKER && at != 0 {
        at = 0;
        len = read_u32(at);
    }
    let check = read_u32(at + 4);
    let bad = || BadFrame { at, len, check };
    if check != check_word(len) {
        return Err(bad());
    }
    let flen = frame_len(len as usize).ok_or_else(bad)?;
    if flen > cap - at {
        return Err(bad());
    }
    let next = if at + flen == cap { 0 } else { at + flen };
    Ok((at + FRAME_HEADER, len, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_lengths_are_padded_to_eight() {
        assert_eq!(frame_len(0), Some(8));
        assert_eq!(frame_len(1), Some(16));
        assert_eq!(frame_len(8), Some(16));
        assert_eq!(frame_len(9), Some(24));
        assert_eq!(frame_len(MAX_CAPACITY as usize), None);
    }

    #[test]
    fn cursor_round_trips() {
        let c = Cursor {
            off: 0xdead_bee8,
            count: 7,
        };
        assert_eq!(Cursor::unpack(c.pack()), c);
    }

    #[test]
    fn restart_places_from_zero_and_fits_a_full_size_frame() {
        let at = Appender::at(64, 40, 0);
        assert!(!at.reset_head);
        assert!(!at.wraps(24));
        assert!(at.wraps(32));
        let mut a = Appender::restart(64);
        assert!(a.reset_head);
        assert_eq!(
            a.place(64),
            Some(Placement {
                at: 0,
                marker_at: None
            })
        );
        assert_eq!(a.end(), 0);
        assert_eq!(a.used(), 64);
        assert_eq!(a.place(8), None);
    }

    #[test]
    fn an_upper_bound_on_used_never_places_over_it() {
        // Tail at 48, 40 bytes in use at most (head at 8 or later): 16 + 8 free.
        let mut a = Appender::at(64, 48, 40);
        assert_eq!(
            a.place(16),
            Some(Placement {
                at: 48,
                marker_at: None
            })
        );
        assert_eq!(a.place(16), None);
        assert_eq!(
            a.place(8),
            Some(Placement {
                at: 0,
                marker_at: None
            })
        );
        assert_eq!(a.used(), 64);
    }

    #[test]
    fn a_frame_that_does_not_fit_before_the_end_wraps_with_a_marker() {
        // One 16-byte frame at 40..56, head at 40: 8 bytes before the end, 40 at the start.
        let head = Cursor { off: 40, count: 0 };
        let tail = Cursor { off: 56, count: 1 };
        let mut a = Appender::at(64, tail.off, used(64, head, tail));
        assert_eq!(
            a.place(16),
            Some(Placement {
                at: 0,
                marker_at: Some(56)
            })
        );
        assert_eq!(a.end(), 16);
        // 8 (frame) + 8 (pad) + 16 used at most 64: 24 left before head at 40.
        assert_eq!(
            a.place(24),
            Some(Placement {
                at: 16,
                marker_at: None
            })
        );
        assert_eq!(a.place(8), None);
    }

    #[test]
    fn used_counts_a_full_ring() {
        let head = Cursor { off: 16, count: 0 };
        let tail = Cursor { off: 16, count: 4 };
        assert_eq!(used(64, head, tail), 64);
        assert_eq!(used(64, head, Cursor { off: 16, count: 0 }), 0);
    }

    #[test]
    fn locate_rejects_lengths_that_leave_the_ring() {
        let mut ring = [0u32; 16]; // 64 bytes
        ring[0] = 100;
        ring[1] = check_word(100);
        assert!(locate(64, 0, |o| ring[o as usize / 4]).is_err());
        ring[1] = 0;
        assert!(locate(64, 0, |o| ring[o as usize / 4]).is_err());
        ring[0] = 4;
        ring[1] = check_word(4);
        assert_eq!(locate(64, 0, |o| ring[o as usize / 4]), Ok((8, 4, 16)));
    }

    #[test]
    fn locate_follows_a_wrap_marker() {
        let mut ring = [0u32; 16];
        ring[14] = WRAP_MARKER;
        ring[0] = 0;
        ring[1] = check_word(0);
        assert_eq!(locate(64, 56, |o| ring[o as usize / 4]), Ok((8, 0, 8)));
    }
}

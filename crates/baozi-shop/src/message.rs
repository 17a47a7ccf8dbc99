//! The harness's message: producer id, sequence number and send timestamp, padded to `--size`.
//!
//! ```text
//! 0..4   producer id (u32, little-endian); u32::MAX marks a stop sentinel
//! 4..8   reserved (0)
//! 8..16  sequence number within the producer (u64)
//! 16..24 send time, CLOCK_MONOTONIC nanoseconds (u64)
//! 24..   padding up to the message size
//! ```

/// Bytes of the stamp; the smallest message the harness sends.
pub const STAMP_LEN: usize = 24;

/// The producer id of a stop sentinel.
const STOP: u32 = u32::MAX;

/// What every harness message carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// Which producer slot sent it.
    pub producer: u32,
    /// Its position in that producer's sequence.
    pub seq: u64,
    /// When it was sent (CLOCK_MONOTONIC ns, comparable across processes).
    pub sent_ns: u64,
}

/// Writes `stamp` at the start of `buf` (at least [`STAMP_LEN`] bytes); the rest is untouched.
pub fn encode(stamp: Stamp, buf: &mut [u8]) {
    buf[0..4].copy_from_slice(&stamp.producer.to_le_bytes());
    buf[4..8].copy_from_slice(&0u32.to_le_bytes());
    buf[8..16].copy_from_slice(&stamp.seq.to_le_bytes());
    buf[16..24].copy_from_slice(&stamp.sent_ns.to_le_bytes());
}

/// Writes a stop sentinel.
pub fn encode_stop(buf: &mut [u8]) {
    encode(
        Stamp {
            producer: STOP,
            seq: 0,
            sent_ns: 0,
        },
        buf,
    );
}

/// What a received message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A data message.
    Data(Stamp),
    /// A stop sentinel: the consumer should exit.
    Stop,
    /// Too short to carry a stamp.
    Garbage,
}

/// Reads the stamp of a received message.
pub fn decode(buf: &[u8]) -> Decoded {
    if buf.len() < STAMP_LEN {
        return Decoded::Garbage;
    }
    let u32_at = |o: usize| u32::from_le_bytes(buf[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |o: usize| u64::from_le_bytes(buf[o..o + 8].try_into().expect("8 bytes"));
    let producer = u32_at(0);
    if producer == STOP {
        return Decoded::Stop;
    }
    Decoded::Data(Stamp {
        producer,
        seq: u64_at(8),
        sent_ns: u64_at(16),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_sentinels_are_recognised() {
        let mut buf = vec![0xee; 64];
        let s = Stamp {
            producer: 3,
            seq: 1 << 40,
            sent_ns: 12345,
        };
        encode(s, &mut buf);
        assert_eq!(decode(&buf), Decoded::Data(s));
        encode_stop(&mut buf);
        assert_eq!(decode(&buf), Decoded::Stop);
        assert_eq!(decode(&buf[..10]), Decoded::Garbage);
    }
}

//! Helpers shared by the forking tests of the heap (`fork_churn`, `kill9_alloc`): a block
//! record that packs into one `u64` (so it can sit in a shared slot), and a pattern written into
//! a block at alloc and checked before its free.
#![allow(dead_code)]

use std::alloc::Layout;

use baozi_alloc::Heap;
use baozi_shm::Offset;

/// Bytes per chunk of the heap.
pub(crate) const CHUNK: usize = 64 * 1024;

/// Slot flag: the block's pattern is completely written.
pub(crate) const FILLED: u64 = 1 << 62;
/// Slot flag: its owner is freeing it (set before `free`, the slot cleared after).
pub(crate) const FREEING: u64 = 1 << 63;

const OFF_BITS: u32 = 36;
const SIZE_BITS: u32 = 18;
const MAGIC: u64 = 0x6261_6f7a_6921_a11c;

pub(crate) fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).expect("valid layout")
}

/// One block a process owns: where, how many bytes it asked for, and its pattern byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rec {
    pub(crate) off: u64,
    pub(crate) size: usize,
    pub(crate) fill: u8,
}

impl Rec {
    /// The record in one word (never 0: a block is never at offset 0), flags clear.
    pub(crate) fn pack(self) -> u64 {
        assert!(self.off < 1 << OFF_BITS && self.size < 1 << SIZE_BITS);
        self.off | (self.size as u64) << OFF_BITS | u64::from(self.fill) << (OFF_BITS + SIZE_BITS)
    }

    /// The record in a slot word (flags ignored).
    pub(crate) fn unpack(w: u64) -> Rec {
        Rec {
            off: w & ((1 << OFF_BITS) - 1),
            size: ((w >> OFF_BITS) & ((1 << SIZE_BITS) - 1)) as usize,
            fill: (w >> (OFF_BITS + SIZE_BITS)) as u8,
        }
    }

    fn header(self) -> [u8; 8] {
        (self.off ^ MAGIC ^ u64::from(self.fill).wrapping_mul(0x0101_0101_0101_0101)).to_le_bytes()
    }

    /// The bytes this record writes: all of them, or (`ends`) the first and last 256.
    fn spans(self, ends: bool) -> [(usize, usize); 2] {
        if ends && self.size > 512 {
            [(0, 256), (self.size - 256, self.size)]
        } else {
            [(0, self.size), (0, 0)]
        }
    }

    fn expected(self, i: usize) -> u8 {
        if i < 8 {
            self.header()[i]
        } else {
            self.fill
        }
    }

    /// Writes the pattern (the header, then the fill byte) into the block.
    pub(crate) fn write(self, heap: &Heap, ends: bool) {
        let p = heap
            .ptr(Offset::new(self.off))
            .expect("ptr of an owned block");
        // SAFETY: the block is ours, at least `size` bytes (usable_size >= size).
        let b = unsafe { std::slice::from_raw_parts_mut(p.as_ptr(), self.size) };
        for (lo, hi) in self.spans(ends) {
            b[lo..hi].fill(self.fill);
        }
        let h = self.header();
        let n = self.size.min(8);
        b[..n].copy_from_slice(&h[..n]);
    }

    /// Checks the pattern; the first wrong byte as an error.
    pub(crate) fn check(self, heap: &Heap, ends: bool) -> Result<(), String> {
        let p = heap
            .ptr(Offset::new(self.off))
            .map_err(|e| format!("ptr({}): {e}", self.off))?;
        // SAFETY: the block is ours (or handed to us), at least `size` bytes.
        let b = unsafe { std::slice::from_raw_parts(p.as_ptr(), self.size) };
        for (lo, hi) in self.spans(ends) {
            if let Some(i) = (lo..hi).find(|&i| b[i] != self.expected(i)) {
                return Err(format!(
                    "block {:?}: byte {i} is {:#04x}, expected {:#04x} (handed out twice, or written by the heap?)",
                    self, b[i], self.expected(i)
                ));
            }
        }
        Ok(())
    }
}

/// A size from 1..=70000, mostly small: 60% up to 256 B, 30% up to 16 KiB, 10% large.
pub(crate) fn random_size(r: u64) -> usize {
    let pick = r % 100;
    let x = (r >> 8) as usize;
    if pick < 60 {
        1 + x % 256
    } else if pick < 90 {
        257 + x % (16384 - 256)
    } else {
        16385 + x % (70000 - 16384)
    }
}

/// An alignment: 8 three times in four, else any power of two up to 4096.
pub(crate) fn random_align(r: u64) -> usize {
    if r % 4 != 0 {
        8
    } else {
        1 << ((r >> 8) % 13)
    }
}

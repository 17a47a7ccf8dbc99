//! Pure size-class arithmetic: which class a request falls in, and how a class fills a chunk.
//!
//! Small requests (≤ 16 KiB, alignment ≤ 4 KiB) are served from *slabs*: 64 KiB chunks given
//! to one class and cut into equal blocks, with an allocation bitmap at the start of the chunk.
//! Classes step by 16 B up to 128 B, then by quarter powers of two, so rounding wastes at most
//! a quarter of a block. Larger requests take whole chunks.

/// Bytes per chunk: the unit slabs and large allocations are made of.
pub(crate) const CHUNK: usize = 64 * 1024;
/// log2(CHUNK).
pub(crate) const CHUNK_SHIFT: u32 = 16;
/// The largest alignment the heap honours (the page size: regions are page-aligned in every
/// process, so nothing larger can hold at every mapping address).
pub(crate) const MAX_ALIGN: usize = 4096;
/// The smallest block; also the alignment of every block.
pub(crate) const MIN_BLOCK: usize = 16;

/// Block sizes of the small classes.
pub(crate) const CLASS_SIZES: [u32; 36] = [
    16, 32, 48, 64, 80, 96, 112, 128, //
    160, 192, 224, 256, 320, 384, 448, 512, //
    640, 768, 896, 1024, 1280, 1536, 1792, 2048, //
    2560, 3072, 3584, 4096, 5120, 6144, 7168, 8192, //
    10240, 12288, 14336, 16384,
];

/// Number of small classes.
pub(crate) const CLASSES: usize = CLASS_SIZES.len();

/// The largest request served by a slab.
pub(crate) const MAX_SMALL: usize = 16384;

/// Where a request goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// Small class index.
    Small(usize),
    /// Whole chunks.
    Large(usize),
}

/// The alignment every block of a class has (relative to the chunk, which is page-aligned).
pub(crate) fn class_align(class: usize) -> usize {
    let size = CLASS_SIZES[class] as usize;
    (1usize << size.trailing_zeros()).min(MAX_ALIGN)
}

/// Requests up to this size with alignment ≤ [`MIN_BLOCK`] are routed by a table.
const TABLE_MAX: usize = 1024;

/// `SMALL_TABLE[(size + 15) / 16]`: the first class that holds `size` bytes (alignment ≤ 16
/// needs nothing more: every block is 16-aligned).
const SMALL_TABLE: [u8; TABLE_MAX / 16 + 1] = {
    let mut t = [0u8; TABLE_MAX / 16 + 1];
    let mut i = 0;
    while i < t.len() {
        let size = if i == 0 { 1 } else { i * 16 };
        let mut c = 0;
        while (CLASS_SIZES[c] as usize) < size {
            c += 1;
        }
        t[i] = c as u8;
        i += 1;
    }
    t
};

/// Picks the route for `size` bytes aligned to `align` (a power of two ≤ [`MAX_ALIGN`]).
#[inline]
pub(crate) fn route(size: usize, align: usize) -> Route {
    debug_assert!(align.is_power_of_two() && align <= MAX_ALIGN);
    if size <= TABLE_MAX && align <= MIN_BLOCK {
        return Route::Small(SMALL_TABLE[size.div_ceil(16)] as usize);
    }
    route_slow(size, align)
}

fn route_slow(size: usize, align: usize) -> Route {
    let size = size.max(1);
    if size <= MAX_SMALL {
        for (c, &s) in CLASS_SIZES.iter().enumerate() {
            let s = s as usize;
            if s >= size && (align <= MIN_BLOCK || (s % align == 0 && class_align(c) >= align)) {
                return Route::Small(c);
            }
        }
    }
    Route::Large(size.div_ceil(CHUNK))
}

/// How a class fills a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SlabGeometry {
    /// Block size.
    pub(crate) block: u32,
    /// Blocks per slab.
    pub(crate) blocks: u32,
    /// Offset of block 0 from the chunk start (after the bitmap).
    pub(crate) data_start: u32,
    /// u64 words of allocation bitmap at the chunk start.
    pub(crate) bitmap_words: u32,
    /// `ceil(2^32 / block)`: `(d * recip) >> 32` is `d / block` for every `d` below a chunk,
    /// without a division instruction (tens of cycles) on the alloc/free path.
    pub(crate) recip: u64,
}

impl SlabGeometry {
    /// `d / block` for `d < CHUNK` (64 KiB). Exact: with `d < 2^16` and `block <= 2^16`, the
    /// reciprocal's error adds less than `2^-16` to a quotient whose fractional part is at most
    /// `1 - 1/block <= 1 - 2^-16`.
    #[inline]
    pub(crate) fn index_of(&self, d: usize) -> usize {
        debug_assert!(d < CHUNK);
        ((d as u64 * self.recip) >> 32) as usize
    }
}

/// The geometry of `class`'s slabs: as many blocks as fit after their bitmap.
pub(crate) fn geometry(class: usize) -> SlabGeometry {
    let block = CLASS_SIZES[class] as usize;
    let align = class_align(class).max(MIN_BLOCK);
    let mut blocks = CHUNK / block;
    loop {
        let words = blocks.div_ceil(64);
        let data_start = (words * 8).div_ceil(align) * align;
        if data_start + blocks * block <= CHUNK {
            return SlabGeometry {
                block: block as u32,
                blocks: blocks as u32,
                data_start: data_start as u32,
                bitmap_words: words as u32,
                recip: (1u64 << 32).div_ceil(block as u64),
            };
        }
        blocks -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_route_table_agrees_with_the_search() {
        for size in 0..=TABLE_MAX {
            for align in [1, 2, 4, 8, 16] {
                assert_eq!(
                    route(size, align),
                    route_slow(size, align),
                    "{size} {align}"
                );
            }
        }
    }

    #[test]
    fn reciprocal_division_is_exact_below_a_chunk() {
        for c in 0..CLASSES {
            let g = geometry(c);
            for d in 0..CHUNK {
                assert_eq!(g.index_of(d), d / g.block as usize, "class {c}, d {d}");
            }
        }
    }

    #[test]
    fn every_class_fits_its_chunk_and_aligns_its_blocks() {
        for c in 0..CLASSES {
            let g = geometry(c);
            assert!(g.blocks >= 3, "class {c}");
            assert!(g.data_start as usize >= g.bitmap_words as usize * 8);
            assert!(g.data_start as usize + (g.blocks * g.block) as usize <= CHUNK);
            assert_eq!(g.data_start as usize % class_align(c).max(MIN_BLOCK), 0);
            assert!(g.bitmap_words as usize * 64 >= g.blocks as usize);
        }
    }

    #[test]
    fn routes_round_up_at_most_a_quarter_and_honour_alignment() {
        for size in 1..=MAX_SMALL {
            let Route::Small(c) = route(size, 1) else {
                panic!("{size}")
            };
            let s = CLASS_SIZES[c] as usize;
            assert!(s >= size);
            assert!(size <= 128 || (s - size) * 4 <= s, "{size} -> {s}");
        }
        for align in [32usize, 64, 128, 256, 512, 1024, 2048, 4096] {
            for size in [1usize, 17, 100, 1000, 4096, 5000] {
                match route(size, align) {
                    Route::Small(c) => {
                        let g = geometry(c);
                        assert_eq!(g.block as usize % align, 0);
                        assert_eq!(g.data_start as usize % align, 0);
                        assert!(g.block as usize >= size);
                    }
                    Route::Large(n) => assert!(n * CHUNK >= size),
                }
            }
        }
        assert_eq!(route(MAX_SMALL + 1, 8), Route::Large(1));
        assert_eq!(route(3 * CHUNK + 1, 8), Route::Large(4));
    }
}

//! Random alloc/free sequences against a model of live blocks: no two live blocks overlap,
//! alignment holds, contents survive until freed, double frees and foreign offsets are refused,
//! and the accounting adds up.
#![no_main]

use std::alloc::Layout;
use std::collections::BTreeMap;

use baozi_alloc::{AllocError, Heap};
use baozi_shm::Offset;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let heap = Heap::anonymous(512 * 1024).unwrap();
    // offset -> (usable size, fill byte)
    let mut live: BTreeMap<u64, (usize, u8)> = BTreeMap::new();
    let mut freed: Vec<u64> = Vec::new();
    let mut bytes = data.iter().copied();
    let mut fill = 0u8;
    while let Some(op) = bytes.next() {
        let arg = u16::from_le_bytes([bytes.next().unwrap_or(0), bytes.next().unwrap_or(0)]);
        match op % 4 {
            0 | 1 => {
                let size = if op & 0x80 != 0 { usize::from(arg) * 4 } else { usize::from(arg % 2048) };
                let align = 1usize << (op as usize >> 2 & 0x7).min(12);
                match heap.alloc(Layout::from_size_align(size, align).unwrap()) {
                    Ok(off) => {
                        let usable = heap.usable_size(off).unwrap();
                        assert!(usable >= size.max(1));
                        let p = heap.ptr(off).unwrap().as_ptr();
                        assert_eq!(p as usize % align, 0);
                        let o = off.get();
                        if let Some((&prev, &(len, _))) = live.range(..o).next_back() {
                            assert!(prev + len as u64 <= o, "overlap with {prev}");
                        }
                        if let Some((&next, _)) = live.range(o..).next() {
                            assert!(o + usable as u64 <= next, "overlap with {next}");
                        }
                        fill = fill.wrapping_add(1);
                        // SAFETY: the block is ours and `usable` bytes long.
                        unsafe { std::ptr::write_bytes(p, fill, usable) };
                        live.insert(o, (usable, fill));
                        freed.retain(|&f| f != o);
                    }
                    Err(AllocError::OutOfMemory { .. }) => {}
                    Err(e) => panic!("alloc({size}, {align}): {e}"),
                }
            }
            2 => {
                if live.is_empty() {
                    continue;
                }
                let i = usize::from(arg) % live.len();
                let (&o, &(len, f)) = live.iter().nth(i).unwrap();
                let p = heap.ptr(Offset::new(o)).unwrap().as_ptr();
                // SAFETY: the block is live and `len` bytes long.
                let contents = unsafe { std::slice::from_raw_parts(p, len) };
                assert!(contents.iter().all(|&b| b == f), "block at {o} was overwritten");
                heap.free(Offset::new(o)).unwrap();
                live.remove(&o);
                freed.push(o);
            }
            _ => {
                // Free something that is not live: must be refused, and change nothing.
                let o = match freed.get(usize::from(arg) % freed.len().max(1)) {
                    Some(&o) if op & 0x80 == 0 => o,
                    _ => u64::from(arg) * 8,
                };
                if live.contains_key(&o) {
                    continue;
                }
                match heap.free(Offset::new(o)) {
                    Err(AllocError::DoubleFree { .. }) | Err(AllocError::ForeignOffset { .. }) => {}
                    other => panic!("free of non-live {o}: {other:?}"),
                }
            }
        }
    }
    let stats = heap.stats().unwrap();
    assert_eq!(stats.used, live.values().map(|v| v.0).sum::<usize>());
    assert_eq!(stats.leaked_suspect, 0);
    for (&o, _) in &live {
        heap.free(Offset::new(o)).unwrap();
    }
    assert_eq!(heap.stats().unwrap().used, 0);
});

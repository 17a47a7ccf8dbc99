//! Functions by reference across processes of the same program.
//!
//! A fork has the parent's addresses, but a spawned child (this program run again) is loaded
//! at another address (ASLR). What does not change between two runs of the same executable is
//! where a function lies *relative to another function of the same executable*. So a
//! function crosses as its offset from [`anchor`], a function of this crate; the child adds
//! its own `anchor`'s address. That holds for every function linked into the executable (all
//! Rust code of a normal build, the user's included), and is checked with `dladdr` before a
//! reference is sent to a spawned child ([`FnRef::portable`]): a function from a shared
//! library is refused. The child also checks that it is the same image ([`image_mark`]).
//!
//! Forks use the same offsets, so the workers' hot path is one addition under every method.

use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

use crate::sys;

/// The fixed point of this executable that offsets are taken from.
#[inline(never)]
fn anchor() {
    std::hint::black_box(());
}

/// A second fixed point: its offset from [`anchor`] identifies the image (two builds of the
/// program differ there).
#[inline(never)]
fn mark() {
    std::hint::black_box(1u8);
}

/// The address of [`anchor`].
fn anchor_addr() -> usize {
    anchor as fn() as usize
}

/// A function of this program, by its offset from [`anchor`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct FnRef(isize);

impl FnRef {
    /// The reference of the function at `addr` (valid in this process and its forks).
    pub(crate) fn new(addr: usize) -> FnRef {
        FnRef(addr.wrapping_sub(anchor_addr()) as isize)
    }

    /// The function's address in this process.
    pub(crate) fn addr(self) -> usize {
        anchor_addr().wrapping_add_signed(self.0)
    }

    /// Whether the function lies in the program's executable, as this crate does, so that
    /// the reference holds in a spawned run of the program too.
    pub(crate) fn portable(self) -> bool {
        let base = executable_base();
        base.is_some() && sys::object_base(self.addr()) == base
    }
}

/// The base of the executable when this crate is part of it; `None` when baozi lives in a
/// shared library that another program loaded (a spawned child would run that program).
fn executable_base() -> Option<usize> {
    static BASE: OnceLock<Option<usize>> = OnceLock::new();
    *BASE.get_or_init(|| {
        let anchor = sys::object_base(anchor_addr());
        anchor.filter(|&b| sys::executable_base() == Some(b))
    })
}

/// Whether a spawned run of the program (`/proc/self/exe`) contains this crate.
pub(crate) fn in_executable() -> bool {
    executable_base().is_some()
}

/// This image's mark: equal in every run of the same executable.
pub(crate) fn image_mark() -> isize {
    (mark as fn() as usize).wrapping_sub(anchor_addr()) as isize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(x: u32) -> u32 {
        x + 1
    }

    #[test]
    fn a_reference_round_trips_and_is_portable() {
        let f = sample as fn(u32) -> u32;
        let r = FnRef::new(f as usize);
        assert_eq!(r.addr(), f as usize);
        assert!(r.portable());
        // libc's own functions live in a shared library: not portable.
        assert!(!FnRef::new(libc::getpid as *const () as usize).portable());
    }
}

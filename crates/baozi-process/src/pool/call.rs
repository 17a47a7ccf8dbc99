//! Functions across to the workers: a task names its function by reference.
//!
//! The workers run the same binary image as the process that made the pool (forks of it, or
//! spawned runs of the same executable), so a function crosses as a [`FnRef`], its place in
//! the image (see `start/image.rs`). A task carries two: the user's function, and a *trampoline*, this
//! module's generic function monomorphised for the task's argument and result types, which
//! decodes the arguments, calls the function on each, and encodes the results. This is the only
//! module of the pool with `unsafe` code.

use std::panic::{self, AssertUnwindSafe};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::proto::Failure;
use crate::child::panic_message;
use crate::start::FnRef;

/// A trampoline: (function address, encoded `Vec` of arguments) → encoded `Vec` of results.
type Trampoline = unsafe fn(usize, &[u8]) -> Result<Vec<u8>, Failure>;

/// A function ready to be sent to a worker: the trampoline's reference and the function's.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Call {
    pub(crate) trampoline: FnRef,
    pub(crate) func: FnRef,
    /// The argument's type name (a tuple for a binary call) and the result's, for a backend
    /// that finds the task by name (they must match the registered task's).
    pub(crate) arg_type: &'static str,
    pub(crate) result_type: &'static str,
}

impl Call {
    /// `f` applied to each item of a chunk of `A`s.
    pub(crate) fn unary<A, R>(f: fn(A) -> R) -> Call
    where
        A: DeserializeOwned,
        R: Serialize,
    {
        Call {
            trampoline: FnRef::new(run_unary::<A, R> as Trampoline as usize),
            func: FnRef::new(f as usize),
            arg_type: std::any::type_name::<A>(),
            result_type: std::any::type_name::<R>(),
        }
    }

    /// `f` applied to each `(A, B)` pair of a chunk (Python's `starmap`).
    pub(crate) fn binary<A, B, R>(f: fn(A, B) -> R) -> Call
    where
        A: DeserializeOwned,
        B: DeserializeOwned,
        R: Serialize,
    {
        Call {
            trampoline: FnRef::new(run_binary::<A, B, R> as Trampoline as usize),
            func: FnRef::new(f as usize),
            arg_type: std::any::type_name::<(A, B)>(),
            result_type: std::any::type_name::<R>(),
        }
    }

    /// Whether the call holds in a spawned copy of the program (both functions are in the
    /// executable).
    pub(crate) fn portable(&self) -> bool {
        self.trampoline.portable() && self.func.portable()
    }
}

/// A registered task's call, as addresses in this process (made by the [`task!`](crate::task)
/// registration; a remote worker runs a task found by name through it).
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub struct TaskRefs {
    pub(crate) trampoline: usize,
    pub(crate) func: usize,
}

#[doc(hidden)]
pub fn unary_refs<A: DeserializeOwned, R: Serialize>(f: fn(A) -> R) -> TaskRefs {
    let c = Call::unary(f);
    TaskRefs {
        trampoline: c.trampoline.addr(),
        func: c.func.addr(),
    }
}

#[doc(hidden)]
pub fn binary_refs<A: DeserializeOwned, B: DeserializeOwned, R: Serialize>(
    f: fn(A, B) -> R,
) -> TaskRefs {
    let c = Call::binary(f);
    TaskRefs {
        trampoline: c.trampoline.addr(),
        func: c.func.addr(),
    }
}

/// Runs a task in a worker.
///
/// # Safety
///
/// `trampoline` and `func` must be the fields of a [`Call`] made in this binary image by this
/// process, a process this one was forked from, or a run of the same executable (a spawned
/// worker, whose image mark was checked): the pool's parent writes them into a task queue
/// that only the pool's own processes map, and nothing else writes there.
pub(crate) unsafe fn invoke(
    trampoline: FnRef,
    func: FnRef,
    args: &[u8],
) -> Result<Vec<u8>, Failure> {
    // SAFETY: `trampoline` refers to a `Trampoline` taken in `Call::unary`/`binary` in the
    // same image (this function's contract), so it is a valid function of that type here.
    let run = unsafe { std::mem::transmute::<usize, Trampoline>(trampoline.addr()) };
    // SAFETY: `func` was made together with `trampoline`, for the types it was monomorphised
    // with (this function's contract), which is what the trampoline requires.
    unsafe { run(func.addr(), args) }
}

/// Calls the `fn()` that `f` refers to (a pool's initializer).
///
/// # Safety
///
/// `f` was made from an `fn()` in this image, as [`invoke`]'s references are.
pub(crate) unsafe fn call_plain(f: FnRef) {
    // SAFETY: `f` refers to an `fn()` of this image (this function's contract).
    let f = unsafe { std::mem::transmute::<usize, fn()>(f.addr()) };
    f()
}

/// Decodes a chunk, applies `call` to each item (a panic fails the chunk), encodes the results.
/// A `Serialize` or `Deserialize` that panics is a codec failure, not a dead worker.
fn each<T: DeserializeOwned, R: Serialize>(
    args: &[u8],
    mut call: impl FnMut(T) -> R,
) -> Result<Vec<u8>, Failure> {
    let decoded = panic::catch_unwind(|| postcard::from_bytes::<Vec<T>>(args));
    let items = match decoded {
        Ok(Ok(items)) => items,
        Ok(Err(e)) => {
            // A handle among the arguments that did not attach says why (postcard drops it).
            let why = baozi_shm::take_attach_error().map_or(String::new(), |w| format!(": {w}"));
            return Err(Failure::Decode(format!(
                "the task's arguments did not decode in the worker: {e}{why}"
            )));
        }
        Err(p) => {
            return Err(Failure::Decode(format!(
                "the task's arguments did not decode in the worker: their Deserialize panicked: {}",
                panic_message(&*p)
            )))
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match panic::catch_unwind(AssertUnwindSafe(|| call(item))) {
            Ok(r) => out.push(r),
            Err(payload) => {
                let (location, backtrace) = take_panic_site();
                return Err(Failure::Panicked {
                    message: panic_message(&*payload),
                    location,
                    backtrace,
                });
            }
        }
    }
    match panic::catch_unwind(AssertUnwindSafe(|| postcard::to_allocvec(&out))) {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => Err(Failure::Encode(format!(
            "the task's result did not encode in the worker: {e}"
        ))),
        Err(p) => Err(Failure::Encode(format!(
            "the task's result did not encode in the worker: its Serialize panicked: {}",
            panic_message(&*p)
        ))),
    }
}

/// Where the last panic on this thread happened, and its backtrace, as the worker's panic
/// hook ([`install_panic_hook`]) recorded them.
type PanicSite = (Option<String>, Option<String>);

thread_local! {
    static PANIC_SITE: std::cell::RefCell<PanicSite> = const { std::cell::RefCell::new((None, None)) };
}

/// Takes what the panic hook recorded for the panic just caught (nothing without the hook).
fn take_panic_site() -> PanicSite {
    PANIC_SITE.with(|s| std::mem::take(&mut *s.borrow_mut()))
}

/// In a worker: a panic hook that records the panic's location and, when `RUST_BACKTRACE` asks
/// for one, its backtrace (`Backtrace::capture`), for [`each`] to send to the caller as
/// Python's `RemoteTraceback` does; then it runs the hook that was there (which prints).
/// A backtrace is cut at `max_backtrace` bytes so that the failure fits the results queue.
pub(crate) fn install_panic_hook(max_backtrace: usize) {
    let previous = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        let location = info.location().map(|l| l.to_string());
        let bt = std::backtrace::Backtrace::capture();
        let backtrace = (bt.status() == std::backtrace::BacktraceStatus::Captured).then(|| {
            let mut text = bt.to_string();
            if text.len() > max_backtrace {
                let mut cut = max_backtrace;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
                text.push_str("\n[... cut to fit the results queue]");
            }
            text
        });
        PANIC_SITE.with(|s| *s.borrow_mut() = (location, backtrace));
        previous(info);
    }));
}

/// # Safety
///
/// `func` is the address of an `fn(A) -> R` with these `A` and `R` (made by [`Call::unary`]).
unsafe fn run_unary<A: DeserializeOwned, R: Serialize>(
    func: usize,
    args: &[u8],
) -> Result<Vec<u8>, Failure> {
    // SAFETY: `func` is an `fn(A) -> R` of this image (this function's contract); fn pointers
    // and usize have the same size and the address is non-null.
    let f = unsafe { std::mem::transmute::<usize, fn(A) -> R>(func) };
    each(args, f)
}

/// # Safety
///
/// `func` is the address of an `fn(A, B) -> R` with these types (made by [`Call::binary`]).
unsafe fn run_binary<A: DeserializeOwned, B: DeserializeOwned, R: Serialize>(
    func: usize,
    args: &[u8],
) -> Result<Vec<u8>, Failure> {
    // SAFETY: `func` is an `fn(A, B) -> R` of this image (this function's contract).
    let f = unsafe { std::mem::transmute::<usize, fn(A, B) -> R>(func) };
    each(args, |(a, b): (A, B)| f(a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn double(x: u32) -> u32 {
        x * 2
    }

    fn boom(_: u8) -> u8 {
        panic!("no filling")
    }

    #[test]
    fn a_call_round_trips_in_process() {
        let c = Call::unary(double);
        let args = postcard::to_allocvec(&vec![1u32, 2, 3]).unwrap();
        // SAFETY: `c` was made by Call::unary in this process.
        let out = unsafe { invoke(c.trampoline, c.func, &args) }.unwrap();
        assert_eq!(postcard::from_bytes::<Vec<u32>>(&out).unwrap(), [2, 4, 6]);
    }

    #[test]
    fn a_panic_fails_the_chunk_with_its_message() {
        let c = Call::unary(boom);
        let args = postcard::to_allocvec(&vec![1u8]).unwrap();
        // SAFETY: `c` was made by Call::unary in this process.
        let out = unsafe { invoke(c.trampoline, c.func, &args) };
        assert!(matches!(out, Err(Failure::Panicked { message, .. }) if message == "no filling"));
    }

    #[test]
    fn garbage_arguments_are_a_codec_failure() {
        let c = Call::unary(double);
        // SAFETY: `c` was made by Call::unary in this process.
        let out = unsafe { invoke(c.trampoline, c.func, &[0xff, 0xff, 0xff]) };
        assert!(matches!(out, Err(Failure::Decode(_))));
    }
}

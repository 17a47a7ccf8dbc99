//! The child side of a fork: parent-death signal for daemons, the closure under `catch_unwind`,
//! and `_exit`. Nothing here returns into the parent's code.

use std::any::Any;
use std::io::Write;
use std::panic::{self, AssertUnwindSafe};

use crate::current;
use crate::sys;

/// Exit code of a child whose closure panicked, as Python's for an uncaught exception.
pub(crate) const PANIC_EXIT: i32 = 1;

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_owned()
    }
}

/// Runs in the freshly forked child: set up, run `body`, flush stdout, `_exit` with its code.
///
/// `body` returns the exit code; a panic out of it (already printed on stderr by the panic
/// hook) becomes [`PANIC_EXIT`].
pub(crate) fn run(
    name: String,
    daemon: bool,
    parent: sys::Pid,
    parent_name: String,
    body: impl FnOnce() -> i32,
) -> ! {
    if daemon {
        // A daemon must not outlive its parent. PR_SET_PDEATHSIG only covers a parent that dies
        // *after* the prctl, so check that the parent is still the one that forked us.
        if sys::set_parent_death_kill().is_err() || sys::getppid() != parent {
            // Die as the parent-death signal would have made us die.
            let _ = sys::kill(sys::getpid(), sys::SIGKILL);
            sys::exit_now(PANIC_EXIT);
        }
    }
    let code = panic::catch_unwind(AssertUnwindSafe(move || {
        current::enter_child(name, daemon, parent, parent_name);
        body()
    }))
    .unwrap_or(PANIC_EXIT);
    // Python flushes sys.stdout before a child leaves; _exit does not, and std's stdout keeps an
    // unfinished line in its buffer. Errors are ignored: there is nowhere to report them.
    let _ = panic::catch_unwind(|| {
        let _ = std::io::stdout().flush();
    });
    sys::exit_now(code)
}

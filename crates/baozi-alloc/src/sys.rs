//! Platform reads for the thread caches: is a thread alive. Only this module knows about
//! `/proc` (the pid namespace comes from `baozi_sync::pid_namespace`).

use std::io;

/// What `/proc` says of a thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ThreadState {
    /// It runs (or sleeps); started at this time (clock ticks since boot).
    Alive { start: u64 },
    /// It is gone, or a zombie: it will never run user code again.
    Dead,
    /// `/proc` could not tell (not mounted, no permission): treat as alive.
    Unknown,
}

/// The thread `tid` of process `pid`, from `/proc/<pid>/task/<tid>/stat`.
pub(crate) fn thread_state(pid: u32, tid: u32) -> ThreadState {
    let stat = match std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return ThreadState::Dead,
        // ESRCH while the thread is being reaped reads as "no such process".
        Err(e) if e.raw_os_error() == Some(libc_esrch()) => return ThreadState::Dead,
        Err(_) => return ThreadState::Unknown,
    };
    // "tid (comm) S ppid ...": comm may hold anything, so split after the last ')'.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return ThreadState::Unknown;
    };
    let mut fields = rest.split_whitespace();
    let state = fields.next().and_then(|s| s.chars().next());
    if matches!(state, Some('Z' | 'X' | 'x')) {
        return ThreadState::Dead;
    }
    // Field 22 of stat is the start time; after the state (field 3) it is the 19th more.
    match fields.nth(18).and_then(|s| s.parse().ok()) {
        Some(start) => ThreadState::Alive { start },
        None => ThreadState::Unknown,
    }
}

fn libc_esrch() -> i32 {
    3 // ESRCH on Linux, every architecture
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_thread_is_alive_and_a_made_up_one_is_dead() {
        let pid = std::process::id();
        let ThreadState::Alive { start } = thread_state(pid, pid) else {
            panic!("the main thread reads as not alive");
        };
        assert!(start > 0);
        assert_eq!(thread_state(pid, u32::MAX - 7), ThreadState::Dead);
    }
}

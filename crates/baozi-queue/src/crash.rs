//! Test-only crash points: with the `crash-points` feature, the environment variable
//! `BAOZI_CRASH_AT=POINT:N` makes this process SIGKILL itself the N-th time it reaches POINT
//! (`put-before-commit`, `put-after-commit`, `get-before-commit`, `get-after-commit`,
//! `shutdown-after-discard`), all of which are inside a critical section, and `put-before-wake`,
//! `get-before-wake` (after the commit and the unlock, before waking the other side's sleepers:
//! nobody repairs there, a sleeper must find the commit by itself). Random kills rarely land in
//! a 50 ns window; these do.
//! Without the feature, every point compiles to nothing.

/// A named step inside put or get, where a test may kill the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)] // the names are the documented hook names
pub(crate) enum Point {
    PutBeforeCommit,
    PutAfterCommit,
    GetBeforeCommit,
    GetAfterCommit,
    ShutdownAfterDiscard,
    PutBeforeWake,
    GetBeforeWake,
}

#[inline(always)]
pub(crate) fn point(p: Point) {
    #[cfg(feature = "crash-points")]
    imp::hit(p);
    #[cfg(not(feature = "crash-points"))]
    let _ = p;
}

#[cfg(feature = "crash-points")]
mod imp {
    use super::Point;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    static CONFIG: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);

    fn name(p: Point) -> &'static str {
        match p {
            Point::PutBeforeCommit => "put-before-commit",
            Point::PutAfterCommit => "put-after-commit",
            Point::GetBeforeCommit => "get-before-commit",
            Point::GetAfterCommit => "get-after-commit",
            Point::ShutdownAfterDiscard => "shutdown-after-discard",
            Point::PutBeforeWake => "put-before-wake",
            Point::GetBeforeWake => "get-before-wake",
        }
    }

    pub(super) fn hit(p: Point) {
        let config = CONFIG.get_or_init(|| {
            let v = std::env::var("BAOZI_CRASH_AT").ok()?;
            let (point, n) = v.split_once(':').unwrap_or((&v, "1"));
            Some((point.to_owned(), n.parse().ok()?))
        });
        if let Some((point, n)) = config {
            if point == name(p) && HITS.fetch_add(1, Ordering::Relaxed) + 1 == *n {
                // SAFETY: kill and getpid have no memory-safety preconditions.
                unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
            }
        }
    }
}

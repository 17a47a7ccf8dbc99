//! [`SyncError`]: what can go wrong locking or waiting.

use std::fmt;
use std::io;

use baozi_shm::ShmError;

/// What went wrong with a process-shared lock or wait.
#[derive(Debug)]
#[non_exhaustive]
pub enum SyncError {
    /// The deadline passed before the lock or the condition was had.
    Timeout,
    /// A previous holder died and the one after it released the lock without marking the state
    /// consistent: the lock is permanently unusable. Recreate the object.
    Unrecoverable,
    /// The shared object could not be made, opened or checked.
    Shm(ShmError),
    /// The operating system refused a lock or wait call.
    Io {
        /// The call.
        op: &'static str,
        /// The failure.
        source: io::Error,
    },
}

impl fmt::Display for SyncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncError::Timeout => f.write_str("timed out"),
            SyncError::Unrecoverable => f.write_str(
                "the lock is unrecoverable: a holder died and the state was never marked consistent; recreate the object",
            ),
            SyncError::Shm(e) => fmt::Display::fmt(e, f),
            SyncError::Io { op, .. } => write!(f, "{op} failed"),
        }
    }
}

impl std::error::Error for SyncError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SyncError::Shm(e) => e.source(),
            SyncError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<ShmError> for SyncError {
    fn from(e: ShmError) -> Self {
        SyncError::Shm(e)
    }
}

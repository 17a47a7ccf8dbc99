//! [`RedisQueueError`]: what went wrong between a queue handle and its Redis server.

use std::fmt;

use baozi_queue::{GetError, PutError, QueueError};

/// What went wrong with a queue on Redis. It reaches callers of the
/// [`QueueContract`](baozi_queue::QueueContract) methods inside [`QueueError::Backend`]
/// (`e.downcast_ref::<RedisQueueError>()`), and is returned as it is by this crate's own
/// functions.
#[derive(Debug)]
#[non_exhaustive]
pub enum RedisQueueError {
    /// The server could not be reached, or the connection failed or timed out, and retrying
    /// (for idempotent steps) did not help within the retry window. Check that the server at
    /// `url` runs and is reachable; the operation may be repeated.
    Connection {
        /// The server's URL, password removed.
        url: String,
        /// The client's error.
        source: redis::RedisError,
    },
    /// The server answered with an error (a wrong password, a key of another type, a script
    /// error). Repeating will not help until that is fixed.
    Server {
        /// The server's URL, password removed.
        url: String,
        /// The client's error.
        source: redis::RedisError,
    },
    /// The TLS handshake with a `rediss://` server failed: its certificate is not trusted, or
    /// names another host. Repeating will not help: trust the certificate (the system's store,
    /// or `SSL_CERT_FILE`), use the host name it names, or add `#insecure` to the URL to skip
    /// the check. Also given for `rediss://` in a build without the `tls` feature.
    Tls {
        /// The server's URL, password removed.
        url: String,
        /// What failed.
        detail: String,
    },
    /// [`open`](crate::RedisQueue::open) found no queue of that name on the server.
    NotFound {
        /// The queue's name.
        name: String,
    },
    /// `create_or_open` found the queue made with another `maxsize` or lease.
    Mismatch {
        /// The queue's name.
        name: String,
        /// What differs.
        detail: String,
    },
    /// `task_done` in at-least-once mode came after the item's lease ran out: the item went
    /// back to the queue for another consumer, and that consumer's `task_done` will count it.
    /// Make the lease longer than the longest task.
    LeaseExpired,
    /// The server answered something this crate did not expect (another program uses the
    /// same keys?).
    Protocol {
        /// What was found.
        detail: String,
    },
}

impl fmt::Display for RedisQueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedisQueueError::Connection { url, source } => write!(
                f,
                "cannot talk to the Redis server at {url}: {source} (is it running and reachable?)"
            ),
            RedisQueueError::Server { url, source } => {
                write!(f, "the Redis server at {url} answered an error: {source}")
            }
            RedisQueueError::Tls { url, detail } => write!(
                f,
                "TLS with the Redis server at {url} failed: {detail}; trust its certificate (the system's store or SSL_CERT_FILE) and use the host name it names, or add #insecure to the URL to skip the check"
            ),
            RedisQueueError::NotFound { name } => {
                write!(f, "no queue named {name} on this Redis server: create it first")
            }
            RedisQueueError::Mismatch { name, detail } => {
                write!(f, "queue {name} exists with other parameters: {detail}; open it with open() or unlink it first")
            }
            RedisQueueError::LeaseExpired => f.write_str(
                "task_done after the item's lease ran out: it was handed to another consumer; make the lease longer than the longest task",
            ),
            RedisQueueError::Protocol { detail } => {
                write!(f, "unexpected answer from the Redis server: {detail}")
            }
        }
    }
}

impl std::error::Error for RedisQueueError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RedisQueueError::Connection { source, .. } | RedisQueueError::Server { source, .. } => {
                Some(source)
            }
            _ => None,
        }
    }
}

impl RedisQueueError {
    /// Whether this is a connection fault (server down, restarted, unreachable, timed out).
    pub fn is_connection(&self) -> bool {
        matches!(self, RedisQueueError::Connection { .. })
    }

    pub(crate) fn from_redis(url: &str, e: redis::RedisError) -> RedisQueueError {
        let url = url.to_owned();
        if let Some(detail) = tls_failure(&e) {
            RedisQueueError::Tls { url, detail }
        } else if is_transient(&e) {
            RedisQueueError::Connection { url, source: e }
        } else {
            RedisQueueError::Server { url, source: e }
        }
    }

    pub(crate) fn protocol(detail: impl Into<String>) -> RedisQueueError {
        RedisQueueError::Protocol {
            detail: detail.into(),
        }
    }
}

/// What failed, when `e` is a failed TLS handshake (a certificate refused): not worth a retry.
fn tls_failure(e: &redis::RedisError) -> Option<String> {
    #[cfg(feature = "tls")]
    {
        // rustls's error arrives inside an io::Error, somewhere down the source chain.
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = cur {
            if let Some(t) = err.downcast_ref::<rustls::Error>() {
                return Some(t.to_string());
            }
            if let Some(t) = err
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            {
                return Some(t.to_string());
            }
            cur = err.source();
        }
    }
    if e.kind() == redis::ErrorKind::InvalidClientConfig && e.to_string().contains("TLS") {
        // redis's own refusal of rediss:// when built without TLS.
        return Some(format!(
            "{e} (this build has no TLS: enable baozi-redis's `tls` feature)"
        ));
    }
    None
}

/// A fault of the connection rather than an answer of the server: worth a reconnect.
pub(crate) fn is_transient(e: &redis::RedisError) -> bool {
    tls_failure(e).is_none()
        && (e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || matches!(
                e.kind(),
                redis::ErrorKind::IoError
                    | redis::ErrorKind::TryAgain
                    | redis::ErrorKind::BusyLoadingError
            ))
}

impl From<RedisQueueError> for QueueError {
    fn from(e: RedisQueueError) -> QueueError {
        QueueError::Backend(Box::new(e))
    }
}

impl From<RedisQueueError> for GetError {
    fn from(e: RedisQueueError) -> GetError {
        GetError::Failed(e.into())
    }
}

/// Puts `item` back into a [`PutError::Failed`].
pub(crate) fn put_failed<T>(item: T, e: RedisQueueError) -> PutError<T> {
    PutError::Failed(item, e.into())
}

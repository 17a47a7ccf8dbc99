//! [`Conn`]: one lazily made connection with the crate's timeouts, for the pool's parent and
//! workers (the queues keep theirs in `link.rs`, with producer identities beside it).

use std::time::Duration;

use redis::RedisResult;

use crate::error::{is_transient, RedisQueueError};
use crate::link::shown_url;
use crate::options::RedisOptions;

/// A new connection with the write and read timeouts of `opts`.
pub(crate) fn open(client: &redis::Client, opts: &RedisOptions) -> RedisResult<redis::Connection> {
    let c = client.get_connection_with_timeout(opts.connect_timeout)?;
    c.set_write_timeout(Some(opts.io_timeout))?;
    c.set_read_timeout(Some(opts.io_timeout))?;
    Ok(c)
}

/// A connection made at first use and dropped after a fault (the next use makes a new one).
pub(crate) struct Conn {
    client: redis::Client,
    /// The URL without its password, for messages.
    pub(crate) shown: String,
    pub(crate) opts: RedisOptions,
    conn: Option<redis::Connection>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("url", &self.shown)
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

impl Conn {
    /// A connection to `url` (not made yet).
    ///
    /// # Errors
    /// [`RedisQueueError::Server`] for a URL the client refuses, [`RedisQueueError::Tls`] for
    /// `rediss://` without the `tls` feature.
    pub(crate) fn new(url: &str, opts: RedisOptions) -> Result<Conn, RedisQueueError> {
        let shown = shown_url(url);
        let client =
            crate::link::open_client(url).map_err(|e| RedisQueueError::from_redis(&shown, e))?;
        Ok(Conn {
            client,
            shown,
            opts,
            conn: None,
        })
    }

    /// Another connection to the same server (not made yet).
    pub(crate) fn sibling(&self) -> Conn {
        Conn {
            client: self.client.clone(),
            shown: self.shown.clone(),
            opts: self.opts.clone(),
            conn: None,
        }
    }

    /// Runs `f` once on the connection, whose reads may take `wait` more than the I/O timeout
    /// (a blocking command). A fault drops the connection and is returned, never retried: the
    /// caller knows whether its step may run twice.
    pub(crate) fn run<R>(
        &mut self,
        wait: Duration,
        f: impl FnOnce(&mut redis::Connection) -> RedisResult<R>,
    ) -> Result<R, RedisQueueError> {
        let r = self.connected(wait).and_then(f);
        r.map_err(|e| {
            if is_transient(&e) {
                self.conn = None;
            }
            RedisQueueError::from_redis(&self.shown, e)
        })
    }

    fn connected(&mut self, wait: Duration) -> RedisResult<&mut redis::Connection> {
        if self.conn.is_none() {
            self.conn = Some(open(&self.client, &self.opts)?);
        }
        let c = self.conn.as_mut().expect("connected above");
        c.set_read_timeout(Some(self.opts.io_timeout + wait))?;
        Ok(c)
    }
}

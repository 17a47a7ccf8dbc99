//! Handles as serde values (feature `serde`): a [`RedisQueue`] serialises as what is needed to
//! reach the queue (URL, name, options); deserialising makes a handle that connects at first
//! use, in any process on any host. So a queue handle can travel inside a message (a reply
//! queue in a request) or as a pool task's argument.
//!
//! The URL travels as given, credentials included: the receiver needs them to connect. Send
//! handles only where the credentials may go.

use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::joinable::RedisJoinableQueue;
use crate::link::{shown_url, Link, Shared};
use crate::options::RedisOptions;
use crate::queue::RedisQueue;
use crate::scripts::Keys;

/// What a serialised handle holds.
#[derive(Serialize, Deserialize)]
struct Wire {
    url: String,
    name: String,
    maxsize: u64,
    lease_ms: u64,
    connect_timeout_ms: u64,
    io_timeout_ms: u64,
    retry_for_ms: u64,
    wait_slice_ms: u64,
    dedup_ttl_ms: u64,
    max_message_len: u64,
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

impl<T> Serialize for RedisQueue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let sh = &*self.shared;
        let o = &sh.opts;
        Wire {
            url: sh.url.clone(),
            name: sh.name.clone(),
            maxsize: sh.maxsize as u64,
            lease_ms: sh.lease.map_or(0, ms),
            connect_timeout_ms: ms(o.connect_timeout),
            io_timeout_ms: ms(o.io_timeout),
            retry_for_ms: ms(o.retry_for),
            wait_slice_ms: ms(o.wait_slice),
            dedup_ttl_ms: ms(o.dedup_ttl),
            max_message_len: o.max_message_len as u64,
        }
        .serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for RedisQueue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = Wire::deserialize(d)?;
        // No I/O here: the client only parses the URL; the handle connects at first use.
        let client = crate::link::open_client(w.url.as_str()).map_err(serde::de::Error::custom)?;
        let lease = (w.lease_ms > 0).then(|| Duration::from_millis(w.lease_ms));
        let mut opts = RedisOptions::new()
            .maxsize(w.maxsize as usize)
            .connect_timeout(Duration::from_millis(w.connect_timeout_ms))
            .io_timeout(Duration::from_millis(w.io_timeout_ms))
            .retry_for(Duration::from_millis(w.retry_for_ms))
            .wait_slice(Duration::from_millis(w.wait_slice_ms))
            .dedup_ttl(Duration::from_millis(w.dedup_ttl_ms))
            .max_message_len(w.max_message_len.min(usize::MAX as u64) as usize);
        if let Some(l) = lease {
            opts = opts.lease(l);
        }
        Ok(RedisQueue {
            shared: Arc::new(Shared {
                client,
                shown: shown_url(&w.url),
                url: w.url,
                keys: Keys::new(&w.name),
                name: w.name,
                maxsize: w.maxsize as usize,
                lease,
                opts,
            }),
            link: Mutex::new(Link::default()),
            _t: PhantomData,
        })
    }
}

impl<T> Serialize for RedisJoinableQueue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (**self).serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for RedisJoinableQueue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        RedisQueue::deserialize(d).map(RedisJoinableQueue::from)
    }
}

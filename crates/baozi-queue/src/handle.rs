//! Queue handles as serde values: serialising writes a [`RegionRef`], deserialising attaches.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use baozi_shm::RegionRef;

use crate::codec::Message;
use crate::joinable::JoinableQueue;
use crate::queue::Queue;

impl<T> Serialize for Queue<T> {
    /// Writes a reference to the queue (not its contents): see [`Queue::attach`].
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.region().to_ref().serialize(s)
    }
}

impl<'de, T: Message> Deserialize<'de> for Queue<T> {
    /// Attaches to the queue the reference names, checking its message type.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = RegionRef::deserialize(d)?;
        Queue::attach(&r).map_err(baozi_shm::attach_failed)
    }
}

impl<T> Serialize for JoinableQueue<T> {
    /// Writes a reference to the queue, as [`Queue`]'s.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.region().to_ref().serialize(s)
    }
}

impl<'de, T: Message> Deserialize<'de> for JoinableQueue<T> {
    /// Attaches to the queue the reference names, as [`Queue`]'s.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Queue::deserialize(d).map(JoinableQueue::from)
    }
}

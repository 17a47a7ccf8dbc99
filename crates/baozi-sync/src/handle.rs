//! Sync handles as serde values: serialising writes a [`RegionRef`], deserialising attaches.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use baozi_shm::RegionRef;
use bytemuck::Pod;

use crate::{Barrier, BoundedSemaphore, Condition, Event, Lock, RLock, Semaphore, ShmMutex};

macro_rules! serde_handle {
    ($($ty:ty),*) => {$(
        impl Serialize for $ty {
            /// Writes a reference to the object (see `attach`).
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.region().to_ref().serialize(s)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            /// Attaches to the object the reference names, checking that it is this primitive.
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let r = RegionRef::deserialize(d)?;
                <$ty>::attach(&r).map_err(baozi_shm::attach_failed)
            }
        }
    )*};
}

serde_handle!(
    Lock,
    RLock,
    Event,
    Barrier,
    Condition,
    Semaphore,
    BoundedSemaphore
);

impl<T: Pod> Serialize for ShmMutex<T> {
    /// Writes a reference to the mutex (see [`ShmMutex::attach`]).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.region().to_ref().serialize(s)
    }
}

impl<'de, T: Pod> Deserialize<'de> for ShmMutex<T> {
    /// Attaches to the mutex the reference names, checking its value type.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = RegionRef::deserialize(d)?;
        ShmMutex::attach(&r).map_err(baozi_shm::attach_failed)
    }
}

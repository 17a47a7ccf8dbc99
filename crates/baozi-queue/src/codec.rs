//! [`Message`]: how values become bytes in the ring and back.
//!
//! * bytes — `Vec<u8>`, `Box<[u8]>`, `String` — travel as they are;
//! * numbers and [`Pod<T>`] (any `bytemuck::Pod` type) are copied straight from and into the
//!   value: no encoding step, no allocation;
//! * [`Serde<T>`] (feature `serde`, on by default) uses postcard, a compact varint codec with a
//!   documented, stable wire format: a struct of small numbers takes a few bytes, and it
//!   serialises into a reused buffer without allocating in the steady state.

use std::fmt;

/// Why a message could not be encoded or decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodecError {
    detail: String,
}

impl CodecError {
    /// An error saying `detail`.
    pub fn new(detail: impl Into<String>) -> Self {
        CodecError {
            detail: detail.into(),
        }
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for CodecError {}

/// A type that can travel through a [`Queue`](crate::Queue).
///
/// Implement it for your own encoding; most code uses the provided impls: raw bytes
/// (`Vec<u8>`, `Box<[u8]>`, `String`), numbers, [`Pod<T>`] and `Serde<T>` (feature `serde`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot travel through a baozi Queue: it does not implement `Message`",
    label = "not a `Message`",
    note = "for a type with serde's `Serialize + Deserialize`, use `Queue<Serde<{Self}>>` and put `Serde(value)`",
    note = "for plain-old-data (`bytemuck::Pod`), use `Queue<Pod<{Self}>>`; or implement `Message` for your own encoding"
)]
pub trait Message: Sized {
    /// Calls `f` with the encoded bytes of `self`.
    ///
    /// # Errors
    /// A [`CodecError`] if `self` cannot be encoded.
    fn with_encoded<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Result<R, CodecError>;

    /// Rebuilds a value from the bytes made by [`with_encoded`](Self::with_encoded).
    ///
    /// # Errors
    /// A [`CodecError`] if the bytes are not a valid encoding.
    fn decode(bytes: &[u8]) -> Result<Self, CodecError>;
}

impl Message for Vec<u8> {
    fn with_encoded<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Result<R, CodecError> {
        Ok(f(self))
    }
    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        Ok(bytes.to_vec())
    }
}

impl Message for Box<[u8]> {
    fn with_encoded<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Result<R, CodecError> {
        Ok(f(self))
    }
    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        Ok(bytes.into())
    }
}

impl Message for String {
    fn with_encoded<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Result<R, CodecError> {
        Ok(f(self.as_bytes()))
    }
    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        String::from_utf8(bytes.to_vec()).map_err(|e| CodecError::new(e.to_string()))
    }
}

fn pod_decode<T: bytemuck::Pod>(bytes: &[u8]) -> Result<T, CodecError> {
    if bytes.len() != std::mem::size_of::<T>() {
        return Err(CodecError::new(format!(
            "expected {} bytes for {}, found {}",
            std::mem::size_of::<T>(),
            std::any::type_name::<T>(),
            bytes.len()
        )));
    }
    Ok(bytemuck::pod_read_unaligned(bytes))
}

macro_rules! pod_message {
    ($($t:ty),*) => { $(
        impl Message for $t {
            fn with_encoded<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Result<R, CodecError> {
                Ok(f(bytemuck::bytes_of(self)))
            }
            fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
                pod_decode(bytes)
            }
        }
    )* };
}

pod_message!(u8, u16, u32, u64, u128, i8, i16, i32, i64, i128, f32, f64);

/// A [`bytemuck::Pod`] value sent as its bytes: no encoding step, one copy each way.
///
/// ```
/// use baozi_queue::{Pod, Queue};
///
/// #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
/// #[repr(C)]
/// struct Tick { seq: u64, price: f64 }
///
/// let q: Queue<Pod<Tick>> = Queue::new(16, 4096)?;
/// q.put(Pod(Tick { seq: 1, price: 9.5 })).unwrap();
/// let Pod(tick) = q.get().unwrap();
/// assert_eq!(tick.seq, 1);
/// # Ok::<(), baozi_queue::QueueError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct Pod<T>(pub T);

impl<T: bytemuck::Pod> Message for Pod<T> {
    fn with_encoded<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Result<R, CodecError> {
        Ok(f(bytemuck::bytes_of(&self.0)))
    }
    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        pod_decode(bytes).map(Pod)
    }
}

/// A serde value sent through the postcard codec.
///
/// ```
/// use baozi_queue::{Queue, Serde};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Debug, PartialEq)]
/// enum Bun { Pork, Cabbage, RedBean }
///
/// let q: Queue<Serde<(String, Bun)>> = Queue::new(1, 4096)?;
/// q.put(Serde(("baker-1".to_owned(), Bun::Pork))).unwrap();
/// let Serde((who, bun)) = q.get().unwrap();
/// assert_eq!((who.as_str(), bun), ("baker-1", Bun::Pork));
/// # Ok::<(), baozi_queue::QueueError>(())
/// ```
#[cfg(feature = "serde")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Serde<T>(pub T);

#[cfg(feature = "serde")]
thread_local! {
    /// Reused encoding buffer: serialising allocates only until it has grown to the largest message.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[cfg(feature = "serde")]
impl<T: serde::Serialize + serde::de::DeserializeOwned> Message for Serde<T> {
    fn with_encoded<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Result<R, CodecError> {
        // Take the buffer out of the cell, so a nested put (from f) cannot find it borrowed.
        let mut buf = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
        buf.clear();
        let buf = postcard::to_extend(&self.0, buf).map_err(|e| CodecError::new(e.to_string()))?;
        let r = f(&buf);
        SCRATCH.with(|s| *s.borrow_mut() = buf);
        Ok(r)
    }
    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        postcard::from_bytes(bytes).map(Serde).map_err(|e| {
            // A handle inside the message that did not attach says why (postcard drops it).
            match baozi_shm::take_attach_error() {
                Some(why) => CodecError::new(format!("{e}: {why}")),
                None => CodecError::new(e.to_string()),
            }
        })
    }
}

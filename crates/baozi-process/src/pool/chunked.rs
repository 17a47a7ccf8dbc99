//! [`Chunked`]: the map family with a fixed `chunksize`, and the one body they share.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::call::Call;
use super::parent::INBOX_DEPTH;
use super::proto::encode_chunk;
use super::result::{self, AsyncResult, IMap};
use super::Pool;
use crate::error::ProcessError;

/// The map forms of a [`Pool`] with a fixed `chunksize`; made by [`Pool::with_chunksize`].
#[derive(Debug, Clone, Copy)]
pub struct Chunked<'a> {
    pub(super) pool: &'a Pool,
    /// `None`: Python's default for map (about `len / (4 × processes)`).
    pub(super) chunksize: Option<usize>,
}

impl Chunked<'_> {
    fn size_for(&self, len: usize) -> Result<usize, ProcessError> {
        match self.chunksize {
            Some(0) => Err(ProcessError::Invalid {
                what: "chunksize must be at least 1".into(),
            }),
            Some(n) => Ok(n),
            None => Ok(len.div_ceil(self.pool.processes * 4).max(1)),
        }
    }

    /// The one body of the map family (`map`, `map_async`, `starmap`, `starmap_async`): the
    /// items cut in chunks, each chunk one task running `call`, the results in input order.
    fn map_call<T: Serialize, R: DeserializeOwned>(
        &self,
        call: Call,
        items: Vec<T>,
    ) -> Result<AsyncResult<Vec<R>>, ProcessError> {
        let size = self.size_for(items.len())?;
        let chunks = items
            .chunks(size)
            .map(encode_chunk)
            .collect::<Result<Vec<_>, _>>()?;
        let tasks = self.pool.shared.submit(call, chunks)?;
        Ok(AsyncResult::new(
            Arc::clone(&self.pool.shared),
            tasks,
            result::finish_all::<R>,
        ))
    }

    /// [`Pool::map`] with this chunksize.
    ///
    /// # Errors
    ///
    /// As [`Pool::map`], and [`ProcessError::Invalid`] for a chunksize of 0.
    pub fn map<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
    ) -> Result<Vec<R>, ProcessError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.map_async(f, items)?.get()
    }

    /// [`Pool::map_async`] with this chunksize.
    ///
    /// # Errors
    ///
    /// As [`Pool::map_async`], and [`ProcessError::Invalid`] for a chunksize of 0.
    pub fn map_async<A, R>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
    ) -> Result<AsyncResult<Vec<R>>, ProcessError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.map_call(Call::unary(f), items.into_iter().collect())
    }

    /// [`Pool::starmap`] with this chunksize.
    ///
    /// # Errors
    ///
    /// As [`Pool::starmap`], and [`ProcessError::Invalid`] for a chunksize of 0.
    pub fn starmap<A, B, R>(
        &self,
        f: fn(A, B) -> R,
        items: impl IntoIterator<Item = (A, B)>,
    ) -> Result<Vec<R>, ProcessError>
    where
        A: Serialize + DeserializeOwned,
        B: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.starmap_async(f, items)?.get()
    }

    /// [`Pool::starmap_async`] with this chunksize.
    ///
    /// # Errors
    ///
    /// As [`Pool::starmap_async`], and [`ProcessError::Invalid`] for a chunksize of 0.
    pub fn starmap_async<A, B, R>(
        &self,
        f: fn(A, B) -> R,
        items: impl IntoIterator<Item = (A, B)>,
    ) -> Result<AsyncResult<Vec<R>>, ProcessError>
    where
        A: Serialize + DeserializeOwned,
        B: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.map_call(Call::binary(f), items.into_iter().collect())
    }

    fn imap_with<A, R, I>(
        &self,
        f: fn(A) -> R,
        items: I,
        ordered: bool,
    ) -> Result<IMap<A, R, I::IntoIter>, ProcessError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
        I: IntoIterator<Item = A>,
    {
        let size = self.size_for(1)?;
        self.pool.shared.lock().accepting()?;
        Ok(IMap::new(
            Arc::clone(&self.pool.shared),
            Call::unary(f),
            items.into_iter(),
            size,
            self.pool.processes * (INBOX_DEPTH + 1),
            ordered,
        ))
    }

    /// [`Pool::imap`] with this chunksize.
    ///
    /// # Errors
    ///
    /// As [`Pool::imap`], and [`ProcessError::Invalid`] for a chunksize of 0.
    pub fn imap<A, R, I>(
        &self,
        f: fn(A) -> R,
        items: I,
    ) -> Result<IMap<A, R, I::IntoIter>, ProcessError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
        I: IntoIterator<Item = A>,
    {
        self.imap_with(f, items, true)
    }

    /// [`Pool::imap_unordered`] with this chunksize.
    ///
    /// # Errors
    ///
    /// As [`Pool::imap`], and [`ProcessError::Invalid`] for a chunksize of 0.
    pub fn imap_unordered<A, R, I>(
        &self,
        f: fn(A) -> R,
        items: I,
    ) -> Result<IMap<A, R, I::IntoIter>, ProcessError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
        I: IntoIterator<Item = A>,
    {
        self.imap_with(f, items, false)
    }
}

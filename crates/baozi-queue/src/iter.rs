//! [`Queue::iter`]: take items until the queue is closed and drained, as `for x in rx.iter()`
//! does for mpsc and crossbeam receivers.

use crate::{GetError, Message, Queue};

/// Takes items from a [`Queue`], blocking for each, until the queue is closed and drained.
///
/// An error other than "closed" (a message that does not decode, a failed queue) also ends the
/// iteration; [`take_error`](Iter::take_error) hands it over, so nothing is lost unnoticed.
#[derive(Debug)]
#[must_use = "an iterator does nothing until it is iterated"]
pub struct Iter<'a, T> {
    queue: &'a Queue<T>,
    error: Option<GetError>,
}

impl<T> Iter<'_, T> {
    /// The error that ended the iteration, if it was not the queue's close.
    pub fn take_error(&mut self) -> Option<GetError> {
        self.error.take()
    }
}

impl<T: Message> Iterator for Iter<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        if self.error.is_some() {
            return None;
        }
        match self.queue.get() {
            Ok(item) => Some(item),
            Err(GetError::Closed) => None,
            Err(e) => {
                self.error = Some(e);
                None
            }
        }
    }
}

impl<T: Message> Queue<T> {
    /// An iterator that takes items, blocking for each, until the queue is closed and drained.
    ///
    /// ```
    /// use baozi_queue::Queue;
    /// let q: Queue<u32> = Queue::new(8, 4096)?;
    /// for bun in 1..=3 {
    ///     q.put(bun)?;
    /// }
    /// q.close()?;
    /// let eaten: Vec<u32> = q.iter().collect();
    /// assert_eq!(eaten, [1, 2, 3]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn iter(&self) -> Iter<'_, T> {
        Iter {
            queue: self,
            error: None,
        }
    }
}

impl<'a, T: Message> IntoIterator for &'a Queue<T> {
    type Item = T;
    type IntoIter = Iter<'a, T>;

    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

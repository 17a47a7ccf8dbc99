//! The [`QueueContract`]/[`JoinableContract`] impls: the inherent methods, errors in
//! [`QueueError::Backend`].

use std::time::Duration;

use baozi_queue::{GetError, JoinableContract, Message, PutError, QueueContract, QueueError};

use crate::joinable::RedisJoinableQueue;
use crate::queue::RedisQueue;

macro_rules! redis_contract {
    ($ty:ident, $inner:expr) => {
        impl<T: Message + Send> QueueContract<T> for $ty<T> {
            fn put(&self, item: T) -> Result<(), PutError<T>> {
                RedisQueue::put($inner(self), item)
            }
            fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutError<T>> {
                RedisQueue::put_timeout($inner(self), item, timeout)
            }
            fn put_nowait(&self, item: T) -> Result<(), PutError<T>> {
                RedisQueue::put_nowait($inner(self), item)
            }
            fn get(&self) -> Result<T, GetError> {
                RedisQueue::get($inner(self))
            }
            fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
                RedisQueue::get_timeout($inner(self), timeout)
            }
            fn get_nowait(&self) -> Result<T, GetError> {
                RedisQueue::get_nowait($inner(self))
            }
            fn put_many(&self, items: Vec<T>) -> Result<(), PutError<Vec<T>>> {
                RedisQueue::put_many($inner(self), items)
            }
            fn put_many_timeout(
                &self,
                items: Vec<T>,
                timeout: Duration,
            ) -> Result<(), PutError<Vec<T>>> {
                RedisQueue::put_many_timeout($inner(self), items, timeout)
            }
            fn put_many_nowait(&self, items: Vec<T>) -> Result<(), PutError<Vec<T>>> {
                RedisQueue::put_many_nowait($inner(self), items)
            }
            fn get_many(&self, max: usize) -> Result<Vec<T>, GetError> {
                RedisQueue::get_many($inner(self), max)
            }
            fn get_many_timeout(&self, max: usize, timeout: Duration) -> Result<Vec<T>, GetError> {
                RedisQueue::get_many_timeout($inner(self), max, timeout)
            }
            fn get_many_nowait(&self, max: usize) -> Result<Vec<T>, GetError> {
                RedisQueue::get_many_nowait($inner(self), max)
            }
            fn qsize(&self) -> Result<usize, QueueError> {
                Ok(RedisQueue::qsize($inner(self))?)
            }
            fn full(&self) -> Result<bool, QueueError> {
                Ok(RedisQueue::full($inner(self))?)
            }
            fn maxsize(&self) -> usize {
                RedisQueue::maxsize($inner(self))
            }
            fn close(&self) -> Result<(), QueueError> {
                Ok(RedisQueue::close($inner(self))?)
            }
        }
    };
}

fn same<T>(q: &RedisQueue<T>) -> &RedisQueue<T> {
    q
}

fn inner<T>(q: &RedisJoinableQueue<T>) -> &RedisQueue<T> {
    q
}

redis_contract!(RedisQueue, same);
redis_contract!(RedisJoinableQueue, inner);

impl<T: Message + Send> JoinableContract<T> for RedisJoinableQueue<T> {
    fn task_done(&self) -> Result<(), QueueError> {
        RedisJoinableQueue::task_done(self)
    }
    fn join(&self) -> Result<(), QueueError> {
        RedisJoinableQueue::join(self)
    }
    fn join_timeout(&self, timeout: Duration) -> Result<(), QueueError> {
        RedisJoinableQueue::join_timeout(self, timeout)
    }
    fn unfinished_tasks(&self) -> Result<usize, QueueError> {
        RedisJoinableQueue::unfinished_tasks(self)
    }
}

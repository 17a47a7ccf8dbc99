//! Random sequences of queue operations against a VecDeque model.
//!
//! The queue is sized so that bytes never bind (8 items of at most 64 bytes in a 1 KiB ring), so
//! the model is a plain bounded FIFO, while the ring still wraps constantly. The byte-exact model
//! is the proptest in crates/baozi-queue/tests/model.rs.
#![no_main]

use std::collections::VecDeque;

use baozi_queue::{GetError, PutError, Queue, QueueOptions};
use libfuzzer_sys::fuzz_target;

const MAXSIZE: usize = 8;

fuzz_target!(|data: &[u8]| {
    let q: Queue<Vec<u8>> = QueueOptions::new().maxsize(MAXSIZE).capacity(1024).spin(false).anonymous().unwrap();
    let mut model: VecDeque<Vec<u8>> = VecDeque::new();
    let mut closed = false;
    let mut bytes = data.iter().copied();
    let mut counter = 0u8;
    while let Some(op) = bytes.next() {
        match op % 6 {
            0 | 1 => {
                let len = usize::from(bytes.next().unwrap_or(0) % 65);
                counter = counter.wrapping_add(1);
                let msg = vec![counter; len];
                let got = q.put_nowait(msg.clone());
                match got {
                    Ok(()) => {
                        assert!(!closed && model.len() < MAXSIZE);
                        model.push_back(msg);
                    }
                    Err(PutError::Full(back)) => {
                        assert!(!closed && model.len() == MAXSIZE);
                        assert_eq!(back, msg);
                    }
                    Err(PutError::Closed(back)) => {
                        assert!(closed);
                        assert_eq!(back, msg);
                    }
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
            2 => match q.get_nowait() {
                Ok(m) => assert_eq!(Some(m), model.pop_front()),
                Err(GetError::Empty) => assert!(model.is_empty() && !closed),
                Err(GetError::Closed) => assert!(model.is_empty() && closed),
                Err(e) => panic!("unexpected {e:?}"),
            },
            3 => {
                let max = usize::from(bytes.next().unwrap_or(1) % 10);
                match q.get_many_nowait(max) {
                    Ok(ms) => {
                        assert!(max > 0 || ms.is_empty());
                        let want: Vec<_> = (0..ms.len().min(max)).filter_map(|_| model.pop_front()).collect();
                        assert_eq!(ms, want);
                        assert!(!ms.is_empty() || max == 0);
                    }
                    Err(GetError::Empty) => assert!(model.is_empty() && !closed),
                    Err(GetError::Closed) => assert!(model.is_empty() && closed),
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
            4 => {
                let raw = bytes.next().unwrap_or(0);
                let n = usize::from(raw % 10);
                let batch: Vec<Vec<u8>> = (0..n).map(|i| vec![i as u8; 8 * i]).collect();
                // The high bit picks the borrowed-slice form; both must answer alike.
                let got = if raw & 0x80 != 0 {
                    q.put_many_from(&batch, Some(std::time::Duration::ZERO))
                } else {
                    q.put_many_nowait(batch.clone()).map_err(|e| e.map(|_| ()))
                };
                match got {
                    Ok(()) => {
                        // An empty batch has nothing to put, even into a closed queue.
                        assert!(n == 0 || (!closed && model.len() + n <= MAXSIZE));
                        model.extend(batch);
                    }
                    Err(PutError::Full(())) => assert!(!closed && model.len() + n > MAXSIZE && n <= MAXSIZE),
                    Err(PutError::TooMany { .. }) => assert!(n > MAXSIZE),
                    Err(PutError::Closed(())) => assert!(closed),
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
            _ => {
                if op == 255 {
                    q.close().unwrap();
                    closed = true;
                }
            }
        }
        assert_eq!(q.qsize(), model.len());
        assert_eq!(q.empty(), model.is_empty());
        assert_eq!(q.full(), model.len() == MAXSIZE);
    }
});

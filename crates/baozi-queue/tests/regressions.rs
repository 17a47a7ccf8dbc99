//! Regressions found by fuzzing, each with the input shape that found it.

use baozi_queue::{GetError, Queue};

/// queue_ops fuzzer: an empty message whose frame ends exactly at the end of the ring has its
/// (empty) payload one past the last byte; reading it must work, not trip a bounds check.
#[test]
fn an_empty_message_in_the_last_frame_of_the_ring_reads_back() {
    let q: Queue<Vec<u8>> = Queue::new(0, 64).unwrap();
    q.put_nowait(vec![1; 48]).unwrap(); // frame 0..56
    q.put_nowait(Vec::new()).unwrap(); // frame 56..64, payload at 64
    assert!(q.full());
    assert_eq!(q.get_nowait().unwrap(), vec![1; 48]);
    assert_eq!(q.get_nowait().unwrap(), Vec::<u8>::new());
    assert!(matches!(q.get_nowait(), Err(GetError::Empty)));
}

//! The parent's result thread: the one reader of the results queue.

use std::sync::Arc;
use std::time::Duration;

use super::parent::{Phase, Shared};
use super::proto::{self, Event};

/// How often the result thread checks the spawner when no event comes.
const TICK: Duration = Duration::from_millis(200);

/// The parent's result thread: reads the results queue, settles tasks, feeds workers, and
/// watches the spawner.
pub(crate) fn result_thread(shared: Arc<Shared>) {
    loop {
        let got = shared.workers.next_event(TICK);
        let mut st = shared.lock();
        match got {
            Ok(Some(bytes)) => match proto::decode::<Event>(&bytes) {
                Some(ev) => st.on_event(&shared, ev),
                None => st.break_pool("a garbled message came through the results queue".into()),
            },
            Ok(None) => {
                if matches!(st.phase, Phase::Running | Phase::Closed) {
                    if let Some(why) = shared.workers.lost() {
                        st.break_pool(why);
                    }
                }
            }
            Err(why) => {
                st.break_pool(why);
                drop(st);
                shared.notify();
                std::thread::sleep(TICK);
                st = shared.lock();
            }
        }
        st.dispatch(&shared);
        let quit = st.quit;
        let wake = std::mem::take(&mut st.wake);
        let due = st.take_due();
        drop(st);
        if wake || quit {
            shared.notify();
        }
        for (callback, result) in due {
            // A panicking callback must not take the result thread (and every caller) down;
            // the panic hook has printed it.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (callback.0)(result)));
        }
        if quit {
            return;
        }
    }
}

//! Platform calls: futex, pthread robust mutexes, the monotonic clock. Only this module calls libc.

#[cfg(target_os = "linux")]
#[path = "linux.rs"]
mod imp;

#[cfg(not(target_os = "linux"))]
compile_error!("baozi-sync supports Linux only (it relies on futexes and robust pthread mutexes)");

pub use imp::ProcessState;
pub(crate) use imp::*;

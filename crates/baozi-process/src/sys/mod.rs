//! Platform calls. Only this module talks to libc; everything above it sees `io::Result`.

#[cfg(target_os = "linux")]
#[path = "linux.rs"]
mod imp;

#[cfg(not(target_os = "linux"))]
compile_error!("baozi-process supports Linux only (it relies on fork, pidfd_open and prctl)");

pub(crate) use imp::*;

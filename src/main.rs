//! The entry point, without Rust's runtime set-up: on a static glibc binary it finds
//! the main thread's stack bounds by parsing /proc/self/maps (for the stack-overflow
//! message), which cost more than anything else nexcage does before it hands a
//! container to crun. What it did that matters is done here: SIGPIPE ignored, so a
//! closed pipe or socket is an error to handle (EPIPE), not a silent death; stdin,
//! stdout and stderr opened on /dev/null if the caller closed them, so that no file
//! nexcage opens becomes one (and gets its messages).
// (`cargo test` builds this file with its own harness's main.)
#![cfg_attr(not(test), no_main)]

#[cfg(not(test))]
use std::ffi::{c_char, c_int};

#[cfg(not(test))]
#[unsafe(no_mangle)]
extern "C" fn main(_argc: c_int, _argv: *const *const c_char) -> c_int {
    // SAFETY: fcntl/open on fds 0-2 and a signal's disposition, before any other
    // thread exists.
    unsafe {
        for fd in 0..3 {
            if libc::fcntl(fd, libc::F_GETFD) < 0
                && std::io::Error::last_os_error().raw_os_error() == Some(libc::EBADF)
                && libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) < 0
            {
                libc::abort();
            }
        }
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    // std reads the arguments itself on glibc (from its .init_array hook);
    // process::exit flushes stdout, which a return from here would not.
    std::process::exit(nexcage::main(std::env::args_os().collect()))
}

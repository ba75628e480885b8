//! The only place in the backend with `unsafe`: thin wrappers over system calls that
//! have no safe binding. Each is called once, from the sandbox function, while the
//! process is still single-threaded.

use std::io;

/// Closes every file descriptor from 3 upwards.
pub fn close_fds_from_3() -> io::Result<()> {
    // SAFETY: close_range only closes descriptors; no Rust object owns fds >= 3 at this
    // point of start-up (the sandbox runs before anything else opens files).
    let rc = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Removes every environment variable.
pub fn clear_env() {
    let keys: Vec<_> = std::env::vars_os().map(|(k, _)| k).collect();
    for key in keys {
        // SAFETY: the process is single-threaded here (the sandbox runs before any
        // thread is spawned), so nothing reads the environment concurrently.
        unsafe { std::env::remove_var(key) };
    }
}

/// Makes writes past RLIMIT_FSIZE fail with EFBIG instead of killing the process.
pub fn ignore_sigxfsz() -> io::Result<()> {
    // SAFETY: SIG_IGN installs no handler code; it is always sound.
    let prev = unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    if prev == libc::SIG_ERR {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

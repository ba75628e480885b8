//! The only module of the sandbox with `unsafe`: thin wrappers over system calls that
//! have no safe binding. Each is called from [`crate::enter`] (or a probe) while the
//! process is still single-threaded, but for [`trim_heap`], which any thread may call.

use std::io;

/// Closes every file descriptor from 3 upwards.
pub fn close_fds_from_3() -> io::Result<()> {
    // SAFETY: close_range only closes descriptors. The caller runs it before any Rust
    // object that owns a descriptor >= 3 exists (the sandbox is entered first thing, or
    // the caller documents which descriptors it keeps with `close_fds_except`).
    let rc = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Closes every file descriptor from 3 upwards except those in `keep`.
pub fn close_fds_except(keep: &[i32]) -> io::Result<()> {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter(|&&fd| fd >= 3)
        .map(|&fd| fd as u32)
        .collect();
    keep.sort_unstable();
    keep.dedup();
    let mut from = 3u32;
    for fd in keep.into_iter().chain(std::iter::once(u32::MAX)) {
        if fd > from {
            let last = if fd == u32::MAX { u32::MAX } else { fd - 1 };
            // SAFETY: as in close_fds_from_3; the descriptors the caller still owns are
            // exactly those in `keep`, which are skipped.
            let rc = unsafe { libc::syscall(libc::SYS_close_range, from, last, 0u32) };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        from = fd.saturating_add(1);
    }
    Ok(())
}

/// Removes every environment variable.
pub fn clear_env() {
    let keys: Vec<_> = std::env::vars_os().map(|(k, _)| k).collect();
    for key in keys {
        // SAFETY: the process is single-threaded here (the sandbox is entered before any
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

/// The highest Landlock ABI the running kernel supports (0: Landlock unavailable or
/// disabled).
pub fn landlock_abi_version() -> i64 {
    const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;
    // SAFETY: with a null attribute pointer, size 0 and the VERSION flag the call only
    // returns a number (landlock_create_ruleset(2)); no memory is read or written.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if rc < 0 { 0 } else { rc }
}

/// Returns malloc's free pages to the kernel (glibc's `malloc_trim`, by
/// `madvise(MADV_DONTNEED)`, which the sandboxed processes may call). Does nothing on
/// another C library.
pub fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks malloc's own arenas, under their locks; it is
    // safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

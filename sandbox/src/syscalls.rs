//! System call names a policy may use, and the constants its argument filters may name.

macro_rules! table {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), libc::$name as i64)),*]
    };
}

/// Calls present on every 64-bit architecture Warden builds for.
const COMMON: &[(&str, i64)] = table!(
    SYS_read, SYS_write, SYS_openat, SYS_close, SYS_fstat, SYS_newfstatat, SYS_statx,
    SYS_lseek, SYS_mmap, SYS_mprotect, SYS_munmap, SYS_brk, SYS_rt_sigaction,
    SYS_rt_sigprocmask, SYS_rt_sigreturn, SYS_ioctl, SYS_pread64, SYS_pwrite64, SYS_readv,
    SYS_writev, SYS_sched_yield, SYS_mremap, SYS_msync, SYS_mincore, SYS_madvise, SYS_dup,
    SYS_dup3, SYS_nanosleep, SYS_clock_nanosleep, SYS_getitimer, SYS_setitimer, SYS_getpid,
    SYS_gettid, SYS_getppid, SYS_sendfile, SYS_socket, SYS_connect, SYS_accept,
    SYS_accept4, SYS_sendto, SYS_recvfrom, SYS_sendmsg, SYS_recvmsg, SYS_sendmmsg,
    SYS_recvmmsg, SYS_shutdown, SYS_bind, SYS_listen, SYS_getsockname, SYS_getpeername,
    SYS_socketpair, SYS_setsockopt, SYS_getsockopt, SYS_clone, SYS_clone3, SYS_execve,
    SYS_execveat, SYS_exit, SYS_exit_group, SYS_wait4, SYS_waitid, SYS_kill, SYS_tkill,
    SYS_tgkill, SYS_uname, SYS_fcntl, SYS_flock, SYS_fsync, SYS_fdatasync, SYS_truncate,
    SYS_ftruncate, SYS_getdents64, SYS_getcwd, SYS_chdir, SYS_fchdir, SYS_renameat,
    SYS_renameat2, SYS_mkdirat, SYS_unlinkat, SYS_linkat, SYS_symlinkat, SYS_readlinkat,
    SYS_fchmod, SYS_fchmodat, SYS_fchown, SYS_fchownat, SYS_umask, SYS_gettimeofday,
    SYS_getrlimit, SYS_setrlimit, SYS_prlimit64, SYS_getrusage, SYS_sysinfo, SYS_times,
    SYS_ptrace, SYS_getuid, SYS_getgid, SYS_geteuid, SYS_getegid, SYS_setuid, SYS_setgid,
    SYS_setreuid, SYS_setregid, SYS_setresuid, SYS_setresgid, SYS_getresuid, SYS_getresgid,
    SYS_getgroups, SYS_setgroups, SYS_setpgid, SYS_getpgid, SYS_getsid, SYS_setsid,
    SYS_capget, SYS_capset, SYS_rt_sigpending, SYS_rt_sigtimedwait, SYS_rt_sigqueueinfo,
    SYS_rt_sigsuspend, SYS_sigaltstack, SYS_personality, SYS_statfs, SYS_fstatfs,
    SYS_getpriority, SYS_setpriority, SYS_sched_setparam, SYS_sched_getparam,
    SYS_sched_setscheduler, SYS_sched_getscheduler, SYS_sched_get_priority_max,
    SYS_sched_get_priority_min, SYS_sched_rr_get_interval, SYS_sched_setaffinity,
    SYS_sched_getaffinity, SYS_sched_setattr, SYS_sched_getattr, SYS_mlock, SYS_munlock,
    SYS_mlockall, SYS_munlockall, SYS_mlock2, SYS_vhangup, SYS_pivot_root, SYS_prctl,
    SYS_adjtimex, SYS_chroot, SYS_sync, SYS_syncfs, SYS_acct, SYS_settimeofday, SYS_mount,
    SYS_umount2, SYS_swapon, SYS_swapoff, SYS_reboot, SYS_sethostname, SYS_setdomainname,
    SYS_init_module, SYS_finit_module, SYS_delete_module, SYS_quotactl, SYS_futex,
    SYS_futex_waitv, SYS_set_robust_list, SYS_get_robust_list, SYS_set_tid_address,
    SYS_restart_syscall, SYS_timer_create, SYS_timer_settime, SYS_timer_gettime,
    SYS_timer_getoverrun, SYS_timer_delete, SYS_clock_settime, SYS_clock_gettime,
    SYS_clock_getres, SYS_clock_adjtime, SYS_epoll_ctl, SYS_epoll_pwait, SYS_epoll_pwait2,
    SYS_epoll_create1, SYS_eventfd2, SYS_signalfd4, SYS_timerfd_create,
    SYS_timerfd_settime, SYS_timerfd_gettime, SYS_pipe2, SYS_inotify_init1,
    SYS_inotify_add_watch, SYS_inotify_rm_watch, SYS_fanotify_init, SYS_fanotify_mark,
    SYS_pselect6, SYS_ppoll, SYS_unshare, SYS_setns, SYS_splice, SYS_tee, SYS_vmsplice,
    SYS_sync_file_range, SYS_fallocate, SYS_getrandom, SYS_memfd_create, SYS_memfd_secret,
    SYS_membarrier, SYS_rseq, SYS_copy_file_range, SYS_preadv, SYS_pwritev, SYS_preadv2,
    SYS_pwritev2, SYS_pkey_mprotect, SYS_pkey_alloc, SYS_pkey_free, SYS_mbind,
    SYS_set_mempolicy, SYS_get_mempolicy, SYS_migrate_pages, SYS_move_pages, SYS_faccessat,
    SYS_faccessat2, SYS_openat2, SYS_close_range, SYS_pidfd_open, SYS_pidfd_send_signal,
    SYS_pidfd_getfd, SYS_process_madvise, SYS_process_mrelease, SYS_process_vm_readv,
    SYS_process_vm_writev, SYS_kcmp, SYS_bpf, SYS_perf_event_open, SYS_userfaultfd,
    SYS_io_uring_setup, SYS_io_uring_enter, SYS_io_uring_register, SYS_io_setup,
    SYS_io_destroy, SYS_io_submit, SYS_io_cancel, SYS_io_getevents,
    SYS_keyctl, SYS_add_key, SYS_request_key, SYS_kexec_load, SYS_kexec_file_load,
    SYS_seccomp, SYS_landlock_create_ruleset, SYS_landlock_add_rule,
    SYS_landlock_restrict_self, SYS_name_to_handle_at, SYS_open_by_handle_at,
    SYS_move_mount, SYS_open_tree, SYS_fsopen, SYS_fsconfig, SYS_fsmount, SYS_fspick,
    SYS_mount_setattr, SYS_syslog, SYS_fadvise64, SYS_mq_open, SYS_mq_unlink,
    SYS_mq_timedsend, SYS_mq_timedreceive, SYS_mq_notify, SYS_mq_getsetattr, SYS_msgget,
    SYS_msgsnd, SYS_msgrcv, SYS_msgctl, SYS_semget, SYS_semop, SYS_semctl, SYS_semtimedop,
    SYS_shmget, SYS_shmat, SYS_shmctl, SYS_shmdt, SYS_setxattr, SYS_lsetxattr,
    SYS_fsetxattr, SYS_getxattr, SYS_lgetxattr, SYS_fgetxattr, SYS_listxattr,
    SYS_llistxattr, SYS_flistxattr, SYS_removexattr, SYS_lremovexattr, SYS_fremovexattr,
    SYS_utimensat,
);

/// Calls only x86_64 has (older spellings of calls the others have in *at form, and
/// port I/O). On other architectures a policy entry naming one of these is skipped.
#[cfg(target_arch = "x86_64")]
const LEGACY: &[(&str, i64)] = table!(
    SYS_open, SYS_stat, SYS_lstat, SYS_poll, SYS_access, SYS_pipe, SYS_select, SYS_dup2,
    SYS_pause, SYS_alarm, SYS_fork, SYS_vfork, SYS_rename, SYS_mkdir, SYS_rmdir,
    SYS_creat, SYS_link, SYS_unlink, SYS_symlink, SYS_readlink, SYS_chmod, SYS_chown,
    SYS_lchown, SYS_getpgrp, SYS_time, SYS_epoll_create, SYS_epoll_wait, SYS_eventfd,
    SYS_signalfd, SYS_inotify_init, SYS_getdents, SYS_arch_prctl, SYS_iopl, SYS_ioperm,
    SYS_modify_ldt, SYS_uselib, SYS_ustat, SYS_sysfs, SYS_utime, SYS_utimes, SYS_futimesat,
    SYS_mknod, SYS_mknodat,
);
#[cfg(not(target_arch = "x86_64"))]
const LEGACY: &[(&str, i64)] = &[];

/// Names of [`LEGACY`] calls, known on every architecture so a policy parses everywhere.
const LEGACY_NAMES: &[&str] = &[
    "open", "stat", "lstat", "poll", "access", "pipe", "select", "dup2", "pause", "alarm",
    "fork", "vfork", "rename", "mkdir", "rmdir", "creat", "link", "unlink", "symlink",
    "readlink", "chmod", "chown", "lchown", "getpgrp", "time", "epoll_create",
    "epoll_wait", "eventfd", "signalfd", "inotify_init", "getdents", "arch_prctl", "iopl",
    "ioperm", "modify_ldt", "uselib", "ustat", "sysfs", "utime", "utimes", "futimesat",
    "mknod", "mknodat",
];

/// What a policy name means on this architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Number(i64),
    /// A real call that this architecture does not have (nothing to filter).
    Absent,
    Unknown,
}

pub fn lookup(name: &str) -> Lookup {
    let hit = COMMON
        .iter()
        .chain(LEGACY)
        .find(|(n, _)| n.strip_prefix("SYS_") == Some(name));
    if let Some((_, nr)) = hit {
        Lookup::Number(*nr)
    } else if LEGACY_NAMES.contains(&name) {
        Lookup::Absent
    } else {
        Lookup::Unknown
    }
}

/// Symbolic constants an argument filter may name.
pub fn constant(name: &str) -> Option<u64> {
    let v: i64 = match name {
        "AF_UNIX" => libc::AF_UNIX.into(),
        "AF_INET" => libc::AF_INET.into(),
        "AF_INET6" => libc::AF_INET6.into(),
        "AF_NETLINK" => libc::AF_NETLINK.into(),
        "CLONE_NEWNS" => libc::CLONE_NEWNS.into(),
        "CLONE_NEWCGROUP" => libc::CLONE_NEWCGROUP.into(),
        "CLONE_NEWUTS" => libc::CLONE_NEWUTS.into(),
        "CLONE_NEWIPC" => libc::CLONE_NEWIPC.into(),
        "CLONE_NEWUSER" => libc::CLONE_NEWUSER.into(),
        "CLONE_NEWPID" => libc::CLONE_NEWPID.into(),
        "CLONE_NEWNET" => libc::CLONE_NEWNET.into(),
        "CLONE_NEWTIME" => 0x80,
        "CLONE_THREAD" => libc::CLONE_THREAD.into(),
        "CLONE_VM" => libc::CLONE_VM.into(),
        "PROT_EXEC" => libc::PROT_EXEC.into(),
        "PROT_WRITE" => libc::PROT_WRITE.into(),
        "FIONBIO" => libc::FIONBIO as i64,
        "FIOCLEX" => libc::FIOCLEX as i64,
        "FIONCLEX" => libc::FIONCLEX as i64,
        "FIONREAD" => libc::FIONREAD as i64,
        "TCGETS" => libc::TCGETS as i64,
        "TIOCGWINSZ" => libc::TIOCGWINSZ as i64,
        "F_GETFD" => libc::F_GETFD.into(),
        "F_SETFD" => libc::F_SETFD.into(),
        "F_GETFL" => libc::F_GETFL.into(),
        "F_SETFL" => libc::F_SETFL.into(),
        "F_DUPFD_CLOEXEC" => libc::F_DUPFD_CLOEXEC.into(),
        "F_GETLK" => libc::F_GETLK.into(),
        "F_SETLK" => libc::F_SETLK.into(),
        "F_SETLKW" => libc::F_SETLKW.into(),
        "F_OFD_SETLK" => libc::F_OFD_SETLK.into(),
        "F_OFD_SETLKW" => libc::F_OFD_SETLKW.into(),
        "F_OFD_GETLK" => libc::F_OFD_GETLK.into(),
        "F_ADD_SEALS" => libc::F_ADD_SEALS.into(),
        "F_GET_SEALS" => libc::F_GET_SEALS.into(),
        "PR_SET_NAME" => libc::PR_SET_NAME.into(),
        "PR_GET_NAME" => libc::PR_GET_NAME.into(),
        "PR_SET_VMA" => 0x53564d41,
        "PR_GET_DUMPABLE" => libc::PR_GET_DUMPABLE.into(),
        "PR_CAPBSET_READ" => libc::PR_CAPBSET_READ.into(),
        "PR_GET_NO_NEW_PRIVS" => libc::PR_GET_NO_NEW_PRIVS.into(),
        "PR_SET_PDEATHSIG" => libc::PR_SET_PDEATHSIG.into(),
        "PR_GET_TIMERSLACK" => libc::PR_GET_TIMERSLACK.into(),
        "PR_GET_SECCOMP" => libc::PR_GET_SECCOMP.into(),
        "PR_SET_SECCOMP" => libc::PR_SET_SECCOMP.into(),
        "PR_SET_NO_NEW_PRIVS" => libc::PR_SET_NO_NEW_PRIVS.into(),
        "PR_SET_DUMPABLE" => libc::PR_SET_DUMPABLE.into(),
        "PR_GET_THP_DISABLE" => libc::PR_GET_THP_DISABLE.into(),
        "ARCH_SET_FS" => 0x1002,
        "ARCH_GET_FS" => 0x1003,
        "ARCH_GET_CPUID" => 0x1011,
        "ARCH_REQ_XCOMP_PERM" => 0x1023,
        "ARCH_GET_XCOMP_PERM" => 0x1022,
        "ARCH_GET_XCOMP_SUPP" => 0x1021,
        other => {
            if let Some(hex) = other.strip_prefix("0x") {
                return u64::from_str_radix(hex, 16).ok();
            }
            return other.parse::<u64>().ok();
        }
    };
    Some(v as u64)
}

//! Detaching off the exit path.
//!
//! Closing the last reference of a tracepoint or uprobe attachment waits for an RCU
//! grace period in the kernel (tens of ms each; about 2.3 s for the ~50 attachments
//! of a run on the development machines). A process's descriptors are closed as it
//! exits, before its parent can reap it, so `probectl run` took that long to return
//! after its report. `close_in_background` gives the last references to a detached
//! grandchild: it holds a copy of every descriptor, closes them there and exits,
//! while probectl's own closes drop non-last references and return at once.
//!
//! The programs stay attached until the grandchild has closed them (a few seconds at
//! most). They only act on processes in the watched set, and the ring buffer they
//! write to has no reader any more, so nothing is reported twice.

use std::io;

/// Forks a grandchild that holds a copy of every descriptor this process holds until
/// this process has exited (so that the closes here are not the last ones), then
/// closes them and exits. The
/// intermediate child exits at once and is reaped here, so no zombie is left behind
/// whether or not the caller exits soon; the grandchild is reparented to init (or
/// the nearest subreaper), which reaps it.
///
/// Call it once the report is written and flushed, just before dropping the engine
/// and exiting: the attachments stay until this process has exited.
pub fn close_in_background() -> io::Result<()> {
    // Read before forking: the children may only make async-signal-safe calls.
    let max_fd = open_files_limit();
    // The grandchild waits for this process to be gone (a pidfd polls readable once
    // every thread has exited and its descriptors are closed). Without pidfds (before
    // 5.3) it closes at once, and the closes race with ours: some detaches then
    // happen here, as before.
    // SAFETY: pidfd_open on our own pid with no flags.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) } as libc::c_int;
    // SAFETY: the children call only async-signal-safe functions (fork, close,
    // syscall, _exit) and never return into Rust code.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            // SAFETY: as above.
            unsafe {
                if libc::fork() == 0 {
                    close_all(max_fd, pidfd);
                }
                libc::_exit(0);
            }
        }
        child => {
            if pidfd >= 0 {
                // SAFETY: our own descriptor, not used again here.
                unsafe { libc::close(pidfd) };
            }
            let mut status = 0;
            // SAFETY: plain waitpid on our own child; it exits right after its fork.
            while unsafe { libc::waitpid(child, &mut status, 0) } == -1
                && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
            {}
            Ok(())
        }
    }
}

/// Closes the standard streams at once (a reader waiting for the end of probectl's
/// output must not wait for the detaches), waits until the parent process is gone,
/// then closes every other descriptor and exits.
///
/// # Safety
/// Only for a forked child: async-signal-safe calls only, never returns.
unsafe fn close_all(max_fd: libc::c_long, parent: libc::c_int) -> ! {
    // SAFETY: close on any number is safe; a closed or unused one returns EBADF.
    // poll gets a valid one-element array.
    unsafe {
        for fd in 0..3 {
            libc::close(fd);
        }
        if parent >= 0 {
            let mut pfd = libc::pollfd {
                fd: parent,
                events: libc::POLLIN,
                revents: 0,
            };
            while libc::poll(&mut pfd, 1, -1) == -1 && *libc::__errno_location() == libc::EINTR {}
        }
        // close_range (5.9+) does it in one call; older kernels get the loop.
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) != 0 {
            for fd in 3..max_fd {
                libc::close(fd as libc::c_int);
            }
        }
        libc::_exit(0)
    }
}

fn open_files_limit() -> libc::c_long {
    // SAFETY: sysconf with a valid name.
    let max = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) };
    if max <= 0 { 65_536 } else { max.min(1 << 20) }
}
